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

**The multi-class protocol on real data.**  A small torch MLP trained on scikit-learn's ``load_digits``,
one-step noises ($L_2$-normalised gradient or FGSM sign, optionally with a softmax temperature or a
target class), and a linear probe (multinomial logistic regression) trained on the noises of the
training set and tested on those of the test set.  scikit-learn is imported only by the functions that
need it.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_float, check_int, check_labels, check_tensor
from .data import sphere_data  # noqa: F401  (re-exported: the chapter imports it from here)
from .network import TwoLayerParams, _check_inputs, input_gradient, network_output
from .subspaces import DEFAULT_DTYPE

# ----------------------------------------------------------------------------------------------------
# The binary two-layer network
# ----------------------------------------------------------------------------------------------------


def _check_params(params: object, name: str = "params") -> TwoLayerParams:
    if not isinstance(params, TwoLayerParams):
        raise TypeError(f"{name} must be TwoLayerParams, got {type(params).__name__}")
    return params


def one_step_noise(params: TwoLayerParams, X: Tensor, y: Tensor) -> Tensor:
    r"""The one-step $L_2$ adversarial noise $r_x = \nabla_x \ell(x, y)$ of the logistic loss, per point.

    .. math:: r_{x_j} = -\bigl(1 - s(y_j f(x_j))\bigr)\, y_j\, W^\top D_{x_j} a,
              \qquad \ell(x, y) = -\log s\bigl(y f(x)\bigr) = \log(1 + e^{-y f(x)}).

    (With biases, $D_x = \mathrm{diag}(\mathbb 1[Wx + b > 0])$; the output bias does not enter.)

    Args:
        params: the network ($a$ = ``params.u``).
        X: ``(n, d)`` inputs.  y: ``(n,)`` labels in $\{\pm 1\}$.
    Returns:
        ``(n, d)`` noises; the adversarial example is $x_j + \eta\, r_{x_j}$.
    """
    _check_params(params)
    X, _ = _check_inputs(params, check_tensor("X", X, ndim=2))
    y = check_labels("y", y, X.shape[0]).to(X.dtype)
    f = network_output(params, X)
    weight = -(1.0 - torch.sigmoid(y * f)) * y          # -(1 - s(y f)) y, shape (n,)
    return weight[:, None] * input_gradient(params, X)  # W^T D_x a per row


def fgsm_noise(params: TwoLayerParams, X: Tensor, y: Tensor) -> Tensor:
    r"""The one-step $L_\infty$ (FGSM) noise $\mathrm{sign}(r_x)$, shape ``(n, d)``."""
    return torch.sign(one_step_noise(params, X, y))


def separating_direction(params: TwoLayerParams) -> Tensor:
    r"""The label-free direction $v = -W^\top a$ of Theorem 3.1, shape ``(d,)``."""
    _check_params(params)
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
    _check_params(params)
    X, _ = _check_inputs(params, check_tensor("X", X, ndim=2))
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


def key_quantity_moments(m: int, d: int, k: Optional[int] = None) -> tuple[float, float]:
    r"""Exact mean and variance of $q = a^\top W \Pi W^\top D_x a$ at initialisation, for one fixed $x$.

    $\Pi$ is the orthogonal projection onto a $k$-dimensional subspace orthogonal to $x$ and to the
    subspace that determines $D_x$ (Corollary 3.4.1: the complement of the span of the data), or the
    identity when ``k`` is None (Theorem 3.1, $k = d$).  With $W_{ij}\sim\mathcal N(0,1/d)$,
    $a_i\sim\mathcal N(0,1/m)$ and $\|x\| = \sqrt d$:

    .. math:: \mathbb E\,q = \frac{k}{2d}, \qquad
              \mathrm{Var}\,q = \frac{\tfrac54 k^2 + 3k}{m d^2} + \frac{3(m-1)k}{4 m d^2},

    which for $k = d$ is $\tfrac{5}{4m} + \tfrac{3}{4d} + \tfrac{9}{4md}$.

    Returns:
        ``(mean, variance)``.
    """
    m = check_int("m", m, low=1)
    d = check_int("d", d, low=1)
    k = d if k is None else check_int("k", k, low=0, high=d)
    mean = k / (2 * d)
    var = (1.25 * k * k + 3 * k) / (m * d * d) + 3 * (m - 1) * k / (4 * m * d * d)
    return mean, var


def paper_variance(m: int, d: int) -> float:
    r"""The paper's heuristic variance of $q$: $\tfrac{5}{4m} + \tfrac1d + \tfrac{2}{md}$.

    It agrees with the exact value of :func:`key_quantity_moments` in the $5/(4m)$ term and differs in
    the $1/d$ term ($1/d$ against $3/(4d)$): the heuristic treats $\mathbb E[D_iD_j]$ as $1/2$ for $i\ne j$.
    """
    m = check_int("m", m, low=1)
    d = check_int("d", d, low=1)
    return 5 / (4 * m) + 1 / d + 2 / (m * d)


def cantelli_bound(mean: float, variance: float, threshold: float) -> float:
    r"""One-sided Chebyshev (Cantelli): $\Pr[q \le t] \le \sigma^2/(\sigma^2 + (\mu - t)^2)$ for $t < \mu$."""
    mean = check_float("mean", mean)
    variance = check_float("variance", variance, nonnegative=True)
    threshold = check_float("threshold", threshold)
    if threshold >= mean:
        raise ValueError(f"threshold must be below the mean {mean}, got {threshold}")
    return variance / (variance + (mean - threshold) ** 2)


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
    g = torch.Generator().manual_seed(check_int("seed", seed))
    out = []
    left = draws
    while left > 0:
        b = min(chunk, left)
        W = torch.randn(b, m, d, generator=g, dtype=dtype) / math.sqrt(d)
        a = torch.randn(b, m, generator=g, dtype=dtype) / math.sqrt(m)
        x = torch.randn(b, d, generator=g, dtype=dtype)
        x = math.sqrt(d) * x / x.norm(dim=1, keepdim=True)
        D = (torch.bmm(W, x[:, :, None])[:, :, 0] > 0).to(dtype)
        WTa = torch.bmm(a[:, None, :], W)[:, 0, :]
        WTDa = torch.bmm((a * D)[:, None, :], W)[:, 0, :]
        out.append((WTa * WTDa).sum(1))
        left -= b
    return torch.cat(out)


def span_complement_projector(X: Tensor, *, rtol: float = 1e-10) -> Tensor:
    r"""$\Pi_\perp = I - \Pi_{\mathrm{span}(X)}$, the projection onto the orthogonal complement of the rows of ``X``.

    Args:
        X: ``(n, d)``.  rtol: singular values below ``rtol * max`` count as zero (rank detection).
    Returns:
        ``(d, d)``; the zero matrix when the rows span $\mathbb R^d$ (for instance $n \ge d$ generic points).
    """
    X = check_tensor("X", X, ndim=2)
    rtol = check_float("rtol", rtol, positive=True)
    d = X.shape[1]
    U, S, _ = torch.linalg.svd(X.T, full_matrices=False)
    r = int((S > rtol * S.max()).sum()) if S.numel() and float(S.max()) > 0 else 0
    if r == d:  # exactly zero, not I - B B^T with rounding residue
        return torch.zeros(d, d, dtype=X.dtype)
    B = U[:, :r]
    return torch.eye(d, dtype=X.dtype) - B @ B.T


def projected_direction(params: TwoLayerParams, X: Tensor) -> Tensor:
    r"""Corollary 3.4.1's direction $v' = -\Pi_\perp W^\top a$, $\Pi_\perp$ off the span of the data ``X``.

    $\langle v', x_j\rangle = 0$ for every data point, so $y_j\langle v', x_j + \eta r_j\rangle
    = \eta\, y_j \langle v', r_j\rangle$.  It is the zero vector once the data span $\mathbb R^d$.

    Returns:
        ``(d,)``.
    """
    _check_params(params)
    X, _ = _check_inputs(params, check_tensor("X", X, ndim=2))
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
    _check_params(params)
    X, _ = _check_inputs(params, check_tensor("X", X, ndim=2))
    d = params.d
    k = check_int("k", k, low=0, high=d)
    D = ((X @ params.W.T + params.b) > 0).to(X.dtype)
    S = D @ (params.u ** 2)
    A = float(params.u @ params.u)
    return k / d * S, torch.sqrt(k * (A * S + S * S)) / d


def active_mass_fraction(params: TwoLayerParams, X: Tensor) -> Tensor:
    r"""$\rho(x_j) = S_j/\|a\|^2$ with $S_j = \sum_i a_i^2\,\mathbb 1[w_i^\top x_j + b_i > 0]$: the share of the
    second layer's squared mass on the neurons active at $x_j$ (about $1/2$ at initialisation). ``(n, d)`` -> ``(n,)``."""
    _check_params(params)
    X, _ = _check_inputs(params, check_tensor("X", X, ndim=2))
    D = ((X @ params.W.T + params.b) > 0).to(X.dtype)
    return D @ (params.u ** 2) / (params.u @ params.u)


def projected_separation_probability(k: int, active_fraction: float | Tensor = 0.5) -> float | Tensor:
    r"""$\Pr[q' > 0 \mid a, D]$ for the projected key quantity of rank ``k`` (exact).

    Given $a$ and $D$, $q' = \lambda_+ U_1 - |\lambda_-| U_2$ with $U_1, U_2$ independent $\chi^2_k$ and
    $\lambda_\pm = (S \pm \sqrt{S\|a\|^2})/(2d)$, so with $\rho = S/\|a\|^2$

    .. math:: \Pr[q' > 0 \mid a, D] = \Pr\Bigl[F_{k,k} > \frac{1-\sqrt\rho}{1+\sqrt\rho}\Bigr],

    $F_{k,k}$ Fisher's F distribution.  ``k = 0`` gives 0 ($q' = 0$).

    Args:
        k: rank of the projection, ``>= 0``.
        active_fraction: $\rho \in (0, 1]$, a float or a tensor of them (see :func:`active_mass_fraction`).
    Returns:
        a float, or a tensor of the shape of ``active_fraction``.
    """
    from scipy.stats import f as fisher_f

    k = check_int("k", k, low=0)
    is_tensor = isinstance(active_fraction, Tensor)
    rho = active_fraction.detach().cpu().double() if is_tensor else torch.tensor(
        check_float("active_fraction", active_fraction), dtype=torch.float64)
    if bool(((rho <= 0) | (rho > 1) | ~torch.isfinite(rho)).any()):
        raise ValueError("active_fraction must lie in (0, 1]")
    if k == 0:
        out = torch.zeros_like(rho)
    else:
        r = (1 - rho.sqrt()) / (1 + rho.sqrt())
        out = torch.as_tensor(fisher_f.sf(r.numpy(), k, k), dtype=torch.float64)
    return out if is_tensor else float(out)


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

    _check_params(params)
    X, _ = _check_inputs(params, check_tensor("X", X, ndim=2))
    q = check_tensor("q", q, shape=(X.shape[0],))
    k = check_int("k", k, low=1, high=params.d)
    nodes = check_int("nodes", nodes, low=10)
    S = (((X @ params.W.T + params.b) > 0).to(X.dtype) @ (params.u ** 2)).cpu().numpy()
    A = float(params.u @ params.u)
    if bool((S <= 0).any()):
        raise ValueError("X: some point has no active neuron (S = 0); q' is then exactly 0")
    lp = (S + np.sqrt(S * A)) / (2 * params.d)
    lm = (np.sqrt(S * A) - S) / (2 * params.d)             # |lambda_-|
    u2 = chi2.ppf((np.arange(nodes) + 0.5) / nodes, k)      # quantiles of U_2
    vals = chi2.cdf((q.cpu().numpy()[:, None] + lm[:, None] * u2[None, :]) / lp[:, None], k).mean(1)
    return torch.as_tensor(vals, dtype=torch.float64)


def adversarial_examples(params: TwoLayerParams, X: Tensor, y: Tensor, eta: float) -> Tensor:
    r"""$x_j + \eta\, r_{x_j}$ with the one-step noise of :func:`one_step_noise`, shape ``(n, d)``."""
    eta = check_float("eta", eta, positive=True)
    return X + eta * one_step_noise(params, X, y)


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


def cover_separable_probability(n: int, d: int) -> float:
    r"""Cover's function-counting theorem: the probability that $n$ points in general position in $\mathbb R^d$
    with independent uniform $\pm1$ labels are separable through the origin,

    .. math:: \Pr = 2^{1-n}\sum_{k=0}^{d-1}\binom{n-1}{k} \quad(= 1 \text{ for } n \le d).
    """
    from scipy.stats import binom

    n = check_int("n", n, low=1)
    d = check_int("d", d, low=1)
    return float(binom.cdf(d - 1, n - 1, 0.5))


@dataclass
class LazyDecomposition:
    r"""The exact split of Theorem 3.6's quantity for a trained network $(W_*, a_*)$ and its initial $(W, a)$.

    With $u = W W^\top a$ and $\Delta W = W_* - W$, $\Delta a = a_* - a$, for every input $x$

    .. math:: q_*(x) := a^\top W W_*^\top D^*_x a_* = q_0(x) + E_{\mathrm{flip}} + E_W + E_a,

    :math:`E_{\mathrm{flip}} = u^\top (D^*_x - D_x) a`, :math:`E_W = (W^\top a)^\top \Delta W^\top D^*_x a_*`,
    :math:`E_a = u^\top D^*_x \Delta a`, bounded by
    :math:`|E_W| \le \|W^\top a\|\,\|\Delta W\|_{op}\,\|a_*\|`, :math:`|E_a| \le \|u\|\,\|\Delta a\|` and
    :math:`|E_{\mathrm{flip}}| \le \sum_{i \in F(x)} |u_i a_i|`, $F(x)$ the neurons whose activation on $x$ flipped.

    Attributes (``(n,)`` tensors unless stated):
        q0, q_star, E_flip, E_W, E_a: the terms.
        bound_W, bound_a: the two norm bounds (floats, the same for every $x$).
        bound_flip: $\sum_{i\in F(x)}|u_i a_i|$.
        n_flipped: $|F(x)|$ (int64).
        dW_op_sqrt_m, da_sqrt_m, dw_row_max_sqrt_m: $\sqrt m\,\|\Delta W\|_{op}$, $\sqrt m\,\|\Delta a\|$,
            $\sqrt m\,\max_i\|\Delta w_i\|$ (floats).
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
    _check_params(initial, "initial")
    _check_params(trained, "trained")
    if initial.W.shape != trained.W.shape:
        raise ValueError(f"trained must have the shape of initial {tuple(initial.W.shape)}, got {tuple(trained.W.shape)}")
    X, _ = _check_inputs(initial, check_tensor("X", X, ndim=2))
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


# ----------------------------------------------------------------------------------------------------
# The multi-class protocol on real data (digits)
# ----------------------------------------------------------------------------------------------------


@dataclass
class DigitsSplit:
    """scikit-learn's 8x8 digits, pixels scaled to [0, 1], split into train and test (stratified).

    Attributes:
        X_train: ``(n_train, 64)`` float64.  y_train: ``(n_train,)`` int64 in 0..9.
        X_test, y_test: the same for the test part.
    """

    X_train: Tensor
    y_train: Tensor
    X_test: Tensor
    y_test: Tensor


def load_digits_split(*, test_fraction: float = 1 / 3, seed: int, shuffle_labels: bool = False) -> DigitsSplit:
    r"""``load_digits`` (1797 images of 8x8 pixels, shipped inside scikit-learn; no download), scaled by 1/16.

    Args:
        test_fraction: fraction of images held out (stratified by class).
        seed: seed of the split (and of the label permutation).
        shuffle_labels: replace the labels by a random permutation of themselves (random labels with the
            class sizes kept), before splitting.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    test_fraction = check_float("test_fraction", test_fraction, positive=True, below=1.0)
    seed = check_int("seed", seed, low=0)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    if shuffle_labels:
        g = torch.Generator().manual_seed(seed + 1)
        y = y[torch.randperm(len(y), generator=g).numpy()]
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_fraction, random_state=seed, stratify=y)
    t = lambda A, dt: torch.as_tensor(A, dtype=dt)  # noqa: E731
    return DigitsSplit(t(Xtr, torch.float64), t(ytr, torch.int64), t(Xte, torch.float64), t(yte, torch.int64))


class MLP(nn.Module):
    r"""One-hidden-layer ReLU network $x \mapsto A\,\sigma(Vx + b) + c$ with ``n_classes`` logits (float64).

    PyTorch's default ``nn.Linear`` initialisation; built under a fixed seed by :func:`train_mlp`.
    """

    def __init__(self, d_in: int, width: int, n_classes: int):
        super().__init__()
        self.hidden = nn.Linear(check_int("d_in", d_in, low=1), check_int("width", width, low=1), dtype=torch.float64)
        self.out = nn.Linear(width, check_int("n_classes", n_classes, low=2), dtype=torch.float64)

    def forward(self, x: Tensor) -> Tensor:
        """``(n, d_in)`` -> ``(n, n_classes)`` logits."""
        return self.out(torch.relu(self.hidden(x)))


@dataclass
class MLPRun:
    """What :func:`train_mlp` returns.

    Attributes:
        snapshots: epoch -> a frozen copy of the model after that many epochs (0 = initialisation).
        train_loss: mean cross-entropy over each epoch's mini-batches, ``(epochs,)``.
        train_accuracy: epoch -> accuracy on the training set at that snapshot.
    """

    snapshots: dict[int, MLP]
    train_loss: Tensor
    train_accuracy: dict[int, float] = field(default_factory=dict)


def train_mlp(
    X: Tensor,
    y: Tensor,
    *,
    width: int,
    lr: float,
    epochs: int,
    seed: int,
    batch_size: int = 32,
    momentum: float = 0.0,
    snapshot_epochs: Sequence[int] = (0,),
    n_classes: int = 10,
) -> MLPRun:
    r"""Train :class:`MLP` with mini-batch SGD on the cross-entropy, keeping copies at ``snapshot_epochs``.

    The initialisation is drawn under ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the
    global random state is left as it was) and the batch order comes from a generator seeded with
    ``seed``, so a run is reproducible.

    Args:
        X: ``(n, d)`` float inputs.  y: ``(n,)`` int64 classes in ``0..n_classes-1``.
        width: hidden width.  lr: SGD step.  epochs: passes over the data.
        batch_size, momentum: SGD settings.  snapshot_epochs: epochs (0..epochs) at which to keep a copy.
    """
    X = check_tensor("X", X, ndim=2).to(torch.float64)
    y = _check_classes(y, X.shape[0], n_classes)
    lr = check_float("lr", lr, positive=True)
    epochs = check_int("epochs", epochs, low=0)
    batch_size = check_int("batch_size", batch_size, low=1)
    momentum = check_float("momentum", momentum, nonnegative=True, below=1.0)
    snaps = sorted({check_int("snapshot_epochs[i]", e, low=0, high=epochs) for e in snapshot_epochs})
    seed = check_int("seed", seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast, and the result is thread-count independent
    try:
        return _train_mlp(X, y, width, lr, epochs, batch_size, momentum, snaps, seed, n_classes)
    finally:
        torch.set_num_threads(threads)


def _train_mlp(X, y, width, lr, epochs, batch_size, momentum, snaps, seed, n_classes) -> MLPRun:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLP(X.shape[1], width, n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    run = MLPRun(snapshots={}, train_loss=torch.zeros(epochs, dtype=torch.float64))

    def keep(e: int) -> None:
        frozen = copy.deepcopy(model).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
        run.snapshots[e] = frozen
        with torch.no_grad():
            run.train_accuracy[e] = float((frozen(X).argmax(1) == y).to(torch.float64).mean())

    if 0 in snaps:
        keep(0)
    n = X.shape[0]
    for e in range(1, epochs + 1):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if not math.isfinite(total):
            raise FloatingPointError(f"training diverged in epoch {e}; lower lr (got {lr})")
        run.train_loss[e - 1] = total / n
        if e in snaps:
            keep(e)
    return run


def _check_classes(y: object, n: int, n_classes: int) -> Tensor:
    if not isinstance(y, Tensor) or y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"y must be an integer torch.Tensor of class indices, got {getattr(y, 'dtype', type(y).__name__)}")
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) (one class per row of X), got {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"y must hold classes in 0..{n_classes - 1}, got range {int(y.min())}..{int(y.max())}")
    return y.to(torch.int64)


def multiclass_noise(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    norm: str = "l2",
    temperature: float = 1.0,
    targeted: bool = False,
    n_classes: int = 10,
) -> Tensor:
    r"""One-step adversarial noise of a classifier, one per input, of unit $L_2$ norm or in $\{-1,0,1\}^d$.

    With $g_j = \nabla_x\, \mathrm{CE}\bigl(f(x_j)/T,\ t_j\bigr)$ (softmax temperature $T$):

    * untargeted ($t_j = y_j$): the noise ascends the loss, $\delta_j = g_j$;
    * targeted ($t_j = (y_j + 1) \bmod K$): it descends the loss of the target, $\delta_j = -g_j$;

    then ``norm="l2"`` returns $\delta_j/\|\delta_j\|$ (the $L_2$ one-step noise) and ``norm="linf"``
    returns $\mathrm{sign}(\delta_j)$ (FGSM).  Multiply by the budget $\epsilon$ to get the perturbation.
    A row whose gradient vanishes exactly (a saturated softmax, or no active hidden unit) comes back as
    the zero vector in both cases; count them with ``(noise == 0).all(1).sum()``.

    Args:
        model: maps ``(n, d)`` to ``(n, K)`` logits.  X: ``(n, d)``.  y: ``(n,)`` int64 classes.
    Returns:
        ``(n, d)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    X = check_tensor("X", X, ndim=2)
    y = _check_classes(y, X.shape[0], n_classes)
    check_choice("norm", norm, ("l2", "linf"))
    T = check_float("temperature", temperature, positive=True)
    if not isinstance(targeted, bool):
        raise TypeError(f"targeted must be a bool, got {targeted!r}")
    t = (y + 1) % n_classes if targeted else y
    Xg = X.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(Xg) / T, t, reduction="sum")
        (g,) = torch.autograd.grad(loss, Xg)
    delta = -g if targeted else g
    if norm == "linf":
        return torch.sign(delta)
    nrm = delta.norm(dim=1, keepdim=True)
    return torch.where(nrm > 0, delta / nrm.clamp_min(torch.finfo(delta.dtype).tiny), torch.zeros_like(delta))


@dataclass
class ProbeResult:
    """Train and test accuracy of a linear probe; ``converged`` says whether L-BFGS met its tolerance."""

    train_accuracy: float
    test_accuracy: float
    converged: bool


def linear_probe(
    F_train: Tensor,
    y_train: Tensor,
    F_test: Tensor,
    y_test: Tensor,
    *,
    C: float = 1.0,
    max_iter: int = 5000,
) -> ProbeResult:
    r"""Multinomial logistic regression on standardised features: fit on ``(F_train, y_train)``, score both sets.

    The probe is scikit-learn's ``StandardScaler`` followed by ``LogisticRegression(C=C)`` (L-BFGS,
    multinomial loss).  If L-BFGS stops at ``max_iter`` before its tolerance, scikit-learn's
    ``ConvergenceWarning`` is caught here and reported as ``converged=False`` instead of printed.

    Args:
        F_train: ``(n_train, p)`` features (noises or clean inputs).  y_train: ``(n_train,)`` classes.
        F_test, y_test: the same for the test set.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    F_train = check_tensor("F_train", F_train, ndim=2)
    F_test = check_tensor("F_test", F_test, shape=(None, F_train.shape[1]))
    if not isinstance(y_train, Tensor) or y_train.shape != (F_train.shape[0],):
        raise ValueError(f"y_train must be a tensor of shape ({F_train.shape[0]},)")
    if not isinstance(y_test, Tensor) or y_test.shape != (F_test.shape[0],):
        raise ValueError(f"y_test must be a tensor of shape ({F_test.shape[0]},)")
    C = check_float("C", C, positive=True)
    max_iter = check_int("max_iter", max_iter, low=1)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    Ftr, Fte = F_train.detach().cpu().numpy(), F_test.detach().cpu().numpy()
    ytr, yte = y_train.cpu().numpy(), y_test.cpu().numpy()
    # One BLAS/OpenMP thread: the problem is small, and several threads on a busy machine are many times slower.
    with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(Ftr, ytr)
        train_acc, test_acc = float(probe.score(Ftr, ytr)), float(probe.score(Fte, yte))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:  # anything other than non-convergence is a real problem: show it
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return ProbeResult(train_acc, test_acc, converged)
