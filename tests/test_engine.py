"""The sweep engine: exact agreement with ortho_lib.train.train in every coordinate system and with both
backends (batched torch, fused compiled kernel), batching, per-member stopping, the exact perp factor,
precision/device options, and bad inputs."""
import pytest
import torch

import ortho_lib as ol
from ortho_lib.engine import EnsembleResult, stack_params, train_ensemble

TOL = 1e-12  # float64: the engine and train() differ only by rounding (observed ~1e-15)


def _problem(seed, d=24, ell=12, m=16, n=10, E=4, bias="uniform"):
    sub = ol.random_subspace(d, ell, seed=seed)
    X = ol.sample_on_subspace(sub, n, seed=seed + 1)
    y = ol.random_labels(n, seed=seed + 2)
    members = [ol.init_network(d, m, seed=seed + 10 + e, bias=bias, second_layer="gaussian") for e in range(E)]
    return sub, X, y, members


def _assert_same(res, refs, tol=TOL):
    for e, r in enumerate(refs):
        assert int(res.steps[e]) == r.steps, (e, int(res.steps[e]), r.steps)
        assert bool(res.reached[e]) == r.reached
        for k in ("W", "b", "u", "c"):
            diff = float((getattr(res, k)[e] - getattr(r.params, k)).abs().max())
            assert diff <= tol, (e, k, diff)
        assert abs(float(res.final_margin[e]) - r.final_margin) <= tol
        assert abs(float(res.final_loss[e]) - r.final_loss) <= tol
        assert float(res.decay_factor[e]) == r.decay_factor
        assert float(res.lr_sum[e]) == r.lr_sum


CASES = [("gd", 0.0), ("gd", 0.02), ("momentum", 0.0), ("momentum", 0.02)]
# every implementation: (coordinates, backend)
PATHS = [("subspace", "torch"), ("span", "torch"), ("full", "torch"), ("subspace", "fused"), ("full", "fused")]


@pytest.mark.parametrize("mode,backend", PATHS)
@pytest.mark.parametrize("optimizer,wd", CASES)
def test_reduced_training_equals_full_space_train_to_1e12(mode, backend, optimizer, wd):
    sub, X, y, members = _problem(100)
    kw = dict(lr=0.3 if optimizer == "gd" else 0.1, max_steps=300, target_margin=1.5, optimizer=optimizer,
              weight_decay=wd)
    refs = [ol.train(p, X, y, **kw) for p in members]
    st = {}
    res = train_ensemble(members, X, y, sub=sub, mode=mode, backend=backend, stats=st, **kw)
    assert res.mode == mode and st.get("backend", "torch") == backend
    _assert_same(res, refs)


@pytest.mark.parametrize("train_bias,train_second_layer,train_output_bias",
                         [(False, False, False), (True, True, True), (False, True, False), (True, False, True)])
@pytest.mark.parametrize("mode,backend", [("subspace", "torch"), ("span", "torch"), ("subspace", "fused")])
@pytest.mark.parametrize("optimizer", ["gd", "momentum"])
def test_which_layers_are_trained_matches_train(mode, backend, optimizer, train_bias, train_second_layer,
                                                train_output_bias):
    sub, X, y, members = _problem(110)
    kw = dict(lr=0.2, max_steps=200, target_margin=1.0, weight_decay=0.01, train_bias=train_bias,
              train_second_layer=train_second_layer, train_output_bias=train_output_bias, optimizer=optimizer)
    refs = [ol.train(p, X, y, **kw) for p in members]
    res = train_ensemble(members, X, y, sub=sub, mode=mode, backend=backend, **kw)
    _assert_same(res, refs)
    W0, b0, u0, c0 = stack_params(members)
    assert torch.equal(res.b, b0) != train_bias
    assert torch.equal(res.u, u0) != train_second_layer
    assert torch.equal(res.c, c0) != train_output_bias


@pytest.mark.parametrize("mode,backend", [("span", "torch"), ("subspace", "torch"), ("subspace", "fused")])
def test_long_weight_decay_run_to_the_stationary_limit_stays_exact(mode, backend):
    sub, X, y, members = _problem(120, E=2)
    kw = dict(lr=0.2, max_steps=1500, weight_decay=0.05)
    refs = [ol.train(p, X, y, **kw) for p in members]
    _assert_same(train_ensemble(members, X, y, sub=sub, mode=mode, backend=backend, **kw), refs)


def test_members_with_their_own_data_and_hyperparameters_equal_individual_runs():
    d, ell, m, n, E = 20, 10, 12, 9, 6
    sub = ol.random_subspace(d, ell, seed=130)
    Xs = torch.stack([ol.sample_on_subspace(sub, n, seed=131 + e) for e in range(E)])
    ys = torch.stack([ol.random_labels(n, seed=141 + e) for e in range(E)])
    members = [ol.init_network(d, m, seed=151 + e) for e in range(E)]
    lrs = [0.1, 0.2, 0.3, 0.1, 0.2, 0.3]
    wds = [0.0, 0.01, 0.0, 0.03, 0.0, 0.01]
    targets = [0.5, 1.0, 1.5, 0.5, 1.0, 1.5]
    refs = [ol.train(members[e], Xs[e], ys[e], lr=lrs[e], weight_decay=wds[e], target_margin=targets[e],
                     max_steps=400) for e in range(E)]
    for mode, backend in PATHS:
        res = train_ensemble(members, Xs, ys, lr=lrs, weight_decay=wds, target_margin=targets, max_steps=400,
                             sub=sub, mode=mode, backend=backend)
        _assert_same(res, refs)


def test_each_member_stops_at_its_own_first_iterate_reaching_the_target():
    sub, X, y, members = _problem(160, E=8)
    res = train_ensemble(members, X, y, lr=0.3, max_steps=2000, target_margin=1.5)
    assert len(set(res.steps.tolist())) > 1  # the members stop at different steps
    for e in range(len(members)):
        k = int(res.steps[e])
        assert res.reached[e] and res.final_margin[e] >= 1.5
        assert ol.train_margin(res.params(e), X, y) >= 1.5
        before = train_ensemble([members[e]], X, y, lr=0.3, max_steps=k - 1, target_margin=1.5)
        assert not before.reached[0] and before.final_margin[0] < 1.5


def test_a_member_that_runs_out_of_budget_is_reported_as_not_reached():
    sub, X, y, members = _problem(170, E=3)
    res = train_ensemble(members, X, y, lr=0.1, max_steps=5, target_margin=50.0)
    assert res.steps.tolist() == [5, 5, 5]
    assert not bool(res.reached.any())


def test_zero_steps_returns_the_initial_parameters():
    sub, X, y, members = _problem(180)
    W0, b0, u0, c0 = stack_params(members)
    for mode, backend in PATHS:
        res = train_ensemble(members, X, y, lr=0.1, max_steps=0, sub=sub, mode=mode, backend=backend)
        assert res.steps.tolist() == [0] * len(members)
        assert float((res.W - W0).abs().max()) <= 1e-14 and torch.equal(res.u, u0)


@pytest.mark.parametrize("backend", ["torch", "fused"])
@pytest.mark.parametrize("optimizer", ["gd", "momentum"])
def test_the_orthogonal_part_is_scaled_by_the_exact_perp_factor(optimizer, backend):
    sub, X, y, members = _problem(190)
    res = train_ensemble(members, X, y, lr=0.2, max_steps=150, weight_decay=0.05, optimizer=optimizer,
                         momentum=0.5, sub=sub, backend=backend)
    for e, p in enumerate(members):
        a = float(res.perp_factor[e])
        lhs = ol.P_perp(sub, res.W[e])
        assert float((lhs - a * ol.P_perp(sub, p.W)).abs().max()) <= 1e-13
    if optimizer == "gd":
        assert torch.equal(res.perp_factor, res.decay_factor)
        assert float(res.decay_factor[0]) == pytest.approx((1 - 0.2 * 0.05) ** 150, rel=1e-12)
    else:  # heavy ball on the perp part: c <- mu c + lam a, a <- a - eta c
        a, c = 1.0, 0.0
        for _ in range(150):
            c = 0.5 * c + 0.05 * a
            a = a - 0.2 * c
        assert float(res.perp_factor[0]) == pytest.approx(a, rel=1e-12)


def test_auto_mode_picks_the_cheapest_coordinates_for_the_torch_backend():
    sub, X, y, members = _problem(200, d=24, ell=12, n=10)
    st = {}
    train_ensemble(members, X, y, lr=0.1, max_steps=2, sub=sub, stats=st, backend="torch")
    assert st["mode"] == "span"  # n = 10 < 2 (d - ell) = 24
    sub2 = ol.random_subspace(24, 20, seed=201)  # dim P = 4
    X2 = ol.sample_on_subspace(sub2, 30, seed=202)
    y2 = ol.random_labels(30, seed=203)
    st = {}
    train_ensemble(members, X2, y2, lr=0.1, max_steps=2, sub=sub2, stats=st, backend="torch")
    assert st["mode"] == "subspace"  # 2 (d - ell) = 8 < n = 30
    X3 = torch.randn(60, 24, generator=torch.Generator().manual_seed(204), dtype=torch.float64)
    st = {}
    train_ensemble(members, X3, ol.random_labels(60, seed=205), lr=0.1, max_steps=2, stats=st, backend="torch")
    assert st["mode"] == "full"  # no subspace and 2 d = 48 < n = 60


def test_stats_record_every_matrix_product():
    sub, X, y, members = _problem(210, E=3)
    st = {}
    res = train_ensemble(members, X, y, lr=0.1, max_steps=7, mode="span", stats=st)
    assert st["iterations"] == 8  # 7 updates and the final check
    m, n, d = 16, 10, 24
    # the Gram step (m x n x n per member) every update, the output u^T relu(Z) every iteration,
    # Z(0) and W(T) once
    assert st["matmuls"][(3, m, n, n)] == 7
    assert st["matmuls"][(3, 1, m, n)] == 8
    assert st["matmuls"][(1, 3 * m, d, n)] == 1 and st["matmuls"][(1, 3 * m, n, d)] == 1
    assert isinstance(res, EnsembleResult) and len(res) == 3


def test_auto_backend_is_fused_for_small_float64_cpu_problems_and_torch_otherwise():
    sub, X, y, members = _problem(205)
    st = {}
    train_ensemble(members, X, y, lr=0.1, max_steps=2, sub=sub, stats=st)
    assert st["backend"] == "fused" and st["mode"] == "subspace"  # dim P = 12 < d = 24
    st = {}
    train_ensemble(members, X, y, lr=0.1, max_steps=2, stats=st)
    assert st["backend"] == "fused" and st["mode"] == "full"  # no subspace given
    for over in (dict(dtype=torch.float32), dict(mode="span")):
        st = {}
        train_ensemble(members, X, y, lr=0.1, max_steps=2, sub=sub, stats=st, **over)
        assert st.get("backend", "torch") == "torch", over
    big = [ol.init_network(600, 400, seed=206)]
    sub_big = ol.random_subspace(600, 100, seed=207)
    Xb = ol.sample_on_subspace(sub_big, 50, seed=208)
    st = {}
    train_ensemble(big, Xb, ol.random_labels(50, seed=209), lr=0.1, max_steps=1, sub=sub_big, stats=st)
    assert st.get("backend", "torch") == "torch"  # m n k = 400 * 50 * 500 multiply-adds per product


def test_fused_stats_count_one_forward_per_evaluated_iterate_and_one_gradient_per_update():
    sub, X, y, members = _problem(207, E=5)
    st = {}
    res = train_ensemble(members, X, y, lr=0.3, max_steps=2000, target_margin=1.5, sub=sub, backend="fused",
                         stats=st)
    m, n, k = 16, 10, 12
    assert len(set(res.steps.tolist())) > 1
    fwd = sum(b * c for (b, M, K, N), c in st["matmuls"].items() if (M, K, N) == (m, k, n))
    grad = sum(b * c for (b, M, K, N), c in st["matmuls"].items() if (M, K, N) == (m, n, k))
    assert fwd == int(res.steps.sum()) + 5 and grad == int(res.steps.sum())


def test_fused_results_do_not_depend_on_the_number_of_threads():
    sub, X, y, members = _problem(208, E=5)
    kw = dict(lr=0.3, max_steps=500, target_margin=1.5, sub=sub, backend="fused")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = train_ensemble(members, X, y, **kw)
        torch.set_num_threads(2)
        two = train_ensemble(members, X, y, **kw)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one.W, two.W) and torch.equal(one.steps, two.steps)


def test_float32_option_trains_in_float32_and_agrees_with_float64():
    sub, X, y, members = _problem(220)
    kw = dict(lr=0.2, max_steps=300, target_margin=1.0)
    r64 = train_ensemble(members, X, y, **kw)
    r32 = train_ensemble(members, X, y, dtype=torch.float32, **kw)
    assert r32.W.dtype == torch.float32 and r32.b.dtype == torch.float32
    assert torch.equal(r32.steps, r64.steps)
    assert float((r32.W.double() - r64.W).abs().max() / r64.W.abs().max()) < 1e-4


def test_results_come_back_on_the_members_device_and_train_on_cpu_when_asked():
    sub, X, y, members = _problem(230, E=2)
    res = train_ensemble(members, X, y, lr=0.1, max_steps=3, device="cpu")
    assert res.W.device == members[0].W.device
    res_auto = train_ensemble(members, X, y, lr=0.1, max_steps=3, device="auto")
    assert float((res_auto.W - res.W).abs().max()) <= 1e-12


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    sub, X, y, members = _problem(240)
    kw = dict(lr=0.2, max_steps=300, target_margin=1.0, weight_decay=0.01)
    cpu = train_ensemble(members, X, y, **kw)
    gpu = train_ensemble(members, X, y, device="cuda", **kw)
    assert torch.equal(cpu.steps, gpu.steps)
    assert float((cpu.W - gpu.W).abs().max()) <= 1e-10


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_asking_for_cuda_without_a_gpu_is_a_value_error():
    sub, X, y, members = _problem(250, E=1)
    with pytest.raises(ValueError, match="device"):
        train_ensemble(members, X, y, lr=0.1, max_steps=1, device="cuda")


def test_an_overflowing_run_raises_floating_point_error_instead_of_returning_nan():
    sub, X, y, members = _problem(260, E=2)
    with pytest.raises(FloatingPointError, match="member 0"):
        train_ensemble(members, X, y, lr=1.7e308, max_steps=5, mode="span")


@pytest.mark.parametrize("mode,backend", [("full", "torch"), ("full", "fused")])
def test_a_run_whose_loss_becomes_nan_raises_like_train(mode, backend):
    sub, X, y, members = _problem(261, E=2)
    with pytest.raises(FloatingPointError, match="diverged"):
        ol.train(members[0], X * 1e300, y, lr=1e10, max_steps=5)
    with pytest.raises(FloatingPointError, match="member 0"):
        train_ensemble(members, X * 1e300, y, lr=1e10, max_steps=5, mode=mode, backend=backend)


# ------------------------------------------------------------------------------------------ bad inputs

def _bad(**over):
    sub, X, y, members = _problem(300, E=2)
    kw = dict(members=members, X=X, y=y, lr=0.1, max_steps=3, sub=sub)
    kw.update(over)
    members = kw.pop("members")
    X = kw.pop("X")
    y = kw.pop("y")
    return lambda: train_ensemble(members, X, y, **kw)


def test_members_of_different_shapes_are_rejected():
    sub, X, y, members = _problem(310, E=2)
    other = ol.init_network(24, 17, seed=1)
    with pytest.raises(ValueError, match="members"):
        train_ensemble(members + [other], X, y, lr=0.1, max_steps=1)
    with pytest.raises(ValueError, match="members"):
        train_ensemble([], X, y, lr=0.1, max_steps=1)
    with pytest.raises(TypeError, match=r"members\[0\]"):
        train_ensemble(["not params"], X, y, lr=0.1, max_steps=1)


def test_non_finite_members_are_rejected():
    sub, X, y, members = _problem(320, E=2)
    W = members[0].W.clone()
    W[0, 0] = float("nan")
    with pytest.raises(ValueError, match="members"):
        train_ensemble([members[0].replace(W=W), members[1]], X, y, lr=0.1, max_steps=1)


@pytest.mark.parametrize("over,name", [
    ({"X": torch.zeros(10, 23, dtype=torch.float64)}, "X"),
    ({"X": torch.zeros(3, 10, 24, dtype=torch.float64)}, "X"),
    ({"y": torch.ones(9, dtype=torch.float64)}, "y"),
    ({"y": torch.zeros(10, dtype=torch.float64)}, "y"),
    ({"optimizer": "adam"}, "optimizer"),
    ({"mode": "fast"}, "mode"),
    ({"backend": "numba"}, "backend"),
    ({"backend": "fused", "dtype": torch.float32}, "dtype"),
    ({"backend": "fused", "mode": "span"}, "span"),
    ({"lr": -0.1}, "lr"),
    ({"lr": [0.1, 0.2, 0.3]}, "lr"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"momentum": 1.0}, "momentum"),
    ({"max_steps": -1}, "max_steps"),
    ({"target_margin": [1.0]}, "target_margin"),
    ({"dtype": torch.float16}, "dtype"),
    ({"device": "tpu"}, "device"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(over, name):
    with pytest.raises(ValueError, match=name):
        _bad(**over)()


def test_a_subspace_of_the_wrong_dimension_is_rejected():
    with pytest.raises(ValueError, match="sub"):
        _bad(sub=ol.random_subspace(30, 15, seed=1))()
    with pytest.raises(TypeError, match="sub"):
        _bad(sub="P")()


def test_data_off_the_subspace_is_rejected_when_sub_is_given():
    sub, X, y, members = _problem(330, E=2)
    X_off = X + 1e-3 * sub.perp_basis[:, 0]
    with pytest.raises(ValueError, match="X"):
        train_ensemble(members, X_off, y, lr=0.1, max_steps=1, sub=sub)
    # without sub the same data train fine (the span coordinates need no subspace)
    res = train_ensemble(members, X_off, y, lr=0.1, max_steps=3)
    assert res.steps.tolist() == [3, 3]


def test_subspace_mode_needs_sub():
    with pytest.raises(ValueError, match="sub"):
        _bad(sub=None, mode="subspace")()


def test_non_tensor_labels_are_a_type_error():
    with pytest.raises(TypeError, match="y"):
        _bad(y=[1, -1] * 5)()


@pytest.mark.parametrize("backend", ["torch", "fused"])
def test_train_result_of_a_member_matches_what_train_returns(backend):
    sub, X, y, members = _problem(340, E=3)
    kw = dict(lr=0.3, max_steps=400, target_margin=1.5, weight_decay=0.01)
    ens = train_ensemble(members, X, y, backend=backend, **kw)
    for e, p in enumerate(members):
        got, ref = ens.train_result(e), ol.train(p, X, y, **kw)
        assert (got.steps, got.reached, got.target_margin, got.max_steps) == (ref.steps, ref.reached, 1.5, 400)
        assert torch.equal(got.initial.W, p.W) and float((got.params.W - ref.params.W).abs().max()) <= TOL
        assert got.decay_factor == ref.decay_factor and got.final_margin == pytest.approx(ref.final_margin, abs=TOL)
    with pytest.raises(ValueError, match="e"):
        ens.train_result(3)


@pytest.mark.parametrize("mode", ["full", "subspace"])
@pytest.mark.parametrize("optimizer,wd", CASES)
def test_norm_penalty_matches_train_in_full_and_subspace_coordinates(mode, optimizer, wd):
    sub, X, y, members = _problem(350, E=3)
    pens = [0.0, 0.05, 0.3]
    kw = dict(lr=0.2 if optimizer == "gd" else 0.05, max_steps=300, target_margin=1.0, optimizer=optimizer,
              weight_decay=wd, train_second_layer=True, train_output_bias=True)
    refs = [ol.train(p, X, y, norm_penalty=pen, **kw) for p, pen in zip(members, pens)]
    res = train_ensemble(members, X, y, sub=sub, mode=mode, norm_penalty=pens, **kw)
    assert res.mode == mode
    _assert_same(res, refs)


def test_norm_penalty_shrinks_the_orthogonal_part_by_the_reported_perp_factor():
    sub, X, y, members = _problem(355, E=2)
    res = train_ensemble(members, X, y, sub=sub, lr=0.2, max_steps=200, norm_penalty=0.2)
    for e, p in enumerate(members):
        a = float(res.perp_factor[e])
        assert 0.0 < a < float(res.decay_factor[e])  # the penalty shrinks Pi_perp W beyond weight decay
        assert float((ol.P_perp(sub, res.W[e]) - a * ol.P_perp(sub, p.W)).abs().max()) <= 1e-13


@pytest.mark.parametrize("mode", ["full", "subspace"])
def test_recorded_history_equals_the_history_train_records(mode):
    sub, X, y, members = _problem(360, E=3)
    kw = dict(lr=0.3, max_steps=[400, 250, 50], target_margin=1.5, record_every=7)
    res = train_ensemble(members, X, y, sub=sub, mode=mode, **kw)
    for e, p in enumerate(members):
        ref = ol.train(p, X, y, lr=0.3, max_steps=kw["max_steps"][e], target_margin=1.5, record_every=7)
        got = res.train_result(e)
        assert torch.equal(got.history_steps, ref.history_steps)
        assert float((got.loss_history - ref.loss_history).abs().max()) <= TOL
        assert float((got.margin_history - ref.margin_history).abs().max()) <= TOL


@pytest.mark.parametrize("mode,backend", PATHS)
def test_each_member_gets_its_own_budget(mode, backend):
    sub, X, y, members = _problem(370, E=4)
    budgets = [0, 5, 40, 17]
    res = train_ensemble(members, X, y, lr=0.1, max_steps=budgets, target_margin=50.0, sub=sub, mode=mode,
                         backend=backend)
    assert res.steps.tolist() == budgets and not bool(res.reached.any())
    for e, p in enumerate(members):
        ref = ol.train(p, X, y, lr=0.1, max_steps=budgets[e], target_margin=50.0)
        assert float((res.W[e] - ref.params.W).abs().max()) <= TOL
        assert res.train_result(e).max_steps == budgets[e]


@pytest.mark.parametrize("over,name", [
    ({"norm_penalty": 0.1, "backend": "torch"}, "norm_penalty"),
    ({"norm_penalty": 0.1, "mode": "span"}, "norm_penalty"),
    ({"record_every": 10, "dtype": torch.float32}, "record_every"),
    ({"record_every": 0}, "record_every"),
    ({"norm_penalty": -0.1}, "norm_penalty"),
    ({"max_steps": [3, 4, 5]}, "max_steps"),
    ({"max_steps": [3, -1]}, r"max_steps\[1\]"),
])
def test_fused_only_options_and_bad_budgets_raise_value_error_naming_the_argument(over, name):
    with pytest.raises(ValueError, match=name):
        _bad(**over)()
