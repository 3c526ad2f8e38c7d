r"""Perturbations orthogonal to the data: the universal direction, flip norms, first-order estimates."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._checks import check_choice, check_float, check_int, check_tensor
from .network import TwoLayerParams, input_gradient, network_output
from .subspaces import Subspace, P_perp


def universal_direction(params: TwoLayerParams, sub: Subspace) -> Tensor:
    r"""The universal direction $z = \Pi_\perp \sum_i u_i w_i = \Pi_\perp W^\top u$, shape ``(d,)``.

    It does not depend on the input, and with a fixed second layer it does not change in training.
    """
    if not isinstance(params, TwoLayerParams):
        raise TypeError(f"params must be TwoLayerParams, got {type(params).__name__}")
    return P_perp(sub, params.u @ params.W)


def alignment_coefficients(params: TwoLayerParams, sub: Subspace) -> Tensor:
    r"""$a_i = \langle \Pi_\perp w_i, z\rangle$ for the universal direction $z$, shape ``(m,)``."""
    z = universal_direction(params, sub)
    return P_perp(sub, params.W) @ z


def first_order_flip_estimate(params: TwoLayerParams, sub: Subspace, X: Tensor) -> Tensor:
    r"""$|N(x_0)|/\|g_\perp(x_0)\|$ per row of ``X`` (``(n, d)`` -> ``(n,)``): the linearised flip distance in $P^\perp$."""
    g = P_perp(sub, input_gradient(params, X))
    return network_output(params, X).abs() / g.norm(dim=-1)


def flip_norm_along(
    params: TwoLayerParams,
    X: Tensor,
    direction: Tensor,
    *,
    max_norm: float,
    mode: str = "descend",
    grid: int = 256,
    iters: int = 50,
) -> Tensor:
    r"""Smallest $\alpha\ge0$ at which moving along a direction flips the sign of $N$, per point.

    With $v$ the unit direction, ``mode="descend"`` moves to $x_0 - \mathrm{sign}(N(x_0))\,\alpha v$
    (towards the other class along $v$), ``mode="both"`` takes the smaller of the moves along $+v$ and $-v$.
    The first sign change on a grid of ``grid`` points in $[0, \text{max\_norm}]$ is refined by
    ``iters`` bisection steps.  Points that do not flip within ``max_norm`` get ``inf``.

    Args:
        X: ``(n, d)`` points.
        direction: ``(d,)`` (the same for all points, e.g. the universal one) or ``(n, d)`` (one per point).
    Returns:
        ``(n,)`` flip norms.
    """
    X = check_tensor("X", X, ndim=2)
    n, d = X.shape
    V = check_tensor("direction", direction, ndim=(1, 2))
    if V.shape[-1] != d or (V.ndim == 2 and V.shape[0] != n):
        raise ValueError(f"direction must have shape ({d},) or ({n}, {d}), got {tuple(V.shape)}")
    max_norm = check_float("max_norm", max_norm, positive=True)
    check_choice("mode", mode, ("descend", "both"))
    grid = check_int("grid", grid, low=2)
    iters = check_int("iters", iters, low=1)
    norms = V.norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("direction must be non-zero")
    V = (V / norms).expand(n, d).to(X.dtype)
    s0 = torch.sign(network_output(params, X))
    if mode == "descend":
        return _first_flip(params, X, -s0[:, None] * V, s0, max_norm, grid, iters)
    a = _first_flip(params, X, V, s0, max_norm, grid, iters)
    b = _first_flip(params, X, -V, s0, max_norm, grid, iters)
    return torch.minimum(a, b)


def _first_flip(params, X, V, s0, max_norm, grid, iters) -> Tensor:
    n = X.shape[0]
    alphas = torch.linspace(0, max_norm, grid + 1, dtype=X.dtype)[1:]
    # (grid, n) sign of N along the ray
    pts = X[None, :, :] + alphas[:, None, None] * V[None, :, :]
    vals = network_output(params, pts.reshape(-1, X.shape[1])).reshape(grid, n)
    flipped = (torch.sign(vals) != s0[None, :]) | (vals == 0)
    any_flip = flipped.any(0)
    first = torch.argmax(flipped.to(torch.int8), dim=0)
    hi = alphas[first]
    lo = torch.where(first > 0, alphas[(first - 1).clamp(min=0)], torch.zeros_like(hi))
    for _ in range(iters):
        mid = (lo + hi) / 2
        v = network_output(params, X + mid[:, None] * V)
        f = (torch.sign(v) != s0) | (v == 0)
        hi = torch.where(f, mid, hi)
        lo = torch.where(f, lo, mid)
    out = torch.where(any_flip, hi, torch.full_like(hi, float("inf")))
    return out
