"""KKT points of the max-margin problem and their non-robustness (ortho_lib.kkt; chapter kkt_nonrobust).

Unit tests of every public function, then the chapter's claims on fresh seeds:
- Proposition (orthogonal inputs): exact flip norms and the bracket [sqrt(D/n), 2 sqrt(D/n)] — deterministic.
- Theorem (nearly orthogonal inputs): monotonicity along z and the flip bound on exact KKT points — deterministic.
- Corollary and robust-network proposition on random sphere data — probabilistic, failure below 1e-6.
"""
import math

import pytest
import torch

import ortho_lib as ol
from ortho_lib.network import TwoLayerParams
from ortho_lib.kkt import (
    augmented_gram, balance_layers, construct_kkt_point, fraction_on_margin, flip_direction, kkt_flip_bound,
    kkt_multipliers, normalized_margin, obtuse_data, orthogonal_max_margin_value, parameter_norm_sq,
    rescale_to_unit_margin, robust_certified_radius, robust_network, small_init, sphere_data,
    stationarity_matrix, stationarity_residual, train_max_margin,
)

F64 = torch.float64


def _balanced(n):
    return torch.tensor([1.0, -1.0] * (n // 2), dtype=F64)


def _random_groups(y, gen):
    """A random partition of each class into label-pure groups."""
    groups = []
    for lab in (1.0, -1.0):
        idx = [int(i) for i in torch.nonzero(y == lab).flatten()]
        idx = [idx[int(k)] for k in torch.randperm(len(idx), generator=gen)]
        cuts = sorted(set(int(c) for c in torch.randint(1, len(idx), (2,), generator=gen))) if len(idx) > 1 else []
        start = 0
        for c in cuts + [len(idx)]:
            if c > start:
                groups.append(idx[start:c])
                start = c
    return groups


def _orthogonal_kkt(n=8, d=40, seed=0, groups=None):
    X = obtuse_data(n, d, seed=seed)
    y = _balanced(n)
    if groups is None:
        groups = [[i for i in range(n) if y[i] > 0], [i for i in range(n) if y[i] < 0]]
    params, lam = construct_kkt_point(X, y, groups)
    return X, y, params, lam


# ----------------------------------------------------------------------------------------- data
def test_sphere_data_has_norm_sqrt_d_and_is_deterministic():
    X = sphere_data(7, 50, seed=3)
    assert X.shape == (7, 50) and X.dtype == F64
    assert torch.allclose(X.norm(dim=1), torch.full((7,), math.sqrt(50), dtype=F64), atol=1e-12)
    assert torch.equal(X, sphere_data(7, 50, seed=3))
    with pytest.raises(ValueError, match="n"):
        sphere_data(0, 5, seed=0)


def test_obtuse_data_has_the_prescribed_augmented_gram():
    G0 = augmented_gram(obtuse_data(6, 30, seed=1))
    assert torch.allclose(G0, 31 * torch.eye(6, dtype=F64), atol=1e-10)
    G = augmented_gram(obtuse_data(6, 30, seed=1, eps=0.1))
    off = G - torch.diag(G.diagonal())
    assert torch.allclose(G.diagonal(), torch.full((6,), 31.0, dtype=F64), atol=1e-10)
    assert float(off.max()) <= 1e-10 and float(off.min()) >= -0.1 * 30 - 1e-10 and float(off.min()) < -0.1


def test_obtuse_data_rejects_bad_arguments():
    with pytest.raises(ValueError, match="eps"):
        obtuse_data(10, 12, seed=0, eps=0.9)
    with pytest.raises(ValueError, match="n"):
        obtuse_data(13, 12, seed=0)


def test_augmented_gram_is_gram_of_points_with_appended_one():
    X = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    Xt = torch.cat([X, torch.ones(4, 1, dtype=F64)], 1)
    assert torch.allclose(augmented_gram(X), Xt @ Xt.T, atol=1e-12)


# ------------------------------------------------------------------------------ margins and norms
def test_parameter_norm_sq_sums_all_layers_and_rejects_output_bias():
    p = small_init(5, 3, seed=0, scale=1.0)
    expected = float((p.W**2).sum() + (p.b**2).sum() + (p.u**2).sum())
    assert parameter_norm_sq(p) == pytest.approx(expected, rel=1e-14)
    with pytest.raises(ValueError, match="params.c"):
        parameter_norm_sq(p.replace(c=torch.tensor(0.5, dtype=F64)))
    with pytest.raises(TypeError, match="params"):
        parameter_norm_sq("not params")


def test_normalized_margin_is_invariant_under_scaling():
    X, y, p, _ = _orthogonal_kkt()
    q = normalized_margin(p, X, y)
    scaled = TwoLayerParams(3 * p.W, 3 * p.b, 3 * p.u, p.c)
    assert normalized_margin(scaled, X, y) == pytest.approx(q, rel=1e-12)


def test_fraction_on_margin_counts_points_near_the_minimum():
    X, y, p, _ = _orthogonal_kkt()
    assert fraction_on_margin(p, X, y) == 1.0
    # a network that gets one point wrong has no positive margin
    with pytest.raises(ValueError, match="positive margin"):
        fraction_on_margin(p, X, -y)
    with pytest.raises(ValueError, match="rel_tol"):
        fraction_on_margin(p, X, y, rel_tol=-1.0)


def test_rescale_to_unit_margin_sets_the_minimum_margin_to_one():
    X, y, p, _ = _orthogonal_kkt()
    big = TwoLayerParams(5 * p.W, 5 * p.b, 5 * p.u, p.c)
    q = rescale_to_unit_margin(big, X, y)
    assert float((y * ol.network_output(q, X)).min()) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="positive margin"):
        rescale_to_unit_margin(p, X, -y)


def test_balance_layers_keeps_the_function_and_minimises_the_norm():
    g = torch.Generator().manual_seed(1)
    p = TwoLayerParams(torch.randn(6, 4, generator=g, dtype=F64), torch.randn(6, generator=g, dtype=F64),
                       5 * torch.randn(6, generator=g, dtype=F64), torch.zeros((), dtype=F64))
    q = balance_layers(p)
    Xq = torch.randn(10, 4, generator=g, dtype=F64)
    assert torch.allclose(ol.network_output(p, Xq), ol.network_output(q, Xq), atol=1e-12)
    wn = torch.sqrt((q.W**2).sum(1) + q.b**2)
    assert torch.allclose(q.u.abs(), wn, atol=1e-12)
    assert parameter_norm_sq(q) <= parameter_norm_sq(p) + 1e-12


# --------------------------------------------------------------------------------------------- KKT
def test_stationarity_matrix_columns_are_the_autograd_gradients():
    g = torch.Generator().manual_seed(2)
    p = TwoLayerParams(torch.randn(5, 4, generator=g, dtype=F64), torch.randn(5, generator=g, dtype=F64),
                       torch.randn(5, generator=g, dtype=F64), torch.zeros((), dtype=F64))
    X = torch.randn(3, 4, generator=g, dtype=F64)
    y = torch.tensor([1.0, -1.0, 1.0], dtype=F64)
    J = stationarity_matrix(p, X, y)
    assert J.shape == (5 * (4 + 2), 3)
    for i in range(3):
        W, b, u = (t.clone().requires_grad_(True) for t in (p.W, p.b, p.u))
        out = torch.relu(X[i] @ W.T + b) @ u
        out.backward()
        grad = torch.cat([W.grad.reshape(-1), b.grad, u.grad])
        assert torch.allclose(J[:, i], y[i] * grad, atol=1e-12)


def test_stationarity_residual_is_zero_at_a_constructed_kkt_point():
    X, y, p, lam = _orthogonal_kkt(groups=[[0, 2], [4, 6], [1], [3, 5, 7]])
    assert stationarity_residual(p, X, y, lam) < 1e-13
    assert stationarity_residual(p, X, y, 1.5 * lam) > 0.1
    with pytest.raises(ValueError, match="lam"):
        stationarity_residual(p, X, y, -lam)
    with pytest.raises(ValueError, match="lam"):
        stationarity_residual(p, X, y, lam[:3])


def test_kkt_multipliers_recover_the_exact_multipliers():
    X, y, p, lam = _orthogonal_kkt(n=10, d=60, seed=4, groups=[[0, 2, 4], [6, 8], [1, 3, 5, 7, 9]])
    big = TwoLayerParams(2 * p.W, 2 * p.b, 2 * p.u, p.c)  # same direction, margin 4
    fit = kkt_multipliers(big, X, y)
    assert fit.stationarity < 1e-12 and fit.complementarity < 1e-12 and fit.residual < 1e-12
    assert torch.allclose(fit.lam, lam, atol=1e-12)
    assert fit.scale == pytest.approx(0.5, rel=1e-12)
    assert torch.allclose(fit.margins, torch.ones(10, dtype=F64), atol=1e-12)


def test_kkt_multipliers_report_a_clear_error_away_from_a_kkt_point():
    X, y, p, _ = _orthogonal_kkt(n=10, d=60, seed=5)
    off = p.replace(u=p.u * torch.tensor([1.5, 1.0], dtype=F64))  # unbalanced: not a KKT direction
    fit = kkt_multipliers(off, X, y)
    assert fit.residual > 0.05


def test_kkt_multipliers_and_margins_reject_bad_arguments():
    X, y, p, _ = _orthogonal_kkt()
    with pytest.raises(ValueError, match="kink_tol"):
        kkt_multipliers(p, X, y, kink_tol=-1.0)
    with pytest.raises(ValueError, match="sweeps"):
        kkt_multipliers(p, X, y, sweeps=0)
    with pytest.raises(ValueError, match="X"):
        normalized_margin(p, X[:, :-1], y)
    with pytest.raises(ValueError, match="y"):
        normalized_margin(p, X, y[:-1])


def test_construct_kkt_point_rejects_bad_groups_and_unsuitable_data():
    X = obtuse_data(4, 10, seed=0)
    y = _balanced(4)
    with pytest.raises(ValueError, match="one label"):
        construct_kkt_point(X, y, [[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="partition"):
        construct_kkt_point(X, y, [[0, 2], [1]])
    with pytest.raises(ValueError, match="empty"):
        construct_kkt_point(X, y, [[0, 2], [1, 3], []])
    Xs = sphere_data(10, 30, seed=1)  # correlations of both signs: some neuron fires outside its group
    ys = _balanced(10)
    with pytest.raises(ValueError, match="outside its group"):
        construct_kkt_point(Xs, ys, [[i] for i in range(10)])


# -------------------------------------------------------------------------------------- training
def test_train_max_margin_equals_train_with_the_loss_normalised_schedule():
    X = sphere_data(6, 20, seed=0)
    y = _balanced(6)
    p0 = small_init(20, 8, seed=1, scale=0.1)
    eta0 = 0.3
    ours = train_max_margin(p0, X, y, eta0=eta0, steps=30).params
    ref = ol.train(p0, X, y, lr=1.0, max_steps=30, train_bias=True, train_second_layer=True,
                   lr_schedule=lambda t, L: eta0 / (L * max(1.0, math.log(1.0 / L)))).params
    for a, b in ((ours.W, ref.W), (ours.b, ref.b), (ours.u, ref.u)):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_train_max_margin_keeps_going_after_the_loss_underflows():
    X = sphere_data(6, 20, seed=2)
    y = _balanced(6)
    run = train_max_margin(small_init(20, 20, seed=3, scale=0.1), X, y, eta0=2.0, steps=250, record_every=50)
    assert float(run.log_loss_history[-1]) < -800          # L < 1e-347: zero in float64
    assert bool(torch.isfinite(run.params.W).all())
    assert run.margin_history[-1] > run.margin_history[0]
    assert run.steps == 250 and run.history_steps[-1] == 250
    with pytest.raises(ValueError, match="eta0"):
        train_max_margin(small_init(20, 8, seed=3), X, y, eta0=0.0, steps=1)


def test_small_init_scales_both_layers():
    p = small_init(30, 20, seed=4, scale=1e-3)
    ref = ol.init_network(30, 20, seed=4, second_layer="gaussian")
    assert torch.allclose(p.W, 1e-3 * ref.W) and torch.allclose(p.u, 1e-3 * ref.u)
    assert float(p.b.abs().max()) == 0.0
    with pytest.raises(ValueError, match="scale"):
        small_init(3, 2, seed=0, scale=-1.0)


# ------------------------------------------------------------------------------- theory formulas
def test_flip_direction_is_the_label_weighted_sum():
    X = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0], dtype=F64)
    assert torch.allclose(flip_direction(X, y), (y[:, None] * X).sum(0), atol=1e-14)
    with pytest.raises(ValueError, match="y"):
        flip_direction(X, torch.tensor([1.0, 0.0, 1.0, 1.0, -1.0], dtype=F64))


def test_kkt_flip_bound_reduces_to_sqrt_nD_over_n_opp_for_orthogonal_data():
    n, d = 10, 99
    X = obtuse_data(n, d, seed=6)
    y = _balanced(n)
    bound = kkt_flip_bound(X, y)
    # kappa = 0, zeta = D, ||z|| = sqrt(nD): bound = sqrt(nD) / n'
    assert torch.allclose(bound, torch.full((n,), math.sqrt(n * (d + 1)) / (n // 2), dtype=F64), rtol=1e-9)


def test_kkt_flip_bound_is_infinite_where_it_does_not_apply_and_checks_margins():
    X = sphere_data(4, 50, seed=7)
    same = torch.ones(4, dtype=F64)
    assert bool(torch.isinf(kkt_flip_bound(X, same)).all())           # no point of the other label
    Xneg = torch.stack([X[0], -X[0] + 0.01 * X[1]])
    assert bool(torch.isinf(kkt_flip_bound(Xneg, torch.tensor([1.0, 1.0], dtype=F64))).all())
    with pytest.raises(ValueError, match="margins"):
        kkt_flip_bound(X, _balanced(4), margins=torch.full((4,), 0.5, dtype=F64))


def test_orthogonal_max_margin_value_is_attained_by_one_neuron_per_class():
    X, y, p, _ = _orthogonal_kkt(n=12, d=80, seed=8)
    assert normalized_margin(p, X, y) == pytest.approx(orthogonal_max_margin_value(6, 6, 80), rel=1e-12)
    with pytest.raises(ValueError, match="n_pos"):
        orthogonal_max_margin_value(0, 3, 10)


# ------------------------------------------------------------------------------- robust network
def test_robust_network_implements_its_formula():
    X = sphere_data(5, 40, seed=9)
    y = _balanced(5 - 1).tolist() + [1.0]
    y = torch.tensor(y, dtype=F64)
    rob = robust_network(X, y)
    Q = torch.randn(7, 40, dtype=F64, generator=torch.Generator().manual_seed(1))
    manual = torch.stack([sum(y[i] * torch.relu(X[i] @ q / 40 - 0.5) for i in range(5)) for q in Q])
    assert torch.allclose(ol.network_output(rob, Q), manual, atol=1e-12)
    with pytest.raises(ValueError, match="zero vector"):
        robust_network(torch.zeros(2, 3, dtype=F64), torch.tensor([1.0, -1.0], dtype=F64))


def test_robust_certified_radius_admits_no_flip_inside_it():
    """Deterministic consequence of the proposition: inside the radius the sign never changes."""
    n, d = 12, 400
    X = sphere_data(n, d, seed=10)
    y = _balanced(n)
    rob = robust_network(X, y)
    r = robust_certified_radius(X, y, X, y)
    assert bool((r > 0).all())
    gen = torch.Generator().manual_seed(11)
    dirs = torch.cat([torch.randn(300, d, generator=gen, dtype=F64), X, -X, flip_direction(X, y)[None]])
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    for k in range(n):
        pts = X[k] + 0.999 * float(r[k]) * dirs
        assert bool((y[k] * ol.network_output(rob, pts) > 0).all())
    # the ray towards the origin is tight up to the spectral factor: it flips at exactly sqrt(d)/2
    toward0 = ol.flip_norm_along(rob, X, X, max_norm=math.sqrt(d))
    assert bool((toward0 >= r - 1e-9).all())


def test_robust_certified_radius_rejects_bad_inputs():
    X = sphere_data(4, 10, seed=0)
    y = _balanced(4)
    with pytest.raises(ValueError, match="points"):
        robust_certified_radius(X, y, torch.zeros(2, 9, dtype=F64), torch.tensor([1.0, -1.0], dtype=F64))
    with pytest.raises(ValueError, match="labels"):
        robust_certified_radius(X, y, X, torch.zeros(4, dtype=F64))


# =========================================================================== claims on fresh seeds
def test_prop_orthogonal_every_constructed_kkt_point_flips_where_predicted():
    """Proposition (a)-(c): exact flip norms sqrt(nD)/(|g_k| + n/2), inside [sqrt(D/n), 2 sqrt(D/n)].

    Deterministic given the proposition: 20 fresh data seeds, random label-pure groupings.
    """
    n, d = 12, 300
    D = d + 1
    for seed in range(5000, 5020):
        X = obtuse_data(n, d, seed=seed)
        y = _balanced(n)
        groups = _random_groups(y, torch.Generator().manual_seed(seed))
        p, lam = construct_kkt_point(X, y, groups)
        # lemma: balanced neurons and ||theta||^2 = 2 sum lambda; every point on the margin
        assert torch.allclose(p.u.abs(), torch.sqrt((p.W**2).sum(1) + p.b**2), rtol=1e-10)
        assert parameter_norm_sq(p) == pytest.approx(2 * float(lam.sum()), rel=1e-10)
        assert torch.allclose(y * ol.network_output(p, X), torch.ones(n, dtype=F64), atol=1e-10)
        assert stationarity_residual(p, X, y, lam) < 1e-12
        size = torch.zeros(n, dtype=F64)
        for g in groups:
            size[g] = len(g)
        flips = ol.flip_norm_along(p, X, flip_direction(X, y), max_norm=math.sqrt(d))
        assert torch.allclose(flips, math.sqrt(n * D) / (size + n / 2), rtol=1e-7)
        assert bool((flips >= math.sqrt(D / n) * (1 - 1e-7)).all())
        assert bool((flips <= 2 * math.sqrt(D / n) * (1 + 1e-7)).all())


def test_theorem_monotone_along_z_and_flip_bound_on_exact_kkt_points_with_correlations():
    """Theorem (a) and (b) on exact KKT points of data with correlations in [-eps d, 0].

    Deterministic given the theorem: 12 fresh seeds, two correlation levels, random groupings.
    """
    n, d = 12, 500
    for seed in range(6000, 6012):
        for eps in (0.005, 0.02):
            X = obtuse_data(n, d, seed=seed, eps=eps)
            y = _balanced(n)
            p, lam = construct_kkt_point(X, y, _random_groups(y, torch.Generator().manual_seed(seed)))
            assert stationarity_residual(p, X, y, lam) < 1e-12
            z = flip_direction(X, y)
            gen = torch.Generator().manual_seed(seed + 1)
            starts = torch.cat([X, torch.randn(5, d, generator=gen, dtype=F64)])  # training and random points
            ts = torch.linspace(-40, 40, 161, dtype=F64)
            vals = ol.network_output(p, (starts[:, None, :] + ts[None, :, None] * z / z.norm()).reshape(-1, d))
            assert bool((vals.reshape(len(starts), -1).diff(dim=1) >= -1e-12).all())
            flips = ol.flip_norm_along(p, X, z, max_norm=2 * math.sqrt(d))
            assert bool((flips <= kkt_flip_bound(X, y) * (1 + 1e-9)).all())


def test_corollary_bound_on_random_sphere_data():
    """Corollary: on the event max|<x_i,x_k>| <= eps d the Theorem's bound is below the explicit formula.

    n = 6, d = 20000, eps = 0.05: the event fails with probability <= n(n-1) exp(-d eps^2/2) = 30 e^{-25}
    < 4.2e-10 per seed; over 10 fresh seeds the test fails with probability < 5e-9 (union bound).
    """
    n, d, eps = 6, 20000, 0.05
    rho = (n - 1) * eps
    for seed in range(7000, 7010):
        X = sphere_data(n, d, seed=seed)
        y = _balanced(n)
        n_opp = n // 2
        rhs = math.sqrt(d / n) * (n / n_opp) * math.sqrt(1 + rho) / (1 - rho) * (1 + 1 / d + 3 * n_opp * (eps + 1 / d))
        assert bool((kkt_flip_bound(X, y) <= rhs).all())


def test_robust_network_margin_and_radius_on_random_sphere_data():
    """Proposition (robust network) on fresh random data.

    n = 10, d = 2000, eps = 0.15: the event max|<x_i,x_k>| <= eps d fails with probability
    <= n(n-1) exp(-d eps^2/2) = 90 e^{-22.5} < 1.6e-8 per seed; over 20 fresh seeds < 3.2e-7.
    On the event: margin >= 1/2 and certified radius >= (sqrt(d)/2) / sqrt(1 + (n-1) eps).
    """
    n, d, eps = 10, 2000, 0.15
    floor = math.sqrt(d) / 2 / math.sqrt(1 + (n - 1) * eps)
    for seed in range(8000, 8020):
        X = sphere_data(n, d, seed=seed)
        y = ol.random_labels(n, seed=seed + 1)
        rob = robust_network(X, y)
        assert float((y * ol.network_output(rob, X)).min()) >= 0.5 - 1e-12
        assert float(robust_certified_radius(X, y, X, y).min()) >= floor
