"""The fast backends of ortho_lib.train: exact agreement with the reference loop (backend="reference") in
every coordinate system of the batched tensor program and of the compiled (fused) kernels, batching,
per-member stopping and budgets, the exact perp factor, the norm penalty and the recorded history,
results independent of the fused backend's thread count, float32, devices, backend selection, and bad
inputs."""
import pytest
import torch

import ortho_lib as ol
from ortho_lib import _fused

TOL = 1e-12  # float64: the backends and the reference differ only by rounding (observed ~1e-15)


def _problem(seed, d=24, ell=12, m=16, n=10, E=4, bias="uniform"):
    sub = ol.random_subspace(d, ell, seed=seed)
    X = ol.sample_on_subspace(sub, n, seed=seed + 1)
    y = ol.random_labels(n, seed=seed + 2)
    members = [ol.init_network(d, m, seed=seed + 10 + e, bias=bias, second_layer="gaussian") for e in range(E)]
    return sub, X, y, members


def _reference(members, X, y, configs):
    """The reference loop on each member alone (X, y shared or one per member; one config or one per member)."""
    if isinstance(configs, ol.TrainConfig):
        configs = [configs] * len(members)
    return [ol.train(p, X if X.ndim == 2 else X[e], y if y.ndim == 1 else y[e], configs[e], backend="reference")
            for e, p in enumerate(members)]


def _assert_same(res, refs, tol=TOL):
    for e, r in enumerate(refs):
        assert int(res.steps[e]) == r.steps, (e, int(res.steps[e]), r.steps)
        assert bool(res.reached[e]) == r.reached
        for k in ("W", "b", "u", "c"):
            diff = float((getattr(res.params, k)[e] - getattr(r.params, k)).abs().max())
            assert diff <= tol, (e, k, diff)
        assert abs(float(res.final_margin[e]) - r.final_margin) <= tol
        assert abs(float(res.final_loss[e]) - r.final_loss) <= tol
        assert abs(float(res.perp_factor[e]) - r.perp_factor) <= tol
        assert float(res.decay_factor[e]) == r.decay_factor
        assert float(res.lr_sum[e]) == r.lr_sum


def _trained(train_bias, train_second_layer, train_output_bias):
    return "W" + "b" * train_bias + "u" * train_second_layer + "c" * train_output_bias


CASES = [("gd", 0.0), ("gd", 0.02), ("momentum", 0.0), ("momentum", 0.02)]
# every implementation: (coordinates, backend)
PATHS = [("subspace", "batched"), ("span", "batched"), ("full", "batched"),
         ("subspace", "fused"), ("full", "fused"), ("span", "fused")]
FUSED = [p for p in PATHS if p[1] == "fused"]


@pytest.fixture
def workers():
    """Set the fused backend's thread count for one test (restored afterwards)."""
    before = _fused.WORKERS

    def set_(w):
        _fused.WORKERS = w

    yield set_
    _fused.WORKERS = before


@pytest.mark.parametrize("coordinates,backend", PATHS)
@pytest.mark.parametrize("optimizer,wd", CASES)
def test_reduced_training_equals_full_space_train_to_1e12(coordinates, backend, optimizer, wd):
    sub, X, y, members = _problem(100)
    cfg = ol.TrainConfig(lr=0.3 if optimizer == "gd" else 0.1, max_steps=300, target_margin=1.5,
                         optimizer=optimizer, weight_decay=wd)
    refs = _reference(members, X, y, cfg)
    st = {}
    res = ol.train(members, X, y, cfg, sub=sub, coordinates=coordinates, backend=backend, stats=st)
    assert res.coordinates == coordinates and res.backend == backend and st["backend"] == backend
    _assert_same(res, refs)


@pytest.mark.parametrize("train_bias,train_second_layer,train_output_bias",
                         [(False, False, False), (True, True, True), (False, True, False), (True, False, True)])
@pytest.mark.parametrize("coordinates,backend", [("subspace", "batched"), ("span", "batched"),
                                                 ("subspace", "fused"), ("span", "fused"), ("full", "fused")])
@pytest.mark.parametrize("optimizer", ["gd", "momentum"])
def test_which_layers_are_trained_matches_train(coordinates, backend, optimizer, train_bias, train_second_layer,
                                                train_output_bias):
    sub, X, y, members = _problem(110)
    cfg = ol.TrainConfig(lr=0.2, max_steps=200, target_margin=1.0, weight_decay=0.01, optimizer=optimizer,
                         trained=_trained(train_bias, train_second_layer, train_output_bias))
    refs = _reference(members, X, y, cfg)
    res = ol.train(members, X, y, cfg, sub=sub, coordinates=coordinates, backend=backend)
    _assert_same(res, refs)
    p0 = ol.TwoLayerParams.stack(members)
    assert torch.equal(res.params.b, p0.b) != train_bias
    assert torch.equal(res.params.u, p0.u) != train_second_layer
    assert torch.equal(res.params.c, p0.c) != train_output_bias


@pytest.mark.parametrize("coordinates,backend", [("span", "batched"), ("subspace", "batched"),
                                                 ("subspace", "fused"), ("span", "fused")])
def test_long_weight_decay_run_to_the_stationary_limit_stays_exact(coordinates, backend):
    sub, X, y, members = _problem(120, E=2)
    cfg = ol.TrainConfig(lr=0.2, max_steps=1500, weight_decay=0.05)
    refs = _reference(members, X, y, cfg)
    _assert_same(ol.train(members, X, y, cfg, sub=sub, coordinates=coordinates, backend=backend), refs)


def test_members_with_their_own_data_and_hyperparameters_equal_individual_runs():
    d, ell, m, n, E = 20, 10, 12, 9, 6
    sub = ol.random_subspace(d, ell, seed=130)
    Xs = torch.stack([ol.sample_on_subspace(sub, n, seed=131 + e) for e in range(E)])
    ys = torch.stack([ol.random_labels(n, seed=141 + e) for e in range(E)])
    members = [ol.init_network(d, m, seed=151 + e) for e in range(E)]
    lrs = [0.1, 0.2, 0.3, 0.1, 0.2, 0.3]
    wds = [0.0, 0.01, 0.0, 0.03, 0.0, 0.01]
    targets = [0.5, 1.0, 1.5, 0.5, 1.0, 1.5]
    configs = [ol.TrainConfig(lr=lrs[e], weight_decay=wds[e], target_margin=targets[e], max_steps=400)
               for e in range(E)]
    refs = _reference(members, Xs, ys, configs)
    for coordinates, backend in PATHS:
        res = ol.train(members, Xs, ys, configs, sub=sub, coordinates=coordinates, backend=backend)
        _assert_same(res, refs)


@pytest.mark.parametrize("backend", ["batched", "fused"])
def test_each_member_stops_at_its_own_first_iterate_reaching_the_target(backend):
    sub, X, y, members = _problem(160, E=8)
    cfg = ol.TrainConfig(lr=0.3, max_steps=2000, target_margin=1.5)
    res = ol.train(members, X, y, cfg, backend=backend)
    assert len(set(res.steps.tolist())) > 1  # the members stop at different steps
    for e in range(len(members)):
        k = int(res.steps[e])
        assert res.reached[e] and res.final_margin[e] >= 1.5
        assert ol.train_margin(res.params.member(e), X, y) >= 1.5
        before = ol.train(members[e], X, y, cfg.replace(max_steps=k - 1), backend=backend)
        assert not before.reached and before.final_margin < 1.5


@pytest.mark.parametrize("backend", ["batched", "fused"])
def test_a_member_that_runs_out_of_budget_is_reported_as_not_reached(backend):
    sub, X, y, members = _problem(170, E=3)
    res = ol.train(members, X, y, ol.TrainConfig(lr=0.1, max_steps=5, target_margin=50.0), backend=backend)
    assert res.steps.tolist() == [5, 5, 5]
    assert not bool(res.reached.any())


def test_zero_steps_returns_the_initial_parameters():
    sub, X, y, members = _problem(180)
    p0 = ol.TwoLayerParams.stack(members)
    for coordinates, backend in PATHS:
        res = ol.train(members, X, y, ol.TrainConfig(lr=0.1, max_steps=0), sub=sub, coordinates=coordinates,
                       backend=backend)
        assert res.steps.tolist() == [0] * len(members)
        assert float((res.params.W - p0.W).abs().max()) <= 1e-14 and torch.equal(res.params.u, p0.u)


@pytest.mark.parametrize("coordinates,backend", [("auto", "batched"), ("subspace", "fused"), ("span", "fused")])
@pytest.mark.parametrize("optimizer", ["gd", "momentum"])
def test_the_orthogonal_part_is_scaled_by_the_exact_perp_factor(optimizer, coordinates, backend):
    sub, X, y, members = _problem(190)
    cfg = ol.TrainConfig(lr=0.2, max_steps=150, weight_decay=0.05, optimizer=optimizer, momentum=0.5)
    res = ol.train(members, X, y, cfg, sub=sub, coordinates=coordinates, backend=backend)
    for e, p in enumerate(members):
        a = float(res.perp_factor[e])
        lhs = ol.P_perp(sub, res.params.W[e])
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


def test_auto_coordinates_of_the_batched_backend_are_the_cheapest():
    sub, X, y, members = _problem(200, d=24, ell=12, n=10)
    cfg = ol.TrainConfig(lr=0.1, max_steps=2)
    st = {}
    ol.train(members, X, y, cfg, sub=sub, stats=st, backend="batched")
    assert st["coordinates"] == "span"  # n = 10 < 2 (d - ell) = 24
    sub2 = ol.random_subspace(24, 20, seed=201)  # dim P = 4
    X2 = ol.sample_on_subspace(sub2, 30, seed=202)
    y2 = ol.random_labels(30, seed=203)
    st = {}
    ol.train(members, X2, y2, cfg, sub=sub2, stats=st, backend="batched")
    assert st["coordinates"] == "subspace"  # 2 (d - ell) = 8 < n = 30
    X3 = torch.randn(60, 24, generator=torch.Generator().manual_seed(204), dtype=torch.float64)
    st = {}
    ol.train(members, X3, ol.random_labels(60, seed=205), cfg, stats=st, backend="batched")
    assert st["coordinates"] == "full"  # no subspace and 2 d = 48 < n = 60


def test_auto_coordinates_of_the_fused_backend_follow_the_cost_per_step():
    assert _fused.choose_coordinates("auto", 100, 2, 7, None, True) == "full"        # Figure 2: k = 2, n = 7
    assert _fused.choose_coordinates("auto", 1000, 1000, 100, 500, True) == "span"   # the paper's scale
    assert _fused.choose_coordinates("auto", 50, 24, 30, 4, True) == "subspace"      # dim P = 4 < n
    assert _fused.choose_coordinates("subspace", 1000, 1000, 100, 500, True) == "subspace"  # asked for


def test_stats_record_every_matrix_product_of_the_batched_backend():
    sub, X, y, members = _problem(210, E=3)
    st = {}
    res = ol.train(members, X, y, ol.TrainConfig(lr=0.1, max_steps=7), coordinates="span", backend="batched",
                   stats=st)
    assert st["iterations"] == 8  # 7 updates and the final check
    m, n, d = 16, 10, 24
    # the Gram step (m x n x n per member) every update, the output u^T relu(Z) every iteration,
    # Z(0) once (one flat product) and W(T) once (one product per member)
    assert st["matmuls"][(3, m, n, n)] == 7
    assert st["matmuls"][(3, 1, m, n)] == 8
    assert st["matmuls"][(1, 3 * m, d, n)] == 1 and st["matmuls"][(3, m, n, d)] == 1
    assert len(res) == 3


def test_fused_stats_count_the_products_of_the_steps_made():
    sub, X, y, members = _problem(207, E=5)
    st = {}
    res = ol.train(members, X, y, ol.TrainConfig(lr=0.3, max_steps=2000, target_margin=1.5), sub=sub,
                   backend="fused", coordinates="subspace", stats=st)
    m, n, k = 16, 10, 12
    assert len(set(res.steps.tolist())) > 1
    assert st["coordinates"] == "subspace" and st["macs"] == int(res.steps.sum()) * 2 * m * n * k
    assert st["iterations"] == int(res.steps.max()) + 1 and st["time_kernel"] >= 0.0
    st = {}
    res = ol.train(members, X, y, ol.TrainConfig(lr=0.3, max_steps=50), backend="fused", coordinates="span", stats=st)
    assert st["macs"] == int(res.steps.sum()) * m * n * n


def test_auto_backend_is_the_fused_kernel_on_the_cpu_whatever_the_size():
    sub, X, y, members = _problem(205)
    cfg = ol.TrainConfig(lr=0.1, max_steps=2)
    for kw in (dict(sub=sub), dict(), dict(dtype=torch.float32), dict(coordinates="span"),
               dict(sub=sub, coordinates="subspace")):
        assert ol.train(members, X, y, cfg, **kw).backend == "fused", kw
    big = [ol.init_network(600, 400, seed=206)]
    sub_big = ol.random_subspace(600, 100, seed=207)
    Xb = ol.sample_on_subspace(sub_big, 50, seed=208)
    st = {}
    res = ol.train(big, Xb, ol.random_labels(50, seed=209), cfg, sub=sub_big, stats=st)
    assert res.backend == "fused" and res.coordinates == "span"  # m n^2 = 1e6 < 2 m n dim P = 2e7
    for ref_only in (dict(optimizer="sgd"), dict(optimizer="adam"), dict(batch_size=5),
                     dict(schedule="max_margin"), dict(schedule=lambda t, L: 1.0)):
        assert ol.train(members, X, y, cfg.replace(**ref_only)).backend == "reference", ref_only
    assert ol.train(members, X, y, cfg.replace(record_every=1, record_params=True)).backend == "fused"


def test_auto_backend_without_numba_is_the_batched_program_or_the_reference(monkeypatch):
    import ortho_lib.training as training

    sub, X, y, members = _problem(206)
    monkeypatch.setattr(training, "_fused_available", lambda: False)
    cfg = ol.TrainConfig(lr=0.1, max_steps=2)
    assert ol.train(members, X, y, cfg).backend == "batched"
    assert ol.train(members, X, y, cfg.replace(norm_penalty=0.1)).backend == "reference"
    assert ol.train(members, X, y, cfg.replace(record_every=1)).backend == "reference"
    with pytest.raises(ValueError, match="numba"):
        ol.train(members, X, y, cfg, backend="fused")


@pytest.mark.parametrize("coordinates", ["full", "subspace", "span"])
def test_fused_results_do_not_depend_on_the_number_of_threads(coordinates, workers):
    sub, X, y, members = _problem(208, E=7)
    configs = [ol.TrainConfig(lr=0.3, max_steps=[500, 30, 200, 500, 0, 80, 300][e], target_margin=1.5,
                              weight_decay=0.01 * (e % 2), record_every=9) for e in range(7)]
    runs = []
    for w in (1, 2, 3):
        workers(w)
        st = {}
        runs.append(ol.train(members, X, y, configs, sub=sub, coordinates=coordinates, backend="fused", stats=st))
        assert st["workers"] == w
    one = runs[0]
    for other in runs[1:]:
        for k in "Wbuc":
            assert torch.equal(getattr(one.params, k), getattr(other.params, k)), k
        assert torch.equal(one.steps, other.steps) and torch.equal(one.final_loss, other.final_loss)
        assert torch.equal(one.perp_factor, other.perp_factor)
        for h1, h2 in zip(one.history, other.history):
            assert torch.equal(h1.norm_sq, h2.norm_sq) and torch.equal(h1.log_loss, h2.log_loss)


def test_fused_threads_take_the_longest_budgets_first():
    chunks = _fused._schedule(torch.tensor([5, 40, 0, 40, 17]).numpy(), workers=2)
    assert [int(e) for ch in chunks for e in ch] == [1, 3, 4, 0, 2]


@pytest.mark.parametrize("backend,coordinates", [("batched", "auto"), ("fused", "span"), ("fused", "subspace"),
                                                 ("fused", "full")])
def test_float32_option_trains_in_float32_and_agrees_with_float64(backend, coordinates):
    sub, X, y, members = _problem(220)
    cfg = ol.TrainConfig(lr=0.2, max_steps=300, target_margin=1.0)
    kw = dict(sub=sub, backend=backend, coordinates=coordinates)
    r64 = ol.train(members, X, y, cfg, **kw)
    r32 = ol.train(members, X, y, cfg, dtype=torch.float32, **kw)
    assert r32.params.W.dtype == torch.float32 and r32.params.b.dtype == torch.float32
    assert torch.equal(r32.steps, r64.steps)
    assert float((r32.params.W - r64.params.W).abs().max() / r64.params.W.abs().max()) < 1e-4
    m32 = [p.replace(**{k: getattr(p, k).float() for k in "Wbu"}, c=p.c.float()) for p in members]
    r = ol.train(m32, X.float(), y.float(), cfg, **kw)
    assert r.params.W.dtype == torch.float32 and torch.equal(r.steps, r64.steps)


def test_results_come_back_on_the_members_device_and_train_on_cpu_when_asked():
    sub, X, y, members = _problem(230, E=2)
    cfg = ol.TrainConfig(lr=0.1, max_steps=3)
    res = ol.train(members, X, y, cfg, device="cpu")
    assert res.params.W.device == members[0].W.device
    res_auto = ol.train(members, X, y, cfg, device="auto", backend="batched")
    assert float((res_auto.params.W - res.params.W).abs().max()) <= 1e-12


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    sub, X, y, members = _problem(240)
    cfg = ol.TrainConfig(lr=0.2, max_steps=300, target_margin=1.0, weight_decay=0.01)
    cpu = ol.train(members, X, y, cfg)
    gpu = ol.train(members, X, y, cfg, device="cuda")
    assert gpu.backend == "batched" and torch.equal(cpu.steps, gpu.steps)
    assert float((cpu.params.W - gpu.params.W).abs().max()) <= 1e-10


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_asking_for_cuda_without_a_gpu_is_a_value_error():
    sub, X, y, members = _problem(250, E=1)
    with pytest.raises(ValueError, match="device"):
        ol.train(members, X, y, ol.TrainConfig(lr=0.1, max_steps=1), device="cuda")
    with pytest.raises(ValueError, match="fused"):
        ol.train(members, X, y, ol.TrainConfig(lr=0.1, max_steps=1), device="cuda", backend="fused")


@pytest.mark.parametrize("backend", ["batched", "fused"])
def test_a_run_near_overflow_returns_the_reference_or_raises_but_never_returns_nan(backend):
    sub, X, y, members = _problem(260, E=2)
    cfg = ol.TrainConfig(lr=1.7e308, max_steps=5)
    ref = _reference(members, X, y, cfg)  # finite: the weights reach about 1e307
    try:
        res = ol.train(members, X, y, cfg, coordinates="span", backend=backend)
    except FloatingPointError as err:  # the batched program scales K by -lr g: that product overflows
        assert backend == "batched" and "member 0" in str(err)
        return
    for e, r in enumerate(ref):
        assert int(res.steps[e]) == r.steps
        for k in "Wbuc":
            assert torch.allclose(getattr(res.params, k)[e], getattr(r.params, k), rtol=1e-12, atol=0.0), k


@pytest.mark.parametrize("coordinates,backend", [("full", "batched"), ("full", "fused"), ("span", "fused")])
def test_a_run_whose_loss_becomes_nan_raises_like_train(coordinates, backend):
    sub, X, y, members = _problem(261, E=2)
    cfg = ol.TrainConfig(lr=1e10, max_steps=5)
    with pytest.raises(FloatingPointError, match="diverged"):
        ol.train(members[0], X * 1e300, y, cfg, backend="reference")
    with pytest.raises(FloatingPointError, match="member 0"):
        ol.train(members, X * 1e300, y, cfg, coordinates=coordinates, backend=backend)


# ------------------------------------------------------------------------------------------ bad inputs

def _bad(**over):
    sub, X, y, members = _problem(300, E=2)
    kw = dict(members=members, X=X, y=y, config=dict(lr=0.1, max_steps=3), sub=sub)
    config = over.pop("config", {})
    if isinstance(config, dict):
        kw["config"].update(config)
    else:  # a list of configs, used as given
        kw["config"] = config
    kw.update(over)
    members, X, y, config = kw.pop("members"), kw.pop("X"), kw.pop("y"), kw.pop("config")
    return lambda: ol.train(members, X, y, ol.TrainConfig(**config) if isinstance(config, dict) else config, **kw)


def test_members_of_different_shapes_are_rejected():
    sub, X, y, members = _problem(310, E=2)
    other = ol.init_network(24, 17, seed=1)
    cfg = ol.TrainConfig(lr=0.1, max_steps=1)
    with pytest.raises(ValueError):
        ol.train(members + [other], X, y, cfg)
    with pytest.raises((TypeError, ValueError)):
        ol.train([], X, y, cfg)
    with pytest.raises(TypeError):
        ol.train(["not params"], X, y, cfg)


def test_non_finite_members_are_rejected():
    sub, X, y, members = _problem(320, E=2)
    W = members[0].W.clone()
    W[0, 0] = float("nan")
    with pytest.raises(ValueError):
        ol.train([ol.TwoLayerParams(W, members[0].b, members[0].u, members[0].c), members[1]], X, y,
                 ol.TrainConfig(lr=0.1, max_steps=1))


@pytest.mark.parametrize("over,name", [
    ({"X": torch.zeros(10, 23, dtype=torch.float64)}, "X"),
    ({"X": torch.zeros(3, 10, 24, dtype=torch.float64)}, "X"),
    ({"y": torch.ones(9, dtype=torch.float64)}, "y"),
    ({"y": torch.zeros(10, dtype=torch.float64)}, "y"),
    ({"config": {"optimizer": "adam"}, "backend": "fused"}, "optimizer"),
    ({"config": {"optimizer": "sgd"}, "backend": "batched"}, "optimizer"),
    ({"coordinates": "fast"}, "coordinates"),
    ({"backend": "numba"}, "backend"),
    ({"backend": "reference", "coordinates": "span"}, "reference"),
    ({"config": {"lr": -0.1}}, "lr"),
    ({"config": [ol.TrainConfig(lr=0.1, max_steps=1)] * 3}, "config"),
    ({"config": {"weight_decay": -1.0}}, "weight_decay"),
    ({"config": {"momentum": 1.0}}, "momentum"),
    ({"config": {"max_steps": -1}}, "max_steps"),
    ({"config": [ol.TrainConfig(lr=0.1, max_steps=1, target_margin=1.0), ol.TrainConfig(lr=0.1, max_steps=1)]},
     "target_margin"),
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
    cfg = ol.TrainConfig(lr=0.1, max_steps=1)
    with pytest.raises(ValueError, match="X"):
        ol.train(members, X_off, y, cfg, sub=sub)
    # without sub the same data train fine (the span coordinates need no subspace)
    res = ol.train(members, X_off, y, cfg.replace(max_steps=3))
    assert res.steps.tolist() == [3, 3]


def test_subspace_coordinates_need_sub():
    with pytest.raises(ValueError, match="sub"):
        _bad(sub=None, coordinates="subspace")()


def test_non_tensor_labels_are_a_type_error():
    with pytest.raises(TypeError, match="y"):
        _bad(y=[1, -1] * 5)()


@pytest.mark.parametrize("backend", ["batched", "fused"])
def test_the_result_of_a_member_matches_what_train_returns(backend):
    sub, X, y, members = _problem(340, E=3)
    cfg = ol.TrainConfig(lr=0.3, max_steps=400, target_margin=1.5, weight_decay=0.01)
    ens = ol.train(members, X, y, cfg, backend=backend)
    for e, p in enumerate(members):
        got, ref = ens.member(e), ol.train(p, X, y, cfg, backend="reference")
        assert (got.steps, got.reached, got.config.target_margin, got.config.max_steps) == (ref.steps, ref.reached, 1.5, 400)
        assert torch.equal(got.initial.W, p.W) and float((got.params.W - ref.params.W).abs().max()) <= TOL
        assert got.decay_factor == ref.decay_factor and got.final_margin == pytest.approx(ref.final_margin, abs=TOL)
    with pytest.raises(ValueError, match="e"):
        ens.member(3)


@pytest.mark.parametrize("coordinates", ["full", "subspace", "span"])
@pytest.mark.parametrize("optimizer,wd", CASES)
def test_norm_penalty_matches_train_in_every_fused_coordinate_system(coordinates, optimizer, wd):
    sub, X, y, members = _problem(350, E=3)
    pens = [0.0, 0.05, 0.3]
    base = ol.TrainConfig(lr=0.2 if optimizer == "gd" else 0.05, max_steps=300, target_margin=1.0,
                          optimizer=optimizer, weight_decay=wd, trained="Wbuc")
    configs = [base.replace(norm_penalty=pen) for pen in pens]
    refs = _reference(members, X, y, configs)
    res = ol.train(members, X, y, configs, sub=sub, coordinates=coordinates)
    assert res.coordinates == coordinates and res.backend == "fused"
    _assert_same(res, refs)


@pytest.mark.parametrize("coordinates", ["subspace", "span"])
def test_norm_penalty_shrinks_the_orthogonal_part_by_the_reported_perp_factor(coordinates):
    sub, X, y, members = _problem(355, E=2)
    res = ol.train(members, X, y, ol.TrainConfig(lr=0.2, max_steps=200, norm_penalty=0.2), sub=sub,
                   coordinates=coordinates)
    for e, p in enumerate(members):
        a = float(res.perp_factor[e])
        assert 0.0 < a < float(res.decay_factor[e])  # the penalty shrinks Pi_perp W beyond weight decay
        assert float((ol.P_perp(sub, res.params.W[e]) - a * ol.P_perp(sub, p.W)).abs().max()) <= 1e-13


@pytest.mark.parametrize("coordinates", ["full", "subspace", "span"])
@pytest.mark.parametrize("optimizer,trained", [("gd", "Wb"), ("momentum", "Wbuc"), ("gd", "Wu")])
def test_recorded_history_equals_the_history_train_records(coordinates, optimizer, trained):
    sub, X, y, members = _problem(360, E=3)
    budgets = [400, 250, 50]
    configs = [ol.TrainConfig(lr=0.3 if optimizer == "gd" else 0.1, max_steps=T, target_margin=1.5, record_every=7,
                              optimizer=optimizer, weight_decay=0.01, trained=trained) for T in budgets]
    res = ol.train(members, X, y, configs, sub=sub, coordinates=coordinates)
    assert res.backend == "fused"
    for e, ref in enumerate(_reference(members, X, y, configs)):
        got, want = res.history[e], ref.history
        assert torch.equal(got.steps, want.steps)
        for k in ("loss", "log_loss", "margin"):
            assert float((getattr(got, k) - getattr(want, k)).abs().max()) <= TOL, k
        assert float(((got.norm_sq - want.norm_sq) / want.norm_sq).abs().max()) <= TOL


@pytest.mark.parametrize("coordinates", ["full", "subspace", "span"])
@pytest.mark.parametrize("optimizer,trained,wd", [("gd", "Wb", 0.02), ("momentum", "Wbuc", 0.01), ("gd", "W", 0.0)])
def test_recorded_parameters_equal_those_train_records(coordinates, optimizer, trained, wd):
    sub, X, y, members = _problem(365, E=3)
    configs = [ol.TrainConfig(lr=0.3 if optimizer == "gd" else 0.1, max_steps=T, target_margin=1.5, record_every=9,
                              record_params=True, optimizer=optimizer, weight_decay=wd, trained=trained)
               for T in (300, 120, 7)]
    res = ol.train(members, X, y, configs, sub=sub, coordinates=coordinates)
    assert res.backend == "fused" and res.coordinates == coordinates
    for e, ref in enumerate(_reference(members, X, y, configs)):
        got, want = res.history[e], ref.history
        assert torch.equal(got.steps, want.steps) and len(got.params) == len(want.params)
        for p, q in zip(got.params, want.params):
            assert not p.is_stack
            for k in "Wbuc":
                assert float((getattr(p, k) - getattr(q, k)).abs().max()) <= TOL, k
        assert torch.equal(got.params[-1].W, res.params.W[e]) or \
            float((got.params[-1].W - res.params.W[e]).abs().max()) <= 1e-15


@pytest.mark.parametrize("coordinates,backend", PATHS)
def test_each_member_gets_its_own_budget(coordinates, backend):
    sub, X, y, members = _problem(370, E=4)
    budgets = [0, 5, 40, 17]
    configs = [ol.TrainConfig(lr=0.1, max_steps=T, target_margin=50.0) for T in budgets]
    res = ol.train(members, X, y, configs, sub=sub, coordinates=coordinates, backend=backend)
    assert res.steps.tolist() == budgets and not bool(res.reached.any())
    for e, ref in enumerate(_reference(members, X, y, configs)):
        assert float((res.params.W[e] - ref.params.W).abs().max()) <= TOL
        assert res.member(e).config.max_steps == budgets[e]


@pytest.mark.parametrize("over,name", [
    ({"config": {"norm_penalty": 0.1}, "backend": "batched"}, "norm_penalty"),
    ({"config": {"record_every": 10}, "backend": "batched"}, "record_every"),
    ({"config": {"record_every": 0}}, "record_every"),
    ({"config": {"norm_penalty": -0.1}}, "norm_penalty"),
    ({"config": {"record_every": 5, "record_params": True}, "backend": "batched"}, "record_params"),
])
def test_options_a_backend_lacks_and_bad_options_raise_value_error_naming_the_argument(over, name):
    with pytest.raises(ValueError, match=name):
        _bad(**over)()
