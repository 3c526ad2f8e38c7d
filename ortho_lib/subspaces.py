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

from ._checks import check_dtype, check_int, check_seed, check_size, check_tensor, tolerance

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

    def __post_init__(self) -> None:
        B = check_tensor("Subspace.basis", self.basis, ndim=2)
        C = check_tensor("Subspace.perp_basis", self.perp_basis, ndim=2)
        d = B.shape[0]
        if C.shape[0] != d or B.shape[1] + C.shape[1] != d or B.shape[1] < 1 or C.shape[1] < 1:
            raise ValueError(f"Subspace.basis (d, d - ell) and Subspace.perp_basis (d, ell) with 1 <= ell <= d - 1 must "
                             f"together form a d x d matrix, got {tuple(B.shape)} and {tuple(C.shape)}")
        if B.dtype != C.dtype or B.device != C.device:
            raise TypeError(f"Subspace.perp_basis must have the dtype and device of Subspace.basis ({B.dtype}, "
                            f"{B.device}), got {C.dtype}, {C.device}")
        # [basis, perp_basis] must be orthogonal: checked on two fixed random vectors (O(d^2), not O(d^3))
        g = torch.Generator().manual_seed(0)
        v = torch.randn(d, 2, generator=g, dtype=torch.float64).to(B.device, B.dtype)
        B_, C_ = B.detach(), C.detach()
        coords = torch.cat([B_.T @ v, C_.T @ v])
        back = B_ @ coords[: B.shape[1]] + C_ @ coords[B.shape[1]:]
        err = max(float((coords.norm(dim=0) - v.norm(dim=0)).abs().max()), float((back - v).norm(dim=0).max()))
        if err > tolerance(B.dtype) * float(v.norm(dim=0).max()):
            raise ValueError("Subspace.basis and Subspace.perp_basis must have orthonormal columns that together span "
                             f"R^{d} (error {err:.2g}); build a Subspace with random_subspace, coordinate_subspace or "
                             "subspace_from_vectors")

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
    R = torch.randn(d, d - k, generator=g, dtype=torch.float64).to(basis.dtype)
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
        seed: seed of the Gaussian matrix, an integer in ``[0, 2**64)``.
        dtype: float32 or float64 (the matrix is drawn and factorised in float64, then rounded).
    """
    d = check_int("d", d, low=2)
    ell = check_int("ell", ell, low=1, high=d - 1)
    dtype = check_dtype("dtype", dtype)
    check_size("d", d, d)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    G = torch.randn(d, d, generator=g, dtype=torch.float64)
    Q, R = torch.linalg.qr(G)
    Q = (Q * torch.sign(torch.diagonal(R)).unsqueeze(0)).to(dtype)
    return Subspace(basis=Q[:, : d - ell].contiguous(), perp_basis=Q[:, d - ell :].contiguous())


def coordinate_subspace(d: int, ell: int, *, dtype: torch.dtype = DEFAULT_DTYPE) -> Subspace:
    r"""The coordinate-aligned subspace $P = \mathrm{span}(e_1,\dots,e_{d-\ell})$.

    $P^\perp$ is spanned by the last $\ell$ coordinate vectors.
    """
    d = check_int("d", d, low=2)
    ell = check_int("ell", ell, low=1, high=d - 1)
    check_size("d", d, d)
    eye = torch.eye(d, dtype=check_dtype("dtype", dtype))
    return Subspace(basis=eye[:, : d - ell].contiguous(), perp_basis=eye[:, d - ell :].contiguous())


def subspace_from_vectors(vectors: Tensor, *, seed: int = 0) -> Subspace:
    r"""The span $P$ of the given vectors (rows of ``vectors``, shape ``(k, d)``).

    The vectors must be linearly independent and span a proper subspace (``k <= d - 1``).
    The complement basis is completed by Gram--Schmidt against a seeded Gaussian matrix.

    Example: ``subspace_from_vectors(torch.tensor([[1., 1.]]))`` is the diagonal line in $\mathbb{R}^2$.
    """
    V = check_tensor("vectors", vectors, ndim=2).detach()
    seed = check_seed("seed", seed)
    k, d = V.shape
    if k < 1 or k > d - 1:
        raise ValueError(f"vectors must hold between 1 and d-1 = {d - 1} rows, got {k}")
    check_size("vectors", d, d)
    Q, R = torch.linalg.qr(V.T)
    diag = torch.diagonal(R).abs()
    if bool((diag <= tolerance(V.dtype) * diag.max()).any()):
        raise ValueError("vectors must be linearly independent")
    return Subspace(basis=Q.contiguous(), perp_basis=_complete(Q, d, seed=seed).contiguous())


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
        x = x - check_tensor("offset", offset, shape=(sub.d,)).to(x.dtype)
    return perp_coordinates(sub, x).norm(dim=-1)


def _check_subspace(sub: object, d: Optional[int] = None, *, name: str = "sub", against: str = "the inputs") -> Subspace:
    """Return ``sub`` if it is a :class:`Subspace` (of ``R^d`` when ``d`` is given), else raise naming ``name``."""
    if not isinstance(sub, Subspace):
        raise TypeError(f"{name} must be a Subspace, got {type(sub).__name__}")
    if d is not None and sub.d != d:
        raise ValueError(f"{name} must live in R^d with d = {d} (the dimension of {against}), got d = {sub.d}")
    return sub


def _check_last_dim(sub: Subspace, x: Tensor, name: str = "x") -> Tensor:
    _check_subspace(sub)
    x = check_tensor(name, x, ndim=(1, 2, 3))
    if x.shape[-1] != sub.d:
        raise ValueError(f"{name} must have last dimension d = {sub.d} (that of sub), got shape {tuple(x.shape)}")
    if x.dtype != sub.basis.dtype:
        x = x.to(sub.basis.dtype)
    return x
