"""Tests for the chapter on the paper's two figures (book/figures.md).

* Unit tests of the two data builders added for it, ``line_data_2d`` and ``chessboard_data_3d``.
* Checks of the chapter's statement (``thm-figures-normal``) on fresh seeds, none of them the chapter's
  seed 0. Parts 1-3 of the statement are exact identities or inequalities, so these checks cannot fail
  for a correct implementation (tolerances are far above float64 rounding and far below any real effect).
* One statistical check with a computed failure probability: the trained normal slopes have exactly
  the law N(0, 1/(kappa^2 d)), tested by a chi-square statistic at two-sided level 1e-7.

The chapter's empirical observations (e.g. that the vanilla network's median normal distance is about
half the spacing of the points) are not tested as claims on fresh seeds: we know no bound on how
often they fail, so a test of them could not be given a failure probability.
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import ortho_lib as ol
from ortho_lib.data import chessboard_data_3d, check_on_subspace, line_data_2d

V2 = torch.tensor([1.0, -1.0], dtype=torch.float64) / math.sqrt(2)   # normal to the Figure-2 line
E3 = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)               # normal to the Figure-3 plane
ALL_TRAINED = dict(train_bias=True, train_second_layer=True, train_output_bias=True)


# ----------------------------------------------------------------------------- line_data_2d


def test_line_data_2d_default_has_seven_points_on_the_diagonal():
    X, y = line_data_2d()
    assert X.shape == (7, 2) and y.shape == (7,)
    r = torch.tensor([-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1], dtype=torch.float64)
    assert torch.allclose(X[:, 0], r, atol=1e-15) and torch.equal(X[:, 0], X[:, 1])


def test_line_data_2d_points_lie_on_span_of_one_one():
    X, _ = line_data_2d()
    P = ol.subspace_from_vectors(torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    check_on_subspace(P, X, tol=1e-14)
    assert float((X @ V2).abs().max()) < 1e-15


def test_line_data_2d_labels_match_the_authors_pattern():
    _, y = line_data_2d()
    assert y.tolist() == [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0]


@pytest.mark.parametrize("n", [3, 5, 9, 21])
def test_line_data_2d_labels_alternate_with_plus_at_the_origin(n):
    X, y = line_data_2d(n)
    assert X.shape == (n, 2)
    assert float(X[0, 0]) == -1.0 and float(X[-1, 0]) == 1.0
    mid = (n - 1) // 2
    assert float(X[mid].abs().max()) < 1e-15 and float(y[mid]) == 1.0
    assert bool((y[1:] * y[:-1] == -1).all())


def test_line_data_2d_keeps_the_requested_dtype():
    X, y = line_data_2d(dtype=torch.float32)
    assert X.dtype == torch.float32 and y.dtype == torch.float32


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_line_data_2d_rejects_even_or_too_small_n(n):
    with pytest.raises(ValueError, match="n_points"):
        line_data_2d(n)


def test_line_data_2d_rejects_a_non_integer_n():
    with pytest.raises(TypeError, match="n_points"):
        line_data_2d(7.5)


def test_line_data_2d_rejects_a_non_floating_dtype():
    with pytest.raises(TypeError, match="dtype"):
        line_data_2d(dtype=torch.int64)


# ----------------------------------------------------------------------------- chessboard_data_3d


def test_chessboard_default_is_the_five_by_five_grid_at_height_one_half():
    X, y = chessboard_data_3d()
    assert X.shape == (25, 3) and y.shape == (25,)
    grid = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    pairs = {(float(a), float(b)) for a in grid for b in grid}
    assert {(float(x[0]), float(x[1])) for x in X} == pairs
    assert bool((X[:, 2] == 0.5).all())


def test_chessboard_points_lie_on_the_affine_plane():
    X, _ = chessboard_data_3d()
    check_on_subspace(ol.coordinate_subspace(3, 1), X, offset=0.5 * E3, tol=1e-14)
    with pytest.raises(ValueError, match="off the subspace"):
        check_on_subspace(ol.coordinate_subspace(3, 1), X, tol=1e-14)   # not on P itself


def test_chessboard_labels_are_a_checkerboard_with_plus_at_the_origin_corner():
    X, y = chessboard_data_3d()
    Y = y.reshape(5, 5)
    assert float(Y[0, 0]) == 1.0
    assert bool((Y[1:, :] * Y[:-1, :] == -1).all()) and bool((Y[:, 1:] * Y[:, :-1] == -1).all())
    assert int((y > 0).sum()) == 13 and int((y < 0).sum()) == 12
    # rows are ordered with x1 slowest
    assert torch.equal(X[:5, 0], torch.zeros(5, dtype=torch.float64))


@pytest.mark.parametrize("k,height", [(2, 0.0), (3, -1.5), (7, 2.0)])
def test_chessboard_other_sizes_and_heights(k, height):
    X, y = chessboard_data_3d(k, height=height)
    assert X.shape == (k * k, 3) and y.shape == (k * k,)
    assert float(X[:, :2].min()) == 0.0 and float(X[:, :2].max()) == 1.0
    assert bool((X[:, 2] == height).all())
    assert int((y > 0).sum()) == (k * k + 1) // 2


def test_chessboard_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k"):
        chessboard_data_3d(1)
    with pytest.raises(TypeError, match="k"):
        chessboard_data_3d(2.5)
    with pytest.raises(ValueError, match="height"):
        chessboard_data_3d(height=float("nan"))
    with pytest.raises(TypeError, match="height"):
        chessboard_data_3d(height="high")
    with pytest.raises(TypeError, match="dtype"):
        chessboard_data_3d(dtype=torch.int32)


# ----------------------------------------------------------------------------- the statement, part 1


@pytest.mark.parametrize("seed,kappa", [(1001, 1.0), (1002, 3.0), (1003, 10.0)])
def test_normal_slopes_stay_at_their_initial_values_in_the_figure2_setting(seed, kappa):
    X, y = line_data_2d()
    p = ol.init_network(2, 100, seed=seed, second_layer="gaussian", bias="uniform")
    p = p.replace(W=p.W / kappa, u=p.u / kappa)
    res = ol.train(p, X, y, lr=0.02, max_steps=400, **ALL_TRAINED)
    a0, aT = p.W @ V2, res.params.W @ V2
    assert float((aT - a0).abs().max() / a0.abs().max()) < 1e-12
    along = torch.tensor([1.0, 1.0], dtype=torch.float64) / math.sqrt(2)
    assert float((res.params.W @ along - p.W @ along).abs().max()) > 1e-3   # the in-line part moved


@pytest.mark.parametrize("seed,lam", [(1011, 3e-3), (1012, 1e-2), (1013, 0.1)])
def test_weight_decay_multiplies_normal_slopes_by_exactly_one_minus_eta_lambda_to_the_T(seed, lam):
    X, y = line_data_2d()
    p = ol.init_network(2, 100, seed=seed, second_layer="gaussian", bias="uniform")
    eta, T = 0.02, 500
    res = ol.train(p, X, y, lr=eta, max_steps=T, weight_decay=lam, **ALL_TRAINED)
    a0, aT = p.W @ V2, res.params.W @ V2
    assert math.isclose(res.decay_factor, (1 - eta * lam) ** T, rel_tol=1e-12)
    assert float((aT - (1 - eta * lam) ** T * a0).abs().max() / a0.abs().max()) < 1e-12


# ----------------------------------------------------------------------------- the statement, part 2


@pytest.mark.parametrize("seed,h", [(1021, 0.5), (1022, 1.0), (1023, -0.7)])
def test_on_an_affine_plane_a_minus_h_b_is_frozen_while_a_moves(seed, h):
    X, y = chessboard_data_3d(height=h)
    p = ol.init_network(3, 60, seed=seed, second_layer="gaussian", bias="uniform")
    res = ol.train(p, X, y, lr=0.05, max_steps=400, **ALL_TRAINED)
    q0 = p.W[:, 2] - h * p.b
    qT = res.params.W[:, 2] - h * res.params.b
    assert float((qT - q0).abs().max() / q0.abs().max()) < 1e-12
    da = res.params.W[:, 2] - p.W[:, 2]
    assert float(da.norm() / p.W[:, 2].norm()) > 1e-3                       # not frozen
    assert float((da - h * (res.params.b - p.b)).abs().max()) < 1e-12       # moves with the bias


def test_at_height_zero_the_vertical_slopes_are_frozen():
    X, y = chessboard_data_3d(height=0.0)
    p = ol.init_network(3, 60, seed=1024, second_layer="gaussian", bias="uniform")
    res = ol.train(p, X, y, lr=0.05, max_steps=400, **ALL_TRAINED)
    assert float((res.params.W[:, 2] - p.W[:, 2]).abs().max() / p.W[:, 2].abs().max()) < 1e-12


@pytest.mark.parametrize("seed,mu", [(1031, 0.01), (1032, 0.05)])
def test_norm_penalty_multiplies_a_minus_h_b_by_one_common_factor(seed, mu):
    h = 0.5
    X, y = chessboard_data_3d(height=h)
    p = ol.init_network(3, 60, seed=seed, second_layer="gaussian", bias="uniform")
    res = ol.train(p, X, y, lr=0.05, max_steps=300, norm_penalty=mu, **ALL_TRAINED)
    q0 = p.W[:, 2] - h * p.b
    qT = res.params.W[:, 2] - h * res.params.b
    s = float(qT @ q0 / (q0 @ q0))
    assert 0.0 < s < 1.0                                                   # it shrank
    assert float((qT - s * q0).abs().max() / q0.abs().max()) < 1e-12      # ... by a common factor


# ----------------------------------------------------------------------------- the statement, part 3


def _random_net_points_direction(seed, n):
    """A random width-40 network on R^3, ``n`` Gaussian points and a random unit direction."""
    g = torch.Generator().manual_seed(seed)
    p = ol.init_network(3, 40, seed=seed, second_layer="gaussian", bias="uniform")
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    v = torch.randn(3, generator=g, dtype=torch.float64)
    return p, X, v / v.norm()


def _lipschitz_floor(params, X, v):
    L = float((params.u.abs() * (params.W @ v).abs()).sum())
    return ol.network_output(params, X).abs() / L


@pytest.mark.parametrize("seed", [1041, 1042, 1043, 1044])
def test_flip_distance_is_never_below_the_lipschitz_floor(seed):
    p, X, v = _random_net_points_direction(seed, 200)
    dist = ol.flip_norm_along(p, X, v, max_norm=50.0, mode="both")
    floor = _lipschitz_floor(p, X, v)
    assert bool((dist >= floor * (1 - 1e-9)).all())


@pytest.mark.parametrize("seed", [1051, 1052, 1053])
def test_first_order_distance_bounds_the_flip_distance_when_no_neuron_switches(seed):
    p, X, v = _random_net_points_direction(seed, 1000)
    N = ol.network_output(p, X)
    s = ol.input_gradient(p, X) @ v
    t_star = N.abs() / s.abs()
    end = X - (torch.sign(N * s) * t_star)[:, None] * v
    # pre-activations are affine along the segment: no neuron switches iff the signs agree at both ends
    same = ((ol.preactivations(p, X) > 0) == (ol.preactivations(p, end) > 0)).all(dim=1)
    assert int(same.sum()) >= 10          # enough points where the hypothesis holds
    dist = ol.flip_norm_along(p, X[same], v, max_norm=float(t_star[same].max()) * 1.01 + 1e-9, mode="both")
    assert bool((dist <= t_star[same] * (1 + 1e-8)).all())


# ----------------------------------------------------------------------------- the measurement tool


@pytest.fixture(scope="module")
def trained_figure2_network():
    X, y = line_data_2d()
    p = ol.init_network(2, 100, seed=2024, second_layer="gaussian", bias="uniform")
    return ol.train(p, X, y, lr=0.02, max_steps=40_000, target_margin=0.3, **ALL_TRAINED)


def test_vanilla_figure2_run_reaches_the_margin(trained_figure2_network):
    res = trained_figure2_network
    assert res.reached and res.final_margin >= 0.3 and res.steps < 40_000


def test_normal_flip_distance_matches_a_brute_force_scan(trained_figure2_network):
    params = trained_figure2_network.params
    X, _ = line_data_2d()
    cap, step = 4.0, 1e-4
    dist = ol.flip_norm_along(params, X, V2, max_norm=cap, mode="both")
    ts = torch.arange(1, int(round(cap / step)) + 1, dtype=torch.float64) * step
    s0 = torch.sign(ol.network_output(params, X))
    for j in range(X.shape[0]):
        best = math.inf
        for sgn in (1.0, -1.0):
            vals = ol.network_output(params, X[j] + sgn * ts[:, None] * V2)
            flipped = (torch.sign(vals) != s0[j]).nonzero()
            if flipped.numel():
                best = min(best, float(ts[flipped[0, 0]]))
        if math.isinf(best):
            assert math.isinf(float(dist[j])) or float(dist[j]) > cap - step
        else:
            # the scan's first flipped grid point lies within one grid step above the true crossing
            assert best - step - 1e-9 <= float(dist[j]) <= best + 1e-9


# ----------------------------------------------------------------------------- the law of the frozen slopes


def test_trained_normal_slopes_have_the_initial_gaussian_law():
    """sum_i kappa^2 d a_i(T)^2 over S fresh networks is chi^2 with S*m degrees of freedom (exactly:
    the slopes are frozen and a_i(0) ~ N(0, 1/(kappa^2 d)) i.i.d.); two-sided test at level 1e-7."""
    X, y = line_data_2d()
    d, m, kappa = 2, 100, 3.0
    seeds = range(1061, 1069)
    total = 0.0
    for seed in seeds:
        p = ol.init_network(d, m, seed=seed, second_layer="gaussian", bias="uniform")
        p = p.replace(W=p.W / kappa, u=p.u / kappa)
        res = ol.train(p, X, y, lr=0.02, max_steps=300, **ALL_TRAINED)
        total += float(((res.params.W @ V2) ** 2).sum()) * kappa**2 * d
    dof = len(seeds) * m
    lo, hi = stats.chi2.ppf(0.5e-7, dof), stats.chi2.isf(0.5e-7, dof)
    assert lo < total < hi


# ----------------------------------------------------------------------------- plotting additions


@pytest.fixture(scope="module")
def small_3d_network():
    X, y = chessboard_data_3d()
    p = ol.init_network(3, 30, seed=1071, second_layer="gaussian", bias="uniform")
    return ol.train(p, X, y, lr=0.05, max_steps=300, **ALL_TRAINED).params


def test_normal_flip_map_has_the_grid_shape_and_matches_flip_norm_along(small_3d_network):
    from ortho_lib.plotting import normal_flip_map

    xx, yy, dist = normal_flip_map(small_3d_network, height=0.5, res=7, max_norm=2.0)
    assert xx.shape == yy.shape == dist.shape == (7, 7)
    assert xx[0, 1] > xx[0, 0] and yy[1, 0] > yy[0, 0]          # indexing="xy"
    i, j = 3, 5
    p = torch.tensor([[xx[i, j], yy[i, j], 0.5]], dtype=torch.float64)
    ref = float(ol.flip_norm_along(small_3d_network, p, E3, max_norm=2.0, mode="both")[0])
    if math.isinf(ref):
        assert math.isinf(dist[i, j])
    else:
        assert abs(dist[i, j] - ref) < 2.0 / 64 / 2**19       # 64-point scan + 20 bisection steps


def test_normal_flip_map_rejects_bad_arguments(small_3d_network):
    from ortho_lib.plotting import normal_flip_map

    with pytest.raises(ValueError, match="d = 2"):
        normal_flip_map(ol.init_network(2, 5, seed=0), height=0.5)
    with pytest.raises(TypeError, match="params"):
        normal_flip_map("net", height=0.5)
    with pytest.raises(ValueError, match="lim"):
        normal_flip_map(small_3d_network, height=0.5, lim=(1.0, 0.0))
    with pytest.raises(ValueError, match="height"):
        normal_flip_map(small_3d_network, height=float("inf"))
    with pytest.raises(ValueError, match="max_norm"):
        normal_flip_map(small_3d_network, height=0.5, max_norm=0.0)
    with pytest.raises(ValueError, match="res"):
        normal_flip_map(small_3d_network, height=0.5, res=1)


def test_plot_normal_flip_map_draws_and_returns_the_map(small_3d_network):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ortho_lib.plotting import plot_normal_flip_map

    X, y = chessboard_data_3d()
    fig, ax = plt.subplots()
    mesh, dist = plot_normal_flip_map(ax, small_3d_network, X, y, height=0.5, res=9, title="t")
    assert dist.shape == (9, 9) and mesh.get_array().size == 81
    assert ax.get_title() == "t" and ax.get_xlabel() == "$x_1$"
    with pytest.raises(ValueError, match="X"):
        plot_normal_flip_map(ax, small_3d_network, X[:, :2], y, height=0.5)
    plt.close(fig)
