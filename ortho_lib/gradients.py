r"""The input gradient orthogonal to the data, and the exact law of its norm (Theorem A).

For a trained network and a point $x_0 \in P$ chosen without looking at $\Pi_\perp W(0)$,

.. math:: g_\perp(x_0) = \sum_{i \in I(x_0)} u_i\,\Pi_\perp w_i(0), \qquad
          \|g_\perp(x_0)\|^2 \;\sim\; \beta^2\,\|u_{I(x_0)}\|^2\,\chi^2_\ell
          \quad\text{(conditionally on the part of the training in } P\text{)}.

The functions below compute $\|u_I\|^2$, the normalised statistic $\|g_\perp\|^2/(\beta^2\|u_I\|^2)$
(exactly $\chi^2_\ell$), and redraw the orthogonal part of the first layer — which, by the
frozen-component lemma, gives exactly the network that training from the redrawn initialisation
would have produced.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._checks import check_float, check_int, check_seed, check_size, check_tensor, tolerance
from .network import TwoLayerParams, active_set, _check_params, default_beta, orthogonal_gradient
from .subspaces import Subspace, Pi_P, _check_subspace, distance_to_subspace


def _check_sub(sub: object, d: int) -> Subspace:
    return _check_subspace(sub, d, against="the network's inputs")


def _check_points(params: TwoLayerParams, X: object) -> Tensor:
    X = check_tensor("X", X, ndim=(1, 2))
    if X.shape[-1] != params.d:
        raise ValueError(f"X must have last dimension d = {params.d} to match the network, got shape {tuple(X.shape)}")
    return X


def active_second_layer_norm_sq(params: TwoLayerParams, X: Tensor) -> Tensor:
    r"""$\|u_{I(x)}\|^2 = \sum_{i \in I(x)} u_i^2$ for each row of ``X``.

    With the fixed second layer $|u_i| = 1/\sqrt m$ this is $k/m$, $k = |I(x)|$.

    Args:
        params: the network.
        X: ``(n, d)`` points (or one point ``(d,)``).
    Returns:
        ``(n,)`` (or ``()``).
    """
    params = _check_params(params, single=True)
    X = _check_points(params, X)
    A = active_set(params, X).to(params.u.dtype)
    return A @ (params.u**2)


def gperp_chi2_statistic(
    params: TwoLayerParams, sub: Subspace, X: Tensor, *, beta: Optional[float] = None
) -> Tensor:
    r"""The normalised squared orthogonal gradient $\|g_\perp(x)\|^2 / (\beta^2\|u_{I(x)}\|^2)$ per row.

    Theorem A: for $x \in P$ chosen independently of $\Pi_\perp W(0)$ this has exactly the law $\chi^2_\ell$.

    Args:
        params: the (trained) network.
        sub: the data subspace $P$.
        X: ``(n, d)`` points (or one point ``(d,)``).
        beta: the initialisation scale of ``W`` (default $1/\sqrt d$, as in :func:`ortho_lib.init_network`).
    Returns:
        ``(n,)`` (or ``()``).
    Raises:
        ValueError: if some point has an empty active set ($\|u_I\| = 0$: the statistic is undefined there).
    """
    params = _check_params(params, single=True)
    sub = _check_sub(sub, params.d)
    beta = default_beta(params.d) if beta is None else check_float("beta", beta, positive=True)
    X = _check_points(params, X)
    uI_sq = active_second_layer_norm_sq(params, X)
    if bool((uI_sq == 0).any()):
        bad = int((uI_sq.reshape(-1) == 0).nonzero()[0])
        raise ValueError(f"X: point {bad} has an empty active set (||u_I|| = 0), so the statistic is undefined")
    g = orthogonal_gradient(params, sub, X)
    return (g**2).sum(-1) / (beta**2 * uI_sq)


def resample_orthogonal_part(
    params: TwoLayerParams, sub: Subspace, *, seed: int, beta: Optional[float] = None
) -> TwoLayerParams:
    r"""Replace $\Pi_\perp W$ by a fresh Gaussian draw, keeping $\Pi_P W$, $b$, $u$, $c$.

    .. math:: W' = \Pi_P W + \beta\, G\, Q_\perp^\top, \qquad G \in \mathbb R^{m\times\ell},\ G_{ij}\sim\mathcal N(0,1).

    If ``params`` were initialised with $w_i \sim \mathcal N(0,\beta^2 I_d)$, the result has the same law,
    and its $\Pi_P W$ is unchanged.  By the frozen-component lemma, training commutes with this map for
    data in $P$: ``train(resample(p0)) == resample(train(p0))`` (same ``seed``).

    Args:
        params: ``m x d`` network.
        sub: the subspace $P$.
        seed: seed of $G$.
        beta: scale of the new entries (default $1/\sqrt d$).
    Returns:
        the network with the new first layer, in the dtype of ``params`` ($G$ is drawn in float64).
    """
    params = _check_params(params, single=True)
    sub = _check_sub(sub, params.d)
    beta = default_beta(params.d) if beta is None else check_float("beta", beta, positive=True)
    gen = torch.Generator().manual_seed(check_seed("seed", seed))
    G = torch.randn(params.m, sub.ell, generator=gen, dtype=torch.float64).to(params.W.dtype)
    W = Pi_P(sub, params.W).to(params.W.dtype) + beta * G @ sub.perp_basis.T.to(params.W.dtype)
    return params.replace(W=W)


def resampled_gperp_norms(
    params: TwoLayerParams,
    sub: Subspace,
    x0: Tensor,
    *,
    draws: int,
    seed: int,
    beta: Optional[float] = None,
    chunk_elements: int = 1 << 22,
) -> Tensor:
    r"""$\|g_\perp(x_0)\|$ for ``draws`` independent redraws of $\Pi_\perp W$ (see :func:`resample_orthogonal_part`).

    For $x_0\in P$ the active set $I(x_0)$ does not depend on $\Pi_\perp W$, so each draw only needs the
    rows $i \in I(x_0)$:  $g_\perp^{(r)} = Q_\perp \sum_{i\in I(x_0)} u_i\,\beta\,G^{(r)}_i$ with fresh standard
    Gaussian rows $G^{(r)}_i \in \mathbb R^\ell$.  Each draw is the orthogonal gradient of the network one
    obtains by training from the initialisation with its orthogonal part redrawn.

    Args:
        params: the (trained) network.
        sub: the subspace $P$.
        x0: ``(d,)`` a point of $P$.
        draws: number of redraws $R \ge 1$.
        seed: seed of the redraws.
        beta: scale of the redrawn entries (default $1/\sqrt d$).
        chunk_elements: about how many Gaussian numbers to draw at once (a memory bound; whole draws
            are never split, but the random stream, hence the exact values, may depend on it).
    Returns:
        ``(draws,)`` norms.
    """
    params = _check_params(params, single=True)
    sub = _check_sub(sub, params.d)
    beta = default_beta(params.d) if beta is None else check_float("beta", beta, positive=True)
    x0 = check_tensor("x0", x0, shape=(params.d,)).detach()
    dist = float(distance_to_subspace(sub, x0[None, :])[0])
    if dist > tolerance(x0.dtype, sub.basis.dtype, params.W.dtype) * max(1.0, float(x0.norm())):
        raise ValueError(f"x0 must lie in P (its active set must not depend on Pi_perp W); distance {dist:.3g}")
    x0 = x0.to(params.W.dtype)
    draws = check_int("draws", draws, low=1)
    check_size("draws", draws)
    chunk_elements = check_int("chunk_elements", chunk_elements, low=1)
    seed = check_seed("seed", seed)
    uI = params.u.detach()[active_set(params, x0)]
    k, ell = int(uI.numel()), sub.ell
    out = torch.zeros(draws, dtype=params.W.dtype)
    if k == 0:
        return out
    per = max(1, chunk_elements // (k * ell))
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, draws, per):
        c = min(per, draws - start)
        G = torch.randn(c, k, ell, generator=gen, dtype=torch.float64).to(params.W.dtype)
        coords = beta * torch.einsum("k,ckl->cl", uI, G)
        out[start : start + c] = coords.norm(dim=-1)
    return out
