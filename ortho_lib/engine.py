r"""Training many networks of equal shape at once (the sweep engine).

Contract (kept by every implementation): :func:`train_ensemble` gives, for each member ``e``, the same
final parameters as :func:`ortho_lib.train.train` run on member ``e`` alone with the same arguments
(full batch, GD or heavy-ball momentum), each member stopping at its own first iterate whose train
margin reaches ``target_margin``.

This first implementation is the plain loop over :func:`ortho_lib.train.train`; a batched, reduced
implementation replaces it without changing results.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from ._checks import check_choice, check_tensor
from .network import TwoLayerParams
from .subspaces import Subspace
from .train import train


@dataclass
class EnsembleResult:
    """Final state of an ensemble of ``E`` networks.

    Attributes:
        W: ``(E, m, d)``; b, u: ``(E, m)``; c: ``(E,)``.
        steps: ``(E,)`` updates made by each member.
        reached: ``(E,)`` bool, whether each member reached the target margin.
        final_margin, final_loss: ``(E,)``.
    """

    W: Tensor
    b: Tensor
    u: Tensor
    c: Tensor
    steps: Tensor
    reached: Tensor
    final_margin: Tensor
    final_loss: Tensor

    def __len__(self) -> int:
        return int(self.W.shape[0])

    def params(self, e: int) -> TwoLayerParams:
        """The parameters of member ``e``."""
        return TwoLayerParams(self.W[e], self.b[e], self.u[e], self.c[e])


def stack_params(members: Sequence[TwoLayerParams]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stack equal-shape parameters into ``(W (E,m,d), b (E,m), u (E,m), c (E,))``."""
    if len(members) == 0:
        raise ValueError("members must hold at least one TwoLayerParams")
    shapes = {tuple(p.W.shape) for p in members}
    if len(shapes) != 1:
        raise ValueError(f"members must all have the same (m, d), got {sorted(shapes)}")
    return (torch.stack([p.W for p in members]), torch.stack([p.b for p in members]),
            torch.stack([p.u for p in members]), torch.stack([p.c for p in members]))


def train_ensemble(
    members: Sequence[TwoLayerParams],
    X: Tensor,
    y: Tensor,
    *,
    lr: float,
    max_steps: int,
    target_margin: Optional[float] = None,
    optimizer: str = "gd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    train_bias: bool = True,
    train_second_layer: bool = False,
    sub: Optional[Subspace] = None,
    device: Optional[str] = None,
    dtype: Optional[torch.dtype] = None,
) -> EnsembleResult:
    r"""Train ``E`` networks of equal shape, full batch, each until its own margin target or the budget.

    Args:
        members: ``E`` initial parameter sets of equal ``(m, d)``.
        X: ``(n, d)`` shared inputs, or ``(E, n, d)`` one training set per member.
        y: ``(n,)`` shared labels, or ``(E, n)``.
        lr, max_steps, target_margin, momentum, weight_decay, train_bias, train_second_layer:
            as in :func:`ortho_lib.train.train`.
        optimizer: ``"gd"`` or ``"momentum"``.
        sub: the data subspace $P$, if the inputs lie in it (lets a reduced implementation train only the
            part in $P$); ignored by this loop implementation.
        device, dtype: where and in what precision to train (default: as the members).
    """
    W0, b0, u0, c0 = stack_params(members)
    E = W0.shape[0]
    check_choice("optimizer", optimizer, ("gd", "momentum"))
    X = check_tensor("X", X, ndim=(2, 3))
    if X.ndim == 2:
        X = X.expand(E, *X.shape)
    if X.shape[0] != E:
        raise ValueError(f"X must have a leading dimension E = {E} (one training set per member), got {X.shape[0]}")
    if not isinstance(y, Tensor) or y.ndim not in (1, 2):
        raise ValueError("y must be a tensor of shape (n,) or (E, n)")
    if y.ndim == 1:
        y = y.expand(E, *y.shape)
    outs = []
    for e in range(E):
        p = members[e]
        if dtype is not None:
            p = TwoLayerParams(p.W.to(dtype), p.b.to(dtype), p.u.to(dtype), p.c.to(dtype))
        outs.append(train(p, X[e], y[e], lr=lr, max_steps=max_steps, target_margin=target_margin,
                          optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
                          train_bias=train_bias, train_second_layer=train_second_layer))
    W, b, u, c = stack_params([o.params for o in outs])
    return EnsembleResult(
        W=W, b=b, u=u, c=c,
        steps=torch.tensor([o.steps for o in outs]),
        reached=torch.tensor([o.reached for o in outs]),
        final_margin=torch.tensor([o.final_margin for o in outs], dtype=torch.float64),
        final_loss=torch.tensor([o.final_loss for o in outs], dtype=torch.float64),
    )
