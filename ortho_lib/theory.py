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
