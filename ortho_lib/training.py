r"""Training on the logistic loss: one configuration object, one :func:`train`, one result type.

.. math:: L(\theta) = \frac1n \sum_{j=1}^n \log\bigl(1 + e^{-y_j N(x_j)}\bigr)
          \;+\; \frac{\lambda}{2}\|\theta_{\text{trained}}\|^2 \;+\; \mu \,\|(W, b)\|_F .

Gradients are written out by hand (no autograd): with $Z = XW^\top + b$, $H = \sigma(Z)$,
$f = Hu + c$ and $g_j = \partial L/\partial f_j = -y_j\,\mathrm{sigmoid}(-y_j f_j)/n$,

.. math:: \nabla_W L = G^\top X,\quad \nabla_b L = G^\top\mathbf 1,\quad
          \nabla_u L = H^\top g,\quad \nabla_c L = \mathbf 1^\top g,\qquad G = (g u^\top)\odot \mathbb 1[Z>0].

Every row of $\nabla_W L$ is a combination of the inputs $x_j$ — the fact behind the frozen-component
lemma.  Optimisers: ``"gd"`` (full batch), ``"sgd"`` (mini-batches), ``"momentum"`` (heavy ball,
PyTorch's convention $v \leftarrow \mu v + g$, $\theta \leftarrow \theta - \eta v$), ``"adam"``.

Step sizes: $\eta_t = \eta\,s(t, L_t)$ with the schedule $s$ of :class:`TrainConfig`: ``"constant"``
($s = 1$), ``"max_margin"`` ($s = 1/(L_t\max(1, \log(1/L_t)))$, the loss-normalised step that drives the
parameters towards a KKT point of the max-margin problem; computed in the log domain so that training
goes on after $L_t$ underflows), or any callable ``s(t, L_t)``.

**Backends.**  :func:`train` runs the readable per-network loop of this module (``backend="reference"``,
the specification), the batched tensor program of :mod:`ortho_lib._batched` (``"batched"``: many
networks at once in exact reduced coordinates, CPU or CUDA, float32 or float64) or the compiled loops of
:mod:`ortho_lib._fused` (``"fused"``: the CPU, any size, float32 or float64, one network per thread).  Every backend gives the
reference's iterates up to rounding (tested to $10^{-12}$ in float64); ``backend="auto"`` takes the
fastest one that supports the configuration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ._checks import check_choice, check_flag, check_float, check_int, check_labels, check_seed, check_tensor, \
    check_training_set, tolerance
from .network import TwoLayerParams, _stack, _unchecked, _check_params
from .subspaces import Subspace, _check_subspace

OPTIMIZERS = ("gd", "sgd", "momentum", "adam")
SCHEDULES = ("constant", "max_margin")
BACKENDS = ("auto", "reference", "batched", "fused")
COORDINATES = ("auto", "full", "subspace", "span")
PARAMETERS = "Wbuc"

Schedule = Union[str, Callable[[int, float], float]]


class MarginNotReached(RuntimeError):
    """Raised by :func:`train` with ``strict=True`` when a step budget ends below the target margin."""


# ------------------------------------------------------------------------------------ configuration

@dataclass(frozen=True)
class TrainConfig:
    r"""How to train: every setting of :func:`train` in one immutable object.

    Build variants with :meth:`replace` (``cfg.replace(weight_decay=1e-3)``); a sweep passes one config per
    network to :func:`train`.

    Attributes:
        lr: step size $\eta$ (the base step of a schedule), ``> 0``.
        max_steps: budget of updates, ``>= 0``.
        target_margin: stop at the first iterate whose train margin $\min_j y_jN(x_j)$ reaches it (None: run
            the whole budget).
        optimizer: ``"gd"``, ``"sgd"``, ``"momentum"`` (heavy ball) or ``"adam"``.
        momentum: heavy-ball coefficient $\mu \in [0, 1)$ (``optimizer="momentum"``).
        betas: Adam's two decay rates.
        eps: Adam's denominator constant.
        batch_size: mini-batch size (``"sgd"`` defaults to 1, the others to the full batch).
        weight_decay: $\lambda$ of the penalty $\frac\lambda2\|\theta\|^2$ on every trained parameter (for GD
            this multiplies $\Pi_\perp W$ by exactly $1-\eta\lambda$ per step).
        norm_penalty: $\mu$ of the penalty $\mu\|(W,b)\|_F$ (not squared; the authors' Figure 3).
        trained: which of $W, b, u, c$ are trained, as a string such as ``"Wb"`` (default) or ``"Wbuc"``;
            ``W`` always is.
        schedule: ``"constant"``, ``"max_margin"`` or a callable ``s(step, loss) -> factor`` (reference
            backend only); the step at update $t$ is $\eta\,s(t, L_t)$.
        record_every: record step, loss, log-loss, margin and $\|\theta\|^2$ every this many steps and at the
            last (None: record nothing).
        record_params: also keep the parameters at each recorded step (``history.params``).
        seed: seed of the mini-batch order.
        strict: raise :class:`MarginNotReached` when a budget ends below ``target_margin``.
    """

    lr: float
    max_steps: int
    target_margin: Optional[float] = None
    optimizer: str = "gd"
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch_size: Optional[int] = None
    weight_decay: float = 0.0
    norm_penalty: float = 0.0
    trained: str = "Wb"
    schedule: Schedule = "constant"
    record_every: Optional[int] = None
    record_params: bool = False
    seed: int = 0
    strict: bool = False

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        put("lr", check_float("TrainConfig.lr", self.lr, positive=True))
        put("max_steps", check_int("TrainConfig.max_steps", self.max_steps, low=0, high=10**12))
        if self.target_margin is not None:
            put("target_margin", check_float("TrainConfig.target_margin", self.target_margin))
        check_choice("TrainConfig.optimizer", self.optimizer, OPTIMIZERS)
        put("momentum", check_float("TrainConfig.momentum", self.momentum, nonnegative=True, below=1.0))
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise TypeError(f"TrainConfig.betas must be a pair of numbers, got {self.betas!r}")
        put("betas", tuple(check_float(f"TrainConfig.betas[{i}]", b, nonnegative=True, below=1.0)
                           for i, b in enumerate(self.betas)))
        put("eps", check_float("TrainConfig.eps", self.eps, positive=True))
        if self.batch_size is not None:
            put("batch_size", check_int("TrainConfig.batch_size", self.batch_size, low=1))
        put("weight_decay", check_float("TrainConfig.weight_decay", self.weight_decay, nonnegative=True))
        put("norm_penalty", check_float("TrainConfig.norm_penalty", self.norm_penalty, nonnegative=True))
        trained = self.trained
        if not isinstance(trained, str) or not trained or set(trained) - set(PARAMETERS) or len(set(trained)) != len(trained):
            raise ValueError(f"TrainConfig.trained must be a string of distinct letters from {PARAMETERS!r} "
                             f"(for example 'Wb' or 'Wbuc'), got {trained!r}")
        if "W" not in trained:
            raise ValueError(f"TrainConfig.trained must include 'W' (the first layer always trains), got {trained!r}")
        put("trained", "".join(k for k in PARAMETERS if k in trained))
        if isinstance(self.schedule, str):
            check_choice("TrainConfig.schedule", self.schedule, SCHEDULES)
        elif not callable(self.schedule):
            raise TypeError(f"TrainConfig.schedule must be one of {list(SCHEDULES)} or a callable "
                            f"s(step, loss) -> factor, got {self.schedule!r}")
        if self.schedule == "max_margin" and (self.optimizer == "sgd" or self.batch_size is not None):
            raise ValueError("TrainConfig.schedule='max_margin' normalises by the full-batch loss: use a full-batch "
                             "optimizer ('gd', 'momentum' or 'adam') without batch_size")
        if self.record_every is not None:
            put("record_every", check_int("TrainConfig.record_every", self.record_every, low=1))
        for flag in ("record_params", "strict"):
            put(flag, check_flag(f"TrainConfig.{flag}", getattr(self, flag)))
        if self.record_params and self.record_every is None:
            raise ValueError("TrainConfig.record_params needs record_every (the steps at which to keep them)")
        put("seed", check_seed("TrainConfig.seed", self.seed))
        if self.strict and self.target_margin is None:
            raise ValueError("TrainConfig.strict needs a target_margin")

    def replace(self, **changes: object) -> "TrainConfig":
        """A copy with some settings changed (checked like a new one): ``cfg.replace(weight_decay=1e-3)``."""
        return replace(self, **changes)

    @property
    def full_batch(self) -> bool:
        """Whether every update uses the whole training set."""
        return self.optimizer != "sgd" and self.batch_size is None


#: The fields of :class:`TrainConfig` that may differ between the members of one call (the rest must agree).
PER_MEMBER = ("lr", "max_steps", "target_margin", "momentum", "weight_decay", "norm_penalty")


# ------------------------------------------------------------------------------------------- results

@dataclass(frozen=True)
class TrainHistory:
    r"""What was recorded during training (every ``record_every`` steps and at the last).

    Attributes:
        steps: ``(r,)`` int64 update counts.
        loss: ``(r,)`` logistic loss $L$ (underflows to 0 for very large margins).
        log_loss: ``(r,)`` $\log L$, finite even where $L$ underflows.
        margin: ``(r,)`` $\min_j y_jN(x_j)$.
        norm_sq: ``(r,)`` $\|\theta\|^2 = \|W\|_F^2+\|b\|^2+\|u\|^2+c^2$ (so ``margin / norm_sq`` is the
            normalised margin of a homogeneous network).
        params: the parameters at each recorded step (with ``record_params``), else None.
    """

    steps: Tensor
    loss: Tensor
    log_loss: Tensor
    margin: Tensor
    norm_sq: Tensor
    params: Optional[tuple[TwoLayerParams, ...]] = None

    def at(self, step: int) -> int:
        """The index of the record made at ``step`` (raises if there is none)."""
        hit = (self.steps == check_int("step", step, low=0)).nonzero().flatten()
        if hit.numel() == 0:
            raise ValueError(f"step: no record at step {step}; recorded steps run {self.steps.tolist()[:5]}...")
        return int(hit[0])


@dataclass(frozen=True)
class TrainResult:
    r"""What :func:`train` returns: one network, or a stack of ``E`` with a leading member axis.

    Attributes:
        params: the final parameters (a stack for a stack).
        initial: the initial parameters (a stack for a stack).
        steps: updates made (int; ``(E,)`` int64 for a stack).
        reached: whether the margin reached ``target_margin`` (bool; ``(E,)``).
        final_loss: the logistic loss at the final iterate (float; ``(E,)``).
        final_margin: the train margin at the final iterate (float; ``(E,)``).
        lr_sum: $\sum_t\eta_t$ over the updates made (float; ``(E,)``).
        decay_factor: $\prod_t(1-\eta_t\lambda)$ (float; ``(E,)``).
        perp_factor: the exact $a_T$ with $\Pi_\perp W(T) = a_T\,\Pi_\perp W(0)$ for data in $P$ (weight decay,
            norm penalty and the heavy-ball recursion included; nan for Adam, which has no such factor).
        history: :class:`TrainHistory` (a tuple of ``E`` for a stack), or None without ``record_every``.
        config: the :class:`TrainConfig` (a tuple of ``E`` for a stack).
        backend: the backend that computed the training.
        coordinates: the coordinates it was computed in.
    """

    params: TwoLayerParams
    initial: TwoLayerParams
    steps: Union[int, Tensor]
    reached: Union[bool, Tensor]
    final_loss: Union[float, Tensor]
    final_margin: Union[float, Tensor]
    lr_sum: Union[float, Tensor]
    decay_factor: Union[float, Tensor]
    perp_factor: Union[float, Tensor]
    history: Union[None, TrainHistory, tuple]
    config: Union[TrainConfig, tuple]
    backend: str
    coordinates: str

    @property
    def is_stack(self) -> bool:
        """Whether this is the result of a stack of networks."""
        return self.params.is_stack

    def __len__(self) -> int:
        return len(self.params)

    def member(self, e: int) -> "TrainResult":
        """Member ``e`` of a stack's result, as the result of training that network alone."""
        E = len(self)
        e = check_int("e", e, low=-E, high=E - 1)
        return TrainResult(
            params=self.params.member(e), initial=self.initial.member(e), steps=int(self.steps[e]),
            reached=bool(self.reached[e]), final_loss=float(self.final_loss[e]),
            final_margin=float(self.final_margin[e]), lr_sum=float(self.lr_sum[e]),
            decay_factor=float(self.decay_factor[e]), perp_factor=float(self.perp_factor[e]),
            history=None if self.history is None else self.history[e], config=self.config[e],
            backend=self.backend, coordinates=self.coordinates)

    def members(self) -> list["TrainResult"]:
        """Every member of a stack's result (see :meth:`member`)."""
        return [self.member(e) for e in range(len(self))]

    def summary(self) -> str:
        """One line per network: steps, final loss and margin, and whether the target was reached."""
        if self.is_stack:
            return "\n".join(f"[{e}] " + r.summary() for e, r in enumerate(self.members()))
        cfg = self.config
        head = f"{cfg.optimizer}: {self.steps} steps, loss {self.final_loss:.3g}, margin {self.final_margin:.3f}"
        if cfg.target_margin is None:
            return head
        if self.reached:
            return head + f" (target {cfg.target_margin:g} reached)"
        return head + f" — target margin {cfg.target_margin:g} NOT reached within the budget of {cfg.max_steps} steps"


# ----------------------------------------------------------------------------------- loss, margins

def loss_and_grads(params: TwoLayerParams, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    r"""Logistic loss, outputs and explicit gradients of one network on a batch.

    Args:
        params: a single network.  X: ``(n, d)``.  y: ``(n,)`` labels in $\{\pm1\}$.
    Returns:
        ``(loss, f, grads)`` with ``f`` of shape ``(n,)`` and ``grads`` keyed ``W, b, u, c``.
    """
    _check_params(params, single=True)
    X, y = _data(params, X, y)
    return _loss_and_grads(params, X, y)


def _loss_and_grads(params: TwoLayerParams, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    Z = X @ params.W.T + params.b
    H = torch.relu(Z)
    f = H @ params.u + params.c
    yf = y * f
    loss = torch.nn.functional.softplus(-yf).mean()
    g = -y * torch.sigmoid(-yf) / X.shape[0]
    return loss, f, _grads(params, X, Z, H, g)


def _grads(params: TwoLayerParams, X: Tensor, Z: Tensor, H: Tensor, g: Tensor) -> dict[str, Tensor]:
    """Gradients of $\\sum_j g_j N(x_j)$ (with $g_j = \\partial L/\\partial f_j$) at pre-activations ``Z``."""
    GZ = (g[:, None] * params.u[None, :]) * (Z > 0).to(X.dtype)
    return {"W": GZ.T @ X, "b": GZ.sum(0), "u": H.T @ g, "c": g.sum()}


def _log_logistic(s: Tensor) -> Tensor:
    """$\\log\\log(1 + e^{-s})$ per entry, without underflow for large ``s``."""
    big = s > 30
    safe = torch.where(big, torch.zeros_like(s), s)
    small_branch = torch.log(torch.nn.functional.softplus(-safe))
    big_branch = -s + torch.log1p(-0.5 * torch.exp(-torch.where(big, s, torch.full_like(s, 30.0))))
    return torch.where(big, big_branch, small_branch)


def log_loss(yf: Tensor) -> Tensor:
    r"""$\log L = \log\frac1n\sum_j\log(1+e^{-q_j})$ from the values $q_j = y_jN(x_j)$ (last axis), without underflow."""
    yf = check_tensor("yf", yf, ndim=(1, 2))
    if yf.shape[-1] == 0:
        raise ValueError("yf must hold at least one value per row (the loss of no point is undefined)")
    return torch.logsumexp(_log_logistic(yf), -1) - math.log(yf.shape[-1])


def train_margin(params: TwoLayerParams, X: Tensor, y: Tensor) -> Union[float, Tensor]:
    r"""$\min_j y_j N(x_j)$ over the given points (a float; ``(E,)`` for a stack)."""
    from .network import network_output

    _check_params(params)
    X, y = _data(params, X, y)
    out = (y * network_output(params, X)).amin(-1)
    return out if params.is_stack else float(out.detach())


def accuracy(params: TwoLayerParams, X: Tensor, y: Tensor) -> Union[float, Tensor]:
    r"""Fraction of points with $\mathrm{sign}\,N(x_j) = y_j$ (a float; ``(E,)`` float64 for a stack)."""
    from .network import network_output

    _check_params(params)
    X, y = _data(params, X, y)
    out = ((y * network_output(params, X)) > 0).to(torch.float64).mean(-1)
    return out if params.is_stack else float(out.detach())


def _data(params: TwoLayerParams, X: object, y: object) -> tuple[Tensor, Tensor]:
    """Check a training set against ``params``: X ``(n, d)`` (or ``(E, n, d)``), y ``(n,)`` (or ``(E, n)``)."""
    return check_training_set(X, y, params.d, len(params) if params.is_stack else None, params.W.dtype)


# ------------------------------------------------------------------------------------------ train()

@dataclass
class _Problem:
    """A checked training problem, as every backend receives it."""

    initial: TwoLayerParams          # a stack of E networks
    X: Tensor                        # (n, d) shared or (E, n, d)
    y: Tensor                        # (n,) shared or (E, n), in the parameters' dtype
    configs: tuple                   # E TrainConfigs that agree on every structural field
    sub: Optional[Subspace]
    coordinates: str                 # as asked ("auto", ...)
    device: Optional[object]
    dtype: Optional[torch.dtype]
    stats: Optional[dict]

    @property
    def config(self) -> TrainConfig:
        """The structural settings (shared by every member)."""
        return self.configs[0]

    def per_member(self, name: str) -> list:
        """One value of a :data:`PER_MEMBER` field per member."""
        return [getattr(c, name) for c in self.configs]


@dataclass
class _Outcome:
    """What a backend returns: final stacked parameters and per-member records (host, float64)."""

    params: TwoLayerParams
    steps: Tensor
    reached: Tensor
    final_loss: Tensor
    final_margin: Tensor
    perp_factor: Optional[Tensor]
    history: Optional[tuple]
    coordinates: str
    lr_sum: Optional[Tensor] = None
    decay_factor: Optional[Tensor] = None


def train(
    params: Union[TwoLayerParams, Sequence[TwoLayerParams]],
    X: Tensor,
    y: Tensor,
    config: Union[TrainConfig, Sequence[TrainConfig]],
    *,
    sub: Optional[Subspace] = None,
    backend: str = "auto",
    coordinates: str = "auto",
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    stats: Optional[dict] = None,
) -> TrainResult:
    r"""Train one network, or a stack of networks, on the logistic loss.

    Each network follows the iteration of the reference loop (:func:`_train_reference`): the margin
    $\min_j y_jN(x_j)$ is checked on the full training set before every update, and a network stops at
    its first iterate that reaches ``target_margin`` or when its budget ends.

    Deep networks (:class:`ortho_lib.deep.DeepParams`, one or a stack or a list) train through the same call,
    by the autograd loop of :func:`ortho_lib.deep._train_deep`.

    Args:
        params: one network, a stack (:meth:`TwoLayerParams.stack`) or a list of equal-shape networks.
        X: ``(n, d)`` training inputs, shared by every member, or ``(E, n, d)`` one set per member.
        y: ``(n,)`` labels in $\{\pm1\}$, or ``(E, n)``.
        config: a :class:`TrainConfig`, or one per member (they may differ in :data:`PER_MEMBER` fields).
        sub: the data subspace $P$, if the inputs lie in it (checked); lets the batched and fused backends
            train in the coordinates of $P$.
        backend: ``"auto"``, ``"reference"``, ``"batched"`` or ``"fused"`` (see the module docstring).
        coordinates: ``"auto"``, ``"full"``, ``"subspace"`` (needs ``sub``) or ``"span"`` (the data's Gram
            coordinates; batched and fused backends): the coordinates the iteration is computed in.
        device, dtype: where and in which precision to train (``"cuda"``: batched backend; float32).
        stats: optional dict filled with the backend's record: its coordinates and, for FLOP counts, its
            matrix products (batched) or multiply-adds and set-up and kernel times (fused).
    Returns:
        :class:`TrainResult` (with a leading member axis for a stack or list).
    Raises:
        MarginNotReached: with ``config.strict`` when a budget ends below the target.
        FloatingPointError: when the loss becomes non-finite (lower ``lr``).
    """
    if _is_deep(params):  # deep ReLU networks (ortho_lib.deep): the same front door, an autograd loop
        from .deep import _train_deep
        return _train_deep(params, X, y, config, sub=sub, backend=backend, coordinates=coordinates, device=device,
                          dtype=dtype, stats=stats)
    single = isinstance(params, TwoLayerParams) and not params.is_stack
    if isinstance(params, TwoLayerParams):
        stack = params if params.is_stack else TwoLayerParams.stack([params])
    elif isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        stack = _stack(list(params), "params")
    else:
        raise TypeError(f"params must be TwoLayerParams or a list of them, got {type(params).__name__}")
    # training builds no autograd graph: inputs that require grad are detached (the result never requires grad)
    stack = _unchecked(*(t.detach() for t in (stack.W, stack.b, stack.u, stack.c)))
    E = len(stack)
    if single:
        X = check_tensor("X", X, ndim=2)
        y = check_labels("y", y, (X.shape[0],))
    X, y = (t.detach() if isinstance(t, Tensor) else t for t in (X, y))
    Xc, yc = _data(stack, X, y)
    if Xc.ndim == 3 and Xc.stride(0) == 0:
        Xc = Xc[0]  # an expanded shared training set
    if yc.ndim == 2 and yc.stride(0) == 0:
        yc = yc[0]
    configs = _configs(config, E)
    check_choice("backend", backend, BACKENDS)
    check_choice("coordinates", coordinates, COORDINATES)
    if sub is not None:
        _check_sub(sub, stack.d, Xc)
    if coordinates == "subspace" and sub is None:
        raise ValueError("coordinates='subspace' needs sub (the data subspace P)")
    n = Xc.shape[-2]
    for e, c in enumerate(configs):
        if c.batch_size is not None and c.batch_size > n:
            raise ValueError(f"config{'' if single else f'[{e}]'}.batch_size must be <= n = {n}, got {c.batch_size}")
    if dtype is not None and dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if device is not None and device != "auto":
        try:
            torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device must be None, 'auto' (CUDA when available) or a torch device such as 'cpu' "
                             f"or 'cuda', got {device!r} ({err})") from None
    if stats is not None and not isinstance(stats, dict):
        raise TypeError(f"stats must be None or a dict to fill, got {type(stats).__name__}")
    problem = _Problem(stack, Xc, yc, configs, sub, coordinates, device, dtype, stats)

    chosen = _choose_backend(problem, backend)
    if chosen == "reference":
        out = _run_reference(problem)
    elif chosen == "fused":
        from . import _fused
        out = _fused.run(problem)
    else:
        from . import _batched
        out = _batched.run(problem)
    if out.lr_sum is None:
        out.lr_sum, out.decay_factor, perp = _host_factors(problem, out.steps)
        if out.perp_factor is None:
            out.perp_factor = perp

    result = TrainResult(
        params=out.params, initial=stack, steps=out.steps, reached=out.reached, final_loss=out.final_loss,
        final_margin=out.final_margin, lr_sum=out.lr_sum, decay_factor=out.decay_factor,
        perp_factor=out.perp_factor, history=out.history, config=tuple(configs), backend=chosen,
        coordinates=out.coordinates)
    if single:
        result = result.member(0)
    missed = [e for e, c in enumerate(configs) if c.strict and not bool(out.reached[e])]
    if missed:
        raise MarginNotReached(result.summary() if single else result.member(missed[0]).summary()
                               + f" (members {missed})")
    return result


def _is_deep(params: object) -> bool:
    """Whether ``params`` is a :class:`ortho_lib.deep.DeepParams` or a non-empty list of them."""
    from .deep import DeepParams

    if isinstance(params, DeepParams):
        return True
    return isinstance(params, Sequence) and not isinstance(params, (str, bytes)) and len(params) > 0 \
        and all(isinstance(p, DeepParams) for p in params)


def _configs(config: object, E: int) -> tuple:
    """One TrainConfig per member, checked to agree on every structural field."""
    if isinstance(config, TrainConfig):
        return (config,) * E
    if not isinstance(config, Sequence) or isinstance(config, (str, bytes)):
        raise TypeError(f"config must be a TrainConfig or a sequence of E = {E} of them, got {type(config).__name__}")
    if len(config) != E:
        raise ValueError(f"config must hold one TrainConfig per member (E = {E}), got {len(config)}")
    for i, c in enumerate(config):
        if not isinstance(c, TrainConfig):
            raise TypeError(f"config[{i}] must be a TrainConfig, got {type(c).__name__}")
    first = config[0]
    for f in fields(TrainConfig):
        if f.name in PER_MEMBER:
            continue
        for i, c in enumerate(config):
            if getattr(c, f.name) != getattr(first, f.name):
                raise ValueError(f"config[{i}].{f.name} must equal config[0].{f.name} ({getattr(first, f.name)!r}): "
                                 f"only {', '.join(PER_MEMBER)} may differ between members")
    if len({c.target_margin is None for c in config}) != 1:
        raise ValueError("config: either every member has a target_margin or none has")
    return tuple(config)


def _check_sub(sub: object, d: int, X: Tensor) -> None:
    """Raise naming ``sub`` or ``X`` unless the inputs lie in the subspace (tolerance by precision)."""
    from .data import check_on_subspace

    _check_subspace(sub, d, against="the networks' inputs")
    tol = tolerance(X.dtype, sub.basis.dtype)
    try:
        check_on_subspace(sub, X.reshape(-1, X.shape[-1]).to("cpu", sub.basis.dtype), tol=tol)
    except ValueError as err:
        raise ValueError(f"{err} — pass sub only for data in P") from None


def _fused_available() -> bool:
    from . import _fused
    return _fused.available()


def _on_cpu(p: _Problem) -> bool:
    """Whether ``p`` trains on the CPU (where its parameters live, unless another device is asked for)."""
    dev = p.device
    if dev is not None and not (dev == "cpu" or (isinstance(dev, torch.device) and dev.type == "cpu")):
        return False
    return p.initial.W.device.type == "cpu"


def _choose_backend(p: _Problem, backend: str) -> str:
    """The backend that runs ``p``: the one asked for (checked), or the fastest capable one.

    ``"auto"``: the reference for what only it implements (SGD, Adam, mini-batches, a non-constant schedule);
    else the compiled kernel on the CPU (it runs every size and coordinate system at
    least as fast as the batched program: it has no per-operation dispatch, and its large steps are
    BLAS products fused with their elementwise work); else the batched program (CUDA, or no Numba) when it
    supports the configuration (no norm penalty, no history), else the reference.
    """
    cfg = p.config
    ref_only = [why for why, used in (
        (f"optimizer={cfg.optimizer!r}", cfg.optimizer in ("sgd", "adam")),
        ("batch_size", cfg.batch_size is not None),
        (f"schedule={cfg.schedule!r}", cfg.schedule != "constant")) if used]
    not_batched = [why for why, used in (
        ("norm_penalty", any(v > 0 for v in p.per_member("norm_penalty"))),
        ("record_every", cfg.record_every is not None),
        ("record_params", cfg.record_params)) if used]
    fused_ok = _on_cpu(p) and _fused_available()
    if backend == "reference":
        if p.coordinates not in ("auto", "full") or p.device not in (None, "cpu") or p.dtype not in (None, p.initial.W.dtype):
            raise ValueError("backend='reference' trains in full coordinates on the networks' own device and dtype")
        return "reference"
    if backend in ("batched", "fused") and ref_only:
        raise ValueError(f"{', '.join(ref_only)} need(s) backend='reference' (or 'auto'); got backend={backend!r}")
    if backend == "batched":
        if not_batched:
            raise ValueError(f"{' and '.join(not_batched)} need backend='fused' or 'reference'; got backend='batched'")
        return "batched"
    if backend == "fused":
        if not _fused_available():
            raise ValueError("backend='fused' needs numba (pip install numba); use backend='batched'")
        if not _on_cpu(p):
            raise ValueError("backend='fused' trains on the CPU; use backend='batched' for a CUDA device")
        return "fused"
    # auto
    if ref_only:
        return "reference"
    if fused_ok:
        return "fused"
    return "reference" if not_batched else "batched"


def _host_factors(p: _Problem, steps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per member, the scalars the reference accumulates step by step (same order, so bitwise equal) for a
    constant schedule without norm penalty: $\sum_t\eta$, $\prod_t(1-\eta\lambda)$ and $a_T$."""
    lr_sum, decay, perp = [], [], []
    heavy = p.config.optimizer == "momentum"
    for e, T in enumerate(steps.tolist()):
        c = p.configs[e]
        eta, lam, mu = c.lr, c.weight_decay, c.momentum
        s, dec, a, ca = 0.0, 1.0, 1.0, 0.0
        for _ in range(T):
            s += eta
            dec *= 1.0 - eta * lam
            if heavy:
                ca = mu * ca + lam * a
                a = a - eta * ca
        lr_sum.append(s)
        decay.append(dec)
        perp.append(a if heavy else dec)
    f64 = dict(dtype=torch.float64)
    return torch.tensor(lr_sum, **f64), torch.tensor(decay, **f64), torch.tensor(perp, **f64)


# ----------------------------------------------------------------------------- the reference loop

def _run_reference(p: _Problem) -> _Outcome:
    """Run :func:`_train_reference` on each member in turn."""
    outs = []
    for e in range(len(p.initial)):
        X = p.X if p.X.ndim == 2 else p.X[e]
        y = p.y if p.y.ndim == 1 else p.y[e]
        outs.append(_train_reference(p.initial.member(e), X, y, p.configs[e]))
    f64 = dict(dtype=torch.float64)
    return _Outcome(
        params=TwoLayerParams.stack([o["params"] for o in outs]),
        steps=torch.tensor([o["steps"] for o in outs], dtype=torch.int64),
        reached=torch.tensor([o["reached"] for o in outs], dtype=torch.bool),
        final_loss=torch.tensor([o["loss"] for o in outs], **f64),
        final_margin=torch.tensor([o["margin"] for o in outs], **f64),
        perp_factor=torch.tensor([o["perp"] for o in outs], **f64),
        history=None if p.config.record_every is None else tuple(o["history"] for o in outs),
        coordinates="full",
        lr_sum=torch.tensor([o["lr_sum"] for o in outs], **f64),
        decay_factor=torch.tensor([o["decay"] for o in outs], **f64),
    )


def _train_reference(params: TwoLayerParams, X: Tensor, y: Tensor, cfg: TrainConfig) -> dict:
    r"""The specification: train one network, one update at a time, exactly as the module docstring says.

    Before each update the full-batch loss and margin are evaluated; training stops at the first iterate
    whose margin reaches ``cfg.target_margin`` or after ``cfg.max_steps`` updates.  The update of each
    trained parameter $\theta$ with gradient $\nabla$ (mini-batch for SGD, divided by $L_t$ for the
    ``"max_margin"`` schedule) is GD/SGD $\theta \leftarrow \theta - \eta_t(\nabla + \lambda\theta)$, heavy ball
    $v \leftarrow \mu v + \nabla + \lambda\theta,\ \theta \leftarrow \theta - \eta_t v$, or Adam; the norm
    penalty adds $\mu_{\text{pen}}(W, b)/\|(W, b)\|_F$ to the gradients of $W$ (and $b$ when trained).
    """
    n = X.shape[0]
    names = list(cfg.trained)
    bs = n if cfg.batch_size is None else cfg.batch_size
    if cfg.optimizer == "sgd" and cfg.batch_size is None:
        bs = 1
    b1, b2 = cfg.betas
    heavy = cfg.optimizer == "momentum"
    max_margin = cfg.schedule == "max_margin"
    lam, pen, mo = cfg.weight_decay, cfg.norm_penalty, cfg.momentum
    state = {k: getattr(params, k).clone() for k in ("W", "b", "u", "c")}
    buf = {k: torch.zeros_like(state[k]) for k in names}
    buf2 = {k: torch.zeros_like(state[k]) for k in names}
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(n, generator=gen)
    pos = 0
    rec: dict[str, list] = {"steps": [], "loss": [], "log_loss": [], "margin": [], "norm_sq": [], "params": []}
    lr_sum, decay = 0.0, 1.0
    a, ca = 1.0, 0.0  # Pi_perp W(t) = a Pi_perp W(0), and a's heavy-ball buffer
    step = 0
    while True:
        cur = _unchecked(**state)
        Z = X @ cur.W.T + cur.b
        H = torch.relu(Z)
        f = H @ cur.u + cur.c
        yf = y * f
        loss_v = float(torch.nn.functional.softplus(-yf).mean())
        margin = float(yf.min())
        reached = cfg.target_margin is not None and margin >= cfg.target_margin
        done = reached or step >= cfg.max_steps
        record = cfg.record_every is not None and (step % cfg.record_every == 0 or done)
        if max_margin or record:
            log_sum = torch.logsumexp(_log_logistic(yf), 0)  # log(n L), finite where L underflows
            log_L = float(log_sum) - math.log(n)
        else:
            log_L = math.nan
        if not math.isfinite(loss_v) or (max_margin and not math.isfinite(log_L)):
            raise FloatingPointError(f"training diverged at step {step} (loss {loss_v}); lower lr")
        if record:
            rec["steps"].append(step)
            rec["loss"].append(loss_v)
            rec["log_loss"].append(log_L)
            rec["margin"].append(margin)
            rec["norm_sq"].append(float(sum((state[k] ** 2).sum() for k in ("W", "b", "u", "c"))))
            if cfg.record_params:
                rec["params"].append(TwoLayerParams(**{k: v.clone() for k, v in state.items()}))
        if done:
            break
        # the gradients of this update
        if max_margin:
            g = -y * torch.exp(torch.nn.functional.logsigmoid(-yf) - log_sum)  # (dL/df) / L, exact for any margin
            grads = _grads(cur, X, Z, H, g)
            eta = cfg.lr / max(1.0, -log_L)
        else:
            if bs == n:
                g = -y * torch.sigmoid(-yf) / n
                grads = _grads(cur, X, Z, H, g)
            else:
                if pos + bs > n:
                    perm = torch.randperm(n, generator=gen)
                    pos = 0
                idx = perm[pos: pos + bs]
                pos += bs
                _, _, grads = _loss_and_grads(cur, X[idx], y[idx])
            eta = cfg.lr
            if callable(cfg.schedule):
                eta = cfg.lr * check_float("TrainConfig.schedule(step, loss)", cfg.schedule(step, loss_v), positive=True)
        pn = 0.0
        if pen > 0:
            nrm = float(torch.sqrt((state["W"] ** 2).sum() + (state["b"] ** 2).sum()))
            if nrm > 0:
                pn = pen / nrm
                grads = dict(grads)
                grads["W"] = grads["W"] + pen * state["W"] / nrm
                if "b" in names:
                    grads["b"] = grads["b"] + pen * state["b"] / nrm
        step += 1
        lr_sum += eta
        decay *= 1.0 - eta * lam
        if heavy:
            ca = mo * ca + (lam + pn) * a
            a = a - eta * ca
        else:
            a = a * (1.0 - eta * (lam + pn))
        for k in names:
            gk = grads[k]
            if lam > 0:
                gk = gk + lam * state[k]
            if cfg.optimizer in ("gd", "sgd"):
                state[k] = state[k] - eta * gk
            elif heavy:
                buf[k] = mo * buf[k] + gk
                state[k] = state[k] - eta * buf[k]
            else:  # adam
                buf[k] = b1 * buf[k] + (1 - b1) * gk
                buf2[k] = b2 * buf2[k] + (1 - b2) * gk * gk
                mhat = buf[k] / (1 - b1**step)
                vhat = buf2[k] / (1 - b2**step)
                state[k] = state[k] - eta * mhat / (vhat.sqrt() + cfg.eps)

    history = None
    if cfg.record_every is not None:
        f64 = dict(dtype=torch.float64)
        history = TrainHistory(
            steps=torch.tensor(rec["steps"], dtype=torch.int64), loss=torch.tensor(rec["loss"], **f64),
            log_loss=torch.tensor(rec["log_loss"], **f64), margin=torch.tensor(rec["margin"], **f64),
            norm_sq=torch.tensor(rec["norm_sq"], **f64),
            params=tuple(rec["params"]) if cfg.record_params else None)
    return dict(params=TwoLayerParams(**state), steps=step, reached=bool(reached), loss=loss_v, margin=margin,
                perp=a if cfg.optimizer != "adam" else math.nan, lr_sum=lr_sum, decay=decay, history=history)
