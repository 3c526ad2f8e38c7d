"""Closed-form predictions: values, limiting cases and bad input."""
import math

import pytest

from ortho_lib import theory


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
