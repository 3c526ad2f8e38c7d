"""Tests for ortho_lib.gradients, the helpers in ortho_lib.theory for the orthogonal-gradient theorem, and
the theorem itself (book/orthogonal_gradient.md), on fresh seeds (10**6 and up; the chapter uses seeds
below 10**4).

Failure budget of the randomised checks for a correct implementation (each p-value below is exact or
conservative under the theorem's law):
  * five KS tests at level 1e-8 each .......................................... 5e-8
  * three one-sided binomial tests at level 1e-8 ................................ 3e-8
  * two two-sided binomial tests at level 1e-8 .................................. 2e-8
  * five two-sided chi^2 tests at level 1e-8 (the sweep settings) ............... 5e-8
  * one test that the law is REJECTED for points chosen by looking at Pi_perp W(0)
    (KS p-values there are around 1e-100 at this size; we require only p < 1e-4)
Total well below 1e-6. The two tests of empirical observations (sweep slopes, first-order flip distance)
state in their docstrings what their tolerance rests on. Everything else is deterministic.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import ortho_lib as ol
from ortho_lib import theory
from ortho_lib.gradients import (
    active_second_layer_norm_sq,
    gperp_chi2_statistic,
    resample_orthogonal_part,
    resampled_gperp_norms,
)

LEVEL = 1e-8
SEED = 10**6


def _small_problem(seed: int, d: int = 40, ell: int = 20, n: int = 20):
    sub = ol.random_subspace(d, ell, seed=seed)
    X = ol.sample_on_subspace(sub, n, seed=seed + 1)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=seed + 2))
    return sub, X, y


# --------------------------------------------------------------------------- unit tests: gradients.py


def test_active_second_layer_norm_sq_is_k_over_m_for_the_sign_layer():
    sub, X, _ = _small_problem(SEED)
    p = ol.init_network(40, 64, seed=SEED + 3)
    k = ol.active_set(p, X).sum(1).double()
    assert torch.allclose(active_second_layer_norm_sq(p, X), k / 64, atol=1e-15)


def test_active_second_layer_norm_sq_of_one_point_is_a_scalar():
    sub, X, _ = _small_problem(SEED)
    p = ol.init_network(40, 16, seed=SEED + 3, second_layer="gaussian")
    v = active_second_layer_norm_sq(p, X[0])
    assert v.shape == ()
    mask = ol.active_set(p, X[0])
    assert float(v) == pytest.approx(float((p.u[mask] ** 2).sum()), rel=1e-14)


def test_gperp_chi2_statistic_matches_its_definition():
    sub, X, _ = _small_problem(SEED + 10)
    beta = 0.3
    p = ol.init_network(40, 50, seed=SEED + 13, beta=beta)
    g = ol.P_perp(sub, ol.input_gradient(p, X))
    expected = (g**2).sum(1) / (beta**2 * active_second_layer_norm_sq(p, X))
    assert torch.allclose(gperp_chi2_statistic(p, sub, X, beta=beta), expected, rtol=1e-13)


def test_gperp_chi2_statistic_rejects_a_point_with_empty_active_set():
    sub, X, _ = _small_problem(SEED)
    p = ol.init_network(40, 10, seed=SEED + 3)
    p = p.replace(b=torch.full((10,), -1e6, dtype=torch.float64))
    with pytest.raises(ValueError, match="X: point 0 has an empty active set"):
        gperp_chi2_statistic(p, sub, X)


def test_gperp_chi2_statistic_rejects_bad_arguments():
    sub, X, _ = _small_problem(SEED)
    p = ol.init_network(40, 10, seed=SEED + 3)
    with pytest.raises(TypeError, match="params"):
        gperp_chi2_statistic("not params", sub, X)
    with pytest.raises(TypeError, match="sub"):
        gperp_chi2_statistic(p, "not a subspace", X)
    with pytest.raises(ValueError, match="sub"):
        gperp_chi2_statistic(p, ol.random_subspace(30, 5, seed=1), X)
    with pytest.raises(ValueError, match="beta"):
        gperp_chi2_statistic(p, sub, X, beta=0.0)
    with pytest.raises(ValueError, match="X must have last dimension d = 40"):
        gperp_chi2_statistic(p, sub, torch.zeros(5, 39, dtype=torch.float64))
    with pytest.raises(TypeError, match="X"):
        gperp_chi2_statistic(p, sub, [[0.0] * 40])
    with pytest.raises(ValueError, match="X"):
        active_second_layer_norm_sq(p, torch.zeros(2, 3, 40, dtype=torch.float64))


def test_resample_orthogonal_part_keeps_P_part_biases_and_second_layer():
    sub, _, _ = _small_problem(SEED)
    p = ol.init_network(40, 30, seed=SEED + 3, bias="uniform")
    q = resample_orthogonal_part(p, sub, seed=SEED + 4)
    assert torch.allclose(ol.Pi_P(sub, q.W), ol.Pi_P(sub, p.W), atol=1e-14)
    assert torch.equal(q.b, p.b) and torch.equal(q.u, p.u) and torch.equal(q.c, p.c)
    assert float((ol.P_perp(sub, q.W) - ol.P_perp(sub, p.W)).abs().max()) > 0.1


def test_resample_orthogonal_part_is_reproducible_and_seed_dependent():
    sub, _, _ = _small_problem(SEED)
    p = ol.init_network(40, 30, seed=SEED + 3)
    a = resample_orthogonal_part(p, sub, seed=5)
    b = resample_orthogonal_part(p, sub, seed=5)
    c = resample_orthogonal_part(p, sub, seed=6)
    assert torch.equal(a.W, b.W)
    assert not torch.equal(a.W, c.W)


def test_resample_orthogonal_part_draws_iid_gaussian_entries_of_scale_beta():
    d, ell, m, beta = 60, 40, 250, 0.7
    sub = ol.random_subspace(d, ell, seed=SEED + 20)
    p = ol.init_network(d, m, seed=SEED + 21)
    q = resample_orthogonal_part(p, sub, seed=SEED + 22, beta=beta)
    coords = (ol.subspaces.perp_coordinates(sub, q.W) / beta).flatten().numpy()  # m * ell = 10000 numbers
    assert stats.kstest(coords, stats.norm.cdf).pvalue > LEVEL


def test_resample_orthogonal_part_rejects_bad_arguments():
    sub, _, _ = _small_problem(SEED)
    p = ol.init_network(40, 10, seed=SEED + 3)
    with pytest.raises(TypeError, match="params"):
        resample_orthogonal_part(None, sub, seed=0)
    with pytest.raises(ValueError, match="beta"):
        resample_orthogonal_part(p, sub, seed=0, beta=-1.0)
    with pytest.raises(TypeError, match="seed"):
        resample_orthogonal_part(p, sub, seed=1.5)


@pytest.mark.claim("thm-gperp")
def test_training_commutes_with_resampling_the_orthogonal_part():
    """The frozen-component lemma in the form the chapter uses: redraw-then-train == train-then-redraw."""
    sub, X, y = _small_problem(SEED + 30)
    p0 = ol.init_network(40, 40, seed=SEED + 33)
    cfg = ol.TrainConfig(lr=0.25, target_margin=1.0, max_steps=5000)
    trained = ol.train(p0, X, y, cfg)
    assert trained.reached
    for s in range(3):
        a = resample_orthogonal_part(trained.params, sub, seed=SEED + 40 + s)
        b = ol.train(resample_orthogonal_part(p0, sub, seed=SEED + 40 + s), X, y, cfg).params
        assert float((a.W - b.W).abs().max()) < 1e-12
        assert float((a.b - b.b).abs().max()) < 1e-12


def test_resampled_gperp_norms_follow_the_scaled_chi2_law():
    sub, X, y = _small_problem(SEED + 50, d=80, ell=30)
    p = ol.train(ol.init_network(80, 60, seed=SEED + 53), X, y,
                 ol.TrainConfig(lr=0.1, target_margin=1.0, max_steps=5000)).params
    x0 = ol.sample_on_subspace(sub, 1, seed=SEED + 54)[0]
    beta = 1 / math.sqrt(80)
    g = resampled_gperp_norms(p, sub, x0, draws=3000, seed=SEED + 55)
    s = (g**2 / (beta**2 * float(active_second_layer_norm_sq(p, x0)))).numpy()
    assert stats.kstest(s, stats.chi2(30).cdf).pvalue > LEVEL


def test_resampled_gperp_norms_are_zero_for_an_empty_active_set():
    sub, X, _ = _small_problem(SEED)
    p = ol.init_network(40, 10, seed=SEED + 3)
    p = p.replace(b=torch.full((10,), -1e6, dtype=torch.float64))
    g = resampled_gperp_norms(p, sub, X[0], draws=7, seed=0)
    assert g.shape == (7,) and bool((g == 0).all())


def test_resampled_gperp_norms_are_reproducible_and_fill_every_draw_when_chunked():
    sub, X, _ = _small_problem(SEED)
    p = ol.init_network(40, 30, seed=SEED + 3)
    a = resampled_gperp_norms(p, sub, X[0], draws=50, seed=1, chunk_elements=10)
    b = resampled_gperp_norms(p, sub, X[0], draws=50, seed=1, chunk_elements=10)
    assert a.shape == (50,) and torch.equal(a, b)
    assert bool((a > 0).all())


def test_resampled_gperp_norms_reject_bad_arguments():
    sub, X, _ = _small_problem(SEED)
    p = ol.init_network(40, 10, seed=SEED + 3)
    off = X[0] + sub.perp_basis[:, 0]
    with pytest.raises(ValueError, match="x0 must lie in P"):
        resampled_gperp_norms(p, sub, off, draws=5, seed=0)
    with pytest.raises(ValueError, match="draws"):
        resampled_gperp_norms(p, sub, X[0], draws=0, seed=0)
    with pytest.raises(ValueError, match="x0"):
        resampled_gperp_norms(p, sub, X[:2], draws=5, seed=0)
    with pytest.raises(ValueError, match="chunk_elements"):
        resampled_gperp_norms(p, sub, X[0], draws=5, seed=0, chunk_elements=0)


# --------------------------------------------------------------------------- unit tests: theory.py


@pytest.mark.claim("lem-chi2-tails")
def test_exact_failure_probabilities_are_the_chi2_tails():
    lo, hi = theory.gperp_bound_failure_exact(16)
    assert lo == pytest.approx(stats.chi2(16).cdf(8.0), rel=1e-12)
    assert hi == pytest.approx(stats.chi2(16).sf(32.0), rel=1e-12)


@pytest.mark.claim("lem-chi2-tails")
def test_exact_failure_probabilities_are_below_chernoff_and_below_exp_minus_ell_over_16():
    for ell in range(1, 2001):
        ex = theory.gperp_bound_failure_exact(ell)
        ch = theory.gperp_bound_failure_chernoff(ell)
        t = theory.tail_probability(ell)
        assert ex[0] <= ch[0] * (1 + 1e-12) and ex[1] <= ch[1] * (1 + 1e-12), ell
        assert ch[0] <= t and ch[1] <= t, ell


@pytest.mark.claim("lem-chi2-tails")
def test_chernoff_exponents_are_the_optimised_values():
    lo, hi = theory.gperp_bound_failure_chernoff(1)
    assert -math.log(lo) == pytest.approx(math.log(2) / 2 - 0.25, rel=1e-14)
    assert -math.log(hi) == pytest.approx((1 - math.log(2)) / 2, rel=1e-14)


def test_failure_probability_helpers_reject_bad_ell():
    for f in (theory.gperp_bound_failure_exact, theory.gperp_bound_failure_chernoff):
        with pytest.raises(ValueError, match="ell"):
            f(0)
        with pytest.raises(TypeError, match="ell"):
            f(2.5)


# --------------------------------------------------------------------------- Theorem A on trained networks


@pytest.mark.claim("thm-gperp")
def test_gperp_of_trained_network_is_sum_of_initial_orthogonal_rows_over_trained_active_set():
    sub, X, y = _small_problem(SEED + 60)
    p0 = ol.init_network(40, 50, seed=SEED + 63)
    for opt, kw in (("gd", dict(lr=0.25)), ("sgd", dict(lr=0.05, batch_size=5)), ("momentum", dict(lr=0.05))):
        p = ol.train(p0, X, y, ol.TrainConfig(optimizer=opt, target_margin=1.0, max_steps=2000, **kw)).params
        Z = torch.cat([X, ol.sample_on_subspace(sub, 30, seed=SEED + 64)])
        A = ol.active_set(p, Z).double()
        expected = (A * p.u) @ ol.P_perp(sub, p0.W)
        assert float((ol.orthogonal_gradient(p, sub, Z) - expected).abs().max()) < 1e-12, opt


E_NETS = 160


@pytest.fixture(scope="module")
def trained_statistics():
    """Theorem A's statistic on E_NETS independently trained networks (own data, init and x0 each; the
    E_NETS networks are trained as one stack, each on its own training set)."""
    d, ell, m, n = 40, 20, 40, 20
    sub = ol.random_subspace(d, ell, seed=SEED + 70)
    seeds = [SEED + 1000 + 10 * e for e in range(E_NETS)]
    X = torch.stack([ol.sample_on_subspace(sub, n, seed=s) for s in seeds])                      # (E, n, d)
    y = torch.stack([ol.teacher_labels(X[e], ol.teacher_direction(sub, seed=s + 1)) for e, s in enumerate(seeds)])
    nets = [ol.init_network(d, m, seed=s + 2) for s in seeds]
    out = {}
    for train_u in (False, True):
        cfg = ol.TrainConfig(lr=0.25, target_margin=1.0, max_steps=20000, trained="Wbu" if train_u else "Wb")
        res = ol.train(nets, X, y, cfg)
        assert bool(res.reached.all())
        fresh, train_pt, picked, k_over_m, gnorm = [], [], [], [], []
        for e, s in enumerate(seeds):
            p = res.params.member(e)
            x0 = ol.sample_on_subspace(sub, 1, seed=s + 3)
            cand = ol.sample_on_subspace(sub, 60, seed=s + 4)
            fresh.append(float(gperp_chi2_statistic(p, sub, x0)[0]))
            train_pt.append(float(gperp_chi2_statistic(p, sub, X[e, :1])[0]))
            picked.append(float(gperp_chi2_statistic(p, sub, cand).max()))
            k_over_m.append(float(ol.active_set(p, x0[0]).sum()) / m)
            gnorm.append(float(ol.orthogonal_gradient(p, sub, x0[0]).norm()))
        out[train_u] = {key: np.array(v) for key, v in
                        dict(fresh=fresh, train=train_pt, picked=picked, k_over_m=k_over_m, gnorm=gnorm).items()}
    out["ell"], out["d"], out["m"] = ell, d, m
    return out


@pytest.mark.claim("thm-gperp")
@pytest.mark.parametrize("train_u", [False, True], ids=["fixed_second_layer", "trained_second_layer"])
def test_statistic_at_fresh_points_of_trained_networks_is_exactly_chi2(trained_statistics, train_u):
    s = trained_statistics[train_u]["fresh"]
    assert stats.kstest(s, stats.chi2(trained_statistics["ell"]).cdf).pvalue > LEVEL


@pytest.mark.claim("thm-gperp")
def test_statistic_at_training_points_of_trained_networks_is_exactly_chi2(trained_statistics):
    s = trained_statistics[False]["train"]
    assert stats.kstest(s, stats.chi2(trained_statistics["ell"]).cdf).pvalue > LEVEL


@pytest.mark.claim("thm-gperp")
def test_law_fails_for_points_chosen_by_looking_at_the_orthogonal_part(trained_statistics):
    s = trained_statistics[False]["picked"]
    assert stats.kstest(s, stats.chi2(trained_statistics["ell"]).cdf).pvalue < 1e-4


@pytest.mark.claim("thm-gperp")
@pytest.mark.parametrize("side", ["lower", "upper"])
def test_each_bound_fails_no_more_often_than_exp_minus_ell_over_16(trained_statistics, side):
    """Violations of Theorem A's bounds over independent networks: Binomial(E, p) with p <= e^(-l/16)."""
    r = trained_statistics[False]
    ell, d, m = trained_statistics["ell"], trained_statistics["d"], trained_statistics["m"]
    k = r["k_over_m"] * m
    lo = np.array([theory.gperp_bounds(1 / math.sqrt(d), kk / m, ell)[0] for kk in k])
    hi = np.array([theory.gperp_bounds(1 / math.sqrt(d), kk / m, ell)[1] for kk in k])
    fails = int((r["gnorm"] < lo).sum()) if side == "lower" else int((r["gnorm"] > hi).sum())
    # P[Binomial(E, p) > c] <= LEVEL at the largest allowed p = e^{-l/16}
    c = stats.binom.isf(LEVEL, E_NETS, theory.tail_probability(ell))
    assert fails <= c


@pytest.mark.claim("thm-gperp")
def test_bound_failure_rates_match_the_exact_chi2_probabilities():
    """20000 networks (trained once, orthogonal part redrawn): failure counts are Binomial(R, exact p)."""
    d, ell, m, n, R = 200, 16, 60, 30, 20000
    sub = ol.random_subspace(d, ell, seed=SEED + 80)
    X = ol.sample_on_subspace(sub, n, seed=SEED + 81)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 82))
    p = ol.train(ol.init_network(d, m, seed=SEED + 83), X, y,
                 ol.TrainConfig(lr=0.5 * n / d, target_margin=1.0, max_steps=5000)).params
    x0 = ol.sample_on_subspace(sub, 1, seed=SEED + 84)[0]
    lo, hi = theory.gperp_bounds(1 / math.sqrt(d), float(active_second_layer_norm_sq(p, x0)), ell)
    g = resampled_gperp_norms(p, sub, x0, draws=R, seed=SEED + 85)
    p_lo, p_hi = theory.gperp_bound_failure_exact(ell)
    n_lo, n_hi = int((g < lo).sum()), int((g > hi).sum())
    assert stats.binomtest(n_lo, R, p_lo).pvalue > LEVEL
    assert stats.binomtest(n_hi, R, p_hi).pvalue > LEVEL
    assert n_lo <= stats.binom.isf(LEVEL, R, theory.tail_probability(ell))


# --------------------------------------------------------------------------- the sweeps (Experiments 3, 4)


def _sweep_networks(d, ell, m, seeds, *, bias0=0.0, n=20, n_fresh=1):
    """K networks at one setting (own data, teacher and init each), trained to margin 1 as one stack; their
    orthogonal gradients and ||u_I||^2 at n_fresh fresh points each, shapes (K, n_fresh)."""
    sub = ol.random_subspace(d, ell, seed=seeds[0] + 7)
    X = torch.stack([ol.sample_on_subspace(sub, n, seed=s + 1) for s in seeds])
    y = torch.stack([ol.teacher_labels(X[e], ol.teacher_direction(sub, seed=s + 2)) for e, s in enumerate(seeds)])
    inits = [ol.init_network(d, m, seed=s + 3) for s in seeds]
    inits = [p.replace(b=p.b + bias0) for p in inits]
    res = ol.train(inits, X, y, ol.TrainConfig(lr=0.5 * n / d, max_steps=20000, target_margin=1.0), sub=sub,
                   coordinates="span")
    assert bool(res.reached.all())
    Z = torch.stack([ol.sample_on_subspace(sub, n_fresh, seed=s + 4) for s in seeds])
    g = ol.orthogonal_gradient(res.params, sub, Z).norm(dim=-1)
    A = ol.active_set(res.params, Z)
    uI = (A * res.params.u[:, None, :] ** 2).sum(-1)
    return sub, res, g, uI, A


SWEEP_SETTINGS = [dict(d=400, ell=10, m=100), dict(d=400, ell=200, m=20), dict(d=400, ell=200, m=300),
                  dict(d=60, ell=30, m=100), dict(d=400, ell=200, m=100, bias0=-1.0)]


@pytest.mark.claim("thm-gperp")
@pytest.mark.parametrize("setting", SWEEP_SETTINGS, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_normalised_orthogonal_gradient_is_chi2_across_the_sweep_settings(setting):
    """At each setting of the sweeps, K = 12 independent networks and one fresh point each:
    sum_e ||g_e||^2 / (beta^2 ||u_I,e||^2) ~ chi^2 with K*l degrees of freedom, exactly (the theorem,
    conditionally on everything but Pi_perp W(0); independent networks add degrees of freedom). Two-sided
    test at level 1e-8 per setting (5 settings: 5e-8)."""
    K = 12
    seeds = [SEED + 20000 + 100 * e + 10 * SWEEP_SETTINGS.index(setting) for e in range(K)]
    sub, res, g, uI, _ = _sweep_networks(seeds=seeds, **setting)
    d, ell = setting["d"], setting["ell"]
    total = float((d * g[:, 0] ** 2 / uI[:, 0]).sum())
    dist = stats.chi2(K * ell)
    assert 2 * min(dist.cdf(total), dist.sf(total)) > LEVEL


@pytest.mark.claim("obs-gperp-scaling")
def test_sweep_slopes_and_active_fraction_on_fresh_seeds():
    """Observation (empirical), on fresh seeds and smaller sizes than the chapter: over 10 networks per
    setting, the median log-log slope of the rms ||g_perp|| (30 fresh points per network) is within 0.1
    of 1/2 in l (d = 400, m = 100), of 0 in m (d = 400, l = 200) and of -1/2 in d (l = 20, m = 100), and
    the active fraction at b(0) = 0 stays in [0.4, 0.6]. The chapter's per-seed slopes spread by about
    +-0.05 around these values at larger sizes; the median of 10 has a spread several times smaller, so a
    correct library fails this only if the observation itself is wrong at these sizes (we estimate below
    1e-6 under a normal model of the chapter's spread)."""
    K = 10
    plans = {"ell": ([dict(d=400, ell=L, m=100) for L in (10, 40, 160)], "ell", 0.5),
             "m": ([dict(d=400, ell=200, m=w) for w in (20, 80, 320)], "m", 0.0),
             "d": ([dict(d=D, ell=20, m=100) for D in (40, 160, 640)], "d", -0.5)}
    for name, (settings, xkey, nominal) in plans.items():
        rms, xs = [], []
        for i, st in enumerate(settings):
            seeds = [SEED + 30000 + 1000 * i + 10 * e + (0 if name == "ell" else 500 if name == "m" else 900)
                     for e in range(K)]
            _, _, g, _, A = _sweep_networks(seeds=seeds, n_fresh=30, **st)
            frac = A.double().mean((1, 2))
            assert bool(((frac > 0.4) & (frac < 0.6)).all()), (name, st, frac)
            rms.append(g.pow(2).mean(1).sqrt())
            xs.append(st[xkey])
        R = torch.stack(rms)                                    # (settings, K)
        slopes = [float(np.polyfit(np.log(xs), np.log(R[:, e].numpy()), 1)[0]) for e in range(K)]
        assert abs(float(np.median(slopes)) - nominal) < 0.1, (name, slopes)


@pytest.mark.claim("obs-first-order-flip")
def test_first_order_flip_distance_is_close_to_the_true_one_on_fresh_seeds():
    """Observation (empirical): d = 400, l = 200, m = 100, 6 fresh networks, 100 fresh points each: every
    point flips along -sign(N) g_perp within ||x0|| = sqrt(d), and the per-network median of true flip /
    first-order estimate lies in [0.9, 1.4] (the chapter measures 1.01 to 1.36 over 40 networks at
    fresh points). Empirical: no probability is proven; the tolerance leaves room beyond the chapter's range."""
    seeds = [SEED + 40000 + 10 * e for e in range(6)]
    sub, res, _, _, _ = _sweep_networks(400, 200, 100, seeds)
    for e, s in enumerate(seeds):
        p = res.params.member(e)
        pts = ol.sample_on_subspace(sub, 100, seed=s + 5)
        gp = ol.orthogonal_gradient(p, sub, pts)
        est = ol.perturbations.first_order_flip_estimate(p, sub, pts)
        true = ol.flip_norm_along(p, pts, gp, max_norm=math.sqrt(400)).norm
        assert bool(torch.isfinite(true).all())
        assert 0.9 <= float((true / est).median()) <= 1.4
