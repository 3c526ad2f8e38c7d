"""Tests for ortho_lib.attacks: CROWN / alpha-CROWN certified radii, the exact MIP minimum, Foolbox's DDN.

Everything here is deterministic given correct implementations: a certified bound is a *bound* (checked
against sampled perturbations and against the exact minimum), the MIP value is checked against an
independent exact brute force in d = 2, and the orderings certified <= exact <= attack <= flip norm along a
fixed direction hold for every point by definition of each quantity. Seeds are fresh (2 * 10**6 and up).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ortho_lib as ol
from ortho_lib.attacks import (
    AttackResult,
    MilpResult,
    TwoClassLogits,
    crown_certified_radius,
    crown_lower_bound,
    ddn_min_distance,
    exact_min_distance_milp,
    preactivation_bounds,
    restrict_to_subspace,
)
from ortho_lib.perturbations import flip_norm_along, universal_direction

SEED = 2 * 10**6
REL = 1e-6          # SCIP solves to a relative gap of about 1e-7 in the squared norm


def _random_net(d: int, m: int, seed: int, bias: float = 0.5) -> ol.TwoLayerParams:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    b = bias * torch.randn(m, generator=g, dtype=torch.float64)
    u = torch.randn(m, generator=g, dtype=torch.float64) / math.sqrt(m)
    return ol.TwoLayerParams(W, b, u, 0.0)


def _points(d: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


@pytest.fixture(scope="module")
def trained():
    """A small trained network in the book's setting, with a few training and fresh points."""
    d, ell, m = 24, 12, 12
    sub = ol.random_subspace(d, ell, seed=SEED)
    X = ol.sample_on_subspace(sub, 30, seed=SEED + 1)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=SEED + 2))
    p = ol.train(ol.init_network(d, m, seed=SEED + 3), X, y, ol.TrainConfig(lr=0.5, target_margin=1.0, max_steps=5000)).params
    pts = torch.cat([X[:4], ol.sample_on_subspace(sub, 4, seed=SEED + 4)])
    return sub, p, pts


# ------------------------------------------------------------------------------------------ helpers


def _brute_force_min_distance_2d(p: ol.TwoLayerParams, x0: torch.Tensor, n_angles: int = 20000) -> float:
    """Exact first sign change along each of many rays (N is piecewise linear on a ray), minimised over
    the angle, then refined on a finer grid around the best angle. Independent of the MIP."""
    s = float(torch.sign(ol.network_output(p, x0)))

    def first_flip(theta: np.ndarray) -> np.ndarray:
        e = np.stack([np.cos(theta), np.sin(theta)], 1)                   # (K, 2)
        W, b, u = p.W.numpy(), p.b.numpy(), p.u.numpy()
        h0 = W @ x0.numpy() + b                                            # (m,)
        rate = e @ W.T                                                     # (K, m)
        with np.errstate(divide="ignore", invalid="ignore"):
            bp = -h0[None, :] / rate
        bp = np.where((bp > 0) & np.isfinite(bp), bp, np.inf)
        ts = np.concatenate([np.zeros((len(theta), 1)), np.sort(bp, 1), np.full((len(theta), 1), 1e6)], 1)
        ts = np.where(np.isfinite(ts), ts, 1e6)
        vals = s * (np.maximum(h0[None, None, :] + ts[:, :, None] * rate[:, None, :], 0) @ u + float(p.c))
        out = np.full(len(theta), np.inf)
        for j in range(ts.shape[1] - 1):                                    # first segment with a crossing
            v0, v1 = vals[:, j], vals[:, j + 1]
            hit = np.isinf(out) & (v0 > 0) & (v1 <= 0)
            t_cross = ts[:, j] + (ts[:, j + 1] - ts[:, j]) * v0 / np.where(v0 - v1 == 0, 1, v0 - v1)
            out = np.where(hit, t_cross, out)
        return out

    th = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    r = first_flip(th)
    best = th[np.argmin(r)]
    step = 2 * np.pi / n_angles
    fine = best + np.linspace(-2 * step, 2 * step, n_angles)
    return float(min(r.min(), first_flip(fine).min()))


# ------------------------------------------------------------------------------- restrict_to_subspace


def test_restricted_network_equals_network_on_the_affine_slice():
    d, m = 10, 7
    p = _random_net(d, m, SEED)
    sub = ol.random_subspace(d, 4, seed=SEED + 1)
    x0 = _points(d, 1, SEED + 2)[0]
    g = restrict_to_subspace(p, x0, sub.perp_basis)
    V = _points(4, 50, SEED + 3)
    assert g.W.shape == (m, 4)
    expected = ol.network_output(p, x0[None, :] + V @ sub.perp_basis.T)
    assert torch.allclose(ol.network_output(g, V), expected, atol=1e-13)


def test_restrict_to_subspace_rejects_a_non_orthonormal_basis():
    p = _random_net(6, 3, SEED)
    with pytest.raises(ValueError, match="basis"):
        restrict_to_subspace(p, torch.zeros(6, dtype=torch.float64), 2 * torch.eye(6, dtype=torch.float64)[:, :2])


def test_restrict_to_subspace_rejects_params_of_the_wrong_type():
    with pytest.raises(TypeError, match="params"):
        restrict_to_subspace("net", torch.zeros(3), torch.eye(3)[:, :1])


# ------------------------------------------------------------------------------ preactivation_bounds


def test_preactivation_bounds_contain_sampled_values_and_are_attained():
    d, m, r = 8, 5, 0.7
    p = _random_net(d, m, SEED + 10)
    x0 = _points(d, 1, SEED + 11)[0]
    lo, hi = preactivation_bounds(p, x0, r)
    D = _points(d, 2000, SEED + 12)
    D = r * D / D.norm(dim=1, keepdim=True) * torch.rand(2000, 1, generator=torch.Generator().manual_seed(SEED + 13),
                                                          dtype=torch.float64)
    H = ol.preactivations(p, x0[None, :] + D)
    assert bool((H >= lo - 1e-12).all() and (H <= hi + 1e-12).all())
    i = 2
    top = ol.preactivations(p, x0 + r * p.W[i] / p.W[i].norm())[i]
    assert float(top) == pytest.approx(float(hi[i]), abs=1e-12)


def test_preactivation_bounds_with_a_basis_use_the_projected_rows():
    d, m = 8, 5
    p = _random_net(d, m, SEED + 14)
    sub = ol.random_subspace(d, 3, seed=SEED + 15)
    x0 = _points(d, 2, SEED + 16)
    lo, hi = preactivation_bounds(p, x0, torch.tensor([0.5, 1.0], dtype=torch.float64), basis=sub.perp_basis)
    spread = (p.W @ sub.perp_basis).norm(dim=1)
    assert torch.allclose(hi - lo, 2 * torch.tensor([0.5, 1.0], dtype=torch.float64)[:, None] * spread, atol=1e-13)


def test_preactivation_bounds_reject_a_negative_radius():
    p = _random_net(4, 3, SEED)
    with pytest.raises(ValueError, match="radius"):
        preactivation_bounds(p, torch.zeros(4, dtype=torch.float64), -1.0)


def test_preactivation_bounds_reject_points_of_the_wrong_dimension():
    p = _random_net(4, 3, SEED)
    with pytest.raises(ValueError, match="X"):
        preactivation_bounds(p, torch.zeros(5, dtype=torch.float64), 1.0)


# ------------------------------------------------------------------------------------ CROWN bounds


@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
@pytest.mark.parametrize("restricted", [False, True])
def test_crown_lower_bound_is_below_every_sampled_value_in_the_ball(method, restricted):
    d, m, n = 12, 16, 6
    p = _random_net(d, m, SEED + 20)
    X = _points(d, n, SEED + 21)
    sub = ol.random_subspace(d, 5, seed=SEED + 22)
    basis = sub.perp_basis if restricted else None
    r = torch.linspace(0.2, 2.0, n, dtype=torch.float64)
    lb = crown_lower_bound(p, X, r, basis=basis, method=method)
    s = torch.sign(ol.network_output(p, X))
    k = 5 if restricted else d
    g = torch.Generator().manual_seed(SEED + 23)
    V = torch.randn(n, 3000, k, generator=g, dtype=torch.float64)
    V = V / V.norm(dim=2, keepdim=True) * torch.rand(n, 3000, 1, generator=g, dtype=torch.float64) ** (1 / k)
    D = V * r[:, None, None]
    if restricted:
        D = D @ basis.T
    vals = s[:, None] * ol.network_output(p, (X[:, None, :] + D).reshape(-1, d)).reshape(n, 3000)
    assert bool((vals >= lb[:, None] - 1e-12).all())


def test_alpha_crown_is_never_looser_than_crown():
    d, m = 12, 16
    p = _random_net(d, m, SEED + 24)
    X = _points(d, 20, SEED + 25)
    for r in [0.3, 1.0, 3.0]:
        assert bool((crown_lower_bound(p, X, r, method="alpha-crown") >= crown_lower_bound(p, X, r) - 1e-15).all())


def test_crown_lower_bound_at_radius_zero_is_the_value():
    p = _random_net(6, 5, SEED + 26)
    X = _points(6, 4, SEED + 27)
    lb = crown_lower_bound(p, X, 0.0)
    assert torch.allclose(lb, ol.network_output(p, X).abs(), atol=1e-13)


def test_crown_rejects_an_unknown_method():
    p = _random_net(4, 3, SEED)
    with pytest.raises(ValueError, match="method"):
        crown_lower_bound(p, _points(4, 2, SEED), 1.0, method="ibp")


def test_crown_rejects_a_point_where_the_network_is_zero():
    p = ol.TwoLayerParams(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                          torch.ones(3, dtype=torch.float64), 0.0)
    with pytest.raises(ValueError, match="N\\(x\\) = 0"):
        crown_certified_radius(p, -torch.ones(1, 3, dtype=torch.float64))


def test_certified_radius_admits_no_sampled_flip_inside_it():
    d, m, n = 10, 12, 5
    p = _random_net(d, m, SEED + 30)
    X = _points(d, n, SEED + 31)
    rad = crown_certified_radius(p, X, method="alpha-crown")
    assert bool((rad > 0).all())
    s = torch.sign(ol.network_output(p, X))
    g = torch.Generator().manual_seed(SEED + 32)
    V = torch.randn(n, 4000, d, generator=g, dtype=torch.float64)
    V = V / V.norm(dim=2, keepdim=True) * rad[:, None, None] * (1 - 1e-9)
    vals = s[:, None] * ol.network_output(p, (X[:, None, :] + V).reshape(-1, d)).reshape(n, 4000)
    assert bool((vals > 0).all())


def test_certified_radius_of_one_point_is_a_scalar_and_capped():
    # a network that is positive everywhere: certified up to the cap
    p = ol.TwoLayerParams(torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, dtype=torch.float64),
                          torch.ones(2, dtype=torch.float64), 0.0)
    r = crown_certified_radius(p, torch.zeros(3, dtype=torch.float64), max_radius=5.0)
    assert r.shape == () and float(r) == 5.0


# --------------------------------------------------------------------------------------- exact MIP


def _solved(res: MilpResult) -> bool:
    """Solved to optimality, as SCIP reports it on any machine: status "optimal", or "gaplimit" once the
    relative gap is closed to 1e-7 (which of the two depends on the floating-point path), and a proven
    lower bound within 1e-6 of the distance either way."""
    return res.status in ("optimal", "gaplimit") and (res.distance - res.lower) <= 1e-6 * res.distance


def test_mip_is_repeatable_and_reports_a_closed_gap(trained):
    """SCIP's random seeds are fixed: two solves of the same program give the same answer, bit for bit."""
    sub, p, pts = trained
    a = exact_min_distance_milp(p, pts[4], radius=30.0, basis=sub.perp_basis)
    b = exact_min_distance_milp(p, pts[4], radius=30.0, basis=sub.perp_basis)
    assert _solved(a) and a.distance == b.distance and a.lower == b.lower and torch.equal(a.delta, b.delta)


@pytest.mark.parametrize("k", range(4))
def test_mip_matches_an_exact_brute_force_in_two_dimensions(k):
    p = _random_net(2, 8, SEED + 40 + k, bias=0.8)
    x0 = _points(2, 1, SEED + 50 + k)[0]
    brute = _brute_force_min_distance_2d(p, x0)
    assert math.isfinite(brute)
    res = exact_min_distance_milp(p, x0, radius=2 * brute + 0.1)
    assert _solved(res)
    assert res.distance == pytest.approx(brute, rel=1e-5)


def test_mip_solution_is_on_the_boundary_and_its_norm_is_the_distance(trained):
    sub, p, pts = trained
    res = exact_min_distance_milp(p, pts[0], radius=20.0)
    assert isinstance(res, MilpResult) and _solved(res)
    assert float(res.delta.norm()) == pytest.approx(res.distance, rel=1e-12)
    s = float(torch.sign(ol.network_output(p, pts[0])))
    assert s * res.value <= 1e-6 and s * float(ol.network_output(p, pts[0] + res.delta)) <= 1e-6
    assert res.lower <= res.distance and res.lower >= res.distance * (1 - REL)
    assert 0 <= res.n_binary <= res.n_unstable <= p.m


def test_mip_restricted_solution_lies_in_the_subspace(trained):
    sub, p, pts = trained
    res = exact_min_distance_milp(p, pts[1], radius=50.0, basis=sub.perp_basis)
    assert _solved(res)
    assert float(ol.Pi_P(sub, res.delta).norm()) < 1e-10 * max(1.0, res.distance)


def test_mip_reports_infeasible_when_the_ball_holds_no_flip(trained):
    sub, p, pts = trained
    exact = exact_min_distance_milp(p, pts[2], radius=20.0).distance
    res = exact_min_distance_milp(p, pts[2], radius=0.5 * exact)
    assert res.status == "infeasible" and math.isinf(res.distance)


def test_mip_warm_start_gives_the_same_optimum(trained):
    sub, p, pts = trained
    att = ddn_min_distance(p, pts[3:4])
    cold = exact_min_distance_milp(p, pts[3], radius=float(att.distance[0]) * 1.5)
    warm = exact_min_distance_milp(p, pts[3], start=att.delta[0])
    assert warm.distance == pytest.approx(cold.distance, rel=REL)


def test_mip_needs_a_radius_or_a_start(trained):
    sub, p, pts = trained
    with pytest.raises(ValueError, match="radius or start"):
        exact_min_distance_milp(p, pts[0])


def test_mip_rejects_a_start_that_does_not_flip(trained):
    sub, p, pts = trained
    with pytest.raises(ValueError, match="start must flip"):
        exact_min_distance_milp(p, pts[0], start=torch.zeros(p.d, dtype=torch.float64))


def test_mip_rejects_a_start_outside_the_basis_span(trained):
    sub, p, pts = trained
    with pytest.raises(ValueError, match="span of basis"):
        exact_min_distance_milp(p, pts[0], start=sub.basis[:, 0] * 100, basis=sub.perp_basis)


# -------------------------------------------------------------------------------------------- DDN


def test_two_class_logits_encode_the_sign_and_the_output():
    p = _random_net(5, 4, SEED + 60)
    X = _points(5, 30, SEED + 61)
    L = TwoClassLogits(p)(X)
    f = ol.network_output(p, X)
    assert torch.allclose(L[:, 1] - L[:, 0], f, atol=1e-14)
    assert torch.equal(L.argmax(1), (f > 0).long())


def test_two_class_logits_need_base_and_basis_together():
    p = _random_net(5, 4, SEED)
    with pytest.raises(ValueError, match="together"):
        TwoClassLogits(p, base=torch.zeros(2, 5, dtype=torch.float64))


def test_ddn_results_are_adversarial_and_restricted_ones_stay_in_the_subspace(trained):
    sub, p, pts = trained
    s = torch.sign(ol.network_output(p, pts))
    for basis in [None, sub.perp_basis]:
        res = ddn_min_distance(p, pts, basis=basis, steps=200)
        assert isinstance(res, AttackResult) and bool(res.success.all())
        assert bool((s * ol.network_output(p, pts + res.delta) <= 0).all())
        assert torch.allclose(res.distance, res.delta.norm(dim=1), rtol=1e-12)
        if basis is not None:
            assert float(ol.Pi_P(sub, res.delta).norm(dim=1).max()) < 1e-12


def test_ddn_is_reproducible_and_leaves_the_global_random_state_alone(trained):
    sub, p, pts = trained
    torch.manual_seed(SEED + 70)
    before = torch.rand(3)
    torch.manual_seed(SEED + 70)
    a = ddn_min_distance(p, pts, steps=50)
    after = torch.rand(3)
    b = ddn_min_distance(p, pts, steps=50)
    assert torch.equal(before, after)
    assert torch.equal(a.distance, b.distance)


def test_ddn_restarts_never_do_worse_than_a_single_run(trained):
    sub, p, pts = trained
    one = ddn_min_distance(p, pts, steps=100, init_epsilon=1.0)
    several = ddn_min_distance(p, pts, steps=100, init_epsilon=(1.0, 0.1, 10.0))
    assert bool((several.distance <= one.distance).all())


def test_ddn_rejects_bad_parameters(trained):
    sub, p, pts = trained
    with pytest.raises(ValueError, match="gamma"):
        ddn_min_distance(p, pts, gamma=1.5)
    with pytest.raises(ValueError, match="init_epsilon"):
        ddn_min_distance(p, pts, init_epsilon=())
    with pytest.raises(ValueError, match="steps"):
        ddn_min_distance(p, pts, steps=0)


# ------------------------------------------------------------------ the sandwich, point by point


def test_certified_exact_attack_and_universal_are_ordered_at_every_point(trained):
    """certified <= exact <= attack (both restricted to P_perp and not), exact <= exact in P_perp <=
    flip norm along the universal direction. Each inequality holds by definition for correct code."""
    sub, p, pts = trained
    z = universal_direction(p, sub)
    univ = flip_norm_along(p, pts, z, max_norm=200.0).norm
    exact = {}
    for tag, basis in [("perp", sub.perp_basis), ("full", None)]:
        cert = crown_certified_radius(p, pts, basis=basis, method="alpha-crown")
        att = ddn_min_distance(p, pts, basis=basis, steps=300)
        ex = torch.tensor([exact_min_distance_milp(p, pts[j], start=att.delta[j], basis=basis).distance
                           for j in range(len(pts))], dtype=torch.float64)
        assert bool((cert <= ex * (1 + REL)).all())
        assert bool((ex <= att.distance * (1 + REL)).all())
        exact[tag] = ex
    assert bool((exact["full"] <= exact["perp"] * (1 + REL)).all())
    finite = torch.isfinite(univ)
    assert bool((exact["perp"][finite] <= univ[finite] * (1 + REL)).all())
