r"""Training many networks of equal shape at once: the exact, batched sweep engine.

Contract (kept by every implementation): :func:`train_ensemble` gives, for each member ``e``, the same
final parameters as :func:`ortho_lib.train.train` run on member ``e`` alone with the same arguments
(full batch, GD or heavy-ball momentum, optional weight decay), each member stopping at its own first
iterate whose train margin reaches ``target_margin``.  "The same" means equal in exact arithmetic; in
float64 the two computations round differently and agree to about $10^{-13}$ (tested to $10^{-12}$).

Why an exact reduction exists.  With $Z = XW^\top + b$ and $G = (g u^\top)\odot\mathbb 1[Z>0]$ (notation
of :mod:`ortho_lib.train`), the first-layer gradient is $\nabla_W L = G^\top X$: every row is a
combination of the training inputs.  Write $\tilde X = [X, \mathbf 1]$ and $\tilde W = [W, b]$ when the
bias is trained.  Under GD or heavy-ball momentum with weight decay $\lambda$ every iterate therefore has
the form

.. math:: \tilde W(t) = a_t\,\tilde W(0) + A_t\,\tilde X, \qquad A_t \in \mathbb R^{m\times n},

with a scalar $a_t$ ($a_t = \prod_s (1-\eta_s\lambda)$ for GD, a two-term recursion for momentum,
$a_t = 1$ without weight decay).  Three coordinate systems follow (argument ``mode``):

* ``"full"`` — train $W$ in $\mathbb R^{m\times d}$ (the plain path, batched over members).
* ``"subspace"`` — data in $P$ (``sub`` given): with $Q_P$ the ``(d, d-ell)`` basis of $P$ and
  $X = X_P Q_P^\top$, train $W_P = W Q_P$ in $\mathbb R^{m\times(d-\ell)}$ on $X_P$ (so
  $Z = X_P W_P^\top + b$ exactly) and rebuild $W = W_P Q_P^\top + a_T\,\Pi_\perp W(0)$: the frozen-component
  lemma, $\Pi_\perp W(T) = a_T\,\Pi_\perp W(0)$.
* ``"span"`` — the data-span (Gram) coordinates: with the $n\times n$ Gram matrix
  $\tilde K = \tilde X\tilde X^\top$, $Z^\top = a_t Z(0)^\top + A_t \tilde K$.  GD updates
  $A \leftarrow (1-\eta\lambda)A - \eta G^\top$ and, in place,
  $Z^\top \leftarrow (1-\eta\lambda)Z^\top - \eta\, G^\top \tilde K$ (heavy ball recomputes $Z$ from
  $A$ each step).  One $m\times n\times n$ product per step instead of two $m\times n\times d$
  products; $W(T) = a_T W(0) + A_T X$ at the end.  No data assumption is needed: the frozen part is the
  complement of $\mathrm{span}\{x_j\}$, which contains $P^\perp$ when the data lie in $P$.
* ``"auto"`` (default) — whichever of the available modes needs the fewest multiply-adds per step.

Members are stacked into ``(E, m, k)`` tensors and trained together with batched matrix products and a
hand-written forward/backward pass (no autograd); each member's stopping rule is checked before each of
its updates, exactly as in :func:`ortho_lib.train.train`, and a member that has stopped is frozen (its
update is masked) and dropped from the batch once enough members have stopped.  On the CPU the batch is
processed in chunks of members small enough to stay in cache.  Works on CUDA (``device="cuda"`` or
``"auto"``) in float32 or float64.

Two backends.  ``backend="torch"`` is the batched tensor program just described.  ``backend="fused"``
(:mod:`ortho_lib._fused`) runs each member's whole training in one compiled loop on the CPU, in float64,
in ``"full"`` or ``"subspace"`` coordinates: for small networks a torch step is some thirty tiny
operations whose dispatch costs far more than their arithmetic, so this is much faster there (the
book's Figure 2 sweep: 7 us instead of 550 us per network-step).  It also supports what only long
single runs need: the norm penalty $\mu\|(W,b)\|_F$, a recorded history, per-member budgets (the
last also on the torch backend).  ``backend="auto"`` takes the fused kernel for small float64 CPU
problems (and whenever a fused-only option is asked for), the torch program otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from . import _fused
from ._checks import check_choice, check_float, check_int, check_tensor
from .data import check_on_subspace
from .network import TwoLayerParams
from .subspaces import Subspace

if TYPE_CHECKING:
    from .train import TrainResult

MODES = ("auto", "span", "subspace", "full")
OPTIMIZERS = ("gd", "momentum")
BACKENDS = ("auto", "torch", "fused")

# backend="auto" takes the fused CPU kernel when one member-step costs at most this many multiply-adds
# per product (m * n * k): below it a PyTorch step is dominated by dispatching its ~30 small operations.
# Measured crossover on a 2-core machine: about 2.5e5 for batches of 64 members, ~6e5 for 8.
_FUSED_MAX_WORK = 200_000

# CPU: members per chunk chosen so that one (members, m, n) work array is about this many bytes,
# small enough that the few arrays touched by one step of a chunk stay in the shared L3 cache.
_CHUNK_BYTES = 2 * 2**20
# Drop stopped members from the batch once at most this fraction of the working batch is still training.
_COMPACT_FRACTION = 0.75
# On CUDA, synchronise with the host (to test "all members stopped") every this many iterations.
_CUDA_SYNC_EVERY = 16

PerMember = Union[float, int, Sequence[float], Tensor]


@dataclass
class EnsembleResult:
    """Final state of an ensemble of ``E`` networks.

    Attributes:
        W: ``(E, m, d)``; b, u: ``(E, m)``; c: ``(E,)``.
        steps: ``(E,)`` updates made by each member.
        reached: ``(E,)`` bool, whether each member reached the target margin.
        final_margin, final_loss: ``(E,)``.
        decay_factor: ``(E,)`` $\\prod_t(1-\\eta\\lambda)$ over each member's updates (as ``TrainResult``).
        lr_sum: ``(E,)`` $\\sum_t \\eta$ over each member's updates.
        perp_factor: ``(E,)`` the exact factor $a_T$ with $\\Pi_\\perp W(T) = a_T\\,\\Pi_\\perp W(0)$
            (equal to ``decay_factor`` for GD; the heavy-ball recursion for momentum).
        mode: the coordinates used (``"span"``, ``"subspace"``, ``"full"``; ``"loop"`` for the old loop).
        initial: the ``E`` initial parameter sets; target_margin: ``(E,)`` targets or None;
            optimizer, max_steps (one budget per member): as passed to :func:`train_ensemble`.
        history_steps, loss_history, margin_history: with ``record_every``, one ``(r_e,)`` tensor per member,
            recorded as :func:`ortho_lib.train.train` records them; else None.
    """

    W: Tensor
    b: Tensor
    u: Tensor
    c: Tensor
    steps: Tensor
    reached: Tensor
    final_margin: Tensor
    final_loss: Tensor
    decay_factor: Optional[Tensor] = None
    lr_sum: Optional[Tensor] = None
    perp_factor: Optional[Tensor] = None
    mode: str = "loop"
    initial: Optional[list] = None
    target_margin: Optional[Tensor] = None
    optimizer: str = "gd"
    max_steps: Optional[list] = None
    history_steps: Optional[list] = None
    loss_history: Optional[list] = None
    margin_history: Optional[list] = None

    def __len__(self) -> int:
        return int(self.W.shape[0])

    def params(self, e: int) -> TwoLayerParams:
        """The parameters of member ``e``."""
        return TwoLayerParams(self.W[e], self.b[e], self.u[e], self.c[e])

    def train_result(self, e: int) -> "TrainResult":
        """Member ``e`` as the :class:`ortho_lib.train.TrainResult` that ``train()`` would have returned.

        Without ``record_every`` the engine records no history, and ``history_steps``/``loss_history``/
        ``margin_history`` hold the final iterate only.
        """
        from .train import TrainResult

        e = check_int("e", e, low=0, high=len(self) - 1)
        if self.initial is None:
            raise ValueError("this EnsembleResult carries no initial parameters (built by hand?)")
        tgt = None if self.target_margin is None else float(self.target_margin[e])
        if self.history_steps is not None:
            hist = (self.history_steps[e].clone(), self.loss_history[e].clone(), self.margin_history[e].clone())
        else:
            hist = (self.steps[e : e + 1].clone(), self.final_loss[e : e + 1].clone(),
                    self.final_margin[e : e + 1].clone())
        return TrainResult(
            params=self.params(e), initial=self.initial[e].clone(), steps=int(self.steps[e]),
            reached=bool(self.reached[e]), target_margin=tgt, final_loss=float(self.final_loss[e]),
            final_margin=float(self.final_margin[e]), history_steps=hist[0], loss_history=hist[1],
            margin_history=hist[2], lr_sum=float(self.lr_sum[e]) if self.lr_sum is not None else 0.0,
            decay_factor=float(self.decay_factor[e]) if self.decay_factor is not None else 1.0,
            optimizer=self.optimizer, max_steps=int(self.max_steps[e]) if self.max_steps is not None else 0)


def stack_params(members: Sequence[TwoLayerParams]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stack equal-shape parameters into ``(W (E,m,d), b (E,m), u (E,m), c (E,))``."""
    if len(members) == 0:
        raise ValueError("members must hold at least one TwoLayerParams")
    for i, p in enumerate(members):
        if not isinstance(p, TwoLayerParams):
            raise TypeError(f"members[{i}] must be TwoLayerParams, got {type(p).__name__}")
    shapes = {tuple(p.W.shape) for p in members}
    if len(shapes) != 1:
        raise ValueError(f"members must all have the same (m, d), got {sorted(shapes)}")
    m = members[0].W.shape[0]
    for i, p in enumerate(members):
        if p.W.ndim != 2 or tuple(p.b.shape) != (m,) or tuple(p.u.shape) != (m,) or p.c.ndim != 0:
            raise ValueError(f"members[{i}] must have W (m, d), b (m,), u (m,) and a scalar c with m = {m}, got "
                             f"{tuple(p.W.shape)}, {tuple(p.b.shape)}, {tuple(p.u.shape)}, {tuple(p.c.shape)}")
    return (torch.stack([p.W for p in members]), torch.stack([p.b for p in members]),
            torch.stack([p.u for p in members]), torch.stack([p.c for p in members]))


# ----------------------------------------------------------------------------------------- checks

def _per_member(name: str, value: object, E: int, check: Callable[[str, object], object]) -> list:
    """A scalar or one value per member, each checked by ``check(name, v)``, as a list of ``E`` values."""
    if isinstance(value, Tensor):
        value = value.item() if value.ndim == 0 else value.detach().cpu().reshape(-1).tolist()
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a number or a sequence of E = {E} numbers, got {value!r}")
    if not hasattr(value, "__len__"):
        return [check(name, value)] * E
    if len(value) != E:
        raise ValueError(f"{name} must hold one value per member (E = {E}), got {len(value)}")
    return [check(f"{name}[{i}]", v) for i, v in enumerate(value)]


def _floats(**limits: object) -> Callable[[str, object], float]:
    return lambda name, v: check_float(name, v, **limits)


def _check_finite(name: str, x: Tensor) -> Tensor:
    """Raise naming ``name`` if ``x`` holds nan/inf (one pass: a finite sum means finite entries)."""
    if not bool(torch.isfinite(x.sum())):
        check_tensor(name, x)  # the precise check (raises unless the sum merely overflowed)
    return x


def _check_labels2(y: object, E: int, n: int) -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor of +-1 labels, got {type(y).__name__}")
    if y.ndim == 1:
        y = y.expand(E, *y.shape)
    elif y.ndim != 2:
        raise ValueError(f"y must have shape (n,) or (E, n), got {tuple(y.shape)}")
    if y.shape != (E, n):
        raise ValueError(f"y must have shape ({n},) or ({E}, {n}) (one label per point), got {tuple(y.shape)}")
    if y.numel() and not bool(((y == 1) | (y == -1)).all()):
        bad = y[(y != 1) & (y != -1)][:3].tolist()
        raise ValueError(f"y must contain only +1 and -1, found {bad}")
    return y


def _resolve_device(device: Optional[Union[str, torch.device]], default: torch.device) -> torch.device:
    if device is None:
        return default
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu', 'cuda', 'auto' or a torch.device, got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA was requested but torch.cuda.is_available() is False")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a CPU or CUDA device, got {device!r}")
    return dev


def _check_on_subspace(sub: Subspace, X: Tensor) -> None:
    """Raise ``ValueError`` naming ``X`` if some input is off $P$ (relative tolerance by precision)."""
    tol = 1e-9 if X.dtype == torch.float64 else 1e-5
    try:
        check_on_subspace(sub, X.reshape(-1, X.shape[-1]).to("cpu", sub.basis.dtype), tol=tol)
    except ValueError as err:
        raise ValueError(f"{err} — drop sub (mode 'span' or 'full' needs no subspace)") from None


# ------------------------------------------------------------------------------------------ helpers

class _Stats:
    """Optional record of the matrix products the engine performs (for FLOP counts)."""

    def __init__(self, target: Optional[dict]):
        self.d = target
        if target is not None:
            target.setdefault("matmuls", {})
            target.setdefault("iterations", 0)

    def mm(self, batch: int, M: int, K: int, N: int) -> None:
        if self.d is not None:
            key = (int(batch), int(M), int(K), int(N))
            self.d["matmuls"][key] = self.d["matmuls"].get(key, 0) + 1


def _mm_into(out: Tensor, base: Optional[Tensor], A: Tensor, B: Tensor, stats: _Stats) -> Tensor:
    r"""``out = base + A @ B`` (``base`` None, ``out`` itself, or broadcastable ``(e, r, n)``/``(e, r, 1)``).

    ``A`` is ``(e, r, k)``; ``B`` is ``(k, n)`` shared by all members (one flat ``(e r) x k x n`` product)
    or ``(e, k, n)`` (a batched product).
    """
    e, r, k = A.shape
    n = B.shape[-1]
    if B.ndim == 2:
        o2 = out.view(e * r, n)
        A2 = A.reshape(e * r, k)
        if base is None:
            torch.mm(A2, B, out=o2)
        elif base is out:
            o2.addmm_(A2, B)
        else:
            torch.addmm(base.reshape(e * r, base.shape[-1]), A2, B, out=o2)
        stats.mm(1, e * r, k, n)
    else:
        if base is None:
            torch.bmm(A, B, out=out)
        elif base is out:
            out.baddbmm_(A, B)
        else:
            torch.baddbmm(base.expand(e, r, n), A, B, out=out)
        stats.mm(e, r, k, n)
    return out


def _host_factors(optimizer: str, steps: Tensor, lrs: list, wds: list, mus: list) -> dict[str, Tensor]:
    r"""Per member, the scalars ``train()`` accumulates step by step (same order, so bitwise equal):
    ``decay_factor`` $\prod_t(1-\eta\lambda)$, ``lr_sum`` $\sum_t\eta$, and ``perp_factor`` $a_T$ with
    $\Pi_\perp W(T) = a_T\,\Pi_\perp W(0)$ under weight decay alone (the heavy-ball recursion for momentum)."""
    out: dict[str, list] = {"decay_factor": [], "lr_sum": [], "perp_factor": []}
    for e, T in enumerate(steps.tolist()):
        eta, lam, mu = lrs[e], wds[e], mus[e]
        decay, lr_sum = 1.0, 0.0
        a, c = 1.0, 0.0
        for _ in range(T):
            lr_sum += eta
            decay *= 1.0 - eta * lam
            if optimizer == "momentum":
                c = mu * c + lam * a
                a = a - eta * c
        out["decay_factor"].append(decay)
        out["lr_sum"].append(lr_sum)
        out["perp_factor"].append(decay if optimizer == "gd" else a)
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


# --------------------------------------------------------------------------------------- the engine

def train_ensemble(
    members: Sequence[TwoLayerParams],
    X: Tensor,
    y: Tensor,
    *,
    lr: PerMember,
    max_steps: Union[int, Sequence[int], Tensor],
    target_margin: Optional[PerMember] = None,
    optimizer: str = "gd",
    momentum: PerMember = 0.9,
    weight_decay: PerMember = 0.0,
    norm_penalty: PerMember = 0.0,
    record_every: Optional[int] = None,
    train_bias: bool = True,
    train_second_layer: bool = False,
    train_output_bias: bool = False,
    sub: Optional[Subspace] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    mode: str = "auto",
    backend: str = "auto",
    stats: Optional[dict] = None,
) -> EnsembleResult:
    r"""Train ``E`` networks of equal shape, full batch, each until its own margin target or the budget.

    Each member follows exactly the iteration of :func:`ortho_lib.train.train` (logistic loss, explicit
    gradients, margin $\min_j y_jN(x_j)$ checked before every update, GD
    $\theta \leftarrow \theta - \eta(\nabla L + \lambda\theta)$ or heavy ball
    $v \leftarrow \mu v + \nabla L + \lambda\theta,\ \theta \leftarrow \theta - \eta v$) in the
    coordinates chosen by ``mode`` (see the module docstring).

    Args:
        members: ``E`` initial parameter sets of equal ``(m, d)``.
        X: ``(n, d)`` shared inputs, or ``(E, n, d)`` one training set per member.
        y: ``(n,)`` shared labels, or ``(E, n)``.
        lr, momentum, weight_decay: as in :func:`ortho_lib.train.train`; a number, or one value per member.
        max_steps: budget of updates; an int, or one per member.
        norm_penalty: $\mu$ of the penalty $\mu\|(W, b)\|_F$ as in :func:`ortho_lib.train.train` (a number
            or one per member); needs the fused backend.
        record_every: record (step, loss, margin) every this many steps and at the last, as ``train()``
            does (``EnsembleResult.history_*``); needs the fused backend.  None: no history.
        target_margin: stop once the margin reaches it; None, a number, or one value per member.
        train_bias, train_second_layer, train_output_bias: which of $b$, $u$, $c$ are trained ($W$ always is).
        optimizer: ``"gd"`` or ``"momentum"``.
        sub: the data subspace $P$, if the inputs lie in it (checked: inputs off $P$ raise ``ValueError``);
            enables ``mode="subspace"``.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (CUDA when available) or None (the members' device).
        dtype: ``torch.float32`` or ``torch.float64`` (default: the members' dtype).
        mode: ``"auto"``, ``"span"``, ``"subspace"`` or ``"full"``.
        backend: ``"torch"`` (batched tensor programs, CPU or CUDA), ``"fused"`` (one compiled loop per
            member on the CPU, float64, modes ``"full"``/``"subspace"``: fastest for small networks, see
            :mod:`ortho_lib._fused`) or ``"auto"`` (fused for small float64 CPU problems, else torch).
        stats: optional dict, filled with ``mode``, ``backend``, ``iterations``, ``chunk_members`` and
            ``matmuls`` (a count per matrix-product shape ``(batch, M, K, N)``, for FLOP counts; the fused
            kernel records the batched products a tensor program would make for the same iterations).
    Returns:
        :class:`EnsembleResult`; parameters on the members' device in the training dtype.
    """
    W0, b0, u0, c0 = stack_params(members)
    for name, t in (("W", W0), ("b", b0), ("u", u0), ("c", c0)):
        _check_finite(f"members[*].{name}", t)
    E, m, d = W0.shape
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("mode", mode, MODES)
    check_choice("backend", backend, BACKENDS)
    if dtype is None:
        dtype = W0.dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    home = W0.device
    dev = _resolve_device(device, home)

    X = _check_finite("X", check_tensor("X", X, ndim=(2, 3), finite=False))
    if X.shape[-1] != d:
        raise ValueError(f"X must have last dimension d = {d} to match the members, got shape {tuple(X.shape)}")
    if X.ndim == 3 and X.shape[0] != E:
        raise ValueError(f"X must have a leading dimension E = {E} (one training set per member), got {X.shape[0]}")
    if X.ndim == 3 and X.stride(0) == 0:
        X = X[0]  # an expanded shared training set
    shared = X.ndim == 2
    n = X.shape[-2]
    if n < 1:
        raise ValueError("X must hold at least one training point")
    y = _check_labels2(y, E, n)

    budgets = _per_member("max_steps", max_steps, E, lambda name, v: check_int(name, v, low=0))
    max_steps = max(budgets)
    pens = _per_member("norm_penalty", norm_penalty, E, _floats(nonnegative=True))
    if record_every is not None:
        record_every = check_int("record_every", record_every, low=1)
    lrs = _per_member("lr", lr, E, _floats(positive=True))
    wds = _per_member("weight_decay", weight_decay, E, _floats(nonnegative=True))
    mus = _per_member("momentum", momentum, E, _floats(nonnegative=True, below=1.0))
    targets = None if target_margin is None else _per_member("target_margin", target_margin, E, _floats())
    for flag, value in (("train_bias", train_bias), ("train_second_layer", train_second_layer),
                        ("train_output_bias", train_output_bias)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be bool, got {type(value).__name__}")

    if sub is not None:
        if not isinstance(sub, Subspace):
            raise TypeError(f"sub must be a Subspace, got {type(sub).__name__}")
        if sub.d != d:
            raise ValueError(f"sub must live in R^d with d = {d} (the members' input dimension), got d = {sub.d}")
        _check_on_subspace(sub, X)
    if mode == "subspace" and sub is None:
        raise ValueError("mode='subspace' needs sub (the data subspace P)")

    k_full = d
    k_sub = sub.dim if sub is not None else None
    cost = {"full": 2 * k_full, "span": n}
    if k_sub is not None:
        cost["subspace"] = 2 * k_sub
    chosen = min(cost, key=lambda k: (cost[k], ("span", "subspace", "full").index(k))) if mode == "auto" else mode

    # ---------------------------------------------------------------- the fused CPU kernel
    fused_only = [name for name, used in (("norm_penalty", any(v > 0 for v in pens)),
                                          ("record_every", record_every is not None)) if used]
    fused_ok = dev.type == "cpu" and dtype == torch.float64 and mode != "span" and _fused.available()
    if fused_only and (backend == "torch" or not fused_ok):
        raise ValueError(f"{' and '.join(fused_only)} need backend='fused' (CPU, float64, mode 'full' or "
                         f"'subspace', numba installed); got backend={backend!r}, device {dev}, dtype {dtype}, "
                         f"mode {mode!r}")
    if backend == "fused":
        if not _fused.available():
            raise ValueError("backend='fused' needs numba (pip install numba); use backend='torch'")
        if dev.type != "cpu":
            raise ValueError(f"backend='fused' runs on the CPU, got device {dev}; use backend='torch'")
        if dtype != torch.float64:
            raise ValueError(f"backend='fused' trains in float64, got dtype {dtype}; use backend='torch'")
        if mode == "span":
            raise ValueError("backend='fused' trains in 'full' or 'subspace' coordinates, not mode='span'")
    fused_mode = chosen if mode != "auto" else ("subspace" if k_sub is not None and k_sub < k_full else "full")
    use_fused = backend == "fused" or (backend == "auto" and fused_ok and (
        bool(fused_only) or m * n * (k_sub if fused_mode == "subspace" else k_full) <= _FUSED_MAX_WORK))
    if use_fused:
        return _train_fused(W0, b0, u0, c0, X, y, lrs, wds, mus, pens, targets, budgets, optimizer, train_bias,
                            train_second_layer, train_output_bias, sub if fused_mode == "subspace" else None,
                            record_every, stats, _meta(members, targets, optimizer, budgets))

    # ---------------------------------------------------------------- move everything to (dev, dtype)
    to = dict(device=dev, dtype=dtype)
    W0d, b0d, u0d, c0d = W0.to(**to), b0.to(**to), u0.to(**to), c0.to(**to)
    Xd = X.to(**to)
    yd = y.to(**to)
    eta = torch.tensor(lrs, **to)
    lam = torch.tensor(wds, **to)
    mu = torch.tensor(mus, **to)
    tgt = None if targets is None else torch.tensor(targets, **to)
    any_wd = any(v > 0 for v in wds)
    st = _Stats(stats)

    # Per-member state, one leading axis of size E_work (the members still in the batch).
    S: dict[str, Tensor] = {}
    mats: dict[str, Tensor] = {}  # shared data matrices (no member axis) or per-member with axis
    if chosen == "span":
        XT = Xd.transpose(-1, -2)
        K = Xd @ XT  # (n, n) or (E, n, n): the Gram matrix; + 1 for the bias coordinate when b is trained
        if train_bias:
            K = K + 1.0
        Zw0 = torch.empty(E, m, n, **to)
        _mm_into(Zw0, b0d.unsqueeze(-1) if train_bias else None, W0d, XT, st)  # Z(0)^T = W(0) X^T (+ b(0))
        if not train_bias:
            S["zfix"] = b0d.unsqueeze(-1).clone()
        if optimizer == "gd":
            # GD tracks Z itself: Z <- fac (Z - zfix) + zfix + (G^T diag) K, updated in place each step
            S["Z"] = Zw0 if train_bias else Zw0.add_(S["zfix"])
        else:
            # momentum recomputes Z = a Z_W(0) + zfix + A K each step from the coefficients
            S["Zw0"] = Zw0 if (train_bias or any_wd) else Zw0 + S["zfix"]
        S["A"] = torch.zeros(E, m, n, **to)
        if optimizer == "momentum":
            S["B"] = torch.zeros(E, m, n, **to)
        mats["K"] = K
    else:
        if chosen == "subspace":
            Qp = sub.basis.to(**to)
            F = Xd @ Qp  # (n, k) or (E, n, k): the coordinates X_P of the inputs in P
            Wc = W0d @ Qp
            S["Wperp0"] = W0d - Wc @ Qp.T  # Pi_perp W(0)
            st.mm(1, E * m, d, Qp.shape[1])
            st.mm(1, E * m, Qp.shape[1], d)
            mats["Qp"] = Qp
        else:
            F = Xd
            Wc = W0d.clone()
        mats["F"] = F
        mats["FT"] = F.transpose(-1, -2)
        S["Wc"] = Wc
        S["b"] = b0d.clone()
        if optimizer == "momentum":
            S["bW"] = torch.zeros_like(Wc)
            S["bb"] = torch.zeros_like(S["b"])
    S["u"] = u0d.clone()
    if optimizer == "momentum" and train_second_layer:
        S["bu"] = torch.zeros_like(S["u"])
    S["c"] = c0d.clone()
    if optimizer == "momentum" and train_output_bias:
        S["bc"] = torch.zeros_like(S["c"])
    S["a"] = torch.ones(E, **to)   # coefficient of the initial weights (the exact perp factor)
    S["ca"] = torch.zeros(E, **to)  # its momentum-buffer coefficient
    S["eta"], S["lam"], S["mu"] = eta, lam, mu
    S["budget"] = torch.tensor(budgets, dtype=torch.long, device=dev)
    if tgt is not None:
        S["tgt"] = tgt
    if not shared:
        S["Xmat"] = mats.pop("K") if chosen == "span" else mats["F"]
        if chosen != "span":
            mats.pop("F")
            S["XmatT"] = mats.pop("FT")
    S["y"] = yd
    S["idx"] = torch.arange(E, device=dev)
    S["active"] = torch.ones(E, dtype=torch.bool, device=dev)
    S["fmargin"] = torch.full((E,), float("nan"), **to)
    S["floss"] = torch.full((E,), float("nan"), **to)
    S["reached"] = torch.zeros(E, dtype=torch.bool, device=dev)
    S["steps"] = torch.zeros(E, dtype=torch.long, device=dev)
    S["bad"] = torch.zeros(E, dtype=torch.bool, device=dev)

    width = n if chosen == "span" else max(n, S["Wc"].shape[-1])
    itemsize = torch.finfo(dtype).bits // 8
    chunk = E if dev.type == "cuda" else max(1, _CHUNK_BYTES // max(1, m * width * itemsize))
    if stats is not None:
        stats["mode"] = chosen
        stats["backend"] = "torch"
        stats["chunk_members"] = int(min(chunk, E))

    final: dict[str, Tensor] = {key: S[key].clone() for key in _OUT_KEYS[chosen] + _BOOK_KEYS if key in S}
    # work buffers for one chunk (GD in span coordinates updates its state Z in place: no Z buffer)
    Zbuf = torch.empty(0 if (chosen == "span" and optimizer == "gd") else min(chunk, E), m, n, **to)
    Hbuf = torch.empty(min(chunk, E), m, n, **to)
    Dbuf = torch.empty(min(chunk, E), m, n, **to)
    Kbuf = torch.empty(min(chunk, E) if (chosen == "span" and optimizer == "gd") else 0, n, n, **to)

    t = 0
    while True:
        Ew = S["idx"].shape[0]
        last = t >= max_steps  # every budget is spent: evaluate, do not update
        YF = torch.empty(Ew, n, **to)  # y_j N(x_j) of every member at its current iterate
        for s0 in range(0, Ew, chunk):
            s1 = min(Ew, s0 + chunk)
            _iteration(S, mats, slice(s0, s1), t, last, chosen, optimizer, train_bias, train_second_layer,
                       train_output_bias, any_wd, shared, YF, Zbuf[: s1 - s0], Hbuf[: s1 - s0], Dbuf[: s1 - s0],
                       Kbuf[: s1 - s0], st)
        _bookkeeping(S, YF, t)
        t += 1
        if stats is not None:
            stats["iterations"] += 1
        if dev.type == "cuda" and t % _CUDA_SYNC_EVERY and t <= max_steps:
            continue
        if bool(S["bad"].any()):
            e = int(S["idx"][S["bad"]][0])
            raise FloatingPointError(f"training diverged: member {e} has a non-finite loss; lower lr")
        n_act = int(S["active"].sum())
        if n_act == 0:
            break
        if n_act <= _COMPACT_FRACTION * Ew:
            _compact(S, final)
    _store(S, final)

    # ------------------------------------------------------------------------- rebuild full weights
    if chosen == "span":
        # W(T) = a_T W(0) + A_T X and b(T) = a_T b(0) + A_T 1 (b(0) when the bias is not trained)
        W = torch.empty(E, m, d, **to)
        base = W0d if not any_wd else final["a"].view(E, 1, 1) * W0d
        _mm_into(W, base, final["A"], Xd, st)
        b = final["a"].unsqueeze(-1) * b0d + final["A"].sum(-1) if train_bias else b0d
    elif chosen == "subspace":
        W = torch.empty(E, m, d, **to)
        base = final["a"].view(E, 1, 1) * final["Wperp0"]
        _mm_into(W, base, final["Wc"], mats["Qp"].T.contiguous(), st)
        b = final["b"]
    else:
        W = final["Wc"]
        b = final["b"]
    steps = final["steps"].cpu()
    return EnsembleResult(
        W=W.to(home), b=b.to(home), u=final["u"].to(home), c=final["c"].to(home),
        steps=steps,
        reached=final["reached"].cpu(),
        final_margin=final["fmargin"].to(device="cpu", dtype=torch.float64),
        final_loss=final["floss"].to(device="cpu", dtype=torch.float64),
        **_host_factors(optimizer, steps, lrs, wds, mus),
        mode=chosen, **_meta(members, targets, optimizer, budgets),
    )


def _meta(members: Sequence[TwoLayerParams], targets: Optional[list], optimizer: str, max_steps: list) -> dict:
    """The run's description stored in :class:`EnsembleResult` (for :meth:`EnsembleResult.train_result`)."""
    tgt = None if targets is None else torch.tensor(targets, dtype=torch.float64)
    return dict(initial=list(members), target_margin=tgt, optimizer=optimizer, max_steps=max_steps)


# State kept at the end, per mode, and the book-keeping of the stopping rule.
_OUT_KEYS = {"span": ["A", "a", "u", "c"], "subspace": ["Wc", "b", "u", "c", "a", "Wperp0"],
             "full": ["Wc", "b", "u", "c", "a"]}
_BOOK_KEYS = ["fmargin", "floss", "reached", "steps"]


def _store(S: dict[str, Tensor], final: dict[str, Tensor]) -> None:
    """Write the working members' state back into the full-size result buffers."""
    idx = S["idx"]
    for key in final:
        final[key][idx] = S[key]


def _compact(S: dict[str, Tensor], final: dict[str, Tensor]) -> None:
    """Store every working member, then keep only the active ones in the batch (exact: a gather)."""
    _store(S, final)
    keep = S["active"].nonzero().flatten()
    for key, v in list(S.items()):
        S[key] = v.index_select(0, keep)


def _bookkeeping(S: dict[str, Tensor], YF: Tensor, t: int) -> None:
    """The stopping rule for the whole batch, after an iteration: record the members that stop now.

    A member stops at its first evaluated iterate whose margin reaches its target (or when the budget is
    spent); it was not updated in this iteration (see :func:`_iteration`), so its state is that iterate.
    """
    act_prev = S["active"]
    margin = YF.amin(dim=1)
    loss = torch.nn.functional.softplus(-YF).mean(dim=1)  # the logistic loss, as in train()
    reached = (margin >= S["tgt"]) if "tgt" in S else torch.zeros_like(act_prev)
    done = reached | (S["budget"] <= t)  # this iterate is the member's first reaching its target, or its last
    newly = act_prev & done
    S["fmargin"] = torch.where(newly, margin, S["fmargin"])
    S["floss"] = torch.where(newly, loss, S["floss"])
    S["reached"] = S["reached"] | (newly & reached)
    S["bad"] = S["bad"] | (act_prev & ~torch.isfinite(loss))
    act = act_prev & ~done
    S["active"] = act
    S["steps"] = S["steps"] + act.to(torch.long)


def _iteration(S: dict[str, Tensor], mats: dict[str, Tensor], sl: slice, t: int, last: bool, mode: str,
               optimizer: str, train_bias: bool, train_u: bool, train_c: bool, any_wd: bool, shared: bool,
               YF: Tensor, Z: Tensor, H: Tensor, D: Tensor, Kg: Tensor, st: _Stats) -> None:
    r"""One iteration on a chunk of members: evaluate the margin and, for members still training, update.

    The margin $\min_j y_jN(x_j)$ is evaluated before the update, exactly as in ``train()``: a member whose
    margin reaches its target now gets no update (its step is masked) and stops at this iterate.
    """
    u = S["u"][sl]
    ec, m = u.shape
    # ---------------------------------------------------------------- forward: Z (ec, m, n), H = relu(Z)
    if mode == "span":
        K = mats["K"] if shared else S["Xmat"][sl]
        if optimizer == "gd":
            Z = S["Z"][sl]  # the state itself (updated in place below)
        else:
            if any_wd:
                base = S["Zw0"][sl] * S["a"][sl].view(ec, 1, 1)
                if "zfix" in S:
                    base = base + S["zfix"][sl]
            else:
                base = S["Zw0"][sl]
            _mm_into(Z, base, S["A"][sl], K, st)
    else:
        FT = mats["FT"] if shared else S["XmatT"][sl]
        _mm_into(Z, S["b"][sl].unsqueeze(-1), S["Wc"][sl], FT, st)
    torch.clamp_min(Z, 0.0, out=H)
    f = torch.bmm(u.unsqueeze(1), H).squeeze(1) + S["c"][sl].unsqueeze(-1)  # N(x_j) = u^T relu(z_j) + c
    st.mm(ec, 1, m, H.shape[-1])
    y = S["y"][sl]
    n = y.shape[-1]
    yf = y * f
    YF[sl] = yf
    if last:
        return
    # ---------------------------------------------------------------- the stopping rule (before the update)
    act = S["active"][sl] & (S["budget"][sl] > t)
    if "tgt" in S:
        act = act & ~(yf.amin(dim=1) >= S["tgt"][sl])
    # ---------------------------------------------------------------- backward and update
    g = -y * torch.sigmoid(-yf) / n  # dL/df_j, as in ortho_lib.train.loss_and_grads
    actf = act.to(Z.dtype)
    eta = S["eta"][sl] * actf  # zero for members that have stopped: their update is masked
    lam = S["lam"][sl]
    torch.sign(H, out=D)
    D.mul_(u.unsqueeze(-1))  # D_ij = u_i 1[z_ij > 0]
    grad_u = torch.bmm(H, g.unsqueeze(-1)).squeeze(-1) if train_u else None  # H^T g
    if train_u:
        st.mm(ec, m, n, 1)
    if optimizer == "gd":
        fac = 1.0 - eta * lam
        if mode == "span":
            A = S["A"][sl]
            coef = -eta.unsqueeze(-1) * g  # (ec, n): -eta g_j, zero for stopped members
            if any_wd:
                A.mul_(fac.view(ec, 1, 1))
                if "zfix" in S:
                    Z.sub_(S["zfix"][sl]).mul_(fac.view(ec, 1, 1)).add_(S["zfix"][sl])
                else:
                    Z.mul_(fac.view(ec, 1, 1))
            A.addcmul_(D, coef.unsqueeze(1))  # A <- (1 - eta lam) A - eta G^T
            # Z^T <- (1 - eta lam) Z^T - eta G^T K = ... + D diag(-eta g) K  (one batched product)
            torch.mul(coef.unsqueeze(-1), K, out=Kg)  # (ec, n, n): row j of K scaled by -eta g_j
            _mm_into(Z, Z, D, Kg, st)
        else:
            Wc, b = S["Wc"][sl], S["b"][sl]
            D.mul_((-eta.unsqueeze(-1) * g).unsqueeze(1))  # -eta G^T, shape (ec, m, n)
            if any_wd:
                Wc.mul_(fac.view(ec, 1, 1))
            _mm_into(Wc, Wc, D, mats["F"] if shared else S["Xmat"][sl], st)
            if train_bias:
                if any_wd:
                    b.mul_(fac.unsqueeze(-1))
                b.add_(D.sum(-1))
        if any_wd:
            S["a"][sl] = S["a"][sl] * fac
        if train_u:
            S["u"][sl] = u * fac.unsqueeze(-1) - eta.unsqueeze(-1) * grad_u
        if train_c:
            S["c"][sl] = S["c"][sl] * fac - eta * g.sum(-1)
    else:  # heavy ball: v <- mu v + grad + lam theta; theta <- theta - eta v
        mu = S["mu"][sl]
        if mode == "span":
            A, B = S["A"][sl], S["B"][sl]
            B.mul_(mu.view(ec, 1, 1)).addcmul_(D, g.unsqueeze(1))
            if any_wd:
                B.addcmul_(A, lam.view(ec, 1, 1))
            A.addcmul_(B, -eta.view(ec, 1, 1))
        else:
            Wc, b, bW, bb = S["Wc"][sl], S["b"][sl], S["bW"][sl], S["bb"][sl]
            D.mul_(g.unsqueeze(1))  # G^T
            bW.mul_(mu.view(ec, 1, 1))
            _mm_into(bW, bW, D, mats["F"] if shared else S["Xmat"][sl], st)
            if any_wd:
                bW.addcmul_(Wc, lam.view(ec, 1, 1))
            Wc.addcmul_(bW, -eta.view(ec, 1, 1))
            if train_bias:
                bb.mul_(mu.unsqueeze(-1)).add_(D.sum(-1))
                if any_wd:
                    bb.addcmul_(b, lam.unsqueeze(-1))
                b.addcmul_(bb, -eta.unsqueeze(-1))
        if any_wd:
            ca = mu * S["ca"][sl] + lam * S["a"][sl]
            S["ca"][sl] = ca
            S["a"][sl] = S["a"][sl] - eta * ca
        if train_u:
            bu = S["bu"][sl]
            bu.mul_(mu.unsqueeze(-1)).add_(grad_u)
            if any_wd:
                bu.addcmul_(u, lam.unsqueeze(-1))
            S["u"][sl] = u - eta.unsqueeze(-1) * bu
        if train_c:
            cc = S["c"][sl]
            bc = mu * S["bc"][sl] + g.sum(-1)
            if any_wd:
                bc = bc + lam * cc
            S["bc"][sl] = bc
            S["c"][sl] = cc - eta * bc


# ------------------------------------------------------------------------------------ fused backend

def _train_fused(W0: Tensor, b0: Tensor, u0: Tensor, c0: Tensor, X: Tensor, y: Tensor, lrs: list,
                 wds: list, mus: list, pens: list, targets: Optional[list], budgets: list, optimizer: str,
                 train_bias: bool, train_u: bool, train_c: bool, sub: Optional[Subspace],
                 record_every: Optional[int], stats: Optional[dict], meta: dict) -> EnsembleResult:
    r"""Train with the compiled kernel of :mod:`ortho_lib._fused` (CPU, float64).

    In ``"subspace"`` coordinates (``sub`` given) the kernel trains $W_P = WQ_P$ on the features
    $X_P = XQ_P$ and the result is rebuilt as $W = W_PQ_P^\top + a_T\,\Pi_\perp W(0)$, with $a_T$ tracked by
    the kernel (weight decay and norm penalty act on $\Pi_\perp W$ by a scalar factor per step; the norm
    uses $\|W\|_F^2 = \|W_P\|_F^2 + a^2\|\Pi_\perp W(0)\|_F^2$); otherwise it trains $W$ on $X$.  Members
    are split over ``torch.get_num_threads()`` Python threads (the kernel releases the GIL; members are
    independent, so the result does not depend on the split).
    """
    from concurrent.futures import ThreadPoolExecutor

    E, m, d = W0.shape
    home = W0.device
    f64 = dict(device="cpu", dtype=torch.float64)
    W0c, Xc = W0.to(**f64), X.to(**f64)
    if sub is not None:
        Qp = sub.basis.to(**f64)
        F = Xc @ Qp
        Wc = W0c @ Qp
        Wperp0 = W0c - Wc @ Qp.T
        perp_sq = (Wperp0 ** 2).sum(dim=(1, 2)).numpy()
    else:
        F, Wc = Xc, W0c.clone()
        perp_sq = np.zeros(E)
    FT = F.transpose(-1, -2).reshape(-1, F.shape[-1], F.shape[-2]).contiguous().numpy()  # (E_F, k, n)
    Wn = Wc.contiguous().numpy()
    bn = b0.to(**f64).clone().contiguous().numpy()
    un = u0.to(**f64).clone().contiguous().numpy()
    cn = c0.to(**f64).clone().reshape(E).contiguous().numpy()
    yn = y.to(**f64).reshape(-1, y.shape[-1]).contiguous().numpy()
    if bool((yn == yn[:1]).all()):
        yn = yn[:1].copy()  # shared labels
    n = yn.shape[1]

    def arr(values: list) -> np.ndarray:
        return np.array(values, dtype=np.float64)

    tgt = arr(targets if targets is not None else [0.0] * E)
    budget = np.array(budgets, dtype=np.int64)
    rec = 0 if record_every is None else record_every
    H = (int(budget.max()) // rec + 2) if rec else 1
    steps = np.zeros(E, dtype=np.int64)
    yf, loss = np.zeros((E, n)), np.zeros(E)
    a_out = np.ones(E)
    bad = np.zeros(E, dtype=np.bool_)
    hist_t, hist_loss, hist_margin = np.zeros((E, H), dtype=np.int64), np.zeros((E, H)), np.zeros((E, H))
    hist_len = np.zeros(E, dtype=np.int64)
    workers = max(1, min(torch.get_num_threads(), E))
    orders = [np.arange(w, E, workers, dtype=np.int64) for w in range(workers)]
    consts = (arr(lrs), arr(wds), arr(mus), arr(pens), perp_sq, tgt, targets is not None, budget,
              optimizer == "momentum", train_bias, train_u, train_c, rec)

    train_members = _fused.kernel()  # before the threads start: compiled (or loaded) once

    def run(order: np.ndarray) -> None:
        train_members(order, Wn, bn, un, cn, FT, yn, *consts, steps, yf, loss, a_out, bad,
                             hist_t, hist_loss, hist_margin, hist_len)

    if workers == 1:
        run(orders[0])
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, orders))
    if bool(bad.any()):
        e = int(np.flatnonzero(bad)[0])
        raise FloatingPointError(f"training diverged: member {e} has a non-finite loss; lower lr")

    perp_t = torch.from_numpy(a_out)  # tracked by the kernel: it includes the norm penalty's shrinking
    Wt = torch.from_numpy(Wn)
    if sub is not None:
        Wt = Wt @ Qp.T + perp_t.view(E, 1, 1) * Wperp0
    margin = torch.from_numpy(yf).amin(dim=1)
    reached = margin >= torch.from_numpy(tgt) if targets is not None else torch.zeros(E, dtype=torch.bool)
    if rec:
        meta = dict(meta, history_steps=[torch.from_numpy(hist_t[e, : hist_len[e]].copy()) for e in range(E)],
                    loss_history=[torch.from_numpy(hist_loss[e, : hist_len[e]].copy()) for e in range(E)],
                    margin_history=[torch.from_numpy(hist_margin[e, : hist_len[e]].copy()) for e in range(E)])
    if stats is not None:
        _fused_stats(stats, steps, m, Wn.shape[2], n, train_u, "subspace" if sub is not None else "full")
    dt = torch.float64
    return EnsembleResult(
        W=Wt.to(device=home, dtype=dt), b=torch.from_numpy(bn).to(device=home, dtype=dt),
        u=torch.from_numpy(un).to(device=home, dtype=dt), c=torch.from_numpy(cn).to(device=home, dtype=dt),
        steps=torch.from_numpy(steps), reached=reached, final_margin=margin, final_loss=torch.from_numpy(loss),
        **{**_host_factors(optimizer, torch.from_numpy(steps), lrs, wds, mus), "perp_factor": perp_t}, mode="subspace" if sub is not None else "full", **meta,
    )


def _fused_stats(stats: dict, steps: np.ndarray, m: int, k: int, n: int, train_u: bool, mode: str) -> None:
    r"""Record the matrix products of the fused run as the batched products a tensor program would make.

    At iteration ``t`` the members still evaluated (``steps >= t``) need the forward products
    $WF^\top$ ``(m, k) x (k, n)`` and $u^\top\mathrm{relu}(Z)$; those still updated (``steps > t``) need
    $GF$ ``(m, n) x (n, k)`` (and $\mathrm{relu}(Z)g$ when $u$ is trained) — each one batched product over
    the members concerned.  These are the shapes the benchmark times plain ``torch.matmul`` at.
    """
    stats.update(mode=mode, backend="fused", chunk_members=1, iterations=int(steps.max()) + 1)
    mm = stats.setdefault("matmuls", {})

    def add(key: tuple, count: int) -> None:
        if count > 0:
            mm[key] = mm.get(key, 0) + count

    prev, first = 0, 1  # iteration 0 is evaluated by every member
    for s_ in sorted(set(int(v) for v in steps)):
        alive = int((steps >= s_).sum())  # evaluated at iterations prev+1 .. s_, updated at prev .. s_-1
        add((alive, m, k, n), s_ - prev + first)
        add((alive, 1, m, n), s_ - prev + first)
        add((alive, m, n, k), s_ - prev)
        if train_u:
            add((alive, m, n, 1), s_ - prev)
        prev, first = s_, 0
