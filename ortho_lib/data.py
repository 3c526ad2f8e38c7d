r"""Training data on a subspace $P$ (or an affine subspace $c + P$) and label rules.

Default data: $x = \sqrt{d}\, Q_P g / \|g\|$ with $g \sim \mathcal N(0, I_{d-\ell})$, i.e. uniform on the
sphere of radius $\sqrt d$ inside $P$ (the radius of a typical Gaussian input in $\mathbb{R}^d$).
Curved data: :func:`sample_sphere_manifold` draws points on a circle or sphere of tunable curvature
(:mod:`ortho_lib.manifolds`).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ._checks import check_dtype, check_float, check_int, check_seed, check_size, check_tensor, derived_seed, tolerance
from .manifolds import SphereManifold, _check_sphere
from .subspaces import DEFAULT_DTYPE, Subspace, _check_subspace, distance_to_subspace, random_subspace


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
        ``X`` of shape ``(n, d)``, in the dtype of ``sub`` (the directions $g_j$ are drawn in float64).
    """
    sub = _check_subspace(sub)
    n = check_int("n", n, low=1)
    check_size("n", n, sub.d)
    r = math.sqrt(sub.d) if radius is None else check_float("radius", radius, positive=True)
    if offset is not None:
        offset = check_tensor("offset", offset, shape=(sub.d,))
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    G = torch.randn(n, sub.dim, generator=g, dtype=torch.float64).to(sub.basis.dtype)
    X = r * (G / G.norm(dim=1, keepdim=True)) @ sub.basis.detach().T
    if offset is not None:
        X = X + offset.to(X.dtype)
    return X


def sphere_data(n: int, d: int, *, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""``n`` points uniform on the sphere of radius $\sqrt d$ in $\mathbb R^d$ (no subspace).

    .. math:: x_j = \sqrt d\, g_j / \|g_j\|, \qquad g_j \sim \mathcal N(0, I_d).

    For $n \ll d$ the points are nearly orthogonal: $\langle x_i, x_k\rangle / d$ has mean 0 and
    variance $1/d$ (the setting of the two neighbouring papers). Returns ``X`` of shape ``(n, d)``.
    """
    n = check_int("n", n, low=1)
    d = check_int("d", d, low=1)
    dtype = check_dtype("dtype", dtype)
    check_size("n and d", n, d)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    G = torch.randn(n, d, generator=g, dtype=torch.float64)
    return (math.sqrt(d) * G / G.norm(dim=1, keepdim=True)).to(dtype)


def teacher_direction(sub: Subspace, *, seed: int) -> Tensor:
    r"""A random unit vector $v \in P$ (the teacher), shape ``(d,)``, in the dtype of ``sub``."""
    sub = _check_subspace(sub)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    v = sub.basis.detach() @ torch.randn(sub.dim, generator=g, dtype=torch.float64).to(sub.basis.dtype)
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
    dtype = check_dtype("dtype", dtype)
    check_size("n", n)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    return (2 * torch.randint(0, 2, (n,), generator=g) - 1).to(dtype)


def check_on_subspace(
    sub: Subspace, X: Tensor, *, offset: Optional[Tensor] = None, tol: Optional[float] = None
) -> Tensor:
    r"""Raise ``ValueError`` if some row of ``X`` is farther than ``tol * max(1, ||x||)`` from $c + P$.

    ``tol`` defaults to the precision of the data (:func:`ortho_lib._checks.tolerance`: about ``1.5e-8``
    in float64, ``3.5e-4`` in float32).  Returns ``X`` unchanged when every point lies on the (affine) subspace.
    """
    sub = _check_subspace(sub)
    X = check_tensor("X", X, ndim=2)
    if X.shape[1] != sub.d:
        raise ValueError(f"X must have {sub.d} columns (the ambient dimension d), got {X.shape[1]}")
    if offset is not None:
        offset = check_tensor("offset", offset, shape=(sub.d,))
    tol = tolerance(X.dtype, sub.basis.dtype) if tol is None else check_float("tol", tol, nonnegative=True)
    dist = distance_to_subspace(sub, X.detach(), offset)
    scale = torch.clamp(X.detach().norm(dim=1), min=1.0)
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
    check_size("n_points", n, 2)
    dtype = check_dtype("dtype", dtype)
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
    check_size("k", k, k, 3)
    h = check_float("height", height)
    dtype = check_dtype("dtype", dtype)
    idx = torch.arange(k)
    a, b = torch.meshgrid(idx, idx, indexing="ij")
    a, b = a.flatten(), b.flatten()
    t = 1.0 / (k - 1)
    X = torch.stack([a.to(dtype) * t, b.to(dtype) * t, torch.full((k * k,), h, dtype=dtype)], dim=1)
    y = torch.where((a + b) % 2 == 0, 1.0, -1.0).to(dtype)
    return X, y


def obtuse_data(n: int, d: int, *, seed: int, eps: float = 0.0, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""``n`` points with $\|x_i\|^2 = d$ whose augmented vectors $\tilde x_i = (x_i, 1)$ have $\langle\tilde x_i,\tilde x_k\rangle = -c_{ik} \le 0$.

    The $c_{ik} = c_{ki}$ are uniform on $[0, \varepsilon d]$ (``eps`` $=\varepsilon$); ``eps=0`` gives exactly
    orthogonal augmented inputs, $\tilde G = (d+1) I_n$.  Built as $X = M^{1/2}U^\top$ with
    $M = (d+1)I_n - C - \mathbf 1\mathbf 1^\top$ and $U$ a random ``(d, n)`` matrix with orthonormal columns,
    so $XX^\top = M$ exactly.  On such data one neuron per label-pure group of points is an exact KKT point
    (:func:`construct_kkt_point`).  Needs ``n <= d`` and $M$ positive definite.
    """
    d = check_int("d", d, low=1)
    n = check_int("n", n, low=1, high=d)
    eps = check_float("eps", eps, nonnegative=True)
    dtype = check_dtype("dtype", dtype)
    check_size("n and d", n, d)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    f64 = torch.float64  # drawn and factorised in float64, rounded to dtype at the end
    U, _ = torch.linalg.qr(torch.randn(d, n, generator=g, dtype=f64))  # (d, n) orthonormal columns
    Cm = torch.triu(eps * d * torch.rand(n, n, generator=g, dtype=f64), diagonal=1)
    Cm = Cm + Cm.T
    M = (d + 1) * torch.eye(n, dtype=f64) - Cm - 1.0
    too_large = ValueError(f"eps = {eps:g} is too large for n = {n}, d = {d}: the Gram matrix would not be "
                           "positive definite")
    if not bool(torch.isfinite(M).all()):
        raise too_large
    try:
        e, V = torch.linalg.eigh(M)
    except RuntimeError:  # eigh fails to converge on badly scaled matrices: only for absurd eps
        raise too_large from None
    if float(e.min()) <= 0:
        raise too_large
    return ((V * e.sqrt()) @ V.T @ U.T).to(dtype)


class TeacherProblem(NamedTuple):
    """A labelled problem on a random subspace (what :func:`teacher_problem` returns).

    Attributes:
        sub: the data subspace $P$.  v: ``(d,)`` the unit teacher direction in $P$.
        X: ``(n, d)`` training points in $P$; y: ``(n,)`` their teacher labels.
        X_test: ``(n_test, d)`` test points in $P$; y_test: ``(n_test,)`` their labels.
    """

    sub: Subspace
    v: Tensor
    X: Tensor
    y: Tensor
    X_test: Tensor
    y_test: Tensor


def teacher_problem(
    d: int, ell: int, n: int, *, seed: int, n_test: int = 0, test_seed: Optional[int] = None,
    dtype: torch.dtype = DEFAULT_DTYPE,
) -> TeacherProblem:
    r"""The book's standard problem: a Haar subspace $P$, points on its sphere of radius $\sqrt d$, a linear teacher.

    .. math:: P = \text{random\_subspace}(d, \ell),\quad x_j \in P,\ \|x_j\| = \sqrt d,\quad
              y_j = \operatorname{sign}\langle v, x_j\rangle,\ v \in P \text{ a random unit vector}.

    Seeds: $P$ from ``seed``, the training points from ``seed + 1``, the teacher from ``seed + 2``, the test
    points from ``test_seed`` (default ``seed + 3``); derived seeds wrap modulo $2^{64}$.

    Args:
        d, ell: ambient dimension and codimension ($\dim P = d - \ell$).
        n: training points.  n_test: test points (default none).
    Returns:
        :class:`TeacherProblem`.
    """
    seed = check_seed("seed", seed)
    d = check_int("d", d, low=2)
    n = check_int("n", n, low=1)
    n_test = check_int("n_test", n_test, low=0)
    check_size("n", n, d)
    check_size("n_test", n_test, d)
    test_seed = derived_seed(seed, 3) if test_seed is None else check_seed("test_seed", test_seed)
    sub = random_subspace(d, ell, seed=seed, dtype=dtype)
    X = sample_on_subspace(sub, n, seed=derived_seed(seed, 1))
    v = teacher_direction(sub, seed=derived_seed(seed, 2))
    y = teacher_labels(X, v)
    if n_test:
        X_test = sample_on_subspace(sub, n_test, seed=test_seed)
        y_test = teacher_labels(X_test, v)
    else:
        X_test, y_test = X.new_zeros((0, sub.d)), X.new_zeros((0,))
    return TeacherProblem(sub, v, X, y, X_test, y_test)


# ------------------------------------------------------------------------------------- curved data

def sample_sphere_manifold(sphere: SphereManifold, n: int, *, seed: int) -> Tensor:
    r"""``n`` points uniform on a :class:`~ortho_lib.manifolds.SphereManifold` (a circle or sphere of radius $r$).

    .. math:: x_j = c + r\, Q_{P_0} g_j/\|g_j\|, \qquad g_j \sim \mathcal N(0, I_k),

    (that is :func:`sample_on_subspace` on the plane $P_0$ with ``radius=r`` and ``offset=c``).

    Args:
        sphere: the manifold (:func:`ortho_lib.manifolds.sphere_manifold`).
        n: number of points, ``n >= 1``.
        seed: random seed.
    Returns:
        ``X`` of shape ``(n, d)``, in the dtype of the sphere.
    """
    sphere = _check_sphere(sphere)
    return sample_on_subspace(sphere.plane, n, seed=seed, radius=sphere.radius, offset=sphere.centre)
