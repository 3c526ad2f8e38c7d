r"""Margin maximisation and the KKT points of two-layer ReLU networks (Vardi, Yehudai, Shamir 2022).

The network $N_\theta(x) = \sum_j u_j\,\sigma(w_j^\top x + b_j)$ with $\theta = (W, b, u)$ (no output bias) is
homogeneous of degree 2 in $\theta$: $N_{c\theta} = c^2 N_\theta$ for $c > 0$, biases counted as weights.
Write $\tilde x = (x, 1)$ and $\tilde w_j = (w_j, b_j)$, so $w_j^\top x + b_j = \tilde w_j^\top \tilde x$.
The max-margin problem and its KKT conditions are

.. math::
    \min_\theta \tfrac12\|\theta\|^2 \quad\text{s.t.}\quad y_i N_\theta(x_i) \ge 1,
    \qquad
    \tilde w_j = u_j \sum_i \lambda_i y_i s_{ij}\,\tilde x_i,\quad
    u_j = \sum_i \lambda_i y_i\,\sigma(\tilde w_j^\top \tilde x_i),

with $\lambda_i \ge 0$, $\lambda_i = 0$ unless $y_i N_\theta(x_i) = 1$, and $s_{ij} \in \partial\sigma(\tilde w_j^\top\tilde x_i)$.
This module measures how close a network is to such a point (normalised margin, multipliers recovered
by non-negative least squares, stationarity residual), trains towards it (:func:`train_max_margin`),
builds exact KKT points on data whose augmented inputs are orthogonal, and provides the explicit
robust network $N_{\mathrm{rob}}(x) = \sum_i y_i\,\sigma(\langle x_i, x\rangle/d - 1/2)$ with a certified radius.

The network's second layer is called ``u`` in code (as in :mod:`ortho_lib.network`) and $v$ in the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from scipy.optimize import nnls
from torch import Tensor

from ._checks import check_float, check_int, check_labels, check_tensor
from .data import sphere_data  # noqa: F401  (re-exported: the chapter imports it from here)
from .network import TwoLayerParams, init_network, network_output

__all__ = [
    "sphere_data", "obtuse_data", "augmented_gram", "parameter_norm_sq", "normalized_margin",
    "fraction_on_margin", "rescale_to_unit_margin", "balance_layers", "stationarity_matrix",
    "stationarity_residual", "KKTFit", "kkt_multipliers", "flip_direction", "robust_network",
    "robust_certified_radius", "construct_kkt_point", "small_init", "MarginRun", "train_max_margin",
    "kkt_flip_bound", "orthogonal_max_margin_value",
]


# ----------------------------------------------------------------------------------------------- data
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
    g = torch.Generator().manual_seed(check_int("seed", seed))
    U, _ = torch.linalg.qr(torch.randn(d, n, generator=g, dtype=dtype))  # (d, n) orthonormal columns
    Cm = torch.triu(eps * d * torch.rand(n, n, generator=g, dtype=dtype), diagonal=1)
    Cm = Cm + Cm.T
    M = (d + 1) * torch.eye(n, dtype=dtype) - Cm - 1.0
    e, V = torch.linalg.eigh(M)
    if float(e.min()) <= 0:
        raise ValueError(f"eps = {eps:g} is too large for n = {n}, d = {d}: the Gram matrix would not be positive definite")
    return (V * e.sqrt()) @ V.T @ U.T


def augmented_gram(X: Tensor) -> Tensor:
    r"""$\tilde G = X X^\top + \mathbf 1\mathbf 1^\top$, the Gram matrix of $\tilde x_i = (x_i, 1)$, shape ``(n, n)``."""
    X = check_tensor("X", X, ndim=2)
    return X @ X.T + 1.0


# ------------------------------------------------------------------------------------ margins, norms
def _check_homogeneous(params: TwoLayerParams) -> TwoLayerParams:
    if not isinstance(params, TwoLayerParams):
        raise TypeError(f"params must be TwoLayerParams, got {type(params).__name__}")
    if float(params.c) != 0.0:
        raise ValueError(
            f"params.c must be 0 (an output bias breaks the degree-2 homogeneity), got {float(params.c):g}")
    return params


def _check_data(params: TwoLayerParams, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    X = check_tensor("X", X, ndim=2)
    if X.shape[1] != params.d:
        raise ValueError(f"X must have d = {params.d} columns to match params, got {X.shape[1]}")
    y = check_labels("y", y, X.shape[0])
    return X.to(params.W.dtype), y.to(params.W.dtype)


def parameter_norm_sq(params: TwoLayerParams) -> float:
    r"""$\|\theta\|^2 = \|W\|_F^2 + \|b\|^2 + \|u\|^2$ (the output bias must be 0)."""
    p = _check_homogeneous(params)
    return float((p.W**2).sum() + (p.b**2).sum() + (p.u**2).sum())


def normalized_margin(params: TwoLayerParams, X: Tensor, y: Tensor) -> float:
    r"""$\bar\gamma(\theta) = \min_i y_i N_\theta(x_i)\,/\,\|\theta\|^2$, invariant under $\theta \mapsto c\theta$.

    Gradient flow on the logistic loss increases it, and its limit is the normalised margin of a KKT
    point of the max-margin problem (Lyu and Li 2020).  ``X``: ``(n, d)``; ``y``: ``(n,)``.
    """
    p = _check_homogeneous(params)
    X, y = _check_data(p, X, y)
    return float((y * network_output(p, X)).min()) / parameter_norm_sq(p)


def fraction_on_margin(params: TwoLayerParams, X: Tensor, y: Tensor, *, rel_tol: float = 1e-2) -> float:
    r"""Fraction of points with $y_i N(x_i) \le (1 + \text{rel\_tol})\,\min_k y_k N(x_k)$ (needs a positive margin)."""
    p = _check_homogeneous(params)
    X, y = _check_data(p, X, y)
    rel_tol = check_float("rel_tol", rel_tol, nonnegative=True)
    q = y * network_output(p, X)
    gamma = float(q.min())
    if gamma <= 0:
        raise ValueError(f"params must classify every point with a positive margin, min y N(x) = {gamma:.3g}")
    return float((q <= (1 + rel_tol) * gamma).to(torch.float64).mean())


def rescale_to_unit_margin(params: TwoLayerParams, X: Tensor, y: Tensor) -> TwoLayerParams:
    r"""$\theta/\sqrt{\gamma}$ with $\gamma = \min_i y_i N_\theta(x_i) > 0$: the same classifier, minimum margin exactly 1."""
    p = _check_homogeneous(params)
    X, y = _check_data(p, X, y)
    gamma = float((y * network_output(p, X)).min())
    if gamma <= 0:
        raise ValueError(f"params must classify every point with a positive margin, min y N(x) = {gamma:.3g}")
    s = 1.0 / math.sqrt(gamma)
    return TwoLayerParams(p.W * s, p.b * s, p.u * s, p.c.clone())


def balance_layers(params: TwoLayerParams) -> TwoLayerParams:
    r"""Rescale each neuron, $(\tilde w_j, u_j) \mapsto (c_j\tilde w_j, u_j/c_j)$ with $c_j>0$, so that $|u_j| = \|\tilde w_j\|$.

    The function $N$ is unchanged and $\|\theta\|^2$ becomes its smallest value over such rescalings,
    $2\sum_j |u_j|\,\|\tilde w_j\|$.  Every KKT point is balanced in this sense.  Dead neurons
    ($u_j = 0$ or $\tilde w_j = 0$) are set to zero.
    """
    p = _check_homogeneous(params)
    wn = torch.sqrt((p.W**2).sum(1) + p.b**2)
    un = p.u.abs()
    alive = (wn > 0) & (un > 0)
    c = torch.where(alive, torch.sqrt(un / torch.where(alive, wn, torch.ones_like(wn))), torch.zeros_like(wn))
    u = torch.where(alive, p.u / torch.where(alive, c, torch.ones_like(c)), torch.zeros_like(p.u))
    return TwoLayerParams(p.W * c[:, None], p.b * c, u, p.c.clone())


# ------------------------------------------------------------------------------------------------ KKT
def stationarity_matrix(params: TwoLayerParams, X: Tensor, y: Tensor, *, kink_tol: float = 1e-9) -> Tensor:
    r"""The matrix $J$ whose column $i$ is $y_i\,\partial_\theta N_\theta(x_i)$, flattened as $(W, b, u)$: shape ``(m(d+2), n)``.

    .. math:: \partial_{w_j} = u_j s_{ij} x_i,\qquad \partial_{b_j} = u_j s_{ij},\qquad \partial_{u_j} = \sigma(\tilde w_j^\top\tilde x_i),

    with $s_{ij} = 1$ when $\tilde w_j^\top\tilde x_i > \text{kink\_tol}\cdot\|\tilde w_j\|\,\|\tilde x_i\|$ and $0$
    otherwise (a pre-activation within rounding of the kink gets the subgradient 0).
    Stationarity of the KKT conditions reads $\theta = J\lambda$.
    """
    p = _check_homogeneous(params)
    X, y = _check_data(p, X, y)
    kink_tol = check_float("kink_tol", kink_tol, nonnegative=True)
    Z = X @ p.W.T + p.b  # (n, m)
    scale = torch.sqrt((X**2).sum(1) + 1)[:, None] * torch.sqrt((p.W**2).sum(1) + p.b**2)[None, :]
    S = (Z > kink_tol * scale).to(X.dtype)
    A = y[:, None] * S * p.u[None, :]  # (n, m): y_i u_j s_ij
    n, m, d = X.shape[0], p.m, p.d
    JW = A[:, :, None] * X[:, None, :]  # (n, m, d)
    Jb = A  # (n, m)
    Ju = y[:, None] * torch.relu(Z) * (S > 0)  # (n, m)
    return torch.cat([JW.reshape(n, m * d), Jb, Ju], dim=1).T


def _flat(p: TwoLayerParams) -> Tensor:
    return torch.cat([p.W.reshape(-1), p.b, p.u])


def stationarity_residual(params: TwoLayerParams, X: Tensor, y: Tensor, lam: Tensor, *, kink_tol: float = 1e-9) -> float:
    r"""Relative stationarity error $\|\theta - \sum_i \lambda_i y_i \partial_\theta N_\theta(x_i)\| / \|\theta\|$ for given $\lambda$ ``(n,)``.

    Zero exactly at a KKT point (with its multipliers); see :func:`stationarity_matrix` for the subgradient.
    """
    p = _check_homogeneous(params)
    X, y = _check_data(p, X, y)
    lam = check_tensor("lam", lam, shape=(X.shape[0],)).to(X.dtype)
    if bool((lam < 0).any()):
        raise ValueError("lam must be non-negative (KKT multipliers)")
    theta = _flat(p)
    nrm = float(theta.norm())
    if nrm == 0:
        raise ValueError("params must be non-zero")
    J = stationarity_matrix(p, X, y, kink_tol=kink_tol)
    return float((theta - J @ lam).norm()) / nrm


@dataclass
class KKTFit:
    r"""Multipliers recovered by :func:`kkt_multipliers` and what they say.

    Attributes:
        params: the network rescaled so that $\min_i y_i N(x_i) = 1$.
        lam: ``(n,)`` multipliers $\lambda \ge 0$.
        s: ``(n, m)`` subgradients $s_{ij}\in[0,1]$ used ($1$ active, $0$ inactive, fitted at kinks).
        margins: ``(n,)`` values $y_i N(x_i) \ge 1$ of the rescaled network.
        stationarity: relative stationarity error $\|\theta - \sum_i\lambda_i y_i\partial_\theta N(x_i)\|/\|\theta\|$.
        complementarity: $\sum_i \lambda_i (y_iN(x_i) - 1) / \sum_i \lambda_i$.
        n_kinks: number of pairs $(i, j)$ treated as sitting at the kink of the ReLU.
        scale: the factor $1/\sqrt\gamma$ applied to $\theta$.
    """

    params: TwoLayerParams
    lam: Tensor
    s: Tensor
    margins: Tensor
    stationarity: float
    complementarity: float
    n_kinks: int
    scale: float

    @property
    def residual(self) -> float:
        """The larger of the two KKT errors (stationarity, complementarity)."""
        return max(self.stationarity, self.complementarity)


def _nnls_quadratic(Q: Tensor, b: Tensor) -> Tensor:
    """argmin_{x >= 0} x^T Q x - 2 b^T x for symmetric PSD Q (via NNLS on a square root of Q)."""
    e, V = torch.linalg.eigh(Q)
    keep = e > 1e-13 * float(e.max().clamp(min=1e-300))
    R = (V[:, keep] * e[keep].sqrt()).T  # Q = R^T R on the kept part
    rhs = (V[:, keep].T @ b) / e[keep].sqrt()
    x, _ = nnls(R.numpy(), rhs.numpy(), maxiter=50 * Q.shape[0] + 100)
    return torch.as_tensor(x, dtype=Q.dtype)


def kkt_multipliers(
    params: TwoLayerParams, X: Tensor, y: Tensor, *, kink_tol: float = 1e-3, sweeps: int = 100
) -> KKTFit:
    r"""Recover KKT multipliers of the max-margin problem for a network that separates the data.

    1. Rescale $\theta$ so that the minimum margin is 1 (:func:`rescale_to_unit_margin`).
    2. Classify each pair $(i, j)$ by its relative pre-activation $\rho_{ij} = \tilde w_j^\top\tilde x_i /
       (\|\tilde w_j\|\|\tilde x_i\|)$: active ($\rho_{ij} > \text{kink\_tol}$, $s_{ij} = 1$), inactive
       ($\rho_{ij} < -\text{kink\_tol}$, $s_{ij} = 0$), or at the kink ($s_{ij} \in [0, 1]$ free, as the Clarke
       subdifferential of the ReLU allows).  Gradient descent drives many pairs to the kink, so
       fixing $s_{ij}$ there by the sign of a tiny pre-activation would report a spurious error.
    3. Minimise the stationarity error $\|\theta - \sum_i \lambda_i y_i\partial_\theta N(x_i)\|^2$ over
       $\lambda_i \ge 0$ and $\mu_{ij} = \lambda_i s_{ij} \ge 0$ at the kinks (a convex non-negative least-squares
       problem, solved by exact block minimisation: ``scipy.optimize.nnls`` for $\lambda$, then for each
       neuron's $\mu_{\cdot j}$, ``sweeps`` times), then set $s_{ij} = \min(1, \mu_{ij}/\lambda_i)$ and report the
       error of that feasible choice.  The $w$-part is computed in the coordinates of
       $\mathrm{span}\{\tilde x_i\}$ plus the exact norm of the part of $\tilde w_j$ outside it.
    4. Report the relative stationarity error and the complementarity error
       $\sum_i\lambda_i(y_iN(x_i)-1)/\sum_i\lambda_i$.

    Both errors are 0 at a KKT point (with a kink tolerance that covers its kinks) and small near one.
    Needs the augmented inputs $\tilde x_i$ to be linearly independent (e.g. $n \le d$ points in general position).
    """
    p = rescale_to_unit_margin(params, X, y)
    X, y = _check_data(p, X, y)
    kink_tol = check_float("kink_tol", kink_tol, nonnegative=True)
    sweeps = check_int("sweeps", sweeps, low=1)
    n, m = X.shape[0], p.m
    Xt = torch.cat([X, torch.ones(n, 1, dtype=X.dtype)], 1)  # (n, d+1)
    Wt = torch.cat([p.W, p.b[:, None]], 1)  # (m, d+1)
    u = p.u
    G = Xt @ Xt.T
    try:
        Lc = torch.linalg.cholesky(G)
    except RuntimeError as exc:  # pragma: no cover - depends on the data
        raise ValueError("X: the augmented inputs (x_i, 1) must be linearly independent") from exc
    Z = X @ p.W.T + p.b  # (n, m)
    norms = Xt.norm(dim=1)[:, None] * Wt.norm(dim=1)[None, :]
    rel = torch.where(norms > 0, Z / torch.where(norms > 0, norms, torch.ones_like(norms)), torch.zeros_like(Z))
    A = (rel > kink_tol).to(X.dtype)  # (n, m) active
    K = (rel.abs() <= kink_tol) & (norms > 0)  # (n, m) at the kink
    H = torch.relu(Z)
    # coefficients of w~_j in span{x~_i}: Wt ~ C Xt, C (m, n); and the part outside the span
    C = torch.cholesky_solve((Xt @ Wt.T), Lc).T  # (m, n)
    out_sq = float(((Wt - C @ Xt) ** 2).sum())
    LT = Lc.T  # ||sum_i a_i x~_i|| = ||L^T a||
    yA = y[:, None] * A  # (n, m)
    Q = (G * ((A * u**2) @ A.T) + H @ H.T) * (y[:, None] * y[None, :])
    lam = torch.zeros(n, dtype=X.dtype)
    mu = torch.zeros(n, m, dtype=X.dtype)
    kink_cols = [torch.nonzero(K[:, j]).flatten() for j in range(m)]
    has_kinks = [j for j in range(m) if kink_cols[j].numel() > 0]

    def objective(lam_: Tensor, mu_: Tensor) -> float:
        E = C.T - u[None, :] * y[:, None] * (A * lam_[:, None] + mu_)  # (n, m) coefficient errors
        w_part = float(((LT @ E) ** 2).sum())
        u_part = float(((u - H.T @ (lam_ * y)) ** 2).sum())
        return w_part + u_part + out_sq

    prev = math.inf
    for _ in range(sweeps):
        # lambda-step: quadratic in lambda with mu fixed
        T = C.T - u[None, :] * y[:, None] * mu  # (n, m) target coefficients
        b = y * (((G @ T) * A * u[None, :]).sum(1) + H @ u)
        lam = _nnls_quadratic(Q, b)
        # mu-step: one small NNLS per neuron with kinks
        for j in has_kinks:
            idx = kink_cols[j]
            t = C[j] - u[j] * yA[:, j] * lam
            M = LT[:, idx] * (u[j] * y[idx])[None, :]
            sol, _ = nnls(M.numpy(), (LT @ t).numpy(), maxiter=50 * idx.numel() + 100)
            mu[idx, j] = torch.as_tensor(sol, dtype=X.dtype)
        cur = objective(lam, mu)
        if prev - cur <= 1e-13 * max(cur, 1e-300) or not has_kinks:
            break
        prev = cur
    mu = torch.minimum(mu, lam[:, None].expand_as(mu))  # s_ij = mu_ij / lambda_i in [0, 1]
    theta_sq = float((Wt**2).sum() + (u**2).sum())
    stat = math.sqrt(max(objective(lam, mu), 0.0) / theta_sq)
    s = A + torch.where(lam[:, None] > 0, mu / torch.where(lam[:, None] > 0, lam[:, None], torch.ones_like(mu)), torch.zeros_like(mu))
    q = y * network_output(p, X)
    tot = float(lam.sum())
    comp = float((lam * (q - 1)).sum()) / tot if tot > 0 else math.inf
    gamma = float((y * network_output(params, X.to(params.W.dtype))).min())
    return KKTFit(params=p, lam=lam, s=s, margins=q, stationarity=stat, complementarity=comp,
                  n_kinks=int(K.sum()), scale=1.0 / math.sqrt(gamma))


def construct_kkt_point(X: Tensor, y: Tensor, groups: Sequence[Sequence[int]], *, tol: float = 1e-9) -> tuple[TwoLayerParams, Tensor]:
    r"""An exact KKT point of the max-margin problem with one neuron per label-pure group of points.

    ``groups`` partitions $\{0,\dots,n-1\}$ into groups $g$ of points with one label $y_g$.  With
    $\tilde G_{gg}$ the augmented Gram matrix of the group, neuron $g$ is

    .. math:: |u_g| = \bigl(\mathbf 1^\top\tilde G_{gg}^{-1}\mathbf 1\bigr)^{1/4},\quad \operatorname{sign}u_g = y_g,\quad
              \lambda_g = \tilde G_{gg}^{-1}\mathbf 1 / u_g^2,\quad \tilde w_g = u_g\sum_{i\in g}\lambda_i y_i\tilde x_i .

    It is active exactly on its group, every point has margin 1, and $(\theta, \lambda)$ satisfies the KKT
    conditions, provided $\lambda \ge 0$ and no neuron is active outside its group, i.e.
    $\sum_{l\in g}\lambda_l\langle\tilde x_l,\tilde x_i\rangle \le 0$ for $i\notin g$.  Both hold when
    $\langle\tilde x_i,\tilde x_k\rangle \le 0$ for $i\ne k$ (:func:`obtuse_data`); otherwise a ``ValueError``
    says which condition fails.  With $\tilde G = DI$ this is $\lambda_i = 1/\sqrt{D|g|}$, $|u_g| = (|g|/D)^{1/4}$,
    and one group per label gives the global max-margin network.  Returns ``(params, lam)``, width ``len(groups)``.
    """
    X = check_tensor("X", X, ndim=2)
    n, d = X.shape
    y = check_labels("y", y, n).to(X.dtype)
    tol = check_float("tol", tol, nonnegative=True)
    seen: list[int] = []
    for g in groups:
        if len(g) == 0:
            raise ValueError("groups must not contain an empty group")
        if len({float(y[int(i)]) for i in g}) != 1:
            raise ValueError(f"groups: every group must hold points of one label, group {list(g)} mixes them")
        seen.extend(int(i) for i in g)
    if sorted(seen) != list(range(n)):
        raise ValueError(f"groups must partition range({n}) (each point in exactly one group)")
    G = augmented_gram(X)
    m = len(groups)
    W = torch.zeros(m, d, dtype=X.dtype)
    b = torch.zeros(m, dtype=X.dtype)
    u = torch.zeros(m, dtype=X.dtype)
    lam = torch.zeros(n, dtype=X.dtype)
    for j, g in enumerate(groups):
        idx = torch.tensor([int(i) for i in g])
        h = torch.linalg.solve(G[idx][:, idx], torch.ones(len(g), dtype=X.dtype))
        if bool((h < 0).any()):
            raise ValueError(f"X: the multipliers of group {list(g)} would be negative (its Gram matrix is far from diagonal)")
        u2 = math.sqrt(float(h.sum()))
        u[j] = float(y[idx[0]]) * math.sqrt(u2)
        lam[idx] = h / u2
        coef = u[j] * lam[idx] * y[idx]
        W[j] = coef @ X[idx]
        b[j] = coef.sum()
    params = TwoLayerParams(W, b, u, torch.zeros((), dtype=X.dtype))
    Z = X @ W.T + b
    member = torch.zeros(n, m, dtype=torch.bool)
    for j, g in enumerate(groups):
        member[torch.tensor([int(i) for i in g]), j] = True
    scale = math.sqrt(float(G.diagonal().max())) * torch.sqrt((W**2).sum(1) + b**2)
    if bool((Z[~member] > tol * scale.expand(n, m)[~member]).any()):
        raise ValueError("X: some neuron would be active outside its group; use data with non-positive "
                         "augmented correlations (obtuse_data) or other groups")
    return params, lam


def small_init(d: int, m: int, *, seed: int, scale: float = 1e-3) -> TwoLayerParams:
    r"""A small initialisation: $w_j \sim \mathcal N(0, \tfrac{s^2}{d} I_d)$, $u_j \sim \mathcal N(0, \tfrac{s^2}{m})$, $b = 0$ ($s$ = ``scale``).

    :func:`ortho_lib.network.init_network` (Gaussian second layer) with both layers multiplied by $s$.
    """
    s = check_float("scale", scale, positive=True)
    p = init_network(d, m, seed=seed, second_layer="gaussian")
    return TwoLayerParams(s * p.W, p.b, s * p.u, p.c)


# ---------------------------------------------------------------------------------- training to KKT
@dataclass
class MarginRun:
    r"""What :func:`train_max_margin` returns.

    Attributes:
        params: final parameters.
        steps: updates made.
        history_steps: ``(r,)`` steps at which the history was recorded.
        margin_history: ``(r,)`` $\min_i y_iN(x_i)$.
        normalized_margin_history: ``(r,)`` $\min_i y_iN(x_i)/\|\theta\|^2$.
        log_loss_history: ``(r,)`` $\log L$ (finite even where $L$ itself underflows).
    """

    params: TwoLayerParams
    steps: int
    history_steps: Tensor
    margin_history: Tensor
    normalized_margin_history: Tensor
    log_loss_history: Tensor


def _log_logistic(s: Tensor) -> Tensor:
    """log(log(1 + exp(-s))) computed without underflow for large s."""
    big = s > 30
    safe = torch.where(big, torch.zeros_like(s), s)
    small_branch = torch.log(torch.nn.functional.softplus(-safe))
    big_branch = -s + torch.log1p(-0.5 * torch.exp(-torch.where(big, s, torch.full_like(s, 30.0))))
    return torch.where(big, big_branch, small_branch)


def train_max_margin(
    params: TwoLayerParams,
    X: Tensor,
    y: Tensor,
    *,
    eta0: float,
    steps: int,
    power: float = 1.0,
    record_every: int = 1,
) -> MarginRun:
    r"""Full-batch GD on the logistic loss with the loss-normalised step $\eta_t = \eta_0 / (L_t \max(1, \log(1/L_t)))$.

    All of $W$, $b$ and $u$ are trained (no output bias).  The update is exactly that of
    :func:`ortho_lib.train.train` with ``lr_schedule=lambda t, L: eta0 / (L * max(1, log(1/L)))``, but it is
    computed in the log domain,

    .. math:: \eta_t\nabla L = \frac{\eta_0}{\max(1, \log(1/L))}\,\frac{\nabla L}{L},\qquad
              \frac{\nabla L}{L} = -\sum_i \frac{\mathrm{sigmoid}(-s_i)}{\sum_k \log(1+e^{-s_k})}\, y_i\nabla_\theta N(x_i),

    ($s_i = y_iN(x_i)$) so it keeps going after $L$ underflows in floating point.  Dividing by $L$ keeps
    the step from vanishing as the loss decays; dividing by $\log(1/L) \approx$ the margin keeps it stable
    as $\|\theta\|$ grows.  $\|\theta\|^2$ grows about linearly in $t$.
    """
    p = _check_homogeneous(params)
    X, y = _check_data(p, X, y)
    eta0 = check_float("eta0", eta0, positive=True)
    steps = check_int("steps", steps, low=0)
    power = check_float("power", power, nonnegative=True)
    record_every = check_int("record_every", record_every, low=1)
    W, b, u = p.W.clone(), p.b.clone(), p.u.clone()
    n = X.shape[0]
    ts, ms, nms, lls = [], [], [], []
    t = 0
    while True:
        Z = X @ W.T + b
        H = torch.relu(Z)
        s = y * (H @ u)
        ll = _log_logistic(s)  # log of each point's loss
        log_sum = torch.logsumexp(ll, 0)
        log_L = float(log_sum) - math.log(n)
        if not math.isfinite(log_L):
            raise FloatingPointError(f"train_max_margin diverged at step {t}; lower eta0")
        if t % record_every == 0 or t == steps:
            th2 = float((W**2).sum() + (b**2).sum() + (u**2).sum())
            ts.append(t)
            ms.append(float(s.min()))
            nms.append(float(s.min()) / th2 if th2 > 0 else 0.0)
            lls.append(log_L)
        if t == steps:
            break
        # g_i = dL/df_i / L  =  -y_i sigmoid(-s_i) / sum_k loss_k
        g = -y * torch.exp(-torch.nn.functional.softplus(s) - log_sum)
        GZ = (g[:, None] * u[None, :]) * (Z > 0).to(X.dtype)
        gW, gb, gu = GZ.T @ X, GZ.sum(0), H.T @ g
        step = eta0 / max(1.0, -log_L) ** power
        W, b, u = W - step * gW, b - step * gb, u - step * gu
        t += 1
    return MarginRun(
        params=TwoLayerParams(W, b, u, p.c.clone()),
        steps=t,
        history_steps=torch.tensor(ts),
        margin_history=torch.tensor(ms, dtype=torch.float64),
        normalized_margin_history=torch.tensor(nms, dtype=torch.float64),
        log_loss_history=torch.tensor(lls, dtype=torch.float64),
    )


# ------------------------------------------------------------------------------ non-robustness, theory
def flip_direction(X: Tensor, y: Tensor) -> Tensor:
    r"""$z = \sum_j y_j x_j$, shape ``(d,)``: moving a point $x_k$ to $x_k - y_k\alpha z/\|z\|$ flips a KKT network."""
    X = check_tensor("X", X, ndim=2)
    y = check_labels("y", y, X.shape[0]).to(X.dtype)
    return y @ X


def kkt_flip_bound(X: Tensor, y: Tensor, margins: Optional[Tensor] = None) -> Tensor:
    r"""The book's bound on the flip norm along $\mp z$ at any KKT point, per training point, shape ``(n,)``.

    With $\tilde G = XX^\top + \mathbf 1\mathbf 1^\top$, $E = \max_{i\ne k}|\tilde G_{ik}|$,
    $D = \max_i \tilde G_{ii}$, $\zeta = \min_i y_i\langle x_i, z\rangle$ and $n'_k$ the number of points
    with label $-y_k$:

    .. math:: \alpha_k \;\le\; \frac{\|z\|}{\zeta}\Bigl(2E + N_k\,\frac{D + n'_k E}{n'_k}\Bigr),

    where $N_k = y_kN(x_k)$ at the KKT point (``margins``, default 1: a point on the margin).
    Entries are ``inf`` where the bound does not apply ($\zeta \le 0$ or $n'_k = 0$).
    """
    X = check_tensor("X", X, ndim=2)
    n = X.shape[0]
    y = check_labels("y", y, n).to(X.dtype)
    if margins is None:
        margins = torch.ones(n, dtype=X.dtype)
    margins = check_tensor("margins", margins, shape=(n,)).to(X.dtype)
    if bool((margins < 1 - 1e-12).any()):
        raise ValueError("margins must be >= 1 (the KKT scale has minimum margin 1)")
    G = augmented_gram(X)
    off = G - torch.diag(G.diagonal())
    E = float(off.abs().max()) if n > 1 else 0.0
    D = float(G.diagonal().max())
    z = flip_direction(X, y)
    zeta = float((y * (X @ z)).min())
    n_opp = torch.where(y > 0, (y < 0).sum(), (y > 0).sum()).to(X.dtype)
    if zeta <= 0:
        return torch.full((n,), math.inf, dtype=X.dtype)
    bound = float(z.norm()) / zeta * (2 * E + margins * (D + n_opp * E) / n_opp.clamp(min=1))
    return torch.where(n_opp > 0, bound, torch.full_like(bound, math.inf))


def orthogonal_max_margin_value(n_pos: int, n_neg: int, d: int) -> float:
    r"""Normalised margin $\sqrt{d+1}\,/\,\bigl(2(\sqrt{n_+}+\sqrt{n_-})\bigr)$ of the max-margin network when $\tilde x_i \perp \tilde x_k$.

    (For data from :func:`obtuse_data` with ``eps=0``; nearly orthogonal data come close to it.)
    """
    n_pos = check_int("n_pos", n_pos, low=1)
    n_neg = check_int("n_neg", n_neg, low=1)
    d = check_int("d", d, low=1)
    return math.sqrt(d + 1) / (2 * (math.sqrt(n_pos) + math.sqrt(n_neg)))


# ------------------------------------------------------------------------------------ robust network
def robust_network(X: Tensor, y: Tensor) -> TwoLayerParams:
    r"""$N_{\mathrm{rob}}(x) = \sum_i y_i\,\sigma(\langle x_i, x\rangle/\|x_i\|^2 - 1/2)$ as :class:`TwoLayerParams`.

    On data with $\|x_i\|^2 = d$ this is $\sum_i y_i\sigma(\langle x_i,x\rangle/d - 1/2)$: one neuron per training
    point, $W = X/d$, $b = -1/2$, $u = y$.  Width $n$.
    """
    X = check_tensor("X", X, ndim=2)
    y = check_labels("y", y, X.shape[0]).to(X.dtype)
    sq = (X**2).sum(1)
    if bool((sq == 0).any()):
        raise ValueError("X must not contain the zero vector")
    return TwoLayerParams(X / sq[:, None], torch.full_like(y, -0.5), y.clone(), torch.zeros((), dtype=X.dtype))


def robust_certified_radius(X: Tensor, y: Tensor, points: Tensor, labels: Tensor) -> Tensor:
    r"""A radius $r(x)$ such that $\operatorname{sign} N_{\mathrm{rob}}(x+\delta) = $ label for every $\|\delta\| < r(x)$.

    With $\pi_i = \langle x_i, x\rangle/\|x_i\|^2 - 1/2$, $g = \min_{i: y_i \ne y}(-\pi_i)$ and $\sigma_W$ the
    largest singular value of $W = (x_i/\|x_i\|^2)_i$:

    .. math:: r(x) = \min\bigl(\max_{k: y_k = y}\pi_k,\; 2g\bigr)\,/\,\sigma_W \qquad (0 \text{ if that is negative}).

    (Proof in the chapter: the best same-label neuron loses at most $|a_k|$, the opposite-label neurons
    gain at most $\sum_i a_i^2/(4g)$, with $a = W\delta$, $\|a\|\le\sigma_W\|\delta\|$.)
    ``points``: ``(q, d)``; ``labels``: ``(q,)``.  Returns ``(q,)``.
    """
    net = robust_network(X, y)
    y = y.to(X.dtype)
    points = check_tensor("points", points, ndim=2)
    if points.shape[1] != X.shape[1]:
        raise ValueError(f"points must have d = {X.shape[1]} columns, got {points.shape[1]}")
    labels = check_labels("labels", labels, points.shape[0]).to(X.dtype)
    Pi = points.to(X.dtype) @ net.W.T - 0.5  # (q, n)
    same = labels[:, None] == y[None, :]
    neg_inf = torch.full_like(Pi, -math.inf)
    best_same = torch.where(same, Pi, neg_inf).max(1).values
    gap = torch.where(~same, -Pi, torch.full_like(Pi, math.inf)).min(1).values
    sigma = float(torch.linalg.matrix_norm(net.W, ord=2))
    r = torch.minimum(best_same, 2 * gap) / sigma
    return r.clamp(min=0.0)
