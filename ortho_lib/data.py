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


def sphere_data(n: int, d: int, *, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""``n`` points uniform on the sphere of radius $\sqrt d$ in $\mathbb R^d$ (no subspace).

    .. math:: x_j = \sqrt d\, g_j / \|g_j\|, \qquad g_j \sim \mathcal N(0, I_d).

    For $n \ll d$ the points are nearly orthogonal: $\langle x_i, x_k\rangle / d$ has mean 0 and
    variance $1/d$ (the setting of the two neighbouring papers). Returns ``X`` of shape ``(n, d)``.
    """
    n = check_int("n", n, low=1)
    d = check_int("d", d, low=1)
    g = torch.Generator().manual_seed(check_int("seed", seed))
    G = torch.randn(n, d, generator=g, dtype=dtype)
    return math.sqrt(d) * G / G.norm(dim=1, keepdim=True)


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


def line_data_2d(n_points: int = 7, *, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    r"""The training set of the paper's Figure 2: points on the diagonal of $\mathbb{R}^2$, alternating labels.

    .. math:: x_j = (r_j, r_j),\quad r_j = -1 + \frac{2j}{n-1},\quad
              y_j = (-1)^{\,j - (n-1)/2}, \qquad j = 0, \dots, n-1,

    so the data lie on $P = \mathrm{span}\{(1, 1)\}$, the middle point (the origin) has label $+1$ and
    neighbours along the line have opposite labels.  The default ``n_points = 7`` gives
    $r \in \{-1, -\tfrac23, -\tfrac13, 0, \tfrac13, \tfrac23, 1\}$ with $+$ at $0, \pm\tfrac23$ and $-$ at
    $\pm\tfrac13, \pm 1$ (the authors' code).

    Args:
        n_points: number of points, odd and ``>= 3`` (so that the origin is one of them).
        dtype: a floating dtype.
    Returns:
        ``(X, y)`` with ``X`` of shape ``(n, 2)`` and ``y`` of shape ``(n,)`` in $\{-1, +1\}$.
    """
    n = check_int("n_points", n_points, low=3)
    if n % 2 == 0:
        raise ValueError(f"n_points must be odd (the origin is the middle point), got {n}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    j = torch.arange(n)
    r = -1.0 + 2.0 * j.to(dtype) / (n - 1)
    X = torch.stack([r, r], dim=1)
    y = torch.where((j - (n - 1) // 2) % 2 == 0, 1.0, -1.0).to(dtype)
    return X, y


def chessboard_data_3d(
    k: int = 5, *, height: float = 0.5, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    r"""The training set of the paper's Figure 3: a ``k x k`` chessboard on the plane $x_3 = h$ in $\mathbb{R}^3$.

    .. math:: x_{ab} = \Bigl(\frac{a}{k-1}, \frac{b}{k-1}, h\Bigr),\qquad y_{ab} = (-1)^{a+b},
              \qquad a, b = 0, \dots, k-1,

    so the data lie on the affine plane $c + P$ with $P = \mathrm{span}\{e_1, e_2\}$ and offset
    $c = h\,e_3$, and the corner $(0, 0, h)$ has label $+1$ (as in the authors' code).  Rows are ordered
    with $a$ (the $x_1$ index) slowest.

    Args:
        k: points per side, ``>= 2`` (default 5: the grid $\{0, .25, .5, .75, 1\}^2$).
        height: the height $h$ of the plane (default 0.5).
        dtype: a floating dtype.
    Returns:
        ``(X, y)`` with ``X`` of shape ``(k*k, 3)`` and ``y`` of shape ``(k*k,)`` in $\{-1, +1\}$.
    """
    k = check_int("k", k, low=2)
    h = check_float("height", height)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    idx = torch.arange(k)
    a, b = torch.meshgrid(idx, idx, indexing="ij")
    a, b = a.flatten(), b.flatten()
    t = 1.0 / (k - 1)
    X = torch.stack([a.to(dtype) * t, b.to(dtype) * t, torch.full((k * k,), h, dtype=dtype)], dim=1)
    y = torch.where((a + b) % 2 == 0, 1.0, -1.0).to(dtype)
    return X, y
