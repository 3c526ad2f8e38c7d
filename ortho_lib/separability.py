r"""Linear separability of one-step adversarial noises (Zhang, Yu, Lu, He 2023, arXiv 2206.04316).

**The binary two-layer setting.**  The paper's network is $f(x) = a^\top \sigma(Wx)$ with no biases,
$W_{ij}\sim\mathcal N(0, 1/d)$, $a_i \sim \mathcal N(0, 1/m)$: in this library that is
``init_network(d, m, seed=..., second_layer="gaussian", bias="zero")``, with the paper's $a$ stored as
``params.u``.  With the logistic loss $\ell(x, y) = -\log s(y f(x))$, $s$ the sigmoid, the one-step
$L_2$ adversarial noise is the input gradient of the loss

.. math:: r_x = \nabla_x \ell(x, y) = -\bigl(1 - s(y f(x))\bigr)\, y\, W^\top D_x a,
          \qquad D_x = \mathrm{diag}\bigl(\mathbb 1[Wx > 0]\bigr),

and the direction $v = -W^\top a$ separates the labelled noises because

.. math:: y \langle v, r_x\rangle = \bigl(1 - s(yf(x))\bigr)\; q(x), \qquad q(x) = a^\top W W^\top D_x a ,

with $q(x)$ close to $1/2$.  The functions below compute $r_x$, $v$, $q$, the exact first two moments of
$q$ (see :func:`key_quantity_moments`), the projected direction of the paper's Corollary 3.4.1 and the
perturbation decomposition behind its Theorem 3.6.

The closed-form laws (moments of $q$, the projected separation probability, Cover's theorem) are in
:mod:`ortho_lib.theory`; the noises themselves in :mod:`ortho_lib.perturbations`; the multi-class protocol
on real data uses :mod:`ortho_lib.datasets`, :mod:`ortho_lib.mlp` and :mod:`ortho_lib.probes`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ._checks import check_dtype, check_float, check_int, check_labels, check_seed, check_size, check_tensor, to_numpy, \
    tolerance
from .network import TwoLayerParams, _inputs, _check_params, input_gradient
from .subspaces import DEFAULT_DTYPE


def separating_direction(params: TwoLayerParams) -> Tensor:
    r"""The label-free direction $v = -W^\top a$ of Theorem 3.1, shape ``(d,)``."""
    _check_params(params, single=True)
    return -(params.u @ params.W)

def key_quantity(params: TwoLayerParams, X: Tensor, direction: Optional[Tensor] = None) -> Tensor:
    r"""$q_v(x) = -\langle v, \nabla_x f(x)\rangle$ per point, so that $y\langle v, r_x\rangle = (1 - s(yf(x)))\,q_v(x)$.

    With the default $v = -W^\top a$ of the same network this is $q(x) = a^\top W W^\top D_x a$.
    Passing the initial network's direction with trained ``params`` gives the quantity of Theorem 3.6,
    $a_0^\top W_0 W_*^\top D^*_x a_*$.

    Args:
        X: ``(n, d)``.  direction: ``(d,)``, default :func:`separating_direction` of ``params``.
    Returns:
        ``(n,)``.
    """
    _check_params(params, single=True)
    X, _ = _inputs(params, check_tensor("X", X, ndim=2))
    v = separating_direction(params) if direction is None else check_tensor(
        "direction", direction, shape=(params.d,)).to(X.dtype)
    return -(input_gradient(params, X) @ v)

def separation_margins(direction: Tensor, noises: Tensor, y: Tensor) -> Tensor:
    r"""$y_j \langle v, r_j\rangle$ for each labelled noise (``(n, d)``, ``(n,)`` -> ``(n,)``).

    The noises are linearly separated by $v$ (through the origin) exactly when every entry is $> 0$.
    """
    R = check_tensor("noises", noises, ndim=2)
    v = check_tensor("direction", direction, shape=(R.shape[1],))
    y = check_labels("y", y, R.shape[0])
    return y.to(R.dtype) * (R @ v.to(R.dtype))

def sample_key_quantity(
    m: int, d: int, draws: int, *, seed: int, chunk: int = 256, dtype: torch.dtype = DEFAULT_DTYPE
) -> Tensor:
    r"""$q(x) = a^\top W W^\top D_x a$ for ``draws`` independent (network, input) pairs.

    Each draw is a fresh network of the paper ($W_{ij}\sim\mathcal N(0,1/d)$, $a_i\sim\mathcal N(0,1/m)$,
    no biases) and a fresh input uniform on the sphere of radius $\sqrt d$, so the returned values are
    i.i.d. with the law whose moments :func:`key_quantity_moments` gives.  Computed in batches of
    ``chunk`` networks.

    Returns:
        ``(draws,)``.
    """
    m = check_int("m", m, low=1)
    d = check_int("d", d, low=1)
    draws = check_int("draws", draws, low=1)
    chunk = check_int("chunk", chunk, low=1)
    dtype = check_dtype("dtype", dtype)
    check_size("draws", draws)
    check_size("m, d and chunk", min(chunk, draws), m, d)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    out = []
    left = draws
    f64 = torch.float64  # drawn in float64, computed in dtype
    while left > 0:
        b = min(chunk, left)
        W = torch.randn(b, m, d, generator=g, dtype=f64).to(dtype) / math.sqrt(d)
        a = torch.randn(b, m, generator=g, dtype=f64).to(dtype) / math.sqrt(m)
        x = torch.randn(b, d, generator=g, dtype=f64).to(dtype)
        x = math.sqrt(d) * x / x.norm(dim=1, keepdim=True)
        D = (torch.bmm(W, x[:, :, None])[:, :, 0] > 0).to(dtype)
        WTa = torch.bmm(a[:, None, :], W)[:, 0, :]
        WTDa = torch.bmm((a * D)[:, None, :], W)[:, 0, :]
        out.append((WTa * WTDa).sum(1))
        left -= b
    return torch.cat(out)

def span_complement_projector(X: Tensor, *, rtol: Optional[float] = None) -> Tensor:
    r"""$\Pi_\perp = I - \Pi_{\mathrm{span}(X)}$, the projection onto the orthogonal complement of the rows of ``X``.

    Args:
        X: ``(n, d)``.  rtol: singular values below ``rtol * max`` count as zero (rank detection); default
            the precision of ``X`` (:func:`ortho_lib._checks.tolerance`: ``1.5e-8`` in float64, ``3.5e-4`` in float32).
    Returns:
        ``(d, d)``; the zero matrix when the rows span $\mathbb R^d$ (for instance $n \ge d$ generic points).
    """
    X = check_tensor("X", X, ndim=2).detach()
    rtol = tolerance(X.dtype) if rtol is None else check_float("rtol", rtol, positive=True)
    check_size("X", X.shape[1], X.shape[1])
    d = X.shape[1]
    U, S, _ = torch.linalg.svd(X.T, full_matrices=False)
    r = int((S > rtol * S.max()).sum()) if S.numel() and float(S.max()) > 0 else 0
    if r == d:  # exactly zero, not I - B B^T with rounding residue
        return torch.zeros(d, d, dtype=X.dtype)
    B = U[:, :r]
    return torch.eye(d, dtype=X.dtype) - B @ B.T

def projected_direction(params: TwoLayerParams, X: Tensor) -> Tensor:
    r"""Corollary 3.4.1's direction $v' = -\Pi_\perp W^\top a$, $\Pi_\perp$ off the span of the data ``X``.

    $\langle v', x_j\rangle = 0$ for every data point, so
    $y_j\langle v', x_j + \eta r_j\rangle = \eta\, y_j \langle v', r_j\rangle$.  It is the zero vector once
    the data span $\mathbb R^d$.

    Returns:
        ``(d,)``.
    """
    _check_params(params, single=True)
    X, _ = _inputs(params, check_tensor("X", X, ndim=2))
    return span_complement_projector(X) @ separating_direction(params)

def projected_key_quantity_moments(params: TwoLayerParams, X: Tensor, k: int) -> tuple[Tensor, Tensor]:
    r"""Conditional mean and standard deviation of $q'(x_j) = a^\top W_0 \Pi_\perp W_0^\top D_{x_j} a$, given $a$ and $D$.

    With $\Pi_\perp$ of rank $k$ independent of the activation patterns (the complement of the span of the
    data, at initialisation or after any training of the first layer alone), $W_0^\top a$ and
    $W_0^\top D_x a$ restricted to the range of $\Pi_\perp$ are jointly Gaussian, and with
    $S_j = \sum_i a_i^2 D_{x_j,ii}$ (the exact law is in :func:`projected_separation_probability`):

    .. math:: \mathbb E[q' \mid a, D] = \frac{k}{d} S_j, \qquad
              \mathrm{Var}[q' \mid a, D] = \frac{k}{d^2}\bigl(\|a\|^2 S_j + S_j^2\bigr).

    Args:
        params: the network whose activation patterns $D_{x_j}$ are used (``params.u`` is $a$).
        X: ``(n, d)``.  k: rank of $\Pi_\perp$ (``d - rank(X)`` for the span of the data).
    Returns:
        ``(mean, sd)``, each ``(n,)``.
    """
    _check_params(params, single=True)
    X, _ = _inputs(params, check_tensor("X", X, ndim=2))
    d = params.d
    k = check_int("k", k, low=0, high=d)
    D = ((X @ params.W.T + params.b) > 0).to(X.dtype)
    S = D @ (params.u ** 2)
    A = params.u @ params.u
    return k / d * S, torch.sqrt(k * (A * S + S * S)) / d

def active_mass_fraction(params: TwoLayerParams, X: Tensor) -> Tensor:
    r"""$\rho(x_j) = S_j/\|a\|^2$ with $S_j = \sum_i a_i^2\,\mathbb 1[w_i^\top x_j + b_i > 0]$: the share of the
    second layer's squared mass on the neurons active at $x_j$ (about $1/2$ at initialisation). ``(n, d)`` -> ``(n,)``."""
    _check_params(params, single=True)
    X, _ = _inputs(params, check_tensor("X", X, ndim=2))
    D = ((X @ params.W.T + params.b) > 0).to(X.dtype)
    return D @ (params.u ** 2) / (params.u @ params.u)

def projected_key_quantity_cdf(q: Tensor, params: TwoLayerParams, X: Tensor, k: int, *, nodes: int = 4000) -> Tensor:
    r"""$\Pr[q' \le q_j \mid a, D_{x_j}]$ under the exact conditional law $q' = \lambda_+U_1 - |\lambda_-|U_2$.

    ($U_1, U_2$ independent $\chi^2_k$, $\lambda_\pm = (S_j \pm \sqrt{S_j\|a\|^2})/(2d)$; see
    :func:`projected_separation_probability`.)  Computed as
    $\int_0^1 F_{\chi^2_k}\bigl((q_j + |\lambda_-|\,F^{-1}_{\chi^2_k}(p))/\lambda_+\bigr)\,dp$ by the midpoint rule
    with ``nodes`` points (error far below $10^{-4}$ for the default).  Applied to observed values, the result
    is uniform on $(0, 1)$ when the law is right (probability integral transform).

    Args:
        q: ``(n,)`` values of $q'$.  params: the network giving $a$ and $D_{x_j}$.  X: ``(n, d)``.  k: rank, ``>= 1``.
    Returns:
        ``(n,)`` probabilities.
    """
    import numpy as np
    from scipy.stats import chi2

    _check_params(params, single=True)
    X, _ = _inputs(params, check_tensor("X", X, ndim=2))
    q = check_tensor("q", q, shape=(X.shape[0],))
    k = check_int("k", k, low=1, high=params.d)
    nodes = check_int("nodes", nodes, low=10)
    check_size("nodes", nodes, max(1, X.shape[0]))
    S = to_numpy(((X @ params.W.T + params.b) > 0).to(X.dtype) @ (params.u ** 2))
    A = float((params.u @ params.u).detach())
    if bool((S <= 0).any()):
        raise ValueError("X: some point has no active neuron (S = 0); q' is then exactly 0")
    lp = (S + np.sqrt(S * A)) / (2 * params.d)
    lm = (np.sqrt(S * A) - S) / (2 * params.d)             # |lambda_-|
    u2 = chi2.ppf((np.arange(nodes) + 0.5) / nodes, k)      # quantiles of U_2
    vals = chi2.cdf((to_numpy(q)[:, None] + lm[:, None] * u2[None, :]) / lp[:, None], k).mean(1)
    return torch.as_tensor(vals, dtype=torch.float64)

def linearly_separable(Z: Tensor, y: Tensor, *, rtol: float = 1e-9) -> bool:
    r"""Whether some $w$ has $y_j\langle w, z_j\rangle > 0$ for every $j$ (a separator through the origin).

    Decided by the bounded linear program

    .. math:: t^* = \max\ t \quad\text{s.t.}\quad y_j\langle w, z_j\rangle \ge t\ \ (j\le n),
              \quad -1 \le w_i \le 1,\quad t \le 1,

    solved with SciPy's HiGHS: the points are separable exactly when $t^* > 0$; we answer
    $t^* > \text{rtol}\cdot\max_j\|z_j\|_1$ (the largest margin a box-bounded $w$ can reach).

    Args:
        Z: ``(n, d)`` points.  y: ``(n,)`` labels in $\{\pm 1\}$.
    """
    from scipy.optimize import linprog

    Z = check_tensor("Z", Z, ndim=2)
    y = check_labels("y", y, Z.shape[0])
    rtol = check_float("rtol", rtol, positive=True)
    n, d = Z.shape
    YZ = (y.to(Z.dtype)[:, None] * Z).detach().cpu().numpy()
    import numpy as np

    A = np.hstack([-YZ, np.ones((n, 1))])                 # -y_j <w, z_j> + t <= 0
    c = np.zeros(d + 1)
    c[-1] = -1.0                                           # maximise t
    res = linprog(c, A_ub=A, b_ub=np.zeros(n), bounds=[(-1.0, 1.0)] * d + [(None, 1.0)], method="highs")
    if res.status != 0:
        raise RuntimeError(f"the LP solver failed: {res.message}")
    scale = float(np.abs(YZ).sum(1).max()) if n else 1.0
    return bool(-res.fun > rtol * scale)

@dataclass
class LazyDecomposition:
    r"""The exact split of Theorem 3.6's quantity for a trained network $(W_*, a_*)$ and its initial $(W, a)$.

    With $u = W W^\top a$ and $\Delta W = W_* - W$, $\Delta a = a_* - a$, for every input $x$

    .. math:: q_*(x) := a^\top W W_*^\top D^*_x a_* = q_0(x) + E_{\mathrm{flip}} + E_W + E_a,

    :math:`E_{\mathrm{flip}} = u^\top (D^*_x - D_x) a`, :math:`E_W = (W^\top a)^\top \Delta W^\top D^*_x a_*`,
    :math:`E_a = u^\top D^*_x \Delta a`, bounded by
    :math:`|E_W| \le \|W^\top a\|\,\|\Delta W\|_{op}\,\|a_*\|`, :math:`|E_a| \le \|u\|\,\|\Delta a\|` and
    :math:`|E_{\mathrm{flip}}| \le \sum_{i \in F(x)} |u_i a_i|`, $F(x)$ the neurons whose activation on $x$ flipped.

    Attributes:
        q0: ``(n,)`` $q_0(x)$.
        q_star: ``(n,)`` $q_*(x)$.
        E_flip: ``(n,)`` the term of the flipped activations.
        E_W: ``(n,)`` the term of $\Delta W$.
        E_a: ``(n,)`` the term of $\Delta a$.
        bound_W: the norm bound on $|E_W|$ (a float, the same for every $x$).
        bound_a: the norm bound on $|E_a|$ (a float).
        bound_flip: ``(n,)`` $\sum_{i\in F(x)}|u_i a_i|$.
        n_flipped: ``(n,)`` $|F(x)|$ (int64).
        dW_op_sqrt_m: $\sqrt m\,\|\Delta W\|_{op}$ (a float).
        da_sqrt_m: $\sqrt m\,\|\Delta a\|$ (a float).
        dw_row_max_sqrt_m: $\sqrt m\,\max_i\|\Delta w_i\|$ (a float).
    """

    q0: Tensor
    q_star: Tensor
    E_flip: Tensor
    E_W: Tensor
    E_a: Tensor
    bound_W: float
    bound_a: float
    bound_flip: Tensor
    n_flipped: Tensor
    dW_op_sqrt_m: float
    da_sqrt_m: float
    dw_row_max_sqrt_m: float

    @property
    def total_bound(self) -> Tensor:
        """``bound_flip + bound_W + bound_a`` per point: a guaranteed bound on ``|q_star - q0|``."""
        return self.bound_flip + self.bound_W + self.bound_a

def lazy_decomposition(initial: TwoLayerParams, trained: TwoLayerParams, X: Tensor) -> LazyDecomposition:
    r"""Split $q_*(x) = a^\top W W_*^\top D^*_x a_*$ into $q_0(x)$ plus three error terms (see :class:`LazyDecomposition`).

    Args:
        initial: $(W, a)$ at initialisation.  trained: $(W_*, a_*)$ of the same shape.
        X: ``(n, d)`` inputs.
    """
    _check_params(initial, "initial", single=True)
    _check_params(trained, "trained", single=True)
    if initial.W.shape != trained.W.shape:
        raise ValueError(f"trained must have the shape of initial {tuple(initial.W.shape)}, got {tuple(trained.W.shape)}")
    if initial.W.dtype != trained.W.dtype:  # compare the two networks in the more precise dtype
        dt = torch.promote_types(initial.W.dtype, trained.W.dtype)
        initial, trained = (TwoLayerParams(*(t.to(dt) for t in (p.W, p.b, p.u, p.c))) for p in (initial, trained))
    X, _ = _inputs(initial, check_tensor("X", X, ndim=2))
    initial, trained = (TwoLayerParams(*(t.detach() for t in (p.W, p.b, p.u, p.c))) for p in (initial, trained))
    X = X.detach()  # a diagnostic made of norms and counts: no graph through it
    W, a, Ws, as_ = initial.W, initial.u, trained.W, trained.u
    dW, da = Ws - W, as_ - a
    D0 = ((X @ W.T + initial.b) > 0).to(X.dtype)          # (n, m)
    Ds = ((X @ Ws.T + trained.b) > 0).to(X.dtype)
    WTa = a @ W                                             # (d,)
    u = W @ WTa                                             # (m,)  u = W W^T a
    q0 = (D0 * (u * a)).sum(1)
    q_star = key_quantity(trained, X, -WTa)
    E_flip = ((Ds - D0) * (u * a)).sum(1)
    E_W = (Ds * as_) @ (dW @ WTa)                           # (W^T a)^T dW^T D* a*
    E_a = (Ds * u) @ da
    flipped = Ds != D0
    m = W.shape[0]
    return LazyDecomposition(
        q0=q0, q_star=q_star, E_flip=E_flip, E_W=E_W, E_a=E_a,
        bound_W=float(WTa.norm() * torch.linalg.matrix_norm(dW, ord=2) * as_.norm()),
        bound_a=float(u.norm() * da.norm()),
        bound_flip=(flipped.to(X.dtype) * (u * a).abs()).sum(1),
        n_flipped=flipped.sum(1),
        dW_op_sqrt_m=float(torch.linalg.matrix_norm(dW, ord=2)) * math.sqrt(m),
        da_sqrt_m=float(da.norm()) * math.sqrt(m),
        dw_row_max_sqrt_m=float(dW.norm(dim=1).max()) * math.sqrt(m),
    )
