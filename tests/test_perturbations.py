"""The universal direction and flip norms."""
import math

import pytest
import torch

import ortho_lib as ol


@pytest.fixture
def setup():
    sub = ol.random_subspace(40, 20, seed=0)
    X = ol.sample_on_subspace(sub, 30, seed=1)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=2))
    p0 = ol.init_network(40, 60, seed=3)
    r = ol.train(p0, X, y, lr=0.5, target_margin=1.0, max_steps=2000)
    return sub, X, y, p0, r.params


def test_universal_direction_is_in_P_perp_and_unchanged_by_training(setup):
    sub, X, y, p0, p = setup
    z = ol.universal_direction(p, sub)
    assert z.shape == (40,)
    assert float(ol.Pi_P(sub, z).abs().max()) < 1e-14
    assert torch.allclose(z, ol.universal_direction(p0, sub), atol=1e-13)


def test_alignment_coefficients_match_definition(setup):
    sub, X, y, p0, p = setup
    a = ol.alignment_coefficients(p, sub)
    z = ol.universal_direction(p, sub)
    assert torch.allclose(a, ol.P_perp(sub, p.W) @ z, atol=1e-14)
    assert math.isclose(float(p.u @ a), float(z @ z), rel_tol=1e-12)  # sum_i u_i a_i = ||z||^2


def test_flip_norm_is_a_true_first_sign_change(setup):
    sub, X, y, p0, p = setup
    z = ol.universal_direction(p, sub)
    alpha = ol.flip_norm_along(p, X, z, max_norm=50.0)
    v = z / z.norm()
    s0 = torch.sign(ol.network_output(p, X))
    ok = torch.isfinite(alpha)
    assert ok.any()
    after = ol.network_output(p, X[ok] - (s0[ok] * (alpha[ok] + 1e-9))[:, None] * v)
    before = ol.network_output(p, X[ok] - (s0[ok] * (alpha[ok] - 1e-6))[:, None] * v)
    assert bool((torch.sign(after) != s0[ok]).all()) and bool((torch.sign(before) == s0[ok]).all())


def test_flip_norm_matches_a_fine_scan_in_one_dimension():
    # N(x) = relu(x1) - relu(x1 - 1) - 0.5: along +e1 from x1 = 0 it rises to 0 at x1 = 0.5
    p = ol.make_params(torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64),
                       b=torch.tensor([0.0, -1.0], dtype=torch.float64),
                       u=torch.tensor([1.0, -1.0], dtype=torch.float64), c=-0.5)
    x = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    a = ol.flip_norm_along(p, x, torch.tensor([1.0, 0.0], dtype=torch.float64), max_norm=3.0)
    assert abs(float(a[0]) - 0.5) < 1e-9
    # descending along -e1 moves to x1 < 0, where N stays at -0.5: no flip
    assert ol.flip_norm_along(p, x, torch.tensor([-1.0, 0.0], dtype=torch.float64), max_norm=3.0)[0] == math.inf
    both = ol.flip_norm_along(p, x, torch.tensor([-1.0, 0.0], dtype=torch.float64), max_norm=3.0, mode="both")
    assert abs(float(both[0]) - 0.5) < 1e-9


def test_points_that_never_flip_get_infinity():
    p = ol.make_params(torch.tensor([[1.0, 0.0]], dtype=torch.float64), u=torch.tensor([1.0], dtype=torch.float64), c=1.0)
    a = ol.flip_norm_along(p, torch.zeros(1, 2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64), max_norm=5.0)
    assert a[0] == math.inf


def test_first_order_estimate_is_N_over_gperp(setup):
    sub, X, y, p0, p = setup
    est = ol.first_order_flip_estimate(p, sub, X)
    g = ol.P_perp(sub, ol.input_gradient(p, X)).norm(dim=1)
    assert torch.allclose(est, ol.network_output(p, X).abs() / g)


def test_bad_directions_are_named(setup):
    sub, X, y, p0, p = setup
    with pytest.raises(ValueError, match="direction must have shape"):
        ol.flip_norm_along(p, X, torch.ones(3, dtype=torch.float64), max_norm=1.0)
    with pytest.raises(ValueError, match="direction must be non-zero"):
        ol.flip_norm_along(p, X, torch.zeros(40, dtype=torch.float64), max_norm=1.0)
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        ol.flip_norm_along(p, X, torch.ones(40, dtype=torch.float64), max_norm=0.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        ol.flip_norm_along(p, X, torch.ones(40, dtype=torch.float64), max_norm=1.0, mode="up")
