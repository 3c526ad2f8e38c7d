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
by non-negative least squares, stationarity residual), builds exact KKT points on data whose augmented inputs are orthogonal, and provides the explicit
robust network $N_{\mathrm{rob}}(x) = \sum_i y_i\,\sigma(\langle x_i, x\rangle/d - 1/2)$ with a certified radius.

The network's second layer is called ``u`` in code (as in :mod:`ortho_lib.network`) and $v$ in the paper.
Training towards such a point is :func:`ortho_lib.train` with ``TrainConfig(schedule="max_margin",
trained="Wbu")``; the closed-form bounds are in :mod:`ortho_lib.theory`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from scipy.optimize import nnls
from torch import Tensor

from ._checks import check_float, check_int, check_labels, check_tensor
from .network import TwoLayerParams, _check_params, network_output


# ------------------------------------------------------------------------------------ margins, norms
def augmented_gram(X: Tensor) -> Tensor:
    r"""$\tilde G = X X^\top + \mathbf 1\mathbf 1^\top$, the Gram matrix of $\tilde x_i = (x_i, 1)$, shape ``(n, n)``."""
    X = check_tensor("X", X, ndim=2)
    return X @ X.T + 1.0

def _check_points(X: object) -> Tensor:
    """``X`` ``(n, d)`` with at least one point."""
    X = check_tensor("X", X, ndim=2)
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one point")
    return X


def _check_homogeneous(params: TwoLayerParams) -> TwoLayerParams:
    _check_params(params, single=True)
    if float(params.c.detach()) != 0.0:
        raise ValueError(
            f"params.c must be 0 (an output bias breaks the degree-2 homogeneity), got {float(params.c):g}")
    return params

def _check_data(params: TwoLayerParams, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    X = _check_points(X)
    if X.shape[1] != params.d:
        raise ValueError(f"X must have d = {params.d} columns to match params, got {X.shape[1]}")
    y = check_labels("y", y, X.shape[0])
    return X.to(params.W.dtype), y.to(params.W.dtype)

def parameter_norm_sq(params: TwoLayerParams) -> float:
    r"""$\|\theta\|^2 = \|W\|_F^2 + \|b\|^2 + \|u\|^2$ (the output bias must be 0)."""
    p = _check_homogeneous(params)
    return float(((p.W**2).sum() + (p.b**2).sum() + (p.u**2).sum()).detach())

def normalized_margin(params: TwoLayerParams, X: Tensor, y: Tensor) -> float:
    r"""$\bar\gamma(\theta) = \min_i y_i N_\theta(x_i)\,/\,\|\theta\|^2$, invariant under $\theta \mapsto c\theta$.

    Gradient flow on the logistic loss increases it, and its limit is the normalised margin of a KKT
    point of the max-margin problem (Lyu and Li 2020).  ``X``: ``(n, d)``; ``y``: ``(n,)``.
    """
    p = _check_homogeneous(params)
    X, y = _check_data(p, X, y)
    return float((y * network_output(p, X)).min().detach()) / parameter_norm_sq(p)

def fraction_on_margin(params: TwoLayerParams, X: Tensor, y: Tensor, *, rel_tol: float = 1e-2) -> float:
    r"""Fraction of points with $y_i N(x_i) \le (1 + \text{rel\_tol})\,\min_k y_k N(x_k)$ (needs a positive margin)."""
    p = _check_homogeneous(params)
    X, y = _check_data(p, X, y)
    rel_tol = check_float("rel_tol", rel_tol, nonnegative=True)
    q = y * network_output(p, X)
    gamma = float(q.min().detach())
    if gamma <= 0:
        raise ValueError(f"params must classify every point with a positive margin, min y N(x) = {gamma:.3g}")
    return float((q <= (1 + rel_tol) * gamma).to(torch.float64).mean())

def rescale_to_unit_margin(params: TwoLayerParams, X: Tensor, y: Tensor) -> TwoLayerParams:
    r"""$\theta/\sqrt{\gamma}$ with $\gamma = \min_i y_i N_\theta(x_i) > 0$: the same classifier, minimum margin exactly 1."""
    p = _check_homogeneous(params)
    X, y = _check_data(p, X, y)
    gamma = float((y * network_output(p, X)).min().detach())
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
    nrm = float(theta.norm().detach())
    if nrm == 0:
        raise ValueError("params must be non-zero")
    J = stationarity_matrix(p, X, y, kink_tol=kink_tol)
    return float((theta - J @ lam).norm().detach()) / nrm

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
    params = _check_homogeneous(params)
    params = TwoLayerParams(*(t.detach() for t in (params.W, params.b, params.u, params.c)))  # NNLS runs in NumPy
    X = X.detach() if isinstance(X, Tensor) else X
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
    X = _check_points(X).detach()  # a construction from the data: no graph through it
    n, d = X.shape
    y = check_labels("y", y, n).to(X.dtype)
    tol = check_float("tol", tol, nonnegative=True)
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence) or len(groups) == 0:
        raise TypeError(f"groups must be a non-empty sequence of sequences of point indices, got {groups!r}")
    checked: list[list[int]] = []
    for j, g in enumerate(groups):
        if isinstance(g, (str, bytes)) or not isinstance(g, (Sequence, Tensor)) or len(g) == 0:
            raise ValueError(f"groups[{j}] must be a non-empty sequence of point indices, got {g!r}")
        checked.append([check_int(f"groups[{j}][{k}]", i, low=0, high=n - 1) for k, i in enumerate(g)])
    groups = checked
    for g in groups:
        if len({float(y[i]) for i in g}) != 1:
            raise ValueError(f"groups: every group must hold points of one label, group {list(g)} mixes them")
    if sorted(i for g in groups for i in g) != list(range(n)):
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


# ------------------------------------------------------------------------- non-robustness, robustness
def flip_direction(X: Tensor, y: Tensor) -> Tensor:
    r"""$z = \sum_j y_j x_j$, shape ``(d,)``: moving a point $x_k$ to $x_k - y_k\alpha z/\|z\|$ flips a KKT network."""
    X = check_tensor("X", X, ndim=2)
    y = check_labels("y", y, X.shape[0]).to(X.dtype)
    return y @ X

def robust_network(X: Tensor, y: Tensor) -> TwoLayerParams:
    r"""$N_{\mathrm{rob}}(x) = \sum_i y_i\,\sigma(\langle x_i, x\rangle/\|x_i\|^2 - 1/2)$ as :class:`TwoLayerParams`.

    On data with $\|x_i\|^2 = d$ this is $\sum_i y_i\sigma(\langle x_i,x\rangle/d - 1/2)$: one neuron per training
    point, $W = X/d$, $b = -1/2$, $u = y$.  Width $n$.
    """
    X = _check_points(X)
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
    net = robust_network(X.detach() if isinstance(X, Tensor) else X, y)  # a radius of the data's network: no graph
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


# ----------------------------------------------------------------------- certified KKT points (convex)
@dataclass
class CertifiedKKT:
    r"""An exact KKT point of the max-margin problem, found by :func:`certified_kkt_point`.

    Attributes:
        params: the KKT point $\theta^\star$, balanced ($|u_j| = \|\tilde w_j\|$), minimum margin 1.
        lam: ``(n,)`` the solver's multipliers of the margin constraints.
        value: the optimum $\sum_j\|a_j\|$ of the convex program of the final pattern ($= \tfrac12\|\theta^\star\|^2$
            at unit margin).
        fit: the independent check, :func:`kkt_multipliers` applied to ``params`` (multipliers recovered
            by non-negative least squares, not taken from the solver).
        rounds: convex programs solved (1 when the starting pattern already gives a KKT point).
        pattern_changes: activation pairs $(i, j)$ moved to the other side of the kink between rounds.
        status: the solver's status of the last program (``"Solved"``).
        tol: the residual below which the point is called certified.
    """

    params: TwoLayerParams
    lam: Tensor
    value: float
    fit: KKTFit
    rounds: int
    pattern_changes: int
    status: str
    tol: float

    @property
    def residual(self) -> float:
        """The larger of the two KKT errors of the independent check."""
        return self.fit.residual

    @property
    def certified(self) -> bool:
        """Whether both KKT errors of the independent check are at most ``tol``."""
        return self.status in ("Solved", "AlmostSolved") and self.fit.residual <= self.tol


def _solve_pattern_program(G: Tensor, y: Tensor, signs: Tensor, A: Tensor, *, eps: float, kink: Tensor | None = None):
    r"""Solve the convex max-margin program of one activation pattern with Clarabel.

    Variables: the pre-activations $P_{ji} = a_j^\top\tilde x_i$ (``(m, n)``) and the norms $t_j \ge \|a_j\|$;
    minimise $\sum_j t_j$.  Pairs in ``kink`` (``(m, n)`` bool) are held at the kink, $P_{ji} = 0$, instead of
    on one side of it.  Returns ``(P, t, lam, nu, status)`` with the duals of the margin rows (``lam``,
    ``(n,)``) and of the sign rows (``nu``, ``(m, n)``; those of held pairs in the equality's sign).
    """
    import clarabel
    import numpy as np
    from scipy import sparse

    n, m = G.shape[0], signs.shape[0]
    Linv = torch.linalg.inv(torch.linalg.cholesky(G)).numpy()            # ||L^{-1} P_j||^2 = P_j^T G^{-1} P_j
    An, yn, sn = A.numpy(), y.numpy(), signs.numpy()
    nP = m * n
    nv = nP + m                                                           # P, then t
    col = np.arange(nP).reshape(m, n)                                     # column of P_{ji}
    sigma = np.where(An.T > 0, 1.0, -1.0)                                 # (m, n): +1 needs P >= 0, -1 needs P <= 0
    # Clarabel's form: A x + s = b, s in a cone.  Non-negative rows: sigma_ji P_ji >= 0 and the margins
    # y_i sum_j s_j A_ij P_ji >= 1; then one second-order cone (t_j, L^{-1} P_j) per neuron.
    held = np.zeros(nP, dtype=bool) if kink is None else kink.numpy().ravel()
    order = np.concatenate([np.nonzero(held)[0], np.nonzero(~held)[0]])  # held pairs first: the zero cone
    signs_rows = sparse.csr_matrix((-sigma.ravel()[order], (np.arange(nP), col.ravel()[order])), shape=(nP, nv))
    coef = -(yn[None, :] * sn[:, None] * An.T)                            # (m, n)
    margin_rows = sparse.csr_matrix((coef.ravel(), (np.tile(np.arange(n), m), col.ravel())), shape=(n, nv))
    cone_rows = []
    for j in range(m):
        head = sparse.csr_matrix(([-1.0], ([0], [nP + j])), shape=(1, nv))
        body = sparse.hstack([sparse.csr_matrix((n, j * n)), sparse.csr_matrix(-Linv),
                              sparse.csr_matrix((n, nv - (j + 1) * n))])
        cone_rows += [head, body]
    Amat = sparse.vstack([signs_rows, margin_rows] + cone_rows).tocsc()
    b = np.concatenate([np.zeros(nP), -np.ones(n), np.zeros(m * (n + 1))])
    n_held = int(held.sum())
    cones = ([clarabel.ZeroConeT(n_held)] if n_held else []) + [clarabel.NonnegativeConeT(nP - n_held + n)] \
        + [clarabel.SecondOrderConeT(n + 1)] * m
    q = np.concatenate([np.zeros(nP), np.ones(m)])
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = eps
    settings.max_iter = 200
    sol = clarabel.DefaultSolver(sparse.csc_matrix((nv, nv)), q, Amat, b, cones, settings).solve()
    x, z = np.asarray(sol.x), np.asarray(sol.z)
    P = torch.as_tensor(x[:nP].reshape(m, n), dtype=G.dtype)
    t = torch.as_tensor(x[nP:], dtype=G.dtype)
    nu_flat = np.empty(nP)
    nu_flat[order] = z[:nP]
    nu = torch.as_tensor(nu_flat.reshape(m, n), dtype=G.dtype)
    lam = torch.as_tensor(z[nP:nP + n], dtype=G.dtype)
    return P, t, lam, nu, str(sol.status).split(".")[-1]


def _network_from_preactivations(P: Tensor, G: Tensor, Xt: Tensor, signs: Tensor, X: Tensor, y: Tensor):
    """The balanced network of the solution (a_j = X~^T G^{-1} P_j) at unit margin, and its KKT check."""
    Acoef = torch.linalg.solve(G, P.T).T @ Xt                            # (m, d+1) rows a_j
    norms = Acoef.norm(dim=1)
    live = norms > 1e-6 * float(norms.max())
    r = torch.where(live, norms.sqrt(), torch.zeros_like(norms))       # w~_j = a_j / sqrt|a_j|, u_j = s_j sqrt|a_j|
    Wt = torch.where(live[:, None], Acoef / r.clamp(min=1e-300)[:, None], torch.zeros_like(Acoef))
    out = TwoLayerParams(Wt[:, :-1].contiguous(), Wt[:, -1].contiguous(), signs * r, torch.zeros((), dtype=X.dtype))
    out = rescale_to_unit_margin(out, X, y)
    return out, kkt_multipliers(out, X, y, kink_tol=1e-5)


def certified_kkt_point(
    params: TwoLayerParams, X: Tensor, y: Tensor, *, tol: float = 1e-5, max_rounds: int = 20, eps: float = 1e-10,
) -> CertifiedKKT:
    r"""The KKT point of the max-margin problem in the activation region of ``params``, solved and checked.

    Fix the signs $s_j = \operatorname{sign}u_j$ and the activation pattern $A_{ij} = \mathbb 1[\tilde w_j^\top\tilde x_i > 0]$
    of ``params`` (a pre-activation within $10^{-9}\|\tilde w_j\|\|\tilde x_i\|$ of the kink counts as inactive).  With $a_j = |u_j|\,\tilde w_j$ a network of that pattern is
    $N(x_i) = \sum_j s_jA_{ij}\,a_j^\top\tilde x_i$, and over per-neuron rescalings $\tfrac12\|\theta\|^2 \ge \sum_j\|a_j\|$
    with equality when balanced.  So the max-margin problem restricted to the pattern is the convex
    second-order cone program

    .. math:: \min_{a}\ \sum_j \|a_j\| \quad\text{s.t.}\quad
              y_i\sum_j s_jA_{ij}\,a_j^\top\tilde x_i \ge 1,\qquad
              (2A_{ij} - 1)\,a_j^\top\tilde x_i \ge 0 ,

    solved here with Clarabel in the variables $P_{ji} = a_j^\top\tilde x_i$ (the optimal $a_j$ lie in
    $\mathrm{span}\{\tilde x_i\}$, where $\|a_j\|^2 = P_j^\top\tilde G^{-1}P_j$).  Its solution is a KKT point of the
    (non-convex) max-margin problem when no sign constraint binds with a multiplier that the ReLU's
    subgradient cannot absorb; where one does, the pair is moved to the other side of the kink (the
    current solution stays feasible and the optimum cannot increase) and the program is solved again,
    at most ``max_rounds`` times.  (Where the optimum is not unique, the interior-point solution is a
    point of the relative interior of the optimal set.)  A last solve holds the pairs found at the kink
    exactly there (an interior-point method leaves them about $\sqrt{\text{eps}}$ inside).  The result is then checked independently with
    :func:`kkt_multipliers` (relative kink tolerance $10^{-5}$, above the solver's precision): it is
    *certified* when both KKT errors are at most ``tol``.

    Args:
        params: a network with zero output bias that classifies ``(X, y)`` (its pattern is the start).
        X: ``(n, d)`` with linearly independent augmented rows $(x_i, 1)$.  y: ``(n,)`` labels.
        tol: certification threshold on the KKT errors.  max_rounds: convex programs at most.
        eps: the solver's relative tolerances (gap and feasibility).
    """
    p = _check_homogeneous(params)
    p = TwoLayerParams(*(t.detach().to(torch.float64) for t in (p.W, p.b, p.u, p.c)))
    X, y = _check_data(p, X.detach() if isinstance(X, Tensor) else X, y)
    tol = check_float("tol", tol, positive=True)
    eps = check_float("eps", eps, positive=True, below=1e-3)
    max_rounds = check_int("max_rounds", max_rounds, low=1)
    if float((y * network_output(p, X)).min()) <= 0:
        raise ValueError("params must classify every point of (X, y) with a positive margin")
    n = X.shape[0]
    Xt = torch.cat([X, torch.ones(n, 1, dtype=X.dtype)], 1)
    G = Xt @ Xt.T
    try:
        torch.linalg.cholesky(G)
    except RuntimeError as exc:  # pragma: no cover - depends on the data
        raise ValueError("X: the augmented inputs (x_i, 1) must be linearly independent") from exc
    signs = torch.where(p.u >= 0, 1.0, -1.0).to(X.dtype)
    Z = X @ p.W.T + p.b                                                  # (n, m) pre-activations
    scale = Xt.norm(dim=1)[:, None] * torch.cat([p.W, p.b[:, None]], 1).norm(dim=1)[None, :]
    A = (Z > 1e-9 * scale).to(X.dtype)                                   # a pair within rounding of the kink: inactive
    changes, rounds = 0, 0
    while True:
        rounds += 1
        P, t, lam, nu, status = _solve_pattern_program(G, y, signs, A, eps=eps)
        if status not in ("Solved", "AlmostSolved"):
            break
        # Multipliers of binding sign constraints that the subgradient s_ij in [0, 1] cannot absorb:
        # the KKT coefficient of x~_i in neuron j is s_j y_i lam_i s_ij = s_j y_i lam_i A_ij + sigma nu.
        sigma = torch.where(A.T > 0, 1.0, -1.0).to(X.dtype)
        scale = float(lam.max()) if float(lam.max()) > 0 else 1.0
        live = t > 1e-6 * float(t.max())
        s_needed = A.T + sigma * nu * signs[:, None] * y[None, :] / lam.clamp(min=1e-300)[None, :]
        bad = (nu > 1e-6 * scale) & live[:, None] & ((s_needed < -1e-4) | (s_needed > 1 + 1e-4) | (lam[None, :] <= 1e-9 * scale))
        if not bool(bad.any()) or rounds >= max_rounds:
            break
        changes += int(bad.sum())
        A = torch.where(bad.T, 1.0 - A, A)
    out, fit = _network_from_preactivations(P, G, Xt, signs, X, y)
    optimum = float(t.sum())
    # Polish: an interior-point solution stays a little inside a sign constraint that binds with a zero
    # multiplier (about the square root of the tolerance).  Where that shows in the KKT errors, hold the
    # pairs found at the kink there exactly and solve once more; keep whichever solution checks better.
    if status in ("Solved", "AlmostSolved") and fit.residual > 1e-2 * tol:
        near = P.abs() <= 1e-4 * P.abs().amax(dim=1, keepdim=True).clamp(min=1e-300)
        P2, t2, lam2, _, status2 = _solve_pattern_program(G, y, signs, A, eps=eps, kink=near)
        sigma = torch.where(A.T > 0, 1.0, -1.0).to(X.dtype)
        if status2 in ("Solved", "AlmostSolved") and bool((sigma * P2 >= -1e-9 * P2.abs().max()).all()):
            out2, fit2 = _network_from_preactivations(P2, G, Xt, signs, X, y)
            if fit2.residual < fit.residual:
                out, fit, lam, optimum, status = out2, fit2, lam2, float(t2.sum()), status2
    return CertifiedKKT(params=out, lam=lam, value=optimum, fit=fit, rounds=rounds,
                        pattern_changes=changes, status=status, tol=tol)


def direction_distance(first: TwoLayerParams, second: TwoLayerParams) -> float:
    r"""$\bigl\|\hat\theta_1 - \hat\theta_2\bigr\|$ with $\hat\theta = \theta/\|\theta\|$, after balancing each network.

    Balancing (:func:`balance_layers`) removes the per-neuron rescaling $(\tilde w_j, u_j)\mapsto(c\tilde w_j, u_j/c)$
    that leaves the function unchanged, so two networks computing the same function with the same
    neurons are at distance 0.  Neurons are compared by index.  Between 0 and 2.
    """
    for name, p in (("first", first), ("second", second)):
        _check_params(p, name, single=True)
        if float(p.c.detach()) != 0.0:
            raise ValueError(f"{name}.c must be 0 (an output bias breaks the degree-2 homogeneity), got {float(p.c):g}")
    if first.W.shape != second.W.shape:
        raise ValueError(f"second must have the shape of first {tuple(first.W.shape)}, got {tuple(second.W.shape)}")
    a, b = balance_layers(first), balance_layers(second)
    if a.W.shape != b.W.shape:
        raise ValueError(f"second must have the shape of first {tuple(a.W.shape)}, got {tuple(b.W.shape)}")
    ta, tb = _flat(a).detach().to(torch.float64), _flat(b).detach().to(torch.float64)
    na, nb = float(ta.norm()), float(tb.norm())
    if na == 0 or nb == 0:
        raise ValueError("first and second must be non-zero networks")
    return float((ta / na - tb / nb).norm().detach())


def smoothed_normalized_margin(log_loss: Tensor, norm_sq: Tensor, n: int) -> Tensor:
    r"""Lyu and Li's smoothed normalised margin for the logistic loss, from the mean loss's logarithm.

    With the summed loss $\mathcal L = \sum_i\log(1 + e^{-y_iN(x_i)}) = n\,L$ ($L$ the mean loss that
    :func:`ortho_lib.train` records as ``log_loss`` $= \log L$),

    .. math:: \tilde\gamma(\theta) = \frac{-\log\bigl(e^{\mathcal L} - 1\bigr)}{\|\theta\|^2},
              \qquad \bar\gamma - \frac{\log n + n e^{-q_{\min}}}{\|\theta\|^2} \le \tilde\gamma \le \bar\gamma ,

    where $\bar\gamma = q_{\min}/\|\theta\|^2$ is :func:`normalized_margin`.  Computed without overflow or
    underflow when $\mathcal L$ is tiny.  Gradient flow never decreases it once $\mathcal L < \log 2$.

    Args:
        log_loss: ``(r,)`` values of $\log L$.  norm_sq: ``(r,)`` values of $\|\theta\|^2$.  n: number of points.
    Returns:
        ``(r,)``.
    """
    log_loss = check_tensor("log_loss", log_loss, ndim=1).detach().to(torch.float64)
    norm_sq = check_tensor("norm_sq", norm_sq, shape=(log_loss.shape[0],)).detach().to(torch.float64)
    n = check_int("n", n, low=1)
    if bool((norm_sq <= 0).any()):
        raise ValueError("norm_sq must be positive (the squared norm of a non-zero network)")
    log_sum = log_loss + math.log(n)                                     # log of the summed loss
    total = log_sum.exp()
    small = log_sum < -20.0                                              # log(e^S - 1) = log S + S/2 + O(S^2)
    log_em1 = torch.where(small, log_sum + total / 2, torch.log(torch.expm1(total.clamp(max=700.0))))
    return -log_em1 / norm_sq
