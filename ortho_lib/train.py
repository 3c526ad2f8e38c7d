r"""Training the two-layer network on the logistic loss.

.. math:: L(\theta) = \frac1n \sum_{j=1}^n \log\bigl(1 + e^{-y_j N(x_j)}\bigr)
          \;+\; \frac{\lambda}{2}\|\theta_{\text{trained}}\|^2 \;+\; \mu \,\|(W, b)\|_F .

Gradients are written out by hand (no autograd): with $Z = XW^\top + b$, $H = \sigma(Z)$,
$f = Hu + c$ and $g_j = \partial L/\partial f_j = -y_j\,\mathrm{sigmoid}(-y_j f_j)/n$,

.. math:: \nabla_W L = \bigl((g u^\top)\odot \mathbb 1[Z>0]\bigr)^\top X,\quad
          \nabla_b L = \mathbf 1^\top\bigl((g u^\top)\odot \mathbb 1[Z>0]\bigr),\quad
          \nabla_u L = H^\top g,\quad \nabla_c L = \mathbf 1^\top g .

Every row of $\nabla_W L$ is a combination of the inputs $x_j$ — the fact behind the frozen-component
lemma.  Optimisers: ``"gd"`` (full batch), ``"sgd"`` (mini-batches), ``"momentum"`` (heavy ball,
PyTorch's convention $v \leftarrow \mu v + g$, $\theta \leftarrow \theta - \eta v$), ``"adam"``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from ._checks import check_choice, check_float, check_int, check_labels, check_tensor
from .network import TwoLayerParams

OPTIMIZERS = ("gd", "sgd", "momentum", "adam")


class MarginNotReached(RuntimeError):
    """Raised by :func:`train` with ``strict=True`` when the step budget ends below the target margin."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        params: final parameters.
        initial: parameters at step 0.
        steps: number of updates made.
        reached: whether the train margin reached ``target_margin`` (False when no target was set).
        target_margin: the target, or None.
        final_loss: logistic loss (without penalty) at the final parameters.
        final_margin: $\\min_j y_j N(x_j)$ at the final parameters.
        history_steps, loss_history, margin_history: ``(r,)`` tensors recorded every ``record_every`` steps
            (and at the last step).
        lr_sum: $\\sum_t \\eta_t$ over the updates made.
        decay_factor: $\\prod_t (1 - \\eta_t\\lambda)$ (1.0 without weight decay).
    """

    params: TwoLayerParams
    initial: TwoLayerParams
    steps: int
    reached: bool
    target_margin: Optional[float]
    final_loss: float
    final_margin: float
    history_steps: Tensor
    loss_history: Tensor
    margin_history: Tensor
    lr_sum: float = 0.0
    decay_factor: float = 1.0
    optimizer: str = "gd"
    max_steps: int = 0
    extra: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line: steps, final loss and margin, and whether the target was reached."""
        head = f"{self.optimizer}: {self.steps} steps, loss {self.final_loss:.3g}, margin {self.final_margin:.3f}"
        if self.target_margin is None:
            return head
        if self.reached:
            return head + f" (target {self.target_margin:g} reached)"
        return head + (
            f" — target margin {self.target_margin:g} NOT reached within the budget of {self.max_steps} steps"
        )


def loss_and_grads(
    params: TwoLayerParams, X: Tensor, y: Tensor
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    r"""Logistic loss, outputs and explicit gradients on a batch.

    Args:
        X: ``(n, d)``; y: ``(n,)`` in $\{\pm1\}$.
    Returns:
        ``(loss, f, grads)`` with ``f`` of shape ``(n,)`` and ``grads`` keyed ``W, b, u, c``.
    """
    Z = X @ params.W.T + params.b
    H = torch.relu(Z)
    f = H @ params.u + params.c
    yf = y * f
    loss = torch.nn.functional.softplus(-yf).mean()
    g = -y * torch.sigmoid(-yf) / X.shape[0]
    GZ = (g[:, None] * params.u[None, :]) * (Z > 0).to(X.dtype)
    grads = {"W": GZ.T @ X, "b": GZ.sum(0), "u": H.T @ g, "c": g.sum()}
    return loss, f, grads


def train(
    params: TwoLayerParams,
    X: Tensor,
    y: Tensor,
    *,
    lr: float,
    max_steps: int,
    optimizer: str = "gd",
    target_margin: Optional[float] = None,
    batch_size: Optional[int] = None,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    norm_penalty: float = 0.0,
    train_bias: bool = True,
    train_second_layer: bool = False,
    train_output_bias: bool = False,
    lr_schedule: Optional[Callable[[int, float], float]] = None,
    record_every: int = 1,
    seed: int = 0,
    strict: bool = False,
) -> TrainResult:
    r"""Train on the logistic loss until the train margin reaches ``target_margin`` or ``max_steps`` updates.

    The margin $\min_j y_j N(x_j)$ is checked on the full training set before every update, so training
    stops at the first iterate that reaches the target.  When the budget runs out first, the result has
    ``reached=False`` and ``summary()`` says so; with ``strict=True`` a :class:`MarginNotReached` is raised.

    Args:
        params: initial parameters (not modified).
        X: ``(n, d)`` training inputs.  y: ``(n,)`` labels in $\{\pm 1\}$.
        lr: step size $\eta$ (constant unless ``lr_schedule`` is given).
        max_steps: budget of updates.
        optimizer: ``"gd"``, ``"sgd"``, ``"momentum"`` or ``"adam"``.
        target_margin: stop once $\min_j y_jN(x_j) \ge$ this value.
        batch_size: mini-batch size for ``"sgd"`` (and optionally ``"momentum"``/``"adam"``); default full batch.
        momentum: heavy-ball coefficient for ``"momentum"``.
        betas, eps: Adam's constants.
        weight_decay: $\lambda$ of the penalty $\frac\lambda2\|\theta\|^2$ on every trained parameter
            (for GD this multiplies $\Pi_\perp W$ by exactly $1-\eta\lambda$ per step).
        norm_penalty: $\mu$ of the penalty $\mu\|(W,b)\|_F$ (not squared; the authors' Figure 3).
        train_bias, train_second_layer, train_output_bias: which of $b$, $u$, $c$ are trained ($W$ always is).
        lr_schedule: optional ``f(step, loss) -> lr`` overriding ``lr`` at each step.
        record_every: history stride.
        seed: seed of the mini-batch order.
        strict: raise instead of returning when the target is not reached.
    """
    if not isinstance(params, TwoLayerParams):
        raise TypeError(f"params must be TwoLayerParams, got {type(params).__name__}")
    for k in ("W", "b", "u", "c"):
        check_tensor(f"params.{k}", getattr(params, k))
    X = check_tensor("X", X, ndim=2)
    n = X.shape[0]
    if X.shape[1] != params.d:
        raise ValueError(f"X must have d = {params.d} columns to match params, got {X.shape[1]}")
    y = check_labels("y", y, n).to(params.W.dtype)
    X = X.to(params.W.dtype)
    lr = check_float("lr", lr, positive=True)
    max_steps = check_int("max_steps", max_steps, low=0)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    if target_margin is not None:
        target_margin = check_float("target_margin", target_margin)
    bs = n if batch_size is None else check_int("batch_size", batch_size, low=1, high=n)
    if optimizer == "sgd" and batch_size is None:
        bs = 1
    momentum = check_float("momentum", momentum, nonnegative=True, below=1.0)
    weight_decay = check_float("weight_decay", weight_decay, nonnegative=True)
    norm_penalty = check_float("norm_penalty", norm_penalty, nonnegative=True)
    record_every = check_int("record_every", record_every, low=1)
    b1, b2 = (check_float("betas[0]", betas[0], nonnegative=True, below=1.0),
              check_float("betas[1]", betas[1], nonnegative=True, below=1.0))
    eps = check_float("eps", eps, positive=True)

    names = ["W"] + (["b"] if train_bias else []) + (["u"] if train_second_layer else []) + (
        ["c"] if train_output_bias else [])
    state = {k: getattr(params, k).clone() for k in ("W", "b", "u", "c")}
    buf = {k: torch.zeros_like(state[k]) for k in names}
    buf2 = {k: torch.zeros_like(state[k]) for k in names}
    gen = torch.Generator().manual_seed(check_int("seed", seed))
    perm = torch.randperm(n, generator=gen)
    pos = 0

    hist_t: list[int] = []
    hist_loss: list[float] = []
    hist_margin: list[float] = []
    lr_sum, decay = 0.0, 1.0
    step = 0
    reached = False
    while True:
        cur = TwoLayerParams(**state)
        full_loss, f, full_grads = loss_and_grads(cur, X, y)
        margin = float((y * f).min())
        loss_v = float(full_loss)
        if not math.isfinite(loss_v):
            raise FloatingPointError(f"training diverged at step {step} (loss {loss_v}); lower lr")
        reached = target_margin is not None and margin >= target_margin
        done = reached or step >= max_steps
        if step % record_every == 0 or done:
            hist_t.append(step)
            hist_loss.append(loss_v)
            hist_margin.append(margin)
        if done:
            break
        if bs == n:
            grads = full_grads
        else:
            if pos + bs > n:
                perm = torch.randperm(n, generator=gen)
                pos = 0
            idx = perm[pos : pos + bs]
            pos += bs
            _, _, grads = loss_and_grads(cur, X[idx], y[idx])
        eta = lr if lr_schedule is None else check_float("lr_schedule(step, loss)", lr_schedule(step, loss_v), positive=True)
        if norm_penalty > 0:
            nrm = torch.sqrt((state["W"] ** 2).sum() + (state["b"] ** 2).sum())
            if nrm > 0:
                grads = dict(grads)
                grads["W"] = grads["W"] + norm_penalty * state["W"] / nrm
                if "b" in names:
                    grads["b"] = grads["b"] + norm_penalty * state["b"] / nrm
        step += 1
        lr_sum += eta
        decay *= 1.0 - eta * weight_decay
        for k in names:
            gk = grads[k]
            if weight_decay > 0:
                gk = gk + weight_decay * state[k]
            if optimizer in ("gd", "sgd"):
                state[k] = state[k] - eta * gk
            elif optimizer == "momentum":
                buf[k] = momentum * buf[k] + gk
                state[k] = state[k] - eta * buf[k]
            else:  # adam
                buf[k] = b1 * buf[k] + (1 - b1) * gk
                buf2[k] = b2 * buf2[k] + (1 - b2) * gk * gk
                mhat = buf[k] / (1 - b1**step)
                vhat = buf2[k] / (1 - b2**step)
                state[k] = state[k] - eta * mhat / (vhat.sqrt() + eps)

    result = TrainResult(
        params=TwoLayerParams(**state),
        initial=params.clone(),
        steps=step,
        reached=bool(reached),
        target_margin=target_margin,
        final_loss=loss_v,
        final_margin=margin,
        history_steps=torch.tensor(hist_t),
        loss_history=torch.tensor(hist_loss, dtype=torch.float64),
        margin_history=torch.tensor(hist_margin, dtype=torch.float64),
        lr_sum=lr_sum,
        decay_factor=decay,
        optimizer=optimizer,
        max_steps=max_steps,
    )
    if strict and target_margin is not None and not reached:
        raise MarginNotReached(result.summary())
    return result


def train_margin(params: TwoLayerParams, X: Tensor, y: Tensor) -> float:
    r"""$\min_j y_j N(x_j)$ over the given points."""
    from .network import network_output

    y = check_labels("y", y, X.shape[0] if isinstance(X, Tensor) else None)
    return float((y.to(params.W.dtype) * network_output(params, X)).min())


def accuracy(params: TwoLayerParams, X: Tensor, y: Tensor) -> float:
    r"""Fraction of points with $\mathrm{sign}\,N(x_j) = y_j$."""
    from .network import network_output

    y = check_labels("y", y, X.shape[0] if isinstance(X, Tensor) else None)
    return float(((y.to(params.W.dtype) * network_output(params, X)) > 0).to(torch.float64).mean())
