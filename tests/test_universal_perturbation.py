"""The universal direction of book/universal_perturbation.md: the universal theorem, the first-order
picture, the tightness and robust-network propositions, the two observations, and the library functions
behind them, checked on fresh seeds (3 * 10**6 and up; the chapter uses seeds below 10**4).

Failure budget for a correct implementation (each line: the probability that a correct library fails it):
  * the hypotheses of the universal theorem must hold on 3 trained networks; their failure probability
    is computed in the test from the exact law and asserted to be below 1e-9 before the check ..... < 1e-9
  * one KS test at level 1e-8 (law of ||z||^2) .................................................. 1e-8
  * three binomial tests at level 1e-8 (alignment law, first-order law at two points) ............ 3e-8
  * one one-sided binomial test at level 1e-8 (part 2's guarantee) .............................. 1e-8
  * initial_alignment: Hoeffding bound on the mean aligned fraction ............................. < 1e-15
  * tightness: the operator-norm event with t = 6 (probability e^-18 each, 3 networks) ........... < 1e-7
  * codimension observation: union bound over points of the first-order law, computed in the test
    and asserted below 1e-7 before the check ..................................................... < 1e-7
  * every-point-flips and proportional-regime observations: empirical, see each test's docstring
Total below 1e-6 for the tests whose probability is proven. Every other check is deterministic.
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate, stats

import ortho_lib as ol
from ortho_lib import theory
from ortho_lib.attacks import ddn_min_distance, exact_min_distance_milp
from ortho_lib.perturbations import (alignment_coefficients, flip_norm_along, initial_alignment, max_descent_slope,
                                     opposing_active_count, robust_projection, universal_direction, universal_flips)
from ortho_lib.theory import alignment_failure_bound, alignment_threshold, universal_flip_bound

LEVEL = 1e-8
SEED = 3 * 10**6
TO_MARGIN_1 = ol.TrainConfig(lr=0.5, target_margin=1.0, max_steps=5000)


def _mean_phi_chi(ell: int, c: float) -> float:
    """E[Phi(c X)], X ~ chi_ell, by adaptive quadrature (independent of theory.mean_phi_chi, which is tested
    against the same quadrature in test_theory.py)."""
    f = lambda r: stats.norm.cdf(c * r) * stats.chi.pdf(r, ell)
    lo, hi = max(0.0, math.sqrt(ell) - 15), math.sqrt(ell) + 15
    return integrate.quad(f, lo, hi, limit=200, epsabs=1e-13)[0]


def _hypotheses(p: ol.TwoLayerParams, sub: ol.Subspace) -> bool:
    a, z = alignment_coefficients(p, sub), universal_direction(p, sub)
    return bool((torch.sign(a) == torch.sign(p.u)).all()
                and (a.abs() >= alignment_threshold(sub.ell, p.d, p.m)).all()
                and z.norm() ** 2 <= 2 * sub.ell / p.d)


def _neuron_failure_probability(ell: int, m: int) -> float:
    r"""Exact P[neuron i is misaligned or |a_i| < l/(4 d sqrt m)] for the sign second layer.

    In units of beta^2: m u_i a_i = X + sqrt(m) u_i <zeta_i, eta_i> with X = ||zeta_i||^2 ~ chi^2_l and,
    given X, the second term ~ N(0, (m-1) X). Both failures together are the event m u_i a_i < l/4.
    """
    f = lambda x: stats.norm.cdf((ell / 4 - x) / math.sqrt((m - 1) * x)) * stats.chi2.pdf(x, ell)
    return integrate.quad(f, 0, ell * 4, limit=400, epsabs=1e-18, points=[ell / 4, ell])[0]


# ----------------------------------------------------------------------------- deterministic facts


@pytest.mark.claim("thm-universal")
def test_universal_direction_is_fixed_by_training_and_lies_in_P_perp():
    sub = ol.random_subspace(50, 30, seed=SEED)
    X = ol.sample_on_subspace(sub, 40, seed=SEED + 1)
    y = ol.random_labels(40, seed=SEED + 2)
    p0 = ol.init_network(50, 30, seed=SEED + 3)
    p = ol.train(p0, X, y, TO_MARGIN_1).params
    z0, z = universal_direction(p0, sub), universal_direction(p, sub)
    assert float((z - z0).norm()) < 1e-12 * float(z0.norm())
    assert float(ol.Pi_P(sub, z).norm()) < 1e-13 * float(z.norm())


@pytest.mark.claim("thm-universal")
def test_perturbation_along_z_moves_every_point_away_from_all_data():
    """Part 4: Pythagoras, for any points of P and any multiple of z."""
    sub = ol.random_subspace(40, 25, seed=SEED + 10)
    p = ol.init_network(40, 20, seed=SEED + 11)
    z = universal_direction(p, sub)
    A = ol.sample_on_subspace(sub, 30, seed=SEED + 12)
    B = ol.sample_on_subspace(sub, 20, seed=SEED + 13)
    alphas = torch.linspace(-5, 5, 30, dtype=torch.float64)[:, None]
    moved = A + alphas * z / z.norm()
    gain = torch.cdist(moved, B) ** 2 - torch.cdist(A, B) ** 2
    assert torch.allclose(gain, (alphas ** 2).expand_as(gain), atol=1e-9)
    assert torch.allclose(ol.distance_to_subspace(sub, moved), alphas.abs().flatten(), atol=1e-12)


# ------------------------------------------------------- the universal theorem, parts 1 and 3, in its regime


@pytest.fixture(scope="module")
def aligned_networks():
    """Three trained networks with width far below the codimension (d = 500, l = 400, m = 5), and points of
    P with N(x) != 0 (the universal theorem assumes it)."""
    d, ell, m, n = 500, 400, 5, 60
    nets = []
    for r in range(3):
        sub = ol.random_subspace(d, ell, seed=SEED + 100 + r)
        X = ol.sample_on_subspace(sub, n, seed=SEED + 110 + r)
        y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 120 + r))
        p0 = ol.init_network(d, m, seed=SEED + 130 + r)
        # both output signs present (the theorem only needs u fixed, independent of W, |u_i| = 1/sqrt m)
        p0 = p0.replace(u=torch.tensor([(-1.0) ** i for i in range(m)], dtype=torch.float64) / math.sqrt(m))
        # 300 GD steps (the theorem holds after any number of steps; with width 5 a few training points
        # can have every neuron off, N = 0, and then no margin target is reachable)
        res = ol.train(p0, X, y, ol.TrainConfig(lr=0.5, max_steps=300))
        pts = torch.cat([X, ol.sample_on_subspace(sub, 200, seed=SEED + 140 + r),
                         # points of P of other norms, chosen after training
                         ol.sample_on_subspace(sub, 60, seed=SEED + 150 + r, radius=3.0),
                         ol.sample_on_subspace(sub, 60, seed=SEED + 160 + r, radius=80.0)])
        pts = pts[ol.network_output(res.params, pts) != 0]
        nets.append((sub, res, pts))
    return nets


@pytest.mark.claim("thm-universal")
def test_hypotheses_of_the_universal_theorem_hold_in_its_regime(aligned_networks):
    d, ell, m = 500, 400, 5
    p_neuron = _neuron_failure_probability(ell, m)
    p_net = m * p_neuron + stats.chi2.sf(2 * ell, ell)         # union bound, exact pieces
    assert 3 * p_net < 1e-9                                      # the design: this test fails w.p. < 1e-9
    for sub, res, pts in aligned_networks:
        assert res.final_loss < 0.1                              # it did learn
        assert _hypotheses(res.params, sub)


@pytest.mark.claim("thm-universal")
def test_universal_theorem_part1_sN_never_rises_and_falls_at_least_at_the_rate(aligned_networks):
    for sub, res, pts in aligned_networks:
        p = res.params
        z, a = universal_direction(p, sub), alignment_coefficients(p, sub)
        N0 = ol.network_output(p, pts)
        s = torch.sign(N0)
        act = ol.active_set(p, pts)
        opp = act & (torch.sign(p.u)[None, :] == -s[:, None])
        rate = (opp * p.u.abs() * a.abs()).sum(1) / z.norm()
        alphas = torch.linspace(0, 1, 301, dtype=torch.float64)[:, None] * (3 * N0.abs() / rate.clamp_min(1e-3))[None, :]
        H = ol.preactivations(p, pts)[None] - (alphas * s)[..., None] * (a / z.norm())[None, None, :]
        phi = s * (torch.relu(H) @ p.u)                               # (301, n_points)
        assert bool((phi[1:] <= phi[:-1] + 1e-12).all())
        assert bool((phi <= N0.abs() - alphas * rate + 1e-10).all())
        # the same values through the network itself, on a few rays
        direct = s[:5] * ol.network_output(p, pts[:5] - (alphas[-1, :5] * s[:5])[:, None] * z / z.norm())
        assert torch.allclose(direct, phi[-1, :5], atol=1e-10)


@pytest.mark.claim("thm-universal")
def test_universal_theorem_part3_every_point_flips_below_the_bound(aligned_networks):
    d, ell, m = 500, 400, 5
    checked = 0
    for sub, res, pts in aligned_networks:
        p = res.params
        z, a = universal_direction(p, sub), alignment_coefficients(p, sub)
        N0 = ol.network_output(p, pts)
        s = torch.sign(N0)
        opp = ol.active_set(p, pts) & (torch.sign(p.u)[None, :] == -s[:, None])
        k_opp = opp.sum(1)
        keep = k_opp > 0
        bound = torch.tensor([universal_flip_bound(float(N0[j]), m, int(k_opp[j]), d, ell) for j in range(len(pts))])
        part1 = N0.abs() * z.norm() / (opp * p.u.abs() * a.abs()).sum(1)
        flip = flip_norm_along(p, pts[keep], z, max_norm=float(bound[keep].max()) * 1.01).norm
        assert bool(torch.isfinite(flip).all())
        assert bool((flip <= part1[keep] * (1 + 1e-9)).all())
        assert bool((part1[keep] <= bound[keep] * (1 + 1e-12)).all())
        checked += int(keep.sum())
    assert checked >= 300


# --------------------------------------------------------------------- the universal theorem, part 2: the laws


@pytest.mark.claim("thm-universal")
def test_squared_norm_of_z_has_the_scaled_chi2_law():
    """d ||z||^2 ~ chi^2_l exactly (||u|| = 1)."""
    ell, m, K = 30, 20, 400
    sub = ol.coordinate_subspace(ell + 10, ell)
    vals = [float(universal_direction(ol.init_network(ell + 10, m, seed=SEED + 1000 + r), sub).norm() ** 2) * (ell + 10)
            for r in range(K)]
    assert stats.kstest(vals, stats.chi2(ell).cdf).pvalue > LEVEL


@pytest.mark.claim("prop-universal-first-order")
def test_alignment_probability_matches_the_exact_law():
    """Neuron 0 is aligned with probability E Phi(chi_l / sqrt(m-1)), independently across inits."""
    ell, m, K = 10, 10, 4000
    sub = ol.coordinate_subspace(ell + 2, ell)
    hits = 0
    for r in range(K):
        p = ol.init_network(ell + 2, m, seed=SEED + 2000 + r)
        hits += int(torch.sign(alignment_coefficients(p, sub)[0]) == torch.sign(p.u[0]))
    law = _mean_phi_chi(ell, 1 / math.sqrt(m - 1))
    assert stats.binomtest(hits, K, law).pvalue > LEVEL


@pytest.mark.claim("thm-universal")
def test_alignment_event_fails_no_more_often_than_part2_allows():
    ell, m, K = 400, 4, 300
    sub = ol.coordinate_subspace(ell + 5, ell)
    fails = 0
    for r in range(K):
        p = ol.init_network(ell + 5, m, seed=SEED + 9000 + r)
        a = alignment_coefficients(p, sub)
        fails += not bool((torch.sign(a) == torch.sign(p.u)).all() and (a.abs() >= alignment_threshold(ell, ell + 5, m)).all())
    bound = alignment_failure_bound(m, ell)
    assert bound < 0.05
    assert stats.binomtest(fails, K, bound, alternative="greater").pvalue > LEVEL


# ----------------------------------------------------------------- the first-order picture (law 2)


@pytest.mark.claim("prop-universal-first-order")
def test_first_order_direction_law_on_a_trained_network():
    """Prop. (first-order picture), part 2: for a fixed x0 in P and the trained P-part, redraw Pi_perp W
    (training never sees it, by the frozen-component lemma); <g_perp(x0), z> > 0 has probability
    E Phi(chi_l sqrt(k/(m-k)))."""
    d, ell, m, K = 30, 2, 20, 3000
    sub = ol.random_subspace(d, ell, seed=SEED + 300)
    X = ol.sample_on_subspace(sub, 30, seed=SEED + 301)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 302))
    p = ol.train(ol.init_network(d, m, seed=SEED + 303), X, y, TO_MARGIN_1).params
    x0s = ol.sample_on_subspace(sub, 2, seed=SEED + 304)
    g = torch.Generator().manual_seed(SEED + 305)
    WP = ol.Pi_P(sub, p.W)
    counts = torch.zeros(2)
    for _ in range(K):
        W = WP + torch.randn(m, ell, generator=g, dtype=torch.float64) @ sub.perp_basis.T / math.sqrt(d)
        q = p.replace(W=W)
        counts += ((ol.orthogonal_gradient(q, sub, x0s) @ universal_direction(q, sub)) > 0).double()
    k = ol.active_set(p, x0s).sum(1)
    for j in range(2):
        kj = int(k[j])
        assert 0 < kj < m
        law = _mean_phi_chi(ell, math.sqrt(kj / (m - kj)))
        assert stats.binomtest(int(counts[j]), K, law).pvalue > LEVEL


@pytest.mark.claim("prop-universal-first-order")
def test_first_order_flip_norm_is_exact_while_no_neuron_switches():
    """Part 3: along -s z the output is affine until the first neuron switches; if the predicted flip
    comes before that, the measured flip norm equals |N| ||z|| / <g_perp, z>."""
    sub = ol.random_subspace(200, 150, seed=SEED + 400)
    X = ol.sample_on_subspace(sub, 40, seed=SEED + 401)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 402))
    p = ol.train(ol.init_network(200, 100, seed=SEED + 403), X, y, TO_MARGIN_1).params
    pts = ol.sample_on_subspace(sub, 300, seed=SEED + 404)
    z, a = universal_direction(p, sub), alignment_coefficients(p, sub)
    N0 = ol.network_output(p, pts)
    s = torch.sign(N0)
    gz = ol.orthogonal_gradient(p, sub, pts) @ z
    pred = N0.abs() * z.norm() / gz
    H0 = ol.preactivations(p, pts)
    speed = -(s[:, None] * a[None, :]) / z.norm()                   # d h_i / d alpha
    t_switch = torch.where(H0 * speed < 0, -H0 / speed, torch.full_like(H0, math.inf)).min(1).values
    clean = (gz > 0) & (pred < t_switch)
    assert int(clean.sum()) >= 20
    flip = flip_norm_along(p, pts[clean], z, max_norm=float(pred[clean].max()) * 2).norm
    assert torch.allclose(flip, pred[clean], rtol=1e-9)


# ------------------------------------------------------------------ library: the universal theorem's pieces


def test_universal_guarantee_is_the_formula_of_part2_clipped_at_zero():
    for m, ell in [(10, 80), (10, 1600), (4, 400), (1, 200), (100, 50)]:
        raw = 1 - m * (math.exp(-ell / 16) + 2 * math.exp(-ell / (16 * m))) - math.exp(-ell / 16)
        assert theory.universal_guarantee(m, ell) == pytest.approx(max(0.0, raw), abs=1e-15)
    # positive only past l > 16 m ln(2m) (part 3 of the tightness proposition uses this)
    for m in (2, 10, 50):
        assert theory.universal_guarantee(m, math.floor(16 * m * math.log(2 * m))) == 0.0


def test_universal_hypotheses_agree_with_a_direct_computation():
    agree = 0
    for r in range(30):
        d, ell, m = 60, [10, 40, 55][r % 3], [3, 10, 40][r // 10]
        sub = ol.random_subspace(d, ell, seed=SEED + 5000 + r)
        p = ol.init_network(d, m, seed=SEED + 5100 + r)
        h = theory.universal_hypotheses(p, sub)
        a, z = alignment_coefficients(p, sub), universal_direction(p, sub)
        assert h.n_misaligned == int((torch.sign(a) != torch.sign(p.u)).sum())
        assert h.min_a_ratio == pytest.approx(float(a.abs().min()) / alignment_threshold(ell, d, m), rel=1e-10)
        assert h.z_ratio == pytest.approx(float(z.norm() ** 2) / (2 * ell / d), rel=1e-10)
        assert h.hold == _hypotheses(p, sub)
        agree += h.hold
    assert 0 < agree < 30                  # both outcomes occur, so the comparison has teeth


def test_universal_tightness_ratio_is_the_bound_over_the_certified_radius():
    for m, k, ell, d, t in [(10, 3, 80, 100, 2.0), (100, 40, 500, 1000, 0.0), (7, 7, 5, 12, 1.5)]:
        bound = universal_flip_bound(0.7, m, k, d, ell)
        radius = theory.certified_radius(0.7, 1 / math.sqrt(d), m, ell, t)
        assert theory.universal_tightness_ratio(m, k, ell, t) == pytest.approx(bound / radius, rel=1e-12)


def test_opposing_active_count_matches_its_definition_and_is_zero_where_N_vanishes():
    sub = ol.random_subspace(30, 10, seed=SEED + 5200)
    p = ol.init_network(30, 40, seed=SEED + 5201, bias="uniform")
    X = ol.sample_on_subspace(sub, 50, seed=SEED + 5202)
    s = torch.sign(ol.network_output(p, X))
    expected = (ol.active_set(p, X) & (torch.sign(p.u)[None, :] == -s[:, None])).sum(1)
    assert torch.equal(opposing_active_count(p, X), expected)
    dead = p.replace(b=torch.full((40,), -1e6, dtype=torch.float64))
    assert int(opposing_active_count(dead, X).sum()) == 0
    assert opposing_active_count(p, X[0]).shape == ()


def test_universal_flips_collects_the_same_numbers_as_the_separate_functions():
    sub = ol.random_subspace(80, 50, seed=SEED + 5300)
    X = ol.sample_on_subspace(sub, 30, seed=SEED + 5301)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 5302))
    p = ol.train(ol.init_network(80, 12, seed=SEED + 5303), X, y, TO_MARGIN_1).params
    pts = torch.cat([X, ol.sample_on_subspace(sub, 20, seed=SEED + 5304)])
    u = universal_flips(p, sub, pts, max_norm=50.0)
    z = universal_direction(p, sub)
    assert torch.allclose(u.z, z, atol=1e-15) and torch.allclose(u.a, alignment_coefficients(p, sub), atol=1e-15)
    assert torch.equal(u.flip, flip_norm_along(p, pts, z, max_norm=50.0).norm)
    N0 = ol.network_output(p, pts)
    assert torch.equal(u.k_opp, opposing_active_count(p, pts))
    for j in range(len(pts)):
        assert float(u.bound[j]) == pytest.approx(universal_flip_bound(float(N0[j]), 12, int(u.k_opp[j]), 80, 50),
                                                  rel=1e-12)
    g = ol.orthogonal_gradient(p, sub, pts)
    assert torch.allclose(u.first_order, N0.abs() * z.norm() / (g @ z), rtol=1e-12)
    assert u.hypotheses == theory.universal_hypotheses(p, sub)


def test_max_descent_slope_bounds_every_secant_and_is_attained_on_a_piece():
    """The exact largest slope of s N along -s v is at least every secant slope on a grid (a secant is an
    average of slopes), and equals the derivative at some interior point of a piece (found by a fine grid
    of one-sided derivatives computed by autograd, not by the breakpoint walk)."""
    sub = ol.random_subspace(60, 40, seed=SEED + 5400)
    X = ol.sample_on_subspace(sub, 25, seed=SEED + 5401)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 5402))
    p = ol.train(ol.init_network(60, 30, seed=SEED + 5403), X, y, TO_MARGIN_1).params
    v = torch.randn(60, generator=torch.Generator().manual_seed(SEED + 5404), dtype=torch.float64)
    s = torch.sign(ol.network_output(p, X))
    limit = torch.full((25,), 15.0, dtype=torch.float64)
    slope = max_descent_slope(p, X, v, limit=limit)
    alphas = torch.linspace(0, 15, 30001, dtype=torch.float64)
    pts = X[None] - (alphas[:, None] * s[None, :])[..., None] * (v / v.norm())[None, None, :]
    pts.requires_grad_(True)
    phi = s * ol.network_output(p, pts.reshape(-1, 60)).reshape(len(alphas), 25)
    secant = ((phi[1:] - phi[:-1]) / (alphas[1:] - alphas[:-1])[:, None]).max(0).values
    assert bool((secant <= slope + 1e-9).all())
    (grad,) = torch.autograd.grad(phi.sum(), pts)
    deriv = -(grad * (s[None, :, None] * v / v.norm())).sum(-1)          # d phi / d alpha
    assert torch.allclose(deriv[:-1].max(0).values, slope, atol=1e-9)
    with pytest.raises(ValueError, match="limit"):
        max_descent_slope(p, X, v, limit=0.0)


def test_initial_alignment_follows_the_exact_alignment_law():
    """Mean aligned fraction over K = 20000 draws against E Phi(chi_l / sqrt(m-1)): each draw's fraction is
    in [0, 1] and the draws are independent, so by Hoeffding P(|mean - law| > 0.03) <= 2 exp(-2 K 0.03^2)
    < 1e-15."""
    ell, m, K = 12, 10, 20000
    frac = initial_alignment(m, ell, d=20, draws=K, seed=SEED + 5500).aligned_fraction
    law = _mean_phi_chi(ell, 1 / math.sqrt(m - 1))
    assert abs(float(frac.mean()) - law) < 0.03
    a = initial_alignment(m, ell, d=20, draws=7, seed=1)
    b = initial_alignment(m, ell, d=20, draws=7, seed=1)
    assert torch.equal(a.aligned_fraction, b.aligned_fraction) and torch.equal(a.hold, b.hold)


def test_initial_alignment_hypotheses_agree_with_universal_hypotheses_in_law():
    """The direct draw and fresh init_network networks give the same frequency of all hypotheses: two
    independent binomial samples of size 3000 at l = 100, m = 10; a two-sided test of equal proportions
    (Fisher's exact test) at level 1e-8."""
    ell, m, K = 100, 10, 3000
    direct = int(initial_alignment(m, ell, d=ell + 5, draws=K, seed=SEED + 5600).hold.sum())
    sub = ol.coordinate_subspace(ell + 5, ell)
    nets = sum(theory.universal_hypotheses(ol.init_network(ell + 5, m, seed=SEED + 6000 + r), sub).hold
               for r in range(K))
    assert 0 < direct < K
    assert stats.fisher_exact([[direct, K - direct], [nets, K - nets]]).pvalue > LEVEL


# --------------------------------------------------------------------------------- prop-tightness


@pytest.mark.claim("prop-tightness")
def test_tightness_sandwich_holds_at_every_point_of_aligned_networks(aligned_networks):
    """On the aligned networks (hypotheses checked by the fixture's test) and the operator-norm event with
    t = 6 (failure probability e^-18 per network), every point with k_opp > 0 has
    r_t <= Lipschitz radius <= exact minimum in P_perp <= flip along z <= bound, and bound / r_t is the
    closed form. The exact minimum comes from the MIP for 8 points per network."""
    d, ell, m, t = 500, 400, 5, 6.0
    for sub, res, pts in aligned_networks:
        p = res.params
        u = universal_flips(p, sub, pts)
        G = ol.subspaces.perp_coordinates(sub, p.W)
        g_op = float(torch.linalg.matrix_norm(G, ord=2))
        assert g_op <= (math.sqrt(m) + math.sqrt(ell) + t) / math.sqrt(d)
        r_t = u.N0.abs() * math.sqrt(d) / (math.sqrt(m) + math.sqrt(ell) + t)
        lip = u.N0.abs() / g_op
        keep = u.k_opp > 0
        assert bool((r_t <= lip).all())
        assert bool((u.flip[keep] <= u.bound[keep] * (1 + 1e-12)).all())
        ratio = torch.tensor([theory.universal_tightness_ratio(m, int(k), ell, t) for k in u.k_opp[keep]],
                             dtype=torch.float64)
        assert torch.allclose(u.bound[keep] / r_t[keep], ratio, rtol=1e-12)
        for j in torch.nonzero(keep).flatten()[:8].tolist():
            start = -(u.s[j] * u.flip[j] * (1 + 1e-9)) * u.z / u.z.norm()
            exact = exact_min_distance_milp(p, pts[j], start=start, basis=sub.perp_basis)
            assert (exact.distance - exact.lower) / exact.distance < 1e-6
            assert float(lip[j]) <= exact.distance * (1 + 1e-6)
            assert exact.distance <= float(u.flip[j]) * (1 + 1e-6)


@pytest.mark.claim("prop-tightness")
def test_certified_radius_admits_no_flip_among_sampled_perturbations_in_P_perp():
    """Part 1 for any width (here m > l): no sampled perturbation in P_perp of norm below |N| / ||G||_op flips
    the sign — 2000 random directions and the gradient direction per point, scaled to 0.999 of the radius."""
    sub = ol.random_subspace(60, 20, seed=SEED + 5700)
    X = ol.sample_on_subspace(sub, 30, seed=SEED + 5701)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 5702))
    p = ol.train(ol.init_network(60, 80, seed=SEED + 5703), X, y, TO_MARGIN_1).params
    N0 = ol.network_output(p, X)
    g_op = float(torch.linalg.matrix_norm(ol.subspaces.perp_coordinates(sub, p.W), ord=2))
    radius = 0.999 * N0.abs() / g_op
    gen = torch.Generator().manual_seed(SEED + 5704)
    V = torch.randn(2000, 20, generator=gen, dtype=torch.float64) @ sub.perp_basis.T
    V = torch.cat([V / V.norm(dim=1, keepdim=True)], 0)
    for j in range(30):
        g = -torch.sign(N0[j]) * ol.orthogonal_gradient(p, sub, X[j])
        dirs = torch.cat([V, (g / g.norm())[None]])
        out = ol.network_output(p, X[j] + radius[j] * dirs)
        assert bool((torch.sign(out) == torch.sign(N0[j])).all())


# --------------------------------------------------------------------------------- prop-robust


@pytest.mark.claim("prop-agrees-on-p")
@pytest.mark.parametrize("opt, kw", [("gd", dict(lr=0.25)), ("sgd", dict(lr=0.05, batch_size=5)),
                                     ("momentum", dict(lr=0.05))], ids=["gd", "sgd", "momentum"])
def test_training_from_the_projected_initialisation_gives_the_projected_network(opt, kw):
    """Part 4: the same data, steps and batches from W(0) Pi_P give W(T) Pi_P (second layer trained too)."""
    sub = ol.random_subspace(40, 25, seed=SEED + 5800)
    X = ol.sample_on_subspace(sub, 20, seed=SEED + 5801)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 5802))
    p0 = ol.init_network(40, 30, seed=SEED + 5803, bias="uniform")
    cfg = ol.TrainConfig(optimizer=opt, target_margin=1.0, max_steps=2000, trained="Wbu", **kw)
    a = ol.train(p0, X, y, cfg)
    b = ol.train(robust_projection(p0, sub), X, y, cfg)
    assert int(a.steps) == int(b.steps) and bool(a.reached)
    assert float((b.params.W - robust_projection(a.params, sub).W).abs().max()) < 1e-12
    for f in ("b", "u", "c"):
        assert float((getattr(b.params, f) - getattr(a.params, f)).abs().max()) < 1e-12
    # parts 1 and 2: equal on P, constant along P_perp
    rob = robust_projection(a.params, sub)
    F = ol.sample_on_subspace(sub, 40, seed=SEED + 5804)
    assert torch.allclose(ol.network_output(rob, F), ol.network_output(a.params, F), atol=1e-12)
    Z = torch.randn(40, sub.ell, generator=torch.Generator().manual_seed(SEED + 5805), dtype=torch.float64)
    assert torch.allclose(ol.network_output(rob, F + 30 * Z @ sub.perp_basis.T), ol.network_output(rob, F),
                          atol=1e-10)


@pytest.mark.claim("prop-agrees-on-p")
def test_unrestricted_minimum_of_the_robust_network_is_the_minimum_of_N_within_P():
    """Part 3, with two different exact programs: rho(N_P) (unrestricted, in R^d) and rho_P(N) (restricted
    to an orthonormal basis of P) agree, and neither is below rho(N)."""
    sub = ol.random_subspace(30, 20, seed=SEED + 5900)
    X = ol.sample_on_subspace(sub, 30, seed=SEED + 5901)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 5902))
    p = ol.train(ol.init_network(30, 8, seed=SEED + 5903), X, y, TO_MARGIN_1).params
    rob = robust_projection(p, sub)
    pts = X[:6]
    att = ddn_min_distance(rob, pts, steps=200)
    att_full = ddn_min_distance(p, pts, steps=200)
    assert bool(att.success.all() and att_full.success.all())
    for j in range(6):
        r_rob = exact_min_distance_milp(rob, pts[j], start=att.delta[j])
        r_P = exact_min_distance_milp(p, pts[j], start=ol.Pi_P(sub, att.delta[j]), basis=sub.basis)
        r_full = exact_min_distance_milp(p, pts[j], start=att_full.delta[j])
        assert r_rob.distance == pytest.approx(r_P.distance, rel=1e-6)
        assert r_full.distance <= r_P.distance * (1 + 1e-6)


# --------------------------------------------------------------------------------- observations


@pytest.mark.claim("obs-every-point-flips")
def test_outside_the_proven_regime_every_point_flips_monotonically():
    """Observation (empirical): d = 400, l = 200, widths 50 and 400 (l/m = 4 and 0.5), 4 networks each on
    fresh seeds, 100 training and 100 fresh points: s N never rises along -s z before the flip, and every
    point flips below the bound. The probability of failing is not proven; the chapter's 12000 pairs at
    d = 1000 and these 3200 show no exception, and the first-order law makes a wrong start at a point
    have probability below 1e-20 at l = 200 (Student t tail at sqrt(200 k/(m-k)) for k/m >= 1/4)."""
    d, ell, n = 400, 200, 100
    sub = ol.random_subspace(d, ell, seed=SEED + 7000)
    for m in (50, 400):
        for r in range(4):
            X = ol.sample_on_subspace(sub, n, seed=SEED + 7010 + r)
            y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 7020 + r))
            res = ol.train(ol.init_network(d, m, seed=SEED + 7030 + r), X, y, TO_MARGIN_1, sub=sub)
            assert bool(res.reached)
            pts = torch.cat([X, ol.sample_on_subspace(sub, 100, seed=SEED + 7040 + r)])
            u = universal_flips(res.params, sub, pts)
            assert not u.hypotheses.aligned or m == 50
            assert bool(torch.isfinite(u.flip).all())
            keep = u.k_opp > 0
            assert bool((u.flip[keep] <= u.bound[keep]).all())
            assert bool((max_descent_slope(res.params, pts, u.z, limit=u.flip) <= 1e-12).all())


@pytest.mark.claim("obs-codimension")
def test_large_codimension_makes_the_direction_start_the_right_way_everywhere():
    """Observation, its provable half: at l = 128 (d = 200, m = 100), 5 networks and 150 fresh points each,
    the universal direction starts the right way at every point. By part 2 of the first-order proposition
    each point fails with probability 1 - E Phi(chi_l sqrt(k/(m-k))) given its k; the union bound over all
    points, computed here, must be below 1e-7 before the check."""
    d, ell, m = 200, 128, 100
    sub = ol.random_subspace(d, ell, seed=SEED + 7100)
    X = ol.sample_on_subspace(sub, 100, seed=SEED + 7101)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 7102))
    pts = ol.sample_on_subspace(sub, 150, seed=SEED + 7103)
    res = ol.train([ol.init_network(d, m, seed=SEED + 7110 + e) for e in range(5)], X, y, TO_MARGIN_1, sub=sub)
    fail_bound, right = 0.0, True
    for e in range(5):
        u = universal_flips(res.params.member(e), sub, pts)
        k = u.k.double().numpy()
        assert ((k > 0) & (k < m)).all()
        fail_bound += float((1 - theory.mean_phi_chi(ell, (k / (m - k)) ** 0.5)).sum())
        right &= bool(((u.g @ u.z) > 0).all())
    assert fail_bound < 1e-7
    assert right


@pytest.mark.claim("obs-codimension")
def test_flip_norm_tracks_the_first_order_size_from_moderate_codimension():
    """Observation (empirical): at l = 16 and l = 64 (d = 200, m = 100, 10 fresh networks each, 150 fresh
    points), the median flip norm along z is within tau = 0.1 of the median first-order size
    |N| (m/k) sqrt(d/l). The chapter measures gaps of at most 0.05 for l >= 8 over 80 networks; the
    tolerance is twice that, so a failure would mean the observation is wrong at these sizes."""
    d, m = 200, 100
    for ell in (16, 64):
        sub = ol.random_subspace(d, ell, seed=SEED + 7200 + ell)
        X = ol.sample_on_subspace(sub, 100, seed=SEED + 7201)
        y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 7202))
        pts = ol.sample_on_subspace(sub, 150, seed=SEED + 7203)
        res = ol.train([ol.init_network(d, m, seed=SEED + 7210 + e) for e in range(10)], X, y, TO_MARGIN_1, sub=sub)
        flips, typical = [], []
        for e in range(10):
            u = universal_flips(res.params.member(e), sub, pts, max_norm=4 * math.sqrt(d))
            flips.append(u.flip)
            typical.append(u.N0.abs() * m / u.k * math.sqrt(d / ell))
        ratio = float(torch.cat(flips).median() / torch.cat(typical).median())
        assert abs(ratio - 1) < 0.1, (ell, ratio)


@pytest.mark.claim("obs-tight-proportional")
def test_with_proportional_width_and_codimension_the_flip_norm_stays_order_N():
    """Observation (empirical): l = d/2, m = d/4 at d = 120 and d = 480, 6 fresh networks each: the median
    ratio of the flip norm along z to the certified radius r_t (t = 2) is between 1 and 8 for every
    network (the chapter measures medians between about 2 and 5 over 40 networks), and every point flips."""
    for d in (120, 480):
        ell, m = d // 2, d // 4
        sub = ol.random_subspace(d, ell, seed=SEED + 7300 + d)
        for r in range(6):
            X = ol.sample_on_subspace(sub, 50, seed=SEED + 7310 + r)
            y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 7320 + r))
            res = ol.train(ol.init_network(d, m, seed=SEED + 7330 + r), X, y, TO_MARGIN_1, sub=sub)
            assert bool(res.reached)
            u = universal_flips(res.params, sub, ol.sample_on_subspace(sub, 100, seed=SEED + 7340 + r))
            assert bool(torch.isfinite(u.flip).all())
            r_t = u.N0.abs() * math.sqrt(d) / (math.sqrt(m) + math.sqrt(ell) + 2.0)
            assert 1.0 < float((u.flip / r_t).median()) < 8.0
