"""The claims of the chapter l2_regularisation, checked on fresh seeds (not the chapter's); the closed forms
of the weight-decay theorem (lambert_w0, the stationary bounds) are tested with the rest of
ortho_lib.theory in test_theory.py.

* ``thm-weight-decay`` (the book's weight-decay theorem), on a fresh small problem.  Deterministic
  identities (exact decay, the projected gradient of the regularised objective, Euler's balance) are
  checked to rounding error, with tolerances relative to the size of the weights and to the precision of
  the dtype: a float64 GD step rounds entries of size ||W|| at relative precision eps, so after T steps
  Pi_perp W may differ from its exact value by up to about T eps (||W(0)||_F + ||W(T)||_F).  Training runs in
  full coordinates (no ``sub`` is passed to ``ol.train``), so the decay is a consequence of the gradient
  steps, not an input of the computation.  The exact law of the decayed orthogonal gradient is checked by
  a KS test at level 1e-7 over independent networks, and the certified radius with a confidence parameter
  t that makes the union over all networks fail with probability below 1e-7.
* ``obs-l2-price`` and ``obs-remedies-compared`` (observations: measured, not proved), in the chapter's own
  setting and on its training set, with fresh initial draws.  Each part claims a probability p0 for one
  random draw; its test counts the draws in favour among K fresh ones and fails only below the 1e-6
  quantile of Binomial(K, p0), so that it fails with probability below 1e-6 when the claim holds.

Each test's docstring states its false-failure probability; all are below 1e-6.
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import ortho_lib as ol
from ortho_lib.theory import perp_lipschitz_bound, weight_decay_factor

D, ELL, M, N_TRAIN = 64, 48, 32, 40
ETA = 0.5
EPS = torch.finfo(torch.float64).eps


@pytest.fixture(scope="module")
def problem(make_teacher_problem):
    """A fresh subspace, training set and test points (seeds unused by the chapter)."""
    return make_teacher_problem(D, ELL, N_TRAIN, seed=810_000)


def _gd(steps: int, lam: float) -> ol.TrainConfig:
    """GD at the step ETA with weight decay lam on (W, b), for a fixed number of steps."""
    return ol.TrainConfig(lr=ETA, max_steps=steps, weight_decay=lam)


def _rounding(steps: int, W0: torch.Tensor, WT: torch.Tensor) -> float:
    """T eps (||W(0)||_F + ||W(T)||_F): the rounding that T float64 updates of W may leave in Pi_perp W."""
    return max(steps, 1) * torch.finfo(W0.dtype).eps * (float(W0.norm()) + float(WT.norm()))


def _at_least(K: int, p0: float, level: float = 1e-6) -> int:
    """The smallest count c with P[Binomial(K, p0) < c] <= level: a test that requires a count >= c fails with
    probability at most ``level`` when each of the K independent trials succeeds with probability >= p0."""
    c = int(stats.binom.ppf(level, K, p0))
    assert stats.binom.cdf(c - 1, K, p0) <= level
    return c


# --- part 1: exact decay --------------------------------------------------------------------------------

@pytest.mark.claim("thm-weight-decay")
@pytest.mark.parametrize("lam,steps", [(1e-3, 300), (0.01, 200), (0.05, 100)])
def test_perp_weights_decay_exactly_by_one_minus_eta_lambda_per_step(problem, lam, steps):
    """Part 1: Pi_perp W(T) = (1 - eta lambda)^T Pi_perp W(0), to the rounding of T float64 steps (relative to
    ||W|| and eps).  Deterministic: false-failure probability 0.  A wrong factor, e.g. c_{T-1}, misses by
    eta lambda ||Pi_perp W(T)|| >= 5e-4 * ||Pi_perp W(T)||, far above the tolerance."""
    sub, X, y = problem.sub, problem.X, problem.y
    for s in range(3):
        p0 = ol.init_network(D, M, seed=820_000 + 10 * s, beta=D ** -0.5)
        res = ol.train(p0, X, y, _gd(steps, lam), coordinates="full")   # nothing rebuilt from the formula
        assert res.coordinates == "full"
        c = weight_decay_factor(ETA, lam, steps)
        assert math.isclose(res.decay_factor, c, rel_tol=1e-12)
        dev = float((ol.P_perp(sub, res.params.W) - c * ol.P_perp(sub, p0.W)).norm())
        tol = _rounding(steps, p0.W, res.params.W)
        assert dev <= tol, f"deviation {dev:.2e} above the rounding bound {tol:.2e}"
        assert tol < 1e-3 * c * float(ol.P_perp(sub, p0.W).norm())   # the check is sharp at this lambda


@pytest.mark.claim("thm-weight-decay")
def test_gperp_is_decayed_initial_sum_over_final_active_set(problem):
    """Part 1: g_perp(x0) = c_T sum_{i in I_T(x0)} u_i Pi_perp w_i(0), to ||u|| times the rounding bound of the
    weights.  Deterministic: false-failure probability 0."""
    sub, X, y, X_test = problem.sub, problem.X, problem.y, problem.X_test
    for s, lam in enumerate((1e-3, 0.01, 0.03)):
        p0 = ol.init_network(D, M, seed=830_000 + s)
        p = ol.train(p0, X, y, _gd(150, lam)).params
        c = weight_decay_factor(ETA, lam, 150)
        A = ol.active_set(p, X_test).to(p.W.dtype)
        predicted = c * ol.P_perp(sub, (A * p.u) @ p0.W)
        dev = float((ol.orthogonal_gradient(p, sub, X_test) - predicted).norm(dim=1).max())
        assert dev <= float(p.u.norm()) * _rounding(150, p0.W, p.W)


@pytest.mark.claim("thm-weight-decay")
def test_decayed_gperp_has_exact_chi2_law(problem):
    """Part 1: over 150 independent networks with weight decay, ||g_perp||^2 / (c^2 beta^2 ||u_I||^2) ~ chi^2_ell.
    KS test at level 1e-7: false-failure probability 1e-7 (the count check fails only if more than 10 networks
    have no active neuron at x0, each with probability about 2^-32)."""
    sub, x0 = problem.sub, problem.X_test[0]
    lams, steps, beta = (1e-3, 5e-3, 0.02), 60, D ** -0.5
    members = [ol.init_network(D, M, seed=840_000 + s, beta=beta) for s in range(150)]
    configs = [_gd(steps, lams[s % 3]) for s in range(150)]
    res = ol.train(members, problem.X, problem.y, configs, coordinates="full")   # one stack, one config each
    assert res.coordinates == "full"
    samples = []
    for s in range(150):
        lam = lams[s % 3]
        p = res.params.member(s)
        active = ol.active_set(p, x0)
        uI2 = float((p.u[active] ** 2).sum())
        if uI2 == 0.0:
            continue
        c = weight_decay_factor(ETA, lam, steps)
        samples.append(float(ol.orthogonal_gradient(p, sub, x0).norm() ** 2) / (c * c * beta * beta * uI2))
    assert len(samples) >= 140
    p_value = stats.kstest(samples, "chi2", args=(ELL,)).pvalue
    assert p_value > 1e-7, f"decayed orthogonal gradient is not chi^2_{ELL} (KS p = {p_value:.2e})"


@pytest.mark.claim("thm-weight-decay")
def test_decayed_certified_radius_is_never_beaten_in_P_perp(problem):
    """Part 1, the certificate |N_T| / (c_T beta (sqrt m + sqrt l + t)) on 10 networks, along the universal
    direction and 10 random directions of P_perp; t makes the union of the 10 Lipschitz events fail with
    probability 10 e^{-t^2/2} = 1e-7 (the false-failure probability)."""
    sub, X, y, X_test = problem.sub, problem.X, problem.y, problem.X_test
    n_net = 10
    t = math.sqrt(2 * math.log(n_net / 1e-7))
    gen = torch.Generator().manual_seed(850_000)
    pts, beta = X_test[1:], D ** -0.5
    for s in range(n_net):
        lam = (0.003, 0.01)[s % 2]
        p = ol.train(ol.init_network(D, M, seed=850_100 + s), X, y, _gd(100, lam)).params
        c = weight_decay_factor(ETA, lam, 100)
        N0 = ol.network_output(p, pts)
        keep = N0 != 0
        x, N0 = pts[keep], N0[keep]
        r = N0.abs() / (c * perp_lipschitz_bound(beta, M, ELL, t))
        dirs = [ol.universal_direction(p, sub).expand_as(x)]
        dirs += [ol.P_perp(sub, torch.randn(x.shape, generator=gen, dtype=torch.float64)) for _ in range(10)]
        for v in dirs:
            for sign in (1.0, -1.0):
                z = sign * 0.999 * r[:, None] * v / v.norm(dim=1, keepdim=True)
                assert bool((torch.sign(ol.network_output(p, x + z)) == torch.sign(N0)).all())


# --- part 2: the stationary limit -------------------------------------------------------------------------

@pytest.mark.claim("thm-weight-decay")
def test_perp_part_of_regularised_gradient_is_lambda_times_perp_weights(problem):
    """Part 2: Pi_perp grad_W L_lambda = lambda Pi_perp W at any (W, b), to float64 rounding relative to the
    size of the gradient.  Deterministic: false-failure probability 0."""
    sub, X, y = problem.sub, problem.X, problem.y
    gen = torch.Generator().manual_seed(860_000)
    for s in range(5):
        p = ol.init_network(D, M, seed=860_100 + s, bias="uniform")
        p = p.replace(W=p.W + 0.3 * torch.randn(M, D, generator=gen, dtype=torch.float64))
        lam = 10.0 ** -(s + 1)
        _, _, g = ol.loss_and_grads(p, X, y)
        lhs = ol.P_perp(sub, g["W"] + lam * p.W)
        scale = float(g["W"].norm()) + float((g["W"] + lam * p.W).norm())
        assert float((lhs - lam * ol.P_perp(sub, p.W)).norm()) <= 16 * EPS * scale


@pytest.mark.claim("thm-weight-decay")
def test_network_without_perp_part_is_constant_along_P_perp(problem):
    """Part 2: a network with Pi_perp W = 0 (as at a stationary point) takes the same value at x and x + z for
    z in P_perp, to the rounding of its pre-activations.  Deterministic: false-failure probability 0."""
    sub = problem.sub
    gen = torch.Generator().manual_seed(870_000)
    p = ol.init_network(D, M, seed=870_001, bias="uniform")
    p = p.replace(W=ol.Pi_P(sub, p.W))                    # Pi_perp W = 0, as at a stationary point
    x = 10 * torch.randn(200, D, generator=gen, dtype=torch.float64)
    z = 100 * ol.P_perp(sub, torch.randn(200, D, generator=gen, dtype=torch.float64))
    rho = 2 * D * EPS * float((p.u.abs() * p.W.norm(dim=1)).sum()) * float((x.norm(dim=1) + z.norm(dim=1)).max())
    assert float((ol.network_output(p, x + z) - ol.network_output(p, x)).abs().max()) <= rho
    assert float(ol.orthogonal_gradient(p, sub, x).norm(dim=1).max()) <= 64 * EPS * float(p.W.norm())


@pytest.mark.claim("thm-weight-decay")
def test_long_weight_decay_training_removes_perp_part_to_rounding_level(problem):
    """Part 2 in practice: after 1500 steps at lambda = 0.05 (c_T < 1e-16), Pi_perp W is at the rounding level
    of the training and the network is constant along P_perp to the rounding of its pre-activations.
    Deterministic: false-failure probability 0."""
    sub, X, y, X_test = problem.sub, problem.X, problem.y, problem.X_test
    p0 = ol.init_network(D, M, seed=880_000)
    p = ol.train(p0, X, y, _gd(1500, 0.05)).params
    c = weight_decay_factor(ETA, 0.05, 1500)
    assert c < 1e-16
    assert float(ol.P_perp(sub, p.W).norm()) <= c * float(ol.P_perp(sub, p0.W).norm()) + _rounding(1500, p0.W, p.W)
    z = math.sqrt(D) * ol.P_perp(sub, torch.randn(D, generator=torch.Generator().manual_seed(880_001),
                                                  dtype=torch.float64))
    z = math.sqrt(D) * z / z.norm()
    rho = 2 * D * EPS * float((p.u.abs() * p.W.norm(dim=1)).sum()) * (float(X_test.norm(dim=1).max()) + math.sqrt(D))
    assert float((ol.network_output(p, X_test + z) - ol.network_output(p, X_test)).abs().max()) <= rho


# --- part 3: the balance behind the price --------------------------------------------------------------

@pytest.mark.claim("thm-weight-decay")
def test_euler_balance_identity_holds_at_every_point(problem):
    """Part 3 away from stationarity: lambda ||theta||^2 - mean q/(1+e^q) = <grad L_lambda, theta> for any (W, b).
    Deterministic up to rounding (relative 1e-9): false-failure probability 0."""
    X, y = problem.X, problem.y
    for s, lam in enumerate((1e-3, 0.03, 0.3)):
        p0 = ol.init_network(D, M, seed=890_000 + s, bias="uniform")
        p = ol.train(p0, X, y, _gd(50 * (s + 1), lam)).params
        _, f, g = ol.loss_and_grads(p, X, y)
        q = y * f
        theta2 = float((p.W ** 2).sum() + (p.b ** 2).sum())
        inner = float(((g["W"] + lam * p.W) * p.W).sum() + ((g["b"] + lam * p.b) * p.b).sum())
        balance = float((q * torch.sigmoid(-q)).mean())
        assert math.isclose(lam * theta2 - balance, inner, rel_tol=1e-9, abs_tol=1e-13)


# --- obs-l2-price and obs-remedies-compared: the chapter's setting and training set, fresh draws ----------

CH_D, CH_ELL, CH_M, CH_N, CH_T = 100, 50, 100, 200, 600
K_DRAWS = 16
LAMS = (0.0, 0.01, 0.1, 0.5)


@pytest.fixture(scope="module")
def chapter_runs():
    """K_DRAWS fresh initial draws, each trained as in the chapter for T = 600 GD steps at every lambda of LAMS
    (beta = 1/sqrt(d)) and, scaled to beta = 1/d, without weight decay; per training and draw: the final
    train margin, the test accuracy and the median certified radius over the chapter's 100 test points."""
    prob = ol.teacher_problem(CH_D, CH_ELL, CH_N, seed=0, n_test=1000, test_seed=5)   # the chapter's data
    sub, X, y = prob.sub, prob.X, prob.y
    pts = prob.X_test[:100]
    L_unit = perp_lipschitz_bound(1.0, CH_M, CH_ELL, math.sqrt(2 * math.log(1000)))
    seeds = [7_200_000 + s for s in range(K_DRAWS)]
    trainings = {lam: ([ol.init_network(CH_D, CH_M, seed=s) for s in seeds], lam, CH_D ** -0.5) for lam in LAMS}
    trainings["small"] = ([ol.init_network(CH_D, CH_M, seed=s, beta=1 / CH_D) for s in seeds], 0.0, 1 / CH_D)
    out = {}
    for key, (nets, lam, beta) in trainings.items():
        res = ol.train(nets, X, y, ol.TrainConfig(lr=0.5, max_steps=CH_T, weight_decay=lam), sub=sub)
        scale = weight_decay_factor(0.5, lam, CH_T) * beta
        N = ol.network_output(res.params, pts)                                  # (K, 100)
        out[key] = dict(margin=res.final_margin, acc=ol.accuracy(res.params, prob.X_test, prob.y_test),
                        radius=(N.abs() / (scale * L_unit)).median(dim=1).values)
    return out


@pytest.mark.claim("obs-l2-price")
def test_weight_decay_costs_margin(chapter_runs):
    """obs-l2-price, part 1: for a random draw, with probability >= 3/4, the margin at lambda = 0.01 is below the
    one at lambda = 0 and the margin at lambda = 0.1 is negative.  Count over K_DRAWS fresh draws against the
    1e-6 quantile of Binomial(K_DRAWS, 3/4): false-failure probability below 1e-6."""
    r = chapter_runs
    ok = int(((r[0.01]["margin"] < r[0.0]["margin"]) & (r[0.1]["margin"] < 0)).sum())
    need = _at_least(K_DRAWS, 0.75)
    assert ok >= need, f"only {ok} of {K_DRAWS} draws paid in margin as claimed (need {need})"


@pytest.mark.claim("obs-l2-price")
def test_weight_decay_costs_accuracy_only_when_large(chapter_runs):
    """obs-l2-price, part 2: for a random draw, with probability >= 3/4, the test accuracy a satisfies
    a(0.01) >= a(0) - 0.02, a(0.1) >= a(0) - 0.02 and a(0.5) < a(0).  Count over K_DRAWS fresh draws against
    the 1e-6 quantile of Binomial(K_DRAWS, 3/4): false-failure probability below 1e-6."""
    a = {lam: chapter_runs[lam]["acc"] for lam in LAMS}
    ok = int(((a[0.01] >= a[0.0] - 0.02) & (a[0.1] >= a[0.0] - 0.02) & (a[0.5] < a[0.0])).sum())
    need = _at_least(K_DRAWS, 0.75)
    assert ok >= need, f"only {ok} of {K_DRAWS} draws behaved as claimed (need {need})"


@pytest.mark.claim("obs-remedies-compared")
def test_both_remedies_certify_beyond_the_data_norm(chapter_runs):
    """obs-remedies-compared, part 1: with probability >= 3/4 per draw, the median certified radius exceeds
    sqrt(d) for beta = 1/d and for lambda = 0.01, and not for the standard training.  Count over K_DRAWS fresh
    draws against the 1e-6 quantile of Binomial(K_DRAWS, 3/4): false-failure probability below 1e-6."""
    r, s = chapter_runs, math.sqrt(CH_D)
    ok = int(((r["small"]["radius"] > s) & (r[0.01]["radius"] > s) & (r[0.0]["radius"] < s)).sum())
    need = _at_least(K_DRAWS, 0.75)
    assert ok >= need, f"only {ok} of {K_DRAWS} draws behaved as claimed (need {need})"


@pytest.mark.claim("obs-remedies-compared")
def test_small_initialisation_keeps_more_margin_than_weight_decay(chapter_runs):
    """obs-remedies-compared, part 2: with probability >= 3/4 per draw, the train margin at beta = 1/d exceeds
    the one at lambda = 0.01.  Count over K_DRAWS fresh draws against the 1e-6 quantile of
    Binomial(K_DRAWS, 3/4): false-failure probability below 1e-6."""
    ok = int((chapter_runs["small"]["margin"] > chapter_runs[0.01]["margin"]).sum())
    need = _at_least(K_DRAWS, 0.75)
    assert ok >= need, f"only {ok} of {K_DRAWS} draws behaved as claimed (need {need})"


@pytest.mark.claim("obs-remedies-compared")
def test_neither_remedy_costs_accuracy(chapter_runs):
    """obs-remedies-compared, part 3: with probability >= 3/4 per draw, both remedies reach at least the test
    accuracy of the standard training.  Count over K_DRAWS fresh draws against the 1e-6 quantile of
    Binomial(K_DRAWS, 3/4): false-failure probability below 1e-6."""
    a = {k: chapter_runs[k]["acc"] for k in ("small", 0.01, 0.0)}
    ok = int(((a["small"] >= a[0.0]) & (a[0.01] >= a[0.0])).sum())
    need = _at_least(K_DRAWS, 0.75)
    assert ok >= need, f"only {ok} of {K_DRAWS} draws behaved as claimed (need {need})"
