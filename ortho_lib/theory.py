r"""Closed-form predictions of the theorems, as functions (no randomness, no training).

All square roots are of the quantities named in the book's statements:

* The orthogonal-gradient theorem: $\|g_\perp\|^2 \sim \beta^2\|u_I\|^2\chi^2_\ell$, hence
  $\beta\|u_I\|\sqrt{\ell/2} \le \|g_\perp\| \le \beta\|u_I\|\sqrt{2\ell}$, each with probability $\ge 1-e^{-\ell/16}$.
* The universal theorem: flip norm along the universal direction $\le 4\sqrt2\,|N(x_0)|\,(m/k_{\mp})\sqrt{d/\ell}$
  (:func:`universal_flip_bound`), its hypotheses (:func:`universal_hypotheses`) and their probability
  (:func:`universal_guarantee`); with the certified radius of the small-initialisation theorem it pins the
  minimal flip distance in $P^\perp$ to within :func:`universal_tightness_ratio`.
* Small initialisation (``thm-small-init``): along $x_0 + P^\perp$, $N$ is $\beta(\sqrt m+\sqrt\ell+t)$-Lipschitz
  w.p. $\ge 1-e^{-t^2/2}$.
* Weight decay (``thm-weight-decay``): under GD, $\Pi_\perp W(T) = (1-\eta\lambda)^T\,\Pi_\perp W(0)$.
* Vardi, Yehudai, Shamir: the flip bound along $\mp z$ at a KKT point (:func:`kkt_flip_bound`) and the
  max-margin value on orthogonal data (:func:`orthogonal_max_margin_value`).
* Zhang, Yu, Lu, He: the moments of the key quantity (:func:`key_quantity_moments`, :func:`paper_variance`),
  the exact projected separation probability, Cantelli's bound and Cover's counting theorem.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ._checks import check_float, check_int, check_labels, check_tensor, tolerance


# ------------------------------------------------------------------------------ Theorems A to D
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

def universal_guarantee(m: int, ell: int) -> float:
    r"""The universal theorem, part 2: a lower bound on the probability that all its hypotheses hold.

    .. math:: \max\Bigl\{0,\; 1 - m\bigl(e^{-\ell/16} + 2e^{-\ell/(16m)}\bigr) - e^{-\ell/16}\Bigr\}

    (every neuron aligned with $|a_i| \ge \ell/(4d\sqrt m)$, :func:`alignment_failure_bound`, and
    $\|z\|^2 \le 2\ell/d$, which fails with probability at most $e^{-\ell/16}$).  It is positive only when
    $\ell \gtrsim 16\,m\log(2m)$: width well below the codimension.

    Args:
        m: width $m \ge 1$.  ell: codimension $\ell \ge 1$.
    Returns:
        a probability in $[0, 1]$.
    """
    m = check_int("m", m, low=1)
    ell = check_int("ell", ell, low=1)
    return max(0.0, 1.0 - alignment_failure_bound(m, ell) - math.exp(-ell / 16))

@dataclass(frozen=True)
class UniversalHypotheses:
    r"""The hypotheses of the universal theorem (part 2's events) on one network, from
    :func:`universal_hypotheses`.

    Attributes:
        aligned: every neuron is aligned, $\mathrm{sign}(a_i) = \mathrm{sign}(u_i)$ for all $i$.
        above_threshold: $|a_i| \ge \ell/(4d\sqrt m)$ for all $i$.
        z_small: $\|z\|^2 \le 2\ell/d$.
        n_misaligned: the number of neurons with $\mathrm{sign}(a_i) \ne \mathrm{sign}(u_i)$.
        min_a_ratio: $\min_i |a_i| \,/\, (\ell/(4d\sqrt m))$ (at least 1 exactly when ``above_threshold``).
        z_ratio: $\|z\|^2 / (2\ell/d)$ (at most 1 exactly when ``z_small``).
    """

    aligned: bool
    above_threshold: bool
    z_small: bool
    n_misaligned: int
    min_a_ratio: float
    z_ratio: float

    @property
    def hold(self) -> bool:
        """All three events hold, so the universal theorem's flip bound (part 3) is proven on this draw."""
        return self.aligned and self.above_threshold and self.z_small

def _hypotheses_in_coordinates(G: Tensor, u: Tensor, d: int) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per network of a batch: misaligned count, $\min_i|a_i|$ over its threshold, $\|z\|^2/(2\ell/d)$.

    ``G``: ``(..., m, ell)`` the $P^\perp$-coordinates of the rows $w_i$; ``u``: ``(..., m)``.
    """
    m, ell = G.shape[-2], G.shape[-1]
    z = (u.unsqueeze(-2) @ G).squeeze(-2)                      # (..., ell): coordinates of z
    a = (G @ z.unsqueeze(-1)).squeeze(-1)                      # (..., m)
    misaligned = (torch.sign(a) != torch.sign(u)).sum(-1)
    min_ratio = a.abs().min(-1).values / alignment_threshold(ell, d, m)
    z_ratio = (z * z).sum(-1) / (2 * ell / d)
    return misaligned, min_ratio, z_ratio

def universal_hypotheses(params, sub) -> UniversalHypotheses:
    r"""Check the events of the universal theorem, part 2, on one network: alignment, $|a_i|$, $\|z\|$.

    With $z = \Pi_\perp W^\top u$ (the universal direction) and $a_i = \langle \Pi_\perp w_i, z\rangle$, the
    theorem's flip bound holds at every point of $P$ once (i) $\mathrm{sign}(a_i) = \mathrm{sign}(u_i)$ for
    all $i$, (ii) $|a_i| \ge \ell/(4d\sqrt m)$ for all $i$, and (iii) $\|z\|^2 \le 2\ell/d$.  These involve only
    $\Pi_\perp W$ and $u$, which training with a fixed second layer never changes.

    Args:
        params: a single network (``W`` of shape ``(m, d)``).
        sub: the data subspace $P$ (of $\mathbb R^d$, codimension $\ell$).
    Returns:
        :class:`UniversalHypotheses`.
    """
    from .network import _check_params
    from .subspaces import _check_subspace, perp_coordinates

    params = _check_params(params, single=True)
    sub = _check_subspace(sub, params.d, against="the network's inputs")
    with torch.no_grad():
        G = perp_coordinates(sub, params.W.detach()).to(torch.float64)
        mis, min_ratio, z_ratio = _hypotheses_in_coordinates(G, params.u.detach().to(torch.float64), params.d)
    mis, min_ratio, z_ratio = int(mis), float(min_ratio), float(z_ratio)
    return UniversalHypotheses(aligned=mis == 0, above_threshold=min_ratio >= 1.0, z_small=z_ratio <= 1.0,
                               n_misaligned=mis, min_a_ratio=min_ratio, z_ratio=z_ratio)

def universal_tightness_ratio(m: int, k_opp: int, ell: int, t: float = 0.0) -> float:
    r"""The ratio of the universal flip bound to the certified radius at $\beta = 1/\sqrt d$.

    .. math:: \frac{4\sqrt2\,|N(x_0)|\,(m/k_\mp)\sqrt{d/\ell}}{|N(x_0)|\,\sqrt d/(\sqrt m+\sqrt\ell+t)}
              \;=\; 4\sqrt2\,\frac{m}{k_\mp}\,\frac{\sqrt m + \sqrt\ell + t}{\sqrt\ell}

    (:func:`universal_flip_bound` over :func:`certified_radius`): it depends on neither $d$ nor $|N(x_0)|$,
    and is $O(1)$ when $k_\mp$ is a constant fraction of $m$ and $m \lesssim \ell$; on the events of both
    theorems the minimal flip distance in $P^\perp$ lies between the two.

    Args:
        m: width.  k_opp: $k_\mp \ge 1$, the opposing active neurons at $x_0$.  ell: codimension.
        t: the deviation in the operator-norm bound (probability $\ge 1 - e^{-t^2/2}$).
    """
    m = check_int("m", m, low=1)
    k_opp = check_int("k_opp", k_opp, low=1, high=m)
    ell = check_int("ell", ell, low=1)
    t = check_float("t", t, nonnegative=True)
    return 4 * math.sqrt(2) * (m / k_opp) * (math.sqrt(m) + math.sqrt(ell) + t) / math.sqrt(ell)

def mean_phi_chi(ell: int, c: "float | Sequence[float]") -> np.ndarray:
    r"""$\mathbb E\,\Phi(c\,X)$ for $X\sim\chi_\ell$ (Theorem B's exact alignment laws), in closed form.

    With $Z\sim\mathcal N(0,1)$ independent of $X$, $\mathbb E\,\Phi(cX) = \Pr[Z \le cX] = \Pr[T \le c\sqrt\ell]$
    where $T = Z/(X/\sqrt\ell)$ has Student's $t$ law with $\ell$ degrees of freedom, so the value is
    ``scipy.stats.t.cdf(c * sqrt(ell), ell)``.  With $c = 1/\sqrt{m-1}$ this is the probability that a neuron
    is aligned; with $c = \sqrt{k/(m-k)}$ the probability that the universal direction starts the right way.

    Args:
        ell: degrees of freedom $\ell \ge 1$.  c: a number or a sequence of them.
    Returns:
        ``(len(c),)`` (``(1,)`` for a number).
    """
    from scipy import stats

    ell = check_int("ell", ell, low=1)
    if isinstance(c, torch.Tensor):
        c = c.detach().cpu().numpy()
    raw = np.asarray(c) if not isinstance(c, (str, bytes)) else np.asarray([c])
    if raw.dtype.kind not in "iuf":
        raise TypeError(f"c must be a real number or a 1-D sequence of them, got {c!r}")
    cs = np.atleast_1d(raw.astype(float))
    if cs.ndim != 1 or not np.all(np.isfinite(cs)):
        raise ValueError(f"c must be a finite number or a 1-D sequence of them, got {c!r}")
    return stats.t.cdf(cs * math.sqrt(ell), ell)
def perp_lipschitz_bound(beta: float, m: int, ell: int, t: float = 0.0) -> float:
    r"""Small initialisation (``thm-small-init``): $\beta(\sqrt m + \sqrt\ell + t)$ bounds $\|W\Pi_\perp\|_{op}$
    (times $\|u\|=1$) w.p. $\ge 1-e^{-t^2/2}$."""
    beta = check_float("beta", beta, positive=True)
    t = check_float("t", t, nonnegative=True)
    return beta * (math.sqrt(check_int("m", m, low=1)) + math.sqrt(check_int("ell", ell, low=1)) + t)

def certified_radius(N0: float, beta: float, m: int, ell: int, t: float = 0.0) -> float:
    r"""Small initialisation (``thm-small-init``): no $z\in P^\perp$ with
    $\|z\| < |N(x_0)|/(\beta(\sqrt m+\sqrt\ell+t))$ flips the sign."""
    return abs(check_float("N0", N0)) / perp_lipschitz_bound(beta, m, ell, t)

def weight_decay_factor(eta: float, lam: float, steps: int) -> float:
    r"""Weight decay (``thm-weight-decay``): $(1-\eta\lambda)^T$, the exact shrink factor of $\Pi_\perp W$ after $T$ GD steps."""
    eta = check_float("eta", eta, positive=True)
    lam = check_float("lam", lam, nonnegative=True)
    steps = check_int("steps", steps, low=0)
    return (1 - eta * lam) ** steps

def lambert_w0(x: float) -> float:
    r"""The principal branch $W_0$ of the Lambert function on $[0, \infty)$: the $w \ge 0$ with $w e^w = x$.

    ``scipy.special.lambertw(x, 0).real``.  Used by :func:`stationary_margin_bound`.
    """
    from scipy.special import lambertw

    x = check_float("x", x, nonnegative=True)
    return float(lambertw(x, 0).real)
LOGISTIC_BALANCE_MAX = 0.27846454276107380

def stationary_norm_bound(lam: float) -> float:
    r"""Weight decay (``thm-weight-decay``), part 3: at a stationary point of $L + \frac\lambda2\|\theta\|^2$,
    $\|\theta\|^2 \le W_0(1/e)/\lambda$.

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
    r"""Weight decay (``thm-weight-decay``), part 3: the train margin at a stationary point is at most
    $\max\{1, W_0(R^2/\lambda)\}$.

    .. math:: \gamma = \min_j y_j N(x_j) \le \max\{1,\; W_0(R^2/\lambda)\},\qquad R^2 = 1 + \max_j\|x_j\|^2,

    valid for $\|u\| = 1$ and the penalty $\frac\lambda2(\|W\|_F^2 + \|b\|^2)$ ($R^2 = \max_j\|x_j\|^2$ when the
    biases are not trained).  It grows only like $\ln(R^2/\lambda)$.

    Args:
        lam: weight decay $\lambda > 0$.
        radius_sq: $R^2 > 0$.
    """
    lam = check_float("lam", lam, positive=True)
    radius_sq = check_float("radius_sq", radius_sq, positive=True)
    log_x = math.log(radius_sq) - math.log(lam)
    if log_x < 700:
        return max(1.0, lambert_w0(math.exp(log_x)))
    w = log_x - math.log(log_x)  # R^2/lambda overflows a float: solve w + log w = log x by Newton's method
    for _ in range(50):
        w -= (w + math.log(w) - log_x) / (1 + 1 / w)
    return w


# ----------------------------------------------------------------- Vardi, Yehudai, Shamir (max margin)
def kkt_flip_bound(X: Tensor, y: Tensor, margins: Optional[Tensor] = None) -> Tensor:
    r"""The book's bound on the flip norm along $\mp z$ at any KKT point, per training point, shape ``(n,)``.

    With $\tilde G = XX^\top + \mathbf 1\mathbf 1^\top$, $E = \max_{i\ne k}|\tilde G_{ik}|$,
    $D = \max_i \tilde G_{ii}$, $\zeta = \min_i y_i\langle x_i, z\rangle$ and $n'_k$ the number of points
    with label $-y_k$:

    .. math:: \alpha_k \;\le\; \frac{\|z\|}{\zeta}\Bigl(2E + N_k\,\frac{D + n'_k E}{n'_k}\Bigr),

    where $N_k = y_kN(x_k)$ at the KKT point (``margins``, default 1: a point on the margin).
    Entries are ``inf`` where the bound does not apply ($\zeta \le 0$ or $n'_k = 0$).
    """
    from .maxmargin import augmented_gram, flip_direction

    X = check_tensor("X", X, ndim=2).detach()
    n = X.shape[0]
    if n == 0:
        raise ValueError("X must hold at least one point")
    y = check_labels("y", y, n).to(X.dtype)
    if margins is None:
        margins = torch.ones(n, dtype=X.dtype)
    margins = check_tensor("margins", margins, shape=(n,))
    if bool((margins < 1 - tolerance(margins.dtype)).any()):
        raise ValueError("margins must be >= 1 (the KKT scale has minimum margin 1)")
    margins = margins.to(X.dtype)
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


# --------------------------------------------------------------------- Zhang, Yu, Lu, He (separability)
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
    rho = check_tensor("active_fraction", active_fraction).detach().cpu().double() if is_tensor else torch.tensor(
        check_float("active_fraction", active_fraction), dtype=torch.float64)
    if bool(((rho <= 0) | (rho > 1) | ~torch.isfinite(rho)).any()):
        raise ValueError("active_fraction must lie in (0, 1]")
    if k == 0:
        out = torch.zeros_like(rho)
    else:
        r = (1 - rho.sqrt()) / (1 + rho.sqrt())
        out = torch.as_tensor(fisher_f.sf(r.numpy(), k, k), dtype=torch.float64)
    return out if is_tensor else float(out)

def cover_separable_probability(n: int, d: int) -> float:
    r"""Cover's function-counting theorem: the probability that $n$ points in general position in $\mathbb R^d$
    with independent uniform $\pm1$ labels are separable through the origin,

    .. math:: \Pr = 2^{1-n}\sum_{k=0}^{d-1}\binom{n-1}{k} \quad(= 1 \text{ for } n \le d).
    """
    from scipy.stats import binom

    n = check_int("n", n, low=1)
    d = check_int("d", d, low=1)
    return float(binom.cdf(d - 1, n - 1, 0.5))
