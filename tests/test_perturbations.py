"""The universal direction, flip norms and one-step noises (ortho_lib.perturbations).

Everything here is deterministic: the exact flip norms along a ray are checked against a brute-force scan on
fixed random small networks, against their defining first-crossing property, and on constructed networks
whose answer is known in closed form.
"""
import math

import pytest
import torch

import ortho_lib as ol
from ortho_lib.data import sphere_data
from ortho_lib.mlp import MLP
from ortho_lib.perturbations import (
    alignment_coefficients, first_order_flip_estimate, fgsm_noise, multiclass_noise, one_step_noise,
)

F64 = torch.float64


@pytest.fixture(scope="module")
def setup():
    sub = ol.random_subspace(40, 20, seed=0)
    X = ol.sample_on_subspace(sub, 30, seed=1)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=2))
    p0 = ol.init_network(40, 60, seed=3)
    r = ol.train(p0, X, y, ol.TrainConfig(lr=0.5, target_margin=1.0, max_steps=2000))
    return sub, X, y, p0, r.params


def _net(W, b, u, c):
    """A network from nested lists."""
    return ol.TwoLayerParams(*(torch.tensor(v, dtype=F64) for v in (W, b, u)), c)


def test_universal_direction_is_in_P_perp_and_unchanged_by_training(setup):
    sub, X, y, p0, p = setup
    z = ol.universal_direction(p, sub)
    assert z.shape == (40,)
    assert float(ol.Pi_P(sub, z).abs().max()) < 1e-14
    assert torch.allclose(z, ol.universal_direction(p0, sub), atol=1e-13)


def test_alignment_coefficients_match_definition(setup):
    sub, X, y, p0, p = setup
    a = alignment_coefficients(p, sub)
    z = ol.universal_direction(p, sub)
    assert torch.allclose(a, ol.P_perp(sub, p.W) @ z, atol=1e-14)
    assert math.isclose(float(p.u @ a), float(z @ z), rel_tol=1e-12)  # sum_i u_i a_i = ||z||^2


def test_flip_norm_is_a_true_first_sign_change(setup):
    sub, X, y, p0, p = setup
    z = ol.universal_direction(p, sub)
    alpha = ol.flip_norm_along(p, X, z, max_norm=50.0).norm
    v = z / z.norm()
    s0 = torch.sign(ol.network_output(p, X))
    ok = torch.isfinite(alpha)
    assert ok.any()
    after = ol.network_output(p, X[ok] - (s0[ok] * (alpha[ok] + 1e-9))[:, None] * v)
    before = ol.network_output(p, X[ok] - (s0[ok] * (alpha[ok] - 1e-6))[:, None] * v)
    assert bool((torch.sign(after) != s0[ok]).all()) and bool((torch.sign(before) == s0[ok]).all())


def test_flip_norm_matches_a_fine_scan_in_one_dimension():
    # N(x) = relu(x1) - relu(x1 - 1) - 0.5: along +e1 from x1 = 0 it rises to 0 at x1 = 0.5
    p = _net([[1.0, 0.0], [1.0, 0.0]], [0.0, -1.0], [1.0, -1.0], -0.5)
    x = torch.tensor([[0.0, 0.0]], dtype=F64)
    a = ol.flip_norm_along(p, x, torch.tensor([1.0, 0.0], dtype=F64), max_norm=3.0).norm
    assert abs(float(a[0]) - 0.5) < 1e-9
    # descending along -e1 moves to x1 < 0, where N stays at -0.5: no flip
    assert ol.flip_norm_along(p, x, torch.tensor([-1.0, 0.0], dtype=F64), max_norm=3.0).norm[0] == math.inf
    both = ol.flip_norm_along(p, x, torch.tensor([-1.0, 0.0], dtype=F64), max_norm=3.0, side="both").norm
    assert abs(float(both[0]) - 0.5) < 1e-9


def test_points_that_never_flip_get_infinity():
    """Contract: inf where N keeps its sign along the whole ray (here N = relu(x1) + 1 > 0 everywhere)."""
    p = _net([[1.0, 0.0]], [0.0], [1.0], 1.0)
    X = torch.tensor([[0.0, 0.0], [2.0, -1.0], [-3.0, 1.0]], dtype=F64)
    for v in ([0.0, 1.0], [1.0, 0.0], [-1.0, 0.3]):
        r = ol.flip_norm_along(p, X, torch.tensor(v, dtype=F64), side="both")
        assert bool(torch.isinf(r.norm).all()) and not bool(r.flat.any())


def test_first_order_estimate_is_N_over_gperp(setup):
    sub, X, y, p0, p = setup
    est = first_order_flip_estimate(p, sub, X)
    g = ol.P_perp(sub, ol.input_gradient(p, X)).norm(dim=1)
    assert torch.allclose(est, ol.network_output(p, X).abs() / g)


def test_bad_directions_are_named(setup):
    sub, X, y, p0, p = setup
    with pytest.raises(ValueError, match="^direction must have shape"):
        ol.flip_norm_along(p, X, torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="^direction must be non-zero"):
        ol.flip_norm_along(p, X, torch.zeros(40, dtype=F64))
    with pytest.raises(ValueError, match="^max_norm must be > 0"):
        ol.flip_norm_along(p, X, torch.ones(40, dtype=F64), max_norm=0.0)
    with pytest.raises(ValueError, match="^side must be one of"):
        ol.flip_norm_along(p, X, torch.ones(40, dtype=F64), side="up")
    with pytest.raises(ValueError, match="^params must be a single network"):
        ol.flip_norm_along(ol.TwoLayerParams.stack([p, p]), X, torch.ones(40, dtype=F64))


# ------------------------------------------------------------------- exact flip norms on random networks

D, M, N_PTS = 3, 6, 20


def _random_case(seed):
    """A random small network (Gaussian W, b, u and output bias), N_PTS Gaussian points and one random unit
    direction per point."""
    g = torch.Generator().manual_seed(seed)
    p = ol.TwoLayerParams(torch.randn(M, D, generator=g, dtype=F64), torch.randn(M, generator=g, dtype=F64),
                          torch.randn(M, generator=g, dtype=F64), 0.3 * torch.randn((), generator=g, dtype=F64))
    X = torch.randn(N_PTS, D, generator=g, dtype=F64)
    V = torch.randn(N_PTS, D, generator=g, dtype=F64)
    return p, X, V / V.norm(dim=1, keepdim=True)


def _descend_rays(p, X, V):
    """s0 = sign N(x0) and the descending rays r = -s0 v of side='descend'."""
    s0 = torch.sign(ol.network_output(p, X))
    return s0, -s0[:, None] * V


SCAN_LENGTH, SCAN_STEP = 4.0, 5e-4
RANDOM_SEEDS = range(40_000, 40_050)


def test_flip_norm_is_the_first_crossing_of_a_fine_scan_on_random_networks():
    """Contract of flip_norm_along (exact, first crossing): on 50 random networks x 20 points, against a scan
    of s0 N along the ray at steps h = 5e-4 up to 4: the exact norm is never later than the scan's first
    point with s0 N <= 0 and at most one step earlier (the crossing lies in that last step); where the scan
    finds no crossing the norm is beyond the scanned range."""
    grid = torch.arange(1, int(round(SCAN_LENGTH / SCAN_STEP)) + 1, dtype=F64) * SCAN_STEP
    crossings = 0
    for seed in RANDOM_SEEDS:
        p, X, V = _random_case(seed)
        alpha = ol.flip_norm_along(p, X, V).norm
        s0, R = _descend_rays(p, X, V)
        pts = X[:, None, :] + grid[None, :, None] * R[:, None, :]
        vals = s0[:, None] * ol.network_output(p, pts.reshape(-1, D)).reshape(N_PTS, -1)
        hit = vals <= 0
        found = hit.any(1)
        scan = torch.where(found, grid[hit.to(torch.int8).argmax(1)], torch.full((N_PTS,), math.inf, dtype=F64))
        ok = torch.where(found, (alpha <= scan * (1 + 1e-12)) & (alpha > scan - SCAN_STEP - 1e-12),
                         alpha > SCAN_LENGTH - SCAN_STEP)
        assert bool(ok.all()), (seed, alpha[~ok], scan[~ok])
        crossings += int(found.sum())
    assert crossings >= 200                       # enough finite cases for the comparison to mean something


def test_flip_norm_has_the_first_crossing_property_on_random_networks():
    """Defining property: s0 N keeps its sign at 1000 sample points of [0, alpha) along the ray, and
    s0 N(x0 - s0 alpha v) <= 0 (up to rounding, 1e-12)."""
    ts = torch.linspace(0, 1, 1001, dtype=F64)[:-1]
    checked = 0
    for seed in RANDOM_SEEDS[:20]:
        p, X, V = _random_case(seed)
        alpha = ol.flip_norm_along(p, X, V).norm
        s0, R = _descend_rays(p, X, V)
        fin = torch.isfinite(alpha)
        for j in fin.nonzero().flatten().tolist():
            a = float(alpha[j])
            before = s0[j] * ol.network_output(p, X[j] + (a * ts)[:, None] * R[j])
            assert bool((before > 0).all()), (seed, j)
            assert float(s0[j] * ol.network_output(p, X[j] + a * R[j])) <= 1e-12, (seed, j)
            checked += 1
    assert checked >= 80


def test_side_both_is_the_nearer_of_the_two_sides():
    """Contract of side='both': the smaller of the flip norms along +v and -v (descend along v and along -v),
    with the flat flag of that side."""
    for seed in RANDOM_SEEDS[:10]:
        p, X, V = _random_case(seed)
        both = ol.flip_norm_along(p, X, V, side="both")
        one, other = ol.flip_norm_along(p, X, V), ol.flip_norm_along(p, X, -V)
        assert torch.equal(both.norm, torch.minimum(one.norm, other.norm))
        assert torch.equal(both.flat, torch.where(one.norm <= other.norm, one.flat, other.flat))


def test_max_norm_cuts_off_longer_flip_norms():
    """Contract of max_norm: the exact norm where it is <= max_norm, inf beyond."""
    for seed in RANDOM_SEEDS[:10]:
        p, X, V = _random_case(seed)
        full = ol.flip_norm_along(p, X, V).norm
        cut = ol.flip_norm_along(p, X, V, max_norm=0.7).norm
        assert torch.equal(cut, torch.where(full <= 0.7, full, torch.full_like(full, math.inf)))


# ------------------------------------------------------------------- constructed networks

def test_a_crossing_that_comes_back_within_a_short_stretch_is_found():
    """Exactness: along +e1 from 0, N = 1 - 10 relu(t - 1) + 20 relu(t - 1.1005) - 100 relu(t - 5) dips below
    zero only on (1.1, 1.101) and then crosses for good at 5.4332...; the first crossing is 1.1 (a grid of
    256 points on [0, 50] followed by bisection, the old method, misses the dip and reports about 5.43)."""
    p = _net([[1.0, 0.0]] * 3, [-1.0, -1.1005, -5.0], [-10.0, 20.0, -100.0], 1.0)
    x0 = torch.zeros(1, 2, dtype=F64)
    r = ol.flip_norm_along(p, x0, torch.tensor([-1.0, 0.0], dtype=F64))   # descend: x0 - s0 alpha v = alpha e1
    assert math.isclose(float(r.norm[0]), 1.1, rel_tol=1e-12) and not bool(r.flat[0])
    both = ol.flip_norm_along(p, x0, torch.tensor([1.0, 0.0], dtype=F64), side="both", max_norm=50.0)
    assert math.isclose(float(both.norm[0]), 1.1, rel_tol=1e-12)
    e1 = torch.tensor([[1.0, 0.0]], dtype=F64)
    assert float(ol.network_output(p, 1.1005 * e1)) < 0 < float(ol.network_output(p, 1.2 * e1))  # it comes back


def test_a_point_where_the_network_is_zero_gets_nan():
    """Contract: nan where N(x0) = 0 (no sign to flip), and flat is False there."""
    p = _net([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], [1.0, -1.0], 0.0)
    X = torch.tensor([[-1.0, -2.0], [1.0, 1.0], [0.5, 0.0]], dtype=F64)   # all off; N = 0 by cancellation; N = 0.5
    r = ol.flip_norm_along(p, X, torch.tensor([1.0, 0.0], dtype=F64), side="both")
    assert bool(torch.isnan(r.norm[:2]).all()) and math.isclose(float(r.norm[2]), 0.5, rel_tol=1e-15)
    assert not bool(r.flat[:2].any())


def test_flat_marks_a_zero_where_every_neuron_switches_off():
    """Contract of FlipNorms.flat: N = relu(x1) from x0 = (1, 0.5) descending along e1 reaches 0 at alpha = 1
    and stays 0 (every neuron off, c = 0): flat; N = relu(x1) - relu(-x1) = x1 changes sign there (one neuron
    switches off and another on at the same point): not flat; N = relu(x1) - 1/4 ends at c != 0: not flat."""
    x0 = torch.tensor([[1.0, 0.5]], dtype=F64)
    e1 = torch.tensor([1.0, 0.0], dtype=F64)
    flat = ol.flip_norm_along(_net([[1.0, 0.0]], [0.0], [1.0], 0.0), x0, e1)
    assert float(flat.norm[0]) == 1.0 and bool(flat.flat[0])
    sign_change = ol.flip_norm_along(_net([[1.0, 0.0], [-1.0, 0.0]], [0.0, 0.0], [1.0, -1.0], 0.0), x0, e1)
    assert float(sign_change.norm[0]) == 1.0 and not bool(sign_change.flat[0])
    offset = ol.flip_norm_along(_net([[1.0, 0.0]], [0.0], [1.0], -0.25), x0, e1)   # N = relu(x1) - 1/4
    assert float(offset.norm[0]) == 0.75 and not bool(offset.flat[0])


# ------------------------------------------------------ one-step noises (were in ortho_lib.separability)

def _gaussian_net(d, m, seed, **kw):
    """The authors' initialisation (Gaussian second layer) of a width-m network on R^d."""
    return ol.init_network(d, m, seed=seed, second_layer="gaussian", **kw)


@pytest.mark.parametrize("bias", ["zero", "uniform"])
def test_one_step_noise_matches_autograd_of_the_logistic_loss(bias):
    p = _gaussian_net(9, 17, 101, bias=bias)
    X = sphere_data(12, 9, seed=102)
    y = ol.random_labels(12, seed=103)
    Xg = X.clone().requires_grad_(True)
    torch.nn.functional.softplus(-y * ol.network_output(p, Xg)).sum().backward()
    assert torch.allclose(one_step_noise(p, X, y), Xg.grad, atol=1e-13)


def test_one_step_noise_rejects_bad_labels_and_params():
    p = _gaussian_net(4, 5, 104)
    X = sphere_data(3, 4, seed=105)
    with pytest.raises(ValueError, match="y"):
        one_step_noise(p, X, torch.tensor([1.0, -1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="y"):
        one_step_noise(p, X, torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64))
    with pytest.raises(TypeError, match="params"):
        one_step_noise("net", X, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="X"):
        one_step_noise(p, sphere_data(3, 5, seed=1), torch.ones(3, dtype=torch.float64))


def test_fgsm_noise_is_the_sign_of_the_l2_noise():
    p = _gaussian_net(6, 8, 106)
    X, y = sphere_data(5, 6, seed=107), ol.random_labels(5, seed=108)
    assert torch.equal(fgsm_noise(p, X, y), torch.sign(one_step_noise(p, X, y)))


def test_multiclass_noise_matches_autograd_and_normalises(digits):
    X, y = digits.X_train[:30], digits.y_train[:30]
    torch.manual_seed(10)
    model = MLP(64, 12, 10)
    Xg = X.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(Xg) / 3.0, y, reduction="sum").backward()
    g = Xg.grad
    N = multiclass_noise(model, X, y, temperature=3.0)
    assert torch.allclose(N, g / g.norm(dim=1, keepdim=True), atol=1e-12)
    assert torch.allclose(N.norm(dim=1), torch.ones(30, dtype=N.dtype), atol=1e-12)
    assert torch.equal(multiclass_noise(model, X, y, norm="linf", temperature=3.0), torch.sign(g))


def test_multiclass_noise_targeted_descends_towards_the_next_class(digits):
    X, y = digits.X_train[:30], digits.y_train[:30]
    torch.manual_seed(11)
    model = MLP(64, 12, 10)
    Xg = X.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(Xg), (y + 1) % 10, reduction="sum").backward()
    N = multiclass_noise(model, X, y, targeted=True)
    assert torch.allclose(N, -Xg.grad / Xg.grad.norm(dim=1, keepdim=True), atol=1e-12)


def test_multiclass_noise_rejects_bad_arguments(digits):
    model = MLP(64, 4, 10)
    X, y = digits.X_train[:5], digits.y_train[:5]
    with pytest.raises(ValueError, match="norm"):
        multiclass_noise(model, X, y, norm="l1")
    with pytest.raises(ValueError, match="temperature"):
        multiclass_noise(model, X, y, temperature=0.0)
    with pytest.raises(TypeError, match="model"):
        multiclass_noise(lambda x: x, X, y)
    with pytest.raises(ValueError, match="y"):
        multiclass_noise(model, X, torch.full((5,), 10))
