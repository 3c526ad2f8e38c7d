r"""Linear subspaces $P \subset \mathbb{R}^d$ and their projections.

Notation (as in the book): the data subspace $P$ has dimension $d-\ell$, its orthogonal
complement $P^\perp$ has dimension $\ell$ (the paper's codimension).  A :class:`Subspace`
stores orthonormal bases of both, so that

.. math:: \Pi_P = Q_P Q_P^\top,\qquad \Pi_\perp = Q_\perp Q_\perp^\top,\qquad \Pi_P + \Pi_\perp = I_d .
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ._checks import check_int, check_tensor

DEFAULT_DTYPE = torch.float64


@dataclass(frozen=True)
class Subspace:
    r"""A linear subspace $P$ of $\mathbb{R}^d$ with its orthogonal complement.

    Attributes:
        basis: ``(d, d - ell)`` orthonormal columns spanning $P$.
        perp_basis: ``(d, ell)`` orthonormal columns spanning $P^\perp$.
    """

    basis: Tensor
    perp_basis: Tensor

    @property
    def d(self) -> int:
        """Ambient dimension $d$."""
        return int(self.basis.shape[0])

    @property
    def ell(self) -> int:
        r"""Codimension $\ell = \dim P^\perp$."""
        return int(self.perp_basis.shape[1])

    @property
    def dim(self) -> int:
        """Dimension of $P$, that is $d - \\ell$."""
        return int(self.basis.shape[1])


def _complete(basis: Tensor, d: int, *, seed: int) -> Tensor:
    """Orthonormal basis of the orthogonal complement of span(basis) (columns)."""
    k = basis.shape[1]
    if k == d:
        return basis.new_zeros((d, 0))
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(d, d - k, generator=g, dtype=basis.dtype)
    R = R - basis @ (basis.T @ R)
    R = R - basis @ (basis.T @ R)  # second pass: re-orthogonalise to machine precision
    Q, _ = torch.linalg.qr(R)
    return Q


def random_subspace(d: int, ell: int, *, seed: int, dtype: torch.dtype = DEFAULT_DTYPE) -> Subspace:
    r"""A uniformly random (Haar) subspace $P$ of dimension $d-\ell$ in $\mathbb{R}^d$.

    Takes the QR factorisation $G = QR$ of a Gaussian $d\times d$ matrix (with the signs of
    $R$'s diagonal made positive, so $Q$ is Haar distributed) and splits the columns:
    the first $d-\ell$ span $P$, the last $\ell$ span $P^\perp$.

    Args:
        d: ambient dimension, ``d >= 2``.
        ell: codimension, ``1 <= ell <= d - 1``.
        seed: seed of the Gaussian matrix.
    """
    d = check_int("d", d, low=2)
    ell = check_int("ell", ell, low=1, high=d - 1)
    g = torch.Generator().manual_seed(check_int("seed", seed))
    G = torch.randn(d, d, generator=g, dtype=dtype)
    Q, R = torch.linalg.qr(G)
    Q = Q * torch.sign(torch.diagonal(R)).unsqueeze(0)
    return Subspace(basis=Q[:, : d - ell].contiguous(), perp_basis=Q[:, d - ell :].contiguous())


def coordinate_subspace(d: int, ell: int, *, dtype: torch.dtype = DEFAULT_DTYPE) -> Subspace:
    r"""The coordinate-aligned subspace $P = \mathrm{span}(e_1,\dots,e_{d-\ell})$.

    $P^\perp$ is spanned by the last $\ell$ coordinate vectors.
    """
    d = check_int("d", d, low=2)
    ell = check_int("ell", ell, low=1, high=d - 1)
    eye = torch.eye(d, dtype=dtype)
    return Subspace(basis=eye[:, : d - ell].contiguous(), perp_basis=eye[:, d - ell :].contiguous())


def subspace_from_vectors(vectors: Tensor, *, seed: int = 0) -> Subspace:
    r"""The span $P$ of the given vectors (rows of ``vectors``, shape ``(k, d)``).

    The vectors must be linearly independent and span a proper subspace (``k <= d - 1``).
    The complement basis is completed by Gram--Schmidt against a seeded Gaussian matrix.

    Example: ``subspace_from_vectors(torch.tensor([[1., 1.]]))`` is the diagonal line in $\mathbb{R}^2$.
    """
    V = check_tensor("vectors", vectors, ndim=2)
    k, d = V.shape
    if k < 1 or k > d - 1:
        raise ValueError(f"vectors must hold between 1 and d-1 = {d - 1} rows, got {k}")
    Q, R = torch.linalg.qr(V.T)
    diag = torch.diagonal(R).abs()
    if bool((diag <= 1e-10 * diag.max()).any()):
        raise ValueError("vectors must be linearly independent")
    return Subspace(basis=Q.contiguous(), perp_basis=_complete(Q, d, seed=seed).contiguous())


def projection_matrices(sub: Subspace) -> tuple[Tensor, Tensor]:
    r"""The two projection matrices $(\Pi_P, \Pi_\perp)$, each ``(d, d)``."""
    return sub.basis @ sub.basis.T, sub.perp_basis @ sub.perp_basis.T


def Pi_P(sub: Subspace, x: Tensor) -> Tensor:
    r"""Project onto $P$: $\Pi_P x = Q_P Q_P^\top x$, applied to the last axis.

    Args:
        x: ``(..., d)``; a matrix of row vectors (for instance ``W`` of shape ``(m, d)``) is projected row by row.
    Returns:
        ``(..., d)``.
    """
    x = _check_last_dim(sub, x)
    return (x @ sub.basis) @ sub.basis.T


def P_perp(sub: Subspace, x: Tensor) -> Tensor:
    r"""Project onto $P^\perp$: $\Pi_\perp x = Q_\perp Q_\perp^\top x$, applied to the last axis.

    Args:
        x: ``(..., d)``; ``P_perp(sub, W)`` gives the rows $\Pi_\perp w_i$.
    Returns:
        ``(..., d)``.
    """
    x = _check_last_dim(sub, x)
    return (x @ sub.perp_basis) @ sub.perp_basis.T


Pi_perp = P_perp


def perp_coordinates(sub: Subspace, x: Tensor) -> Tensor:
    r"""Coordinates of $\Pi_\perp x$ in the basis $Q_\perp$: $Q_\perp^\top x$, shape ``(..., ell)``.

    $\|Q_\perp^\top x\| = \|\Pi_\perp x\|$.
    """
    x = _check_last_dim(sub, x)
    return x @ sub.perp_basis


def distance_to_subspace(sub: Subspace, x: Tensor, offset: Optional[Tensor] = None) -> Tensor:
    r"""$\|\Pi_\perp (x - c)\|$ for each row of ``x`` (``(n, d)`` -> ``(n,)``), $c$ the offset (default 0)."""
    x = _check_last_dim(sub, x)
    if offset is not None:
        offset = check_tensor("offset", offset, shape=(sub.d,))
        x = x - offset
    return perp_coordinates(sub, x).norm(dim=-1)


def _check_last_dim(sub: Subspace, x: Tensor) -> Tensor:
    if not isinstance(sub, Subspace):
        raise TypeError(f"sub must be a Subspace, got {type(sub).__name__}")
    x = check_tensor("x", x, ndim=(1, 2, 3))
    if x.shape[-1] != sub.d:
        raise ValueError(f"x must have last dimension d = {sub.d}, got shape {tuple(x.shape)}")
    if x.dtype != sub.basis.dtype:
        x = x.to(sub.basis.dtype)
    return x
