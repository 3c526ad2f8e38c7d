r"""Training data on a subspace $P$ (or an affine subspace $c + P$) and label rules.

Default data: $x = \sqrt{d}\, Q_P g / \|g\|$ with $g \sim \mathcal N(0, I_{d-\ell})$, i.e. uniform on the
sphere of radius $\sqrt d$ inside $P$ (the radius of a typical Gaussian input in $\mathbb{R}^d$).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ._checks import check_float, check_int, check_labels, check_tensor
from .subspaces import Subspace, distance_to_subspace


def sample_on_subspace(
    sub: Subspace,
    n: int,
    *,
    seed: int,
    radius: Optional[float] = None,
    offset: Optional[Tensor] = None,
) -> Tensor:
    r"""``n`` points uniform on the sphere of radius ``radius`` (default $\sqrt d$) in $P$, plus ``offset``.

    .. math:: x_j = c + r\, Q_P g_j/\|g_j\|, \qquad g_j \sim \mathcal N(0, I_{d-\ell}).

    Args:
        sub: the subspace $P$.
        n: number of points, ``n >= 1``.
        seed: random seed.
        radius: norm of the on-subspace part (default $\sqrt d$).
        offset: ``(d,)`` vector $c$ for data on the affine subspace $c + P$ (default none).
    Returns:
        ``X`` of shape ``(n, d)``.
    """
    n = check_int("n", n, low=1)
    r = math.sqrt(sub.d) if radius is None else check_float("radius", radius, positive=True)
    g = torch.Generator().manual_seed(check_int("seed", seed))
    G = torch.randn(n, sub.dim, generator=g, dtype=sub.basis.dtype)
    X = r * (G / G.norm(dim=1, keepdim=True)) @ sub.basis.T
    if offset is not None:
        X = X + check_tensor("offset", offset, shape=(sub.d,)).to(X.dtype)
    return X


def sample_gaussian_on_subspace(sub: Subspace, n: int, *, seed: int, scale: float = 1.0) -> Tensor:
    r"""``n`` Gaussian points in $P$: $x_j = s\, Q_P g_j$, $g_j\sim\mathcal N(0, I_{d-\ell})$. Shape ``(n, d)``."""
    n = check_int("n", n, low=1)
    s = check_float("scale", scale, positive=True)
    g = torch.Generator().manual_seed(check_int("seed", seed))
    return s * torch.randn(n, sub.dim, generator=g, dtype=sub.basis.dtype) @ sub.basis.T


def teacher_direction(sub: Subspace, *, seed: int) -> Tensor:
    r"""A random unit vector $v \in P$ (the teacher), shape ``(d,)``."""
    g = torch.Generator().manual_seed(check_int("seed", seed))
    v = sub.basis @ torch.randn(sub.dim, generator=g, dtype=sub.basis.dtype)
    return v / v.norm()


def teacher_labels(X: Tensor, v: Tensor, *, offset: Optional[Tensor] = None) -> Tensor:
    r"""Labels of a linear teacher: $y_j = \mathrm{sign}\langle v, x_j - c\rangle$ (0 is mapped to +1).

    Args:
        X: ``(n, d)`` points.
        v: ``(d,)`` teacher direction.
        offset: optional ``(d,)`` offset $c$.
    Returns:
        ``(n,)`` labels in $\{-1, +1\}$, same dtype as ``X``.
    """
    X = check_tensor("X", X, ndim=2)
    v = check_tensor("v", v, shape=(X.shape[1],))
    if offset is not None:
        X = X - check_tensor("offset", offset, shape=(X.shape[1],))
    s = X @ v.to(X.dtype)
    return torch.where(s >= 0, 1.0, -1.0).to(X.dtype)


def random_labels(n: int, *, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""``n`` i.i.d. uniform labels in $\{-1, +1\}$, shape ``(n,)``."""
    n = check_int("n", n, low=1)
    g = torch.Generator().manual_seed(check_int("seed", seed))
    return (2 * torch.randint(0, 2, (n,), generator=g) - 1).to(dtype)


def as_labels(y: object, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Explicit labels: turn a sequence of +-1 values into a checked ``(n,)`` tensor."""
    t = torch.as_tensor(y, dtype=dtype)
    return check_labels("y", t)


def check_on_subspace(
    sub: Subspace, X: Tensor, *, offset: Optional[Tensor] = None, tol: float = 1e-9
) -> Tensor:
    r"""Raise ``ValueError`` if some row of ``X`` is farther than ``tol * max(1, ||x||)`` from $c + P$.

    Returns ``X`` unchanged when every point lies on the (affine) subspace.
    """
    X = check_tensor("X", X, ndim=2)
    if X.shape[1] != sub.d:
        raise ValueError(f"X must have {sub.d} columns (the ambient dimension d), got {X.shape[1]}")
    dist = distance_to_subspace(sub, X, offset)
    scale = torch.clamp(X.norm(dim=1), min=1.0)
    bad = (dist > tol * scale).nonzero().flatten()
    if bad.numel():
        j = int(bad[0])
        raise ValueError(
            f"X: point {j} is off the subspace (distance {float(dist[j]):.3g} > tol {tol:g}); "
            f"{bad.numel()} of {X.shape[0]} points are off it"
        )
    return X
