"""Training: explicit gradients, optimisers, stopping, and the frozen-component lemma on fresh seeds."""
import pytest
import torch

import ortho_lib as ol


def _problem(seed, d=30, ell=15, m=40, n=20, offset=None):
    sub = ol.random_subspace(d, ell, seed=seed)
    X = ol.sample_on_subspace(sub, n, seed=seed + 1, offset=offset)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=seed + 2))
    return sub, X, y, ol.init_network(d, m, seed=seed + 3, bias="uniform")


def test_explicit_gradients_match_autograd():
    sub, X, y, p = _problem(10)
    loss, f, g = ol.loss_and_grads(p, X, y)
    leaves = {k: getattr(p, k).clone().requires_grad_(True) for k in "Wbuc"}
    q = ol.TwoLayerParams(**leaves)
    L = torch.nn.functional.softplus(-y * (torch.relu(X @ q.W.T + q.b) @ q.u + q.c)).mean()
    L.backward()
    assert torch.allclose(loss, L.detach())
    for k in "Wbuc":
        assert torch.allclose(g[k], leaves[k].grad, atol=1e-14), k


@pytest.mark.parametrize("opt,kw", [("gd", {"lr": 0.5}), ("sgd", {"lr": 0.2, "batch_size": 5}),
                                    ("momentum", {"lr": 0.1}), ("adam", {"lr": 0.01})])
def test_every_optimiser_reaches_the_target_margin(opt, kw):
    sub, X, y, p = _problem(20)
    r = ol.train(p, X, y, optimizer=opt, target_margin=0.5, max_steps=3000, **kw)
    assert r.reached and r.final_margin >= 0.5 and ol.train_margin(r.params, X, y) >= 0.5
    assert ol.accuracy(r.params, X, y) == 1.0


def test_training_stops_at_the_first_iterate_reaching_the_target():
    sub, X, y, p = _problem(21)
    r = ol.train(p, X, y, lr=0.5, target_margin=0.5, max_steps=3000)
    before = ol.train(p, X, y, lr=0.5, max_steps=r.steps - 1)
    assert before.final_margin < 0.5 <= r.final_margin
    assert r.history_steps[-1] == r.steps and len(r.margin_history) == r.steps + 1


@pytest.mark.parametrize("seed", range(30, 40))
@pytest.mark.parametrize("opt,kw", [("gd", {"lr": 0.5}), ("sgd", {"lr": 0.2, "batch_size": 5}),
                                    ("momentum", {"lr": 0.1})])
def test_orthogonal_part_is_frozen_on_fresh_seeds(seed, opt, kw):
    sub, X, y, p = _problem(seed)
    r = ol.train(p, X, y, optimizer=opt, max_steps=100, **kw)
    assert float(ol.P_perp(sub, r.params.W - p.W).abs().max()) < 1e-13
    assert float(ol.Pi_P(sub, r.params.W - p.W).abs().max()) > 1e-3


@pytest.mark.parametrize("seed", range(40, 45))
def test_adam_moves_the_orthogonal_part_on_a_random_subspace(seed):
    sub, X, y, p = _problem(seed)
    r = ol.train(p, X, y, optimizer="adam", lr=0.01, max_steps=20)
    assert float(ol.P_perp(sub, r.params.W - p.W).abs().max()) > 1e-4


@pytest.mark.parametrize("seed", range(50, 55))
def test_weight_decay_shrinks_the_orthogonal_part_exactly(seed):
    sub, X, y, p = _problem(seed)
    lam, eta, T = 0.01, 0.3, 150
    r = ol.train(p, X, y, lr=eta, max_steps=T, weight_decay=lam)
    assert abs(r.decay_factor - (1 - eta * lam) ** T) < 1e-12
    expected = (1 - eta * lam) ** T * ol.P_perp(sub, p.W)
    assert torch.allclose(ol.P_perp(sub, r.params.W), expected, atol=1e-13)


def test_affine_data_freezes_the_complement_of_span_P_c():
    sub = ol.random_subspace(20, 10, seed=60)
    c = 0.7 * ol.P_perp(sub, torch.randn(20, generator=torch.Generator().manual_seed(61), dtype=torch.float64))
    _, X, y, p = _problem(60, d=20, ell=10, offset=c)
    r = ol.train(p, X, y, lr=0.5, max_steps=100)
    big = ol.subspace_from_vectors(torch.cat([sub.basis.T, c[None]]))
    dW = r.params.W - p.W
    assert float(ol.P_perp(big, dW).abs().max()) < 1e-13
    assert float(ol.P_perp(sub, dW).abs().max()) > 1e-4


def test_unreached_target_ends_with_a_clear_report():
    sub, X, y, p = _problem(70)
    r = ol.train(p, X, y, lr=0.01, target_margin=100.0, max_steps=5)
    assert not r.reached and r.steps == 5
    assert "NOT reached within the budget of 5 steps" in r.summary()
    with pytest.raises(ol.MarginNotReached, match="NOT reached"):
        ol.train(p, X, y, lr=0.01, target_margin=100.0, max_steps=5, strict=True)


def test_norm_penalty_and_lr_schedule_run():
    sub, X, y, p = _problem(71)
    r = ol.train(p, X, y, lr=0.1, max_steps=10, norm_penalty=0.1, lr_schedule=lambda t, loss: 0.1 / (1 + t))
    assert r.steps == 10 and abs(r.lr_sum - sum(0.1 / (1 + t) for t in range(10))) < 1e-12


def test_trained_second_layer_moves_u():
    sub, X, y, p = _problem(72)
    r = ol.train(p, X, y, lr=0.5, max_steps=10, train_second_layer=True)
    assert not torch.equal(r.params.u, p.u)
    r2 = ol.train(p, X, y, lr=0.5, max_steps=10)
    assert torch.equal(r2.params.u, p.u)


def test_bad_training_arguments_are_named():
    sub, X, y, p = _problem(73)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        ol.train(p, X, y, lr=0.1, max_steps=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr must be > 0"):
        ol.train(p, X, y, lr=-0.1, max_steps=1)
    with pytest.raises(ValueError, match=r"y must contain only \+1 and -1"):
        ol.train(p, X, torch.zeros_like(y), lr=0.1, max_steps=1)
    with pytest.raises(ValueError, match="y must have length 20"):
        ol.train(p, X, y[:5], lr=0.1, max_steps=1)
    with pytest.raises(ValueError, match="X must have d = 30 columns"):
        ol.train(p, X[:, :5], y, lr=0.1, max_steps=1)
    with pytest.raises(ValueError, match="batch_size must be <= 20"):
        ol.train(p, X, y, lr=0.1, max_steps=1, optimizer="sgd", batch_size=50)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        ol.train(p, X, y, lr=0.1, max_steps=1, weight_decay=-1.0)
    with pytest.raises(ValueError, match="params.W contains non-finite"):
        ol.train(p.replace(W=p.W * float("nan")), X, y, lr=0.1, max_steps=1)
