r"""Curved data: a round sphere of tunable curvature inside a subspace, its tangent and normal spaces.

The data manifold is a $(k-1)$-sphere of radius $r$ centred at $c$ in the affine $k$-plane $c + P_0$:

.. math:: M = \{\, c + r\,\xi \;:\; \xi \in P_0,\ \|\xi\| = 1 \,\}, \qquad c \perp P_0,

a circle for $k = 2$.  Every great circle of $M$ has curvature $\kappa = 1/r$.  With
$\|c\|^2 + r^2 = \rho^2$ every point has norm $\rho$ (default $\sqrt d$, the norm of the book's data):
$M$ is a small sphere on the big sphere of radius $\rho$, and $r = \rho$ ($c = 0$) is a great sphere of
$P_0$ — the book's default data.

At a point $x \in M$ the space $\mathbb R^d$ splits into three orthogonal parts:

.. math:: \mathbb R^d = \underbrace{T_x}_{\text{tangent}} \oplus
          \underbrace{\mathrm{span}(x - c,\ c)}_{\text{normal, inside } S} \oplus
          \underbrace{S^\perp}_{\text{normal, outside } S},

with $T_x = \{v \in P_0 : v \perp x - c\}$ (dimension $k - 1$) and $S = \mathrm{span}(M) = P_0 \oplus
\mathrm{span}(c)$ the data's linear span (dimension $k + 1$; $k$ when $c = 0$).  Training can move the
first layer only inside $S$ (:func:`ortho_lib.train`'s frozen-component lemma with $P = S$); the normal
directions inside $S$ — towards the centre of curvature and along $c$ — are free to move.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ._checks import check_dtype, check_float, check_int, check_seed, check_size, check_tensor, tolerance
from .subspaces import DEFAULT_DTYPE, Subspace, _check_subspace, random_subspace, subspace_from_vectors


@dataclass(frozen=True, eq=False)
class SphereManifold:
    r"""A round $(k-1)$-sphere $M = \{c + r\xi : \xi \in P_0, \|\xi\| = 1\}$ of curvature $\kappa = 1/r$.

    Attributes:
        plane: the $k$-dimensional linear subspace $P_0$ the sphere is parallel to (``k >= 2``).
        centre: ``(d,)`` the centre $c$, orthogonal to $P_0$ (zero allowed).
        radius: $r > 0$.

    Derived: :attr:`span` (the data's span $S = P_0 \oplus \mathrm{span}(c)$, as a :class:`Subspace`),
    :attr:`curvature` $= 1/r$, :attr:`dim` $= k - 1$, :attr:`k`, :attr:`d`.  Checked on construction:
    $c \perp P_0$ and $\dim S \le d - 1$ (so that $S^\perp$ is not empty).
    """

    plane: Subspace
    centre: Tensor
    radius: float
    _span: Subspace = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plane = _check_subspace(self.plane, name="SphereManifold.plane")
        if plane.dim < 2:
            raise ValueError(f"SphereManifold.plane must have dimension k >= 2 (a circle or more), got {plane.dim}")
        c = check_tensor("SphereManifold.centre", self.centre, shape=(plane.d,)).detach().to(plane.basis.dtype)
        object.__setattr__(self, "centre", c)
        object.__setattr__(self, "radius", check_float("SphereManifold.radius", self.radius, positive=True))
        tol = tolerance(plane.basis.dtype)
        along = float((plane.basis.T @ c).norm())
        if along > tol * max(1.0, float(c.norm())):
            raise ValueError(f"SphereManifold.centre must be orthogonal to SphereManifold.plane (its part in the "
                             f"plane has norm {along:.3g})")
        if float(c.norm()) > tol:
            if plane.dim + 1 > plane.d - 1:
                raise ValueError(f"SphereManifold.plane: with a non-zero centre the span has dimension k + 1 = "
                                 f"{plane.dim + 1}, which must be at most d - 1 = {plane.d - 1}")
            span = subspace_from_vectors(torch.cat([plane.basis.T, (c / c.norm())[None, :]]))
        else:
            span = plane
        object.__setattr__(self, "_span", span)

    @property
    def span(self) -> Subspace:
        r"""$S = \mathrm{span}(M) = P_0 \oplus \mathrm{span}(c)$: the subspace in which training moves the first layer."""
        return self._span

    @property
    def curvature(self) -> float:
        r"""$\kappa = 1/r$, the curvature of every great circle of $M$."""
        return 1.0 / self.radius

    @property
    def k(self) -> int:
        r"""Dimension $k$ of the plane $P_0$ (the sphere has dimension $k - 1$)."""
        return self.plane.dim

    @property
    def dim(self) -> int:
        """Dimension $k - 1$ of the manifold."""
        return self.plane.dim - 1

    @property
    def d(self) -> int:
        """Ambient dimension $d$."""
        return self.plane.d

    @property
    def norm(self) -> float:
        r"""$\sqrt{\|c\|^2 + r^2}$, the norm of every point of $M$."""
        return math.sqrt(float(self.centre.norm()) ** 2 + self.radius**2)


def sphere_manifold(
    d: int, k: int, *, radius: float, seed: int, norm: Optional[float] = None, dtype: torch.dtype = DEFAULT_DTYPE
) -> SphereManifold:
    r"""A $(k-1)$-sphere of radius $r$ on the sphere of radius $\rho$ of $\mathbb R^d$, in a random orientation.

    .. math:: P_0 = \mathrm{span}(q_1, \dots, q_k),\qquad c = \sqrt{\rho^2 - r^2}\; q_{k+1},

    with $q_1, \dots, q_{k+1}$ the first columns of a Haar orthogonal matrix (that of
    :func:`ortho_lib.random_subspace` with this ``seed``).  Every point of the sphere has norm $\rho$;
    ``radius == norm`` gives $c = 0$ (a great sphere of $P_0$, the book's default data).

    Args:
        d: ambient dimension.  k: dimension of the plane $P_0$, ``2 <= k <= d - 2`` (``k = 2``: a circle).
        radius: $r$, with ``0 < radius <= norm``; the curvature is $1/r$.
        seed: seed of the orientation.  norm: $\rho$ (default $\sqrt d$).  dtype: float32 or float64.
    Returns:
        :class:`SphereManifold`.
    """
    d = check_int("d", d, low=4)
    k = check_int("k", k, low=2, high=d - 2)
    rho = math.sqrt(d) if norm is None else check_float("norm", norm, positive=True)
    r = check_float("radius", radius, positive=True)
    if r > rho * (1 + 1e-12):
        raise ValueError(f"radius must be at most norm = {rho:g} (every point has norm sqrt(|c|^2 + r^2) = norm), "
                         f"got {r:g}")
    dtype = check_dtype("dtype", dtype)
    check_size("d", d, d)
    frame = random_subspace(d, d - k - 1, seed=check_seed("seed", seed), dtype=torch.float64).basis  # (d, k+1)
    plane = subspace_from_vectors(frame[:, :k].T.contiguous())
    c = math.sqrt(max(rho * rho - r * r, 0.0)) * frame[:, k]
    plane = Subspace(plane.basis.to(dtype), plane.perp_basis.to(dtype))
    return SphereManifold(plane=plane, centre=c.to(dtype), radius=r)


def _check_sphere(sphere: object, name: str = "sphere") -> SphereManifold:
    if not isinstance(sphere, SphereManifold):
        raise TypeError(f"{name} must be a SphereManifold (see sphere_manifold), got {type(sphere).__name__}")
    return sphere


def _points(sphere: SphereManifold, X: object, name: str = "X") -> Tensor:
    """``X`` checked as ``(n, d)`` points of the sphere (within the precision of the data), in its dtype."""
    X = check_tensor(name, X, ndim=2)
    if X.shape[1] != sphere.d:
        raise ValueError(f"{name} must have d = {sphere.d} columns (that of sphere), got shape {tuple(X.shape)}")
    Xs = X.detach().to(sphere.centre.dtype)
    tol = tolerance(X.dtype, sphere.centre.dtype) * max(1.0, sphere.norm)
    off_plane = ((Xs - sphere.centre) @ sphere.plane.perp_basis).norm(dim=1)
    off_radius = ((Xs - sphere.centre).norm(dim=1) - sphere.radius).abs()
    bad = ((off_plane > tol) | (off_radius > tol)).nonzero().flatten()
    if bad.numel():
        j = int(bad[0])
        raise ValueError(f"{name}: point {j} is not on the sphere (distance {max(float(off_plane[j]), float(off_radius[j])):.3g}"
                         f" > tol {tol:.2g}); {bad.numel()} of {X.shape[0]} points are off it")
    return Xs


def inward_normal(sphere: SphereManifold, X: Tensor) -> Tensor:
    r"""The unit normal $\nu(x) = (c - x)/r$ pointing from each point towards the centre of curvature.

    It lies in the data's span $S$: moving along it from $x$ reaches the centre $c$ at distance $r = 1/\kappa$
    and the antipode $2c - x$ (a point of the data manifold) at distance $2r$.

    Args:
        sphere: the :class:`SphereManifold`.  X: ``(n, d)`` points of it.
    Returns:
        ``(n, d)`` unit vectors.
    """
    sphere = _check_sphere(sphere)
    Xs = _points(sphere, X)
    v = sphere.centre - Xs
    return v / v.norm(dim=1, keepdim=True)


def antipodes(sphere: SphereManifold, X: Tensor) -> Tensor:
    r"""The antipode $2c - x$ of each point (also on the sphere), shape ``(n, d)``."""
    sphere = _check_sphere(sphere)
    return 2 * sphere.centre - _points(sphere, X)


class NormalSplit(NamedTuple):
    r"""Vectors at points of a :class:`SphereManifold` split into three orthogonal parts (each ``(n, d)``).

    Attributes:
        tangent: the part in the tangent space $T_x = \{v \in P_0 : v \perp x - c\}$.
        normal_in_span: the part in $\mathrm{span}(x - c,\ c)$, the normal directions inside the data's span.
        normal_out_of_span: the part in $S^\perp$, the normal directions outside the data's span.
    """

    tangent: Tensor
    normal_in_span: Tensor
    normal_out_of_span: Tensor


def normal_split(sphere: SphereManifold, X: Tensor, G: Tensor) -> NormalSplit:
    r"""Split vectors $g_j$ attached to points $x_j$ of the sphere into tangent, in-span normal and out-of-span normal parts.

    With $\nu_j = (x_j - c)/r$ and $\hat c = c/\|c\|$ (absent when $c = 0$):

    .. math:: g_\nu = \langle g, \nu\rangle\nu + \langle g, \hat c\rangle \hat c,\qquad
              g_\perp = \Pi_{S^\perp} g,\qquad g_T = g - g_\nu - g_\perp ,

    so $g = g_T + g_\nu + g_\perp$ with the three parts orthogonal.  For an input gradient
    $g = \nabla_x N(x)$, $g_\perp$ is the frozen part (:func:`ortho_lib.orthogonal_gradient` with the
    subspace ``sphere.span``).

    Args:
        sphere: the :class:`SphereManifold`.
        X: ``(n, d)`` points of the sphere.
        G: ``(n, d)`` vectors, one per point (for instance ``ol.input_gradient(params, X)``).
    Returns:
        :class:`NormalSplit`.
    """
    sphere = _check_sphere(sphere)
    Xs = _points(sphere, X)
    G = check_tensor("G", G, ndim=2)
    if G.shape != X.shape:
        raise ValueError(f"G must have the shape of X {tuple(X.shape)} (one vector per point), got {tuple(G.shape)}")
    G = G.to(Xs.dtype)
    span = sphere.span
    out = (G @ span.perp_basis) @ span.perp_basis.T
    nu = (Xs - sphere.centre) / sphere.radius
    g_in = (G * nu).sum(1, keepdim=True) * nu
    cn = float(sphere.centre.norm())
    if cn > tolerance(Xs.dtype):
        c_hat = sphere.centre / cn
        g_in = g_in + (G @ c_hat)[:, None] * c_hat[None, :]
    tangent = G - g_in - out
    return NormalSplit(tangent=tangent, normal_in_span=g_in, normal_out_of_span=out)
