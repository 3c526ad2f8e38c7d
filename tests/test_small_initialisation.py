"""The claims of the chapter small_initialisation, checked on fresh seeds (not the chapter's).

* ``thm-small-init`` (the book's small-initialisation theorem), on a fresh small problem: exact laws are
  tested with a KS test at level 1e-7 on independent networks, high-probability bounds by a binomial tail
  on the number of violations, and uniform certificates with a confidence parameter t chosen so that the
  union over all networks fails with probability below 1e-7.  Networks are trained in full coordinates
  (no ``sub`` is passed to ``ol.train``), so the frozen orthogonal part is a consequence of the gradient
  steps, not an input of the computation.
* ``obs-small-init-cost`` (an observation: measured, not proved), in the chapter's own setting and on its
  training set, with fresh initialisation seeds.  Each part claims a probability p0 for one network or for
  one independent pair of networks; its test counts the networks or pairs in favour among K fresh ones and
  fails only below the 1e-6 quantile of Binomial(K, p0), so that it fails with probability below 1e-6 when
  the claim holds.

Each test's docstring states its false-failure probability; all are below 1e-6.
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import ortho_lib as ol
from ortho_lib.theory import certified_radius, perp_lipschitz_bound, tail_probability

D, ELL, M, N_TRAIN = 64, 48, 32, 40
SCALES = (D ** -0.5, D ** -1.0, D ** -1.5)


@pytest.fixture(scope="module")
def problem(make_teacher_problem):
    """A fresh subspace, training set and test points (seeds unused by the chapter)."""
    return make_teacher_problem(D, ELL, N_TRAIN, seed=910_000)


CONFIG = ol.TrainConfig(lr=0.5, max_steps=40)


def _trained(problem, seeds, betas):
    """One network per (seed, beta), initialised at scale beta and trained by 40 GD steps (one stack)."""
    nets = [ol.init_network(D, M, seed=s, beta=b) for s, b in zip(seeds, betas)]
    return ol.train(nets, problem.X, problem.y, CONFIG).params.members()


def _at_least(K: int, p0: float, level: float = 1e-6) -> int:
    """The smallest count c with P[Binomial(K, p0) < c] <= level: a test that requires a count >= c fails with
    probability at most ``level`` when each of the K independent trials succeeds with probability >= p0."""
    c = int(stats.binom.ppf(level, K, p0))
    assert stats.binom.cdf(c - 1, K, p0) <= level
    return c


# --- thm-small-init ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gperp_samples(problem):
    """For 150 independent networks (50 per scale): ||g_perp(x0)||^2 / (beta^2 ||u_I||^2) after training."""
    sub, x0 = problem.sub, problem.X_test[0]  # x0 fixed before any network is drawn: independent of Pi_perp W(0)
    betas = [SCALES[s % 3] for s in range(150)]
    out = []
    for beta, p in zip(betas, _trained(problem, [920_000 + s for s in range(150)], betas)):
        active = ol.active_set(p, x0)
        uI2 = float((p.u[active] ** 2).sum())
        if uI2 == 0.0:                  # k = 0: the law is conditional on I, skip the empty set
            continue
        g2 = float(ol.orthogonal_gradient(p, sub, x0).norm() ** 2)
        out.append(g2 / (beta**2 * uI2))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.claim("thm-small-init")
def test_gperp_after_training_has_exact_chi2_law_at_every_scale(gperp_samples):
    """Part 1: the normalised squared orthogonal gradient is chi^2_ell at every scale.

    KS test at level 1e-7 (false-failure probability 1e-7); the count check fails only if more than 10 of
    150 networks have no active neuron at x0 (each with probability 2^-32 at initialisation: far below 1e-7).
    """
    assert gperp_samples.numel() >= 140
    p = stats.kstest(gperp_samples.numpy(), "chi2", args=(ELL,)).pvalue
    assert p > 1e-7, f"normalised orthogonal gradient is not chi^2_{ELL} (KS p = {p:.2e})"


@pytest.mark.claim("thm-small-init")
def test_gperp_two_sided_bound_fails_no_more_often_than_laurent_massart_allows(gperp_samples):
    """Part 1: each sample leaves [ell/2, 2 ell] with probability at most 2 e^{-ell/16}; the count of violations
    is compared with the 1 - 1e-7 quantile of the binomial law (false-failure probability below 1e-7)."""
    K = gperp_samples.numel()
    violations = int(((gperp_samples < ELL / 2) | (gperp_samples > 2 * ELL)).sum())
    limit = int(stats.binom.isf(1e-7, K, min(1.0, 2 * tail_probability(ELL))))
    assert violations <= limit, f"{violations} of {K} samples outside the two-sided bound (limit {limit})"


@pytest.mark.claim("thm-small-init")
def test_gperp_is_proportional_to_beta_for_a_fixed_draw(problem):
    """Part 1, proportionality: the same Gaussian draw at two scales, no training; g_perp scales exactly with
    beta (I(x0) is scale-free).  Deterministic up to rounding (false-failure probability 0)."""
    sub, X_test = problem.sub, problem.X_test
    for s in range(5):
        p1 = ol.init_network(D, M, seed=930_000 + s, beta=D ** -0.5)
        p2 = ol.init_network(D, M, seed=930_000 + s, beta=D ** -1.5)
        g1 = ol.orthogonal_gradient(p1, sub, X_test)
        g2 = ol.orthogonal_gradient(p2, sub, X_test)
        assert torch.allclose(g2, g1 * D ** -1.0, rtol=1e-12, atol=1e-15)


@pytest.mark.claim("thm-small-init")
def test_lipschitz_inequality_along_P_perp_holds_for_every_input(problem):
    """Part 2, deterministic: |N(x + z) - N(x)| <= ||W Q_perp||_op ||z|| for any x in R^d and z in P_perp, after
    training.  False-failure probability 0 (a relative slack of 1e-12 covers rounding)."""
    sub = problem.sub
    gen = torch.Generator().manual_seed(940_000)
    for p in _trained(problem, [940_100 + s for s in range(6)], [SCALES[s % 3] for s in range(6)]):
        op = float(torch.linalg.matrix_norm(p.W @ sub.perp_basis, ord=2))
        x = 10 * torch.randn(300, D, generator=gen, dtype=torch.float64)        # not only points of P
        z = ol.P_perp(sub, torch.randn(300, D, generator=gen, dtype=torch.float64))
        z = z * (torch.rand(300, 1, generator=gen, dtype=torch.float64) * 50 / z.norm(dim=1, keepdim=True))
        change = (ol.network_output(p, x + z) - ol.network_output(p, x)).abs()
        assert bool((change <= op * z.norm(dim=1) * (1 + 1e-12) + 1e-12).all())


@pytest.mark.claim("thm-small-init")
def test_operator_norm_bound_fails_no_more_often_than_gaussian_concentration_allows(problem):
    """Part 2: ||W(0) Q_perp||_op <= beta (sqrt m + sqrt l + t) fails with probability <= e^{-t^2/2}; the count
    over 1000 draws is compared with the 1 - 1e-7 quantile of the binomial law (false-failure prob. < 1e-7)."""
    sub = problem.sub
    t, K = 2.0, 1000
    violations = 0
    for s in range(K):
        beta = SCALES[s % 3]
        W = ol.init_network(D, M, seed=950_000 + s, beta=beta).W
        op = float(torch.linalg.matrix_norm(W @ sub.perp_basis, ord=2))
        violations += op > perp_lipschitz_bound(beta, M, ELL, t)
    limit = int(stats.binom.isf(1e-7, K, math.exp(-t * t / 2)))
    assert violations <= limit, f"{violations} of {K} draws above the bound (limit {limit})"


@pytest.mark.claim("thm-small-init")
def test_no_perturbation_in_P_perp_shorter_than_certified_radius_flips_the_sign(problem):
    """Part 3 on 12 trained networks, along the universal direction, the orthogonal gradient and 10 random
    directions of P_perp, both signs.  t makes the union of the 12 Lipschitz events fail with probability
    12 e^{-t^2/2} = 1e-7 (the false-failure probability)."""
    sub, pts = problem.sub, problem.X_test[1:]
    n_net = 12
    t = math.sqrt(2 * math.log(n_net / 1e-7))
    gen = torch.Generator().manual_seed(960_000)
    betas = [SCALES[s % 3] for s in range(n_net)]
    for beta, p in zip(betas, _trained(problem, [960_100 + s for s in range(n_net)], betas)):
        N0 = ol.network_output(p, pts)
        keep = N0 != 0
        x, N0 = pts[keep], N0[keep]
        r = torch.tensor([certified_radius(float(a), beta, M, ELL, t) for a in N0], dtype=torch.float64)
        dirs = [ol.universal_direction(p, sub).expand_as(x),
                -torch.sign(N0)[:, None] * ol.orthogonal_gradient(p, sub, x)]
        dirs += [ol.P_perp(sub, torch.randn(x.shape, generator=gen, dtype=torch.float64)) for _ in range(10)]
        for v in dirs:
            for sign in (1.0, -1.0):
                z = sign * 0.999 * r[:, None] * v / v.norm(dim=1, keepdim=True)
                assert bool((torch.sign(ol.network_output(p, x + z)) == torch.sign(N0)).all())


def test_certified_radius_rejects_bad_arguments():
    """Argument checks of the theorem's closed forms (deterministic)."""
    with pytest.raises(ValueError, match=r"^beta must"):
        certified_radius(1.0, -0.1, M, ELL)
    with pytest.raises(ValueError, match=r"^t must"):
        perp_lipschitz_bound(0.1, M, ELL, t=-1.0)
    with pytest.raises(TypeError, match=r"^m must"):
        perp_lipschitz_bound(0.1, 2.5, ELL)


# --- obs-small-init-cost: the chapter's setting and training set, fresh initialisations -------------------

CH_D, CH_ELL, CH_M, CH_N = 100, 50, 100, 200
K_PAIRS = 20
CH_CONFIG = ol.TrainConfig(lr=0.5, max_steps=3000, target_margin=1.0)


@pytest.fixture(scope="module")
def cost_runs():
    """K_PAIRS fresh networks at beta = 1/sqrt(d) and K_PAIRS at beta = d^{-3/2} (distinct seeds, so network s
    of one scale and network s of the other form an independent pair), trained as in the chapter on its
    training set and on its training set with a margin; steps, reached and test accuracy per network."""
    prob = ol.teacher_problem(CH_D, CH_ELL, CH_N, seed=0, n_test=1000, test_seed=5)   # the chapter's data
    sub, v, X, y = prob.sub, prob.v, prob.X, prob.y
    pool = ol.sample_on_subspace(sub, 4 * CH_N, seed=1)
    X_sep = pool[(pool @ v).abs() >= 1][:CH_N]
    y_sep = ol.teacher_labels(X_sep, v)
    out = {}
    for data, (XX, yy) in (("default", (X, y)), ("margin", (X_sep, y_sep))):
        for name, a in (("std", 0.5), ("small", 1.5)):
            base = 7_100_000 + 10_000 * (data == "margin") + 1_000 * (name == "small")
            nets = [ol.init_network(CH_D, CH_M, seed=base + s, beta=CH_D ** -a) for s in range(K_PAIRS)]
            res = ol.train(nets, XX, yy, CH_CONFIG, sub=sub)
            out[data, name] = dict(steps=res.steps, reached=res.reached,
                                   acc=ol.accuracy(res.params, prob.X_test, prob.y_test))
    return out


@pytest.mark.claim("obs-small-init-cost")
def test_small_initialisation_still_reaches_the_margin(cost_runs):
    """Part 1: each network reaches the margin within the budget with probability >= 0.95.  Over the 4 K_PAIRS
    fresh networks (both ends of the sweep, both training sets) the count of those that reach it is compared
    with the 1e-6 quantile of Binomial(4 K_PAIRS, 0.95): false-failure probability below 1e-6."""
    reached = sum(int(r["reached"].sum()) for r in cost_runs.values())
    need = _at_least(4 * K_PAIRS, 0.95)
    assert reached >= need, f"only {reached} of {4 * K_PAIRS} networks reached the margin (need {need})"


@pytest.mark.claim("obs-small-init-cost")
def test_small_initialisation_costs_steps_on_the_default_data(cost_runs):
    """Part 2, default data: a network at d^{-3/2} needs more steps than one at 1/sqrt(d) with probability
    >= 3/4; count over K_PAIRS independent pairs against the 1e-6 quantile of Binomial(K_PAIRS, 3/4):
    false-failure probability below 1e-6."""
    slower = int((cost_runs["default", "small"]["steps"] > cost_runs["default", "std"]["steps"]).sum())
    need = _at_least(K_PAIRS, 0.75)
    assert slower >= need, f"only {slower} of {K_PAIRS} pairs needed more steps at the small scale (need {need})"


@pytest.mark.claim("obs-small-init-cost")
def test_small_initialisation_costs_no_steps_on_data_with_a_margin(cost_runs):
    """Part 2, data with a margin: a network at d^{-3/2} needs no more steps than one at 1/sqrt(d) with
    probability >= 3/4; count over K_PAIRS independent pairs against the 1e-6 quantile of
    Binomial(K_PAIRS, 3/4): false-failure probability below 1e-6."""
    fine = int((cost_runs["margin", "small"]["steps"] <= cost_runs["margin", "std"]["steps"]).sum())
    need = _at_least(K_PAIRS, 0.75)
    assert fine >= need, f"only {fine} of {K_PAIRS} pairs needed no more steps at the small scale (need {need})"


@pytest.mark.claim("obs-small-init-cost")
def test_small_initialisation_does_not_cost_accuracy(cost_runs):
    """Part 3: a network at d^{-3/2} has a higher test accuracy than one at 1/sqrt(d) with probability >= 3/4;
    count over K_PAIRS independent pairs against the 1e-6 quantile of Binomial(K_PAIRS, 3/4): false-failure
    probability below 1e-6."""
    better = int((cost_runs["default", "small"]["acc"] > cost_runs["default", "std"]["acc"]).sum())
    need = _at_least(K_PAIRS, 0.75)
    assert better >= need, f"only {better} of {K_PAIRS} pairs were more accurate at the small scale (need {need})"
