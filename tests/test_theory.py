"""Closed-form predictions (ortho_lib.theory): values, limiting cases and bad input.

Everything here is deterministic.
"""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from ortho_lib import theory
from ortho_lib.theory import (
    LOGISTIC_BALANCE_MAX, cantelli_bound, cover_separable_probability, key_quantity_moments, lambert_w0,
    paper_variance, projected_separation_probability, stationary_margin_bound, stationary_norm_bound,
)


def test_gperp_bounds_reduce_to_the_paper_form_for_standard_init():
    k, m, ell, d = 30, 100, 40, 80
    lo, hi = theory.gperp_bounds(1 / math.sqrt(d), k / m, ell)
    assert math.isclose(lo, math.sqrt(k * ell / (2 * m * d)))
    assert math.isclose(hi, math.sqrt(2 * k * ell / (m * d)))
    assert math.isclose(theory.gperp_prediction(k, m, ell, d) ** 2, theory.gperp_mean_square(1 / math.sqrt(d), k / m, ell))


def test_tail_probability_is_exp_minus_ell_over_16():
    assert math.isclose(theory.tail_probability(32), math.exp(-2))


def test_universal_flip_bound_formula_and_infinite_without_opposite_neurons():
    assert math.isclose(theory.universal_flip_bound(-0.5, 100, 25, 1000, 250), 4 * math.sqrt(2) * 0.5 * 4 * 2)
    assert theory.universal_flip_bound(1.0, 10, 0, 10, 5) == math.inf


def test_certified_radius_is_N_over_lipschitz_bound():
    L = theory.perp_lipschitz_bound(0.1, 100, 25, t=1.0)
    assert math.isclose(L, 0.1 * 16)
    assert math.isclose(theory.certified_radius(-0.8, 0.1, 100, 25, t=1.0), 0.5)


def test_weight_decay_factor_and_alignment_helpers():
    assert math.isclose(theory.weight_decay_factor(0.5, 0.1, 3), 0.95**3)
    assert theory.weight_decay_factor(0.5, 0.0, 100) == 1.0
    assert math.isclose(theory.alignment_threshold(400, 1000, 16), 400 / (4 * 1000 * 4))
    assert theory.alignment_failure_bound(10, 10**6) < 1e-10


def _quadrature_mean_phi_chi(ell: int, c: float) -> float:
    """E Phi(c X), X ~ chi_ell, by adaptive quadrature of Phi(c r) times the chi_ell density (the mass
    beyond sqrt(ell) + 15 is below e^-100)."""
    f = lambda r: stats.norm.cdf(c * r) * stats.chi.pdf(r, ell)  # noqa: E731
    lo, hi = max(0.0, math.sqrt(ell) - 15), math.sqrt(ell) + 15
    return integrate.quad(f, lo, hi, limit=200, epsabs=1e-13, epsrel=1e-13)[0]


@pytest.mark.parametrize("ell", [1, 5, 50])
def test_mean_phi_chi_equals_a_quadrature_of_its_definition(ell):
    """Theorem B's alignment law: the closed form t_ell-CDF(c sqrt(ell)) is E Phi(c X), X ~ chi_ell."""
    cs = [-2.0, -0.3, 0.0, 0.05, 1 / math.sqrt(9), 0.3, 1.0, 3.0]
    got = theory.mean_phi_chi(ell, cs)
    assert got.shape == (len(cs),)
    for c, v in zip(cs, got):
        assert abs(float(v) - _quadrature_mean_phi_chi(ell, c)) < 1e-9, (ell, c)


def test_mean_phi_chi_of_a_number_and_bad_input():
    """Contract: a number gives a (1,)-array; a non-finite c or ell < 1 is rejected by name."""
    assert theory.mean_phi_chi(3, 0.0).shape == (1,) and float(theory.mean_phi_chi(3, 0.0)[0]) == 0.5
    with pytest.raises(ValueError, match="^c must"):
        theory.mean_phi_chi(3, [0.1, math.nan])
    with pytest.raises(ValueError, match="^ell must"):
        theory.mean_phi_chi(0, 0.1)


@pytest.mark.parametrize("call,match", [
    (lambda: theory.tail_probability(0), "ell must be >= 1"),
    (lambda: theory.gperp_prediction(11, 10, 5, 20), "k must be <= 10"),
    (lambda: theory.gperp_bounds(-1.0, 0.5, 3), "beta must be > 0"),
    (lambda: theory.universal_flip_bound(float("nan"), 10, 3, 10, 5), "N0 must be finite"),
    (lambda: theory.certified_radius(1.0, 0.1, 10, 5, t=-1.0), "t must be >= 0"),
    (lambda: theory.weight_decay_factor(0.1, -0.5, 3), "lam must be >= 0"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- the closed forms of the weight-decay theorem's stationary limit (chapter l2_regularisation) -----

@pytest.mark.parametrize("x", [0.0, 1e-300, 1e-8, 0.1, 1 / math.e, 1.0, 2.0, math.e, 3.0, 50.0, 1e4, 1e12, 1e300])
def test_lambert_w0_solves_w_exp_w_equals_x(x):
    w = lambert_w0(x)
    assert w >= 0
    if x < 1e300:
        assert math.isclose(w * math.exp(w), x, rel_tol=1e-13, abs_tol=1e-300)
    else:
        assert math.isclose(w + math.log(w), math.log(x), rel_tol=1e-14)


def test_lambert_w0_known_values():
    assert lambert_w0(0.0) == 0.0
    assert math.isclose(lambert_w0(math.e), 1.0, rel_tol=1e-15)
    assert math.isclose(lambert_w0(2 * math.exp(2)), 2.0, rel_tol=1e-14)


def test_lambert_w0_rejects_negative_and_non_numbers():
    with pytest.raises(ValueError, match=r"^x must"):
        lambert_w0(-0.1)
    with pytest.raises(ValueError, match=r"^x must"):
        lambert_w0(float("nan"))
    with pytest.raises(TypeError, match=r"^x must"):
        lambert_w0("1")


def test_logistic_balance_max_is_the_maximum_of_q_over_one_plus_exp_q():
    q = torch.linspace(-5, 20, 2_000_001, dtype=torch.float64)
    h = q / (1 + torch.exp(q))
    assert float(h.max()) <= LOGISTIC_BALANCE_MAX + 1e-15
    assert float(h.max()) >= LOGISTIC_BALANCE_MAX - 1e-12
    assert math.isclose(LOGISTIC_BALANCE_MAX, lambert_w0(1 / math.e), rel_tol=1e-15)


def test_stationary_norm_bound_is_balance_max_over_lambda():
    for lam in (1e-3, 0.1, 2.0):
        assert math.isclose(stationary_norm_bound(lam), LOGISTIC_BALANCE_MAX / lam, rel_tol=1e-15)
    with pytest.raises(ValueError, match=r"^lam must"):
        stationary_norm_bound(0.0)


def test_stationary_margin_bound_is_lambert_of_r2_over_lambda_and_at_least_one():
    assert math.isclose(stationary_margin_bound(0.01, 101.0), lambert_w0(10_100.0), rel_tol=1e-15)
    assert stationary_margin_bound(100.0, 1.0) == 1.0
    caps = [stationary_margin_bound(lam, 101.0) for lam in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)]
    assert all(a > b for a, b in zip(caps, caps[1:]))          # decreasing in lambda
    assert caps[0] < math.log(101.0 / 1e-4)                     # below ln(R^2/lambda)


def test_stationary_margin_bound_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"^lam must"):
        stationary_margin_bound(-1.0, 10.0)
    with pytest.raises(ValueError, match=r"^radius_sq must"):
        stationary_margin_bound(0.1, 0.0)
    with pytest.raises(TypeError, match=r"^radius_sq must"):
        stationary_margin_bound(0.1, None)


def test_lambert_w0_inverts_w_exp_w_over_a_range():
    """lambert_w0 is the inverse of w e^w on [0, inf): checked at 2001 points from 1e-300 to 1e300."""
    for x in np.logspace(-300, 300, 2001):
        w = lambert_w0(float(x))
        assert math.isclose(w * math.exp(w), float(x), rel_tol=1e-12), x


# --- the closed forms of the separable-noise chapter (were in ortho_lib.separability) ---------------------

def test_key_quantity_moments_full_rank_closed_form():
    for m, d in [(1, 1), (100, 100), (400, 40), (7, 300)]:
        mean, var = key_quantity_moments(m, d)
        assert mean == 0.5
        assert var == pytest.approx(5 / (4 * m) + 3 / (4 * d) + 9 / (4 * m * d), rel=1e-12)
    assert key_quantity_moments(10, 20, k=0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="k"):
        key_quantity_moments(10, 20, k=21)


def test_paper_variance_and_its_gap_to_the_exact_variance():
    m, d = 400, 40
    assert paper_variance(m, d) == pytest.approx(5 / 1600 + 1 / 40 + 2 / 16000)
    # the two differ by (1/4)(1/d)(1 - 1/m): E[D_i D_j] = 1/4, not 1/2
    assert paper_variance(m, d) - key_quantity_moments(m, d)[1] == pytest.approx((1 - 1 / m) / (4 * d), rel=1e-12)


def test_cantelli_bound_value_and_bad_threshold():
    assert cantelli_bound(0.5, 0.02, 0.0) == pytest.approx(0.02 / 0.27)
    with pytest.raises(ValueError, match="threshold"):
        cantelli_bound(0.5, 0.02, 0.6)
    with pytest.raises(ValueError, match="variance"):
        cantelli_bound(0.5, -1.0, 0.0)


def test_cover_separable_probability_values():
    assert cover_separable_probability(10, 10) == pytest.approx(1.0)
    assert cover_separable_probability(40, 20) == pytest.approx(0.5)
    assert cover_separable_probability(3, 2) == pytest.approx(0.75)   # 6 of 8 dichotomies of 3 points in R^2
    with pytest.raises(ValueError, match="n"):
        cover_separable_probability(0, 3)


def test_projected_separation_probability_known_values():
    assert projected_separation_probability(0) == 0.0
    # k = 1: P(|Z1/Z2| > tan(pi/8)) = 3/4 exactly for rho = 1/2
    assert projected_separation_probability(1) == pytest.approx(0.75, abs=1e-12)
    assert projected_separation_probability(5, 1.0) == pytest.approx(1.0)
    t = projected_separation_probability(3, torch.tensor([0.5, 0.25], dtype=torch.float64))
    assert t.shape == (2,) and float(t[0]) > float(t[1])
    with pytest.raises(ValueError, match="active_fraction"):
        projected_separation_probability(3, 1.5)
