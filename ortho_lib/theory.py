r"""Closed-form predictions of the theorems, as functions (no randomness, no training).

All square roots are of the quantities named in the book's statements:

* Theorem A: $\|g_\perp\|^2 \sim \beta^2\|u_I\|^2\chi^2_\ell$, hence
  $\beta\|u_I\|\sqrt{\ell/2} \le \|g_\perp\| \le \beta\|u_I\|\sqrt{2\ell}$, each with probability $\ge 1-e^{-\ell/16}$.
* Theorem B: flip norm along the universal direction $\le 4\sqrt2\,|N(x_0)|\,(m/k_{\mp})\sqrt{d/\ell}$.
* Theorem C: along $x_0 + P^\perp$, $N$ is $\beta(\sqrt m+\sqrt\ell+t)$-Lipschitz w.p. $\ge 1-e^{-t^2/2}$.
* Theorem D: under GD with weight decay, $\Pi_\perp W(T) = (1-\eta\lambda)^T\,\Pi_\perp W(0)$.
"""
from __future__ import annotations

import math
from typing import Sequence

from ._checks import check_float, check_int


def tail_probability(ell: int) -> float:
    r"""$e^{-\ell/16}$: the failure probability of each one-sided bound of Theorem A."""
    ell = check_int("ell", ell, low=1)
    return math.exp(-ell / 16)


def gperp_mean_square(beta: float, uI_sq: float, ell: int) -> float:
    r"""$\mathbb E\|g_\perp\|^2 = \beta^2\|u_I\|^2\ell$."""
    beta = check_float("beta", beta, positive=True)
    uI_sq = check_float("uI_sq", uI_sq, nonnegative=True)
    return beta**2 * uI_sq * check_int("ell", ell, low=1)


def gperp_prediction(k: int, m: int, ell: int, d: int) -> float:
    r"""$\sqrt{k\ell/(md)}$: the typical size of $\|g_\perp\|$ for $\beta = 1/\sqrt d$, $|u_i| = 1/\sqrt m$."""
    m = check_int("m", m, low=1)
    k = check_int("k", k, low=0, high=m)
    d = check_int("d", d, low=1)
    ell = check_int("ell", ell, low=1, high=d)
    return math.sqrt(k * ell / (m * d))


def gperp_bounds(beta: float, uI_sq: float, ell: int) -> tuple[float, float]:
    r"""Theorem A's two-sided bound $\bigl(\beta\|u_I\|\sqrt{\ell/2},\; \beta\|u_I\|\sqrt{2\ell}\bigr)$.

    With $\beta = 1/\sqrt d$ and $\|u_I\|^2 = k/m$ this is $(\sqrt{k\ell/(2md)}, \sqrt{2k\ell/(md)})$.
    Each side fails with probability at most $e^{-\ell/16}$.
    """
    beta = check_float("beta", beta, positive=True)
    uI_sq = check_float("uI_sq", uI_sq, nonnegative=True)
    ell = check_int("ell", ell, low=1)
    s = beta * math.sqrt(uI_sq)
    return s * math.sqrt(ell / 2), s * math.sqrt(2 * ell)


def universal_flip_bound(N0: float, m: int, k_opp: int, d: int, ell: int) -> float:
    r"""Theorem B: $4\sqrt2\,|N(x_0)|\,(m/k_{\mp})\sqrt{d/\ell}$ ($\infty$ when $k_{\mp}=0$).

    ``k_opp`` is the number of active neurons whose $u_i$ has the sign opposite to $N(x_0)$.
    """
    N0 = check_float("N0", N0)
    m = check_int("m", m, low=1)
    k_opp = check_int("k_opp", k_opp, low=0, high=m)
    d = check_int("d", d, low=1)
    ell = check_int("ell", ell, low=1, high=d)
    if k_opp == 0:
        return math.inf
    return 4 * math.sqrt(2) * abs(N0) * (m / k_opp) * math.sqrt(d / ell)


def alignment_threshold(ell: int, d: int, m: int) -> float:
    r"""Theorem B's alignment scale $\ell/(4d\sqrt m)$: neurons with $|a_i|$ above it are aligned w.h.p."""
    return check_int("ell", ell, low=1) / (4 * check_int("d", d, low=1) * math.sqrt(check_int("m", m, low=1)))


def alignment_failure_bound(m: int, ell: int) -> float:
    r"""$m\,(e^{-\ell/16} + 2e^{-\ell/(16m)})$: probability bound for the alignment event to fail (may exceed 1)."""
    m = check_int("m", m, low=1)
    ell = check_int("ell", ell, low=1)
    return m * (math.exp(-ell / 16) + 2 * math.exp(-ell / (16 * m)))


def perp_lipschitz_bound(beta: float, m: int, ell: int, t: float = 0.0) -> float:
    r"""Theorem C: $\beta(\sqrt m + \sqrt\ell + t)$ bounds $\|W\Pi_\perp\|_{op}$ (times $\|u\|=1$) w.p. $\ge 1-e^{-t^2/2}$."""
    beta = check_float("beta", beta, positive=True)
    t = check_float("t", t, nonnegative=True)
    return beta * (math.sqrt(check_int("m", m, low=1)) + math.sqrt(check_int("ell", ell, low=1)) + t)


def certified_radius(N0: float, beta: float, m: int, ell: int, t: float = 0.0) -> float:
    r"""Theorem C: no $z\in P^\perp$ with $\|z\| < |N(x_0)|/(\beta(\sqrt m+\sqrt\ell+t))$ flips the sign."""
    return abs(check_float("N0", N0)) / perp_lipschitz_bound(beta, m, ell, t)


def weight_decay_factor(eta: float, lam: float, steps: int) -> float:
    r"""Theorem D: $(1-\eta\lambda)^T$, the exact shrink factor of $\Pi_\perp W$ after $T$ GD steps."""
    eta = check_float("eta", eta, positive=True)
    lam = check_float("lam", lam, nonnegative=True)
    steps = check_int("steps", steps, low=0)
    return (1 - eta * lam) ** steps


def gperp_bound_failure_exact(ell: int) -> tuple[float, float]:
    r"""Exact failure probabilities of Theorem A's two bounds: $(\mathbb P[\chi^2_\ell < \ell/2],\ \mathbb P[\chi^2_\ell > 2\ell])$.

    Given the part of the training in $P$, $\|g_\perp\|$ falls below $\beta\|u_I\|\sqrt{\ell/2}$ exactly when a
    $\chi^2_\ell$ variable falls below $\ell/2$, and above $\beta\|u_I\|\sqrt{2\ell}$ exactly when it exceeds $2\ell$.
    Both are at most $e^{-\ell/16}$ (:func:`tail_probability`).
    """
    from scipy.stats import chi2

    ell = check_int("ell", ell, low=1)
    return float(chi2.cdf(ell / 2, ell)), float(chi2.sf(2 * ell, ell))


def gperp_bound_failure_chernoff(ell: int) -> tuple[float, float]:
    r"""Chernoff bounds on the same two probabilities: $(e^{-\ell(\ln 2/2 - 1/4)},\ e^{-\ell(1-\ln 2)/2})$.

    From $\mathbb P[\chi^2_\ell \le \ell/2] \le e^{\lambda\ell/2}(1+2\lambda)^{-\ell/2}$ at $\lambda = 1/2$ and
    $\mathbb P[\chi^2_\ell \ge 2\ell] \le e^{-2\lambda\ell}(1-2\lambda)^{-\ell/2}$ at $\lambda = 1/4$.  The exponents
    $0.0966\ell$ and $0.153\ell$ both exceed $\ell/16$.
    """
    ell = check_int("ell", ell, low=1)
    return math.exp(-ell * (math.log(2) / 2 - 0.25)), math.exp(-ell * (1 - math.log(2)) / 2)


def lambert_w0(x: float) -> float:
    r"""The principal branch $W_0$ of the Lambert function on $[0, \infty)$: the $w \ge 0$ with $w e^w = x$.

    Computed by Newton's method on $w + \ln w = \ln x$ (for $x > e$) or on $w e^w = x$, to full float64
    precision.  Used by :func:`stationary_margin_bound`.
    """
    x = check_float("x", x, nonnegative=True)
    if x == 0.0:
        return 0.0
    if x <= math.e:
        w = x / math.e  # w e^w = x has its root in [0, 1] here; Newton from below converges
        for _ in range(100):
            ew = math.exp(w)
            step = (w * ew - x) / (ew * (1 + w))
            w -= step
            if abs(step) <= 1e-15 * max(1.0, w):
                break
        return w
    lx = math.log(x)
    w = lx - math.log(lx) if lx > 1 else 1.0
    for _ in range(100):
        step = (w + math.log(w) - lx) / (1 + 1 / w)
        w -= step
        if abs(step) <= 1e-15 * w:
            break
    return w


#: $\max_q q/(1+e^q) = W_0(1/e) \approx 0.2785$, attained at $q = 1 + W_0(1/e)$ (Theorem D, part 3).
LOGISTIC_BALANCE_MAX = 0.27846454276107380


def stationary_norm_bound(lam: float) -> float:
    r"""Theorem D, part 3: at a stationary point of $L + \frac\lambda2\|\theta\|^2$, $\|\theta\|^2 \le W_0(1/e)/\lambda$.

    From the balance $\lambda\|\theta\|^2 = \frac1n\sum_j q_j/(1+e^{q_j})$ (Euler's identity for the positively
    homogeneous network, $q_j = y_jN(x_j)$) and $\max_q q/(1+e^q) = W_0(1/e) \approx 0.2785$.

    Args:
        lam: weight decay $\lambda > 0$.
    Returns:
        the bound on $\|W\|_F^2 + \|b\|^2$ (the trained parameters).
    """
    lam = check_float("lam", lam, positive=True)
    return LOGISTIC_BALANCE_MAX / lam


def stationary_margin_bound(lam: float, radius_sq: float) -> float:
    r"""Theorem D, part 3: the train margin at a stationary point is at most $\max\{1, W_0(R^2/\lambda)\}$.

    .. math:: \gamma = \min_j y_j N(x_j) \le \max\{1,\; W_0(R^2/\lambda)\},\qquad R^2 = 1 + \max_j\|x_j\|^2,

    valid for $\|u\| = 1$ and the penalty $\frac\lambda2(\|W\|_F^2 + \|b\|^2)$ ($R^2 = \max_j\|x_j\|^2$ when the
    biases are not trained).  It grows only like $\ln(R^2/\lambda)$.

    Args:
        lam: weight decay $\lambda > 0$.
        radius_sq: $R^2 > 0$.
    """
    lam = check_float("lam", lam, positive=True)
    radius_sq = check_float("radius_sq", radius_sq, positive=True)
    return max(1.0, lambert_w0(radius_sq / lam))


def mean_phi_chi(ell: int, c: "float | Sequence[float]") -> "np.ndarray":
    r"""$\mathbb E\,\Phi(c\,X)$ for $X\sim\chi_\ell$ (Theorem B's exact alignment laws), by quadrature.

    With $c = 1/\sqrt{m-1}$ this is the probability that a neuron is aligned; with
    $c = \sqrt{k/(m-k)}$ the probability that the universal direction starts the right way.
    ``c`` may be a scalar or an array; returns an array of the same length (``(len(c),)``).
    Accuracy: about 1e-4 at $\ell = 1$, below 1e-9 for $\ell \ge 50$.
    """
    import numpy as np
    from scipy import stats

    ell = check_int("ell", ell, low=1)
    cs = np.atleast_1d(np.asarray(c, dtype=float))
    if not np.all(np.isfinite(cs)):
        raise ValueError(f"c must be finite, got {c!r}")
    r = np.linspace(max(0.0, math.sqrt(ell) - 12), math.sqrt(ell) + 12, 8001)
    w = stats.chi.pdf(r, ell)
    w = w / w.sum()
    return stats.norm.cdf(np.multiply.outer(cs, r)) @ w
