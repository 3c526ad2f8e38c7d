"""Training (ortho_lib.training): explicit gradients, optimisers, stopping, the frozen-component lemma on
fresh seeds, the exact perp factor, recorded histories and the max-margin schedule.

Everything here is deterministic (fixed seeds, exact identities checked to rounding error); the fresh-seed
checks of the frozen-component lemma cannot fail for a correct implementation.
"""
import math

import pytest
import torch

import ortho_lib as ol

F64 = torch.float64


def _problem(seed, d=30, ell=15, m=40, n=20, offset=None):
    sub = ol.random_subspace(d, ell, seed=seed)
    X = ol.sample_on_subspace(sub, n, seed=seed + 1, offset=offset)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=seed + 2))
    return sub, X, y, ol.init_network(d, m, seed=seed + 3, bias="uniform")


def test_explicit_gradients_match_autograd():
    """Contract of loss_and_grads: the hand-written gradients of the logistic loss are autograd's."""
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
    """Contract of train: every optimiser stops with the margin at or above target_margin."""
    sub, X, y, p = _problem(20)
    r = ol.train(p, X, y, ol.TrainConfig(optimizer=opt, target_margin=0.5, max_steps=3000, **kw))
    assert r.reached and r.final_margin >= 0.5 and ol.train_margin(r.params, X, y) >= 0.5
    assert ol.accuracy(r.params, X, y) == 1.0


def test_training_stops_at_the_first_iterate_reaching_the_target():
    """Contract of train: it stops at the first iterate whose margin reaches the target (history every step)."""
    sub, X, y, p = _problem(21)
    cfg = ol.TrainConfig(lr=0.5, target_margin=0.5, max_steps=3000, record_every=1)
    r = ol.train(p, X, y, cfg)
    before = ol.train(p, X, y, ol.TrainConfig(lr=0.5, max_steps=r.steps - 1))
    assert before.final_margin < 0.5 <= r.final_margin
    assert int(r.history.steps[-1]) == r.steps and len(r.history.margin) == r.steps + 1


@pytest.mark.parametrize("seed", range(30, 40))
@pytest.mark.parametrize("opt,kw", [("gd", {"lr": 0.5}), ("sgd", {"lr": 0.2, "batch_size": 5}),
                                    ("momentum", {"lr": 0.1})])
def test_orthogonal_part_is_frozen_on_fresh_seeds(seed, opt, kw):
    """Frozen-component lemma: GD, SGD and heavy ball never move Pi_perp W for data in P."""
    sub, X, y, p = _problem(seed)
    r = ol.train(p, X, y, ol.TrainConfig(optimizer=opt, max_steps=100, **kw))
    assert float(ol.P_perp(sub, r.params.W - p.W).abs().max()) < 1e-13
    assert float(ol.Pi_P(sub, r.params.W - p.W).abs().max()) > 1e-3


@pytest.mark.parametrize("seed", range(40, 45))
def test_adam_moves_the_orthogonal_part_on_a_random_subspace(seed):
    """The lemma needs gradient steps: Adam's coordinate-wise scaling moves Pi_perp W."""
    sub, X, y, p = _problem(seed)
    r = ol.train(p, X, y, ol.TrainConfig(optimizer="adam", lr=0.01, max_steps=20))
    assert float(ol.P_perp(sub, r.params.W - p.W).abs().max()) > 1e-4


@pytest.mark.parametrize("seed", range(50, 55))
def test_weight_decay_shrinks_the_orthogonal_part_exactly(seed):
    """Weight-decay theorem (thm-weight-decay): GD multiplies Pi_perp W by exactly (1 - eta lambda) per step."""
    sub, X, y, p = _problem(seed)
    lam, eta, T = 0.01, 0.3, 150
    r = ol.train(p, X, y, ol.TrainConfig(lr=eta, max_steps=T, weight_decay=lam))
    assert abs(r.decay_factor - (1 - eta * lam) ** T) < 1e-12
    expected = (1 - eta * lam) ** T * ol.P_perp(sub, p.W)
    assert torch.allclose(ol.P_perp(sub, r.params.W), expected, atol=1e-13)


def test_affine_data_freezes_the_complement_of_span_P_c():
    """Frozen-component lemma with biases, data on c + P: the part of W orthogonal to span(P, c) is frozen."""
    sub = ol.random_subspace(20, 10, seed=60)
    c = 0.7 * ol.P_perp(sub, torch.randn(20, generator=torch.Generator().manual_seed(61), dtype=F64))
    _, X, y, p = _problem(60, d=20, ell=10, offset=c)
    r = ol.train(p, X, y, ol.TrainConfig(lr=0.5, max_steps=100))
    big = ol.subspace_from_vectors(torch.cat([sub.basis.T, c[None]]))
    dW = r.params.W - p.W
    assert float(ol.P_perp(big, dW).abs().max()) < 1e-13
    assert float(ol.P_perp(sub, dW).abs().max()) > 1e-4


def test_unreached_target_ends_with_a_clear_report():
    """Contract: an exhausted budget says so in summary(); strict=True raises MarginNotReached."""
    sub, X, y, p = _problem(70)
    cfg = ol.TrainConfig(lr=0.01, target_margin=100.0, max_steps=5)
    r = ol.train(p, X, y, cfg)
    assert not r.reached and r.steps == 5
    assert "NOT reached within the budget of 5 steps" in r.summary()
    with pytest.raises(ol.MarginNotReached, match="NOT reached"):
        ol.train(p, X, y, cfg.replace(strict=True))


def test_norm_penalty_and_a_callable_schedule_run():
    """Contract of schedule=callable: the step at update t is lr * s(t, L_t); lr_sum adds them up."""
    sub, X, y, p = _problem(71)
    cfg = ol.TrainConfig(lr=0.1, max_steps=10, norm_penalty=0.1, schedule=lambda t, loss: 1 / (1 + t))
    r = ol.train(p, X, y, cfg)
    assert r.steps == 10 and abs(r.lr_sum - sum(0.1 / (1 + t) for t in range(10))) < 1e-12


def test_trained_letters_choose_the_parameters_that_move():
    """Contract of TrainConfig.trained: u moves only with 'u' in it, b only with 'b', c only with 'c'."""
    sub, X, y, p = _problem(72)
    r = ol.train(p, X, y, ol.TrainConfig(lr=0.5, max_steps=10, trained="Wbu"))
    assert not torch.equal(r.params.u, p.u) and not torch.equal(r.params.b, p.b)
    assert torch.equal(r.params.c, p.c)
    r2 = ol.train(p, X, y, ol.TrainConfig(lr=0.5, max_steps=10))
    assert torch.equal(r2.params.u, p.u) and not torch.equal(r2.params.b, p.b)
    r3 = ol.train(p, X, y, ol.TrainConfig(lr=0.5, max_steps=10, trained="Wc"))
    assert torch.equal(r3.params.b, p.b) and torch.equal(r3.params.u, p.u) and not torch.equal(r3.params.c, p.c)


def test_bad_training_data_are_named():
    """Contract: train rejects bad labels, shapes and batch sizes with a message naming the argument."""
    sub, X, y, p = _problem(73)
    cfg = ol.TrainConfig(lr=0.1, max_steps=1)
    with pytest.raises(ValueError, match=r"^y must contain only \+1 and -1"):
        ol.train(p, X, torch.zeros_like(y), cfg)
    with pytest.raises(ValueError, match=r"^y must have shape \(20,\)"):
        ol.train(p, X, y[:5], cfg)
    with pytest.raises(ValueError, match="^X must have d = 30 columns"):
        ol.train(p, X[:, :5], y, cfg)
    with pytest.raises(ValueError, match="^config.batch_size must be <= n = 20"):
        ol.train(p, X, y, cfg.replace(optimizer="sgd", batch_size=50))
    with pytest.raises(TypeError, match="^config must be a TrainConfig"):
        ol.train(p, X, y, {"lr": 0.1, "max_steps": 1})
    with pytest.raises(ValueError, match="^backend must be one of"):
        ol.train(p, X, y, cfg, backend="gpu")


# ----------------------------------------------------------------------------------- the perp factor

PERP_CASES = [  # (backend, config changes); SGD needs the reference backend
    ("reference", dict(optimizer="gd")),
    ("reference", dict(optimizer="gd", weight_decay=0.01)),
    ("reference", dict(optimizer="sgd", batch_size=4, weight_decay=0.01)),
    ("reference", dict(optimizer="momentum", lr=0.05, weight_decay=0.01)),
    ("reference", dict(optimizer="gd", norm_penalty=0.05)),
    ("reference", dict(optimizer="momentum", lr=0.05, weight_decay=0.005, norm_penalty=0.02)),
    ("fused", dict(optimizer="gd", weight_decay=0.01)),
    ("fused", dict(optimizer="momentum", lr=0.05, weight_decay=0.01)),
    ("fused", dict(optimizer="gd", norm_penalty=0.05)),
    ("fused", dict(optimizer="momentum", lr=0.05, weight_decay=0.005, norm_penalty=0.02)),
]


@pytest.mark.parametrize("backend,changes", PERP_CASES, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={w}" for k, w in v.items()))
def test_perp_factor_is_the_measured_shrink_of_the_orthogonal_part(backend, changes):
    """Contract of TrainResult.perp_factor: for data in P, Pi_perp W(T) = a_T Pi_perp W(0), so
    ||Pi_perp W(T)||_F / ||Pi_perp W(0)||_F = |a_T| (to 1e-12 relative), with weight decay, the norm
    penalty and the heavy-ball recursion; the fused kernel trains in full coordinates here (no sub), so its
    W(T) is computed, not rebuilt from a_T."""
    pr = ol.teacher_problem(24, 12, 16, seed=500)
    p0 = ol.init_network(24, 20, seed=504, bias="uniform")
    cfg = ol.TrainConfig(lr=0.2, max_steps=200, trained="Wbu").replace(**changes)
    r = ol.train(p0, pr.X, pr.y, cfg, backend=backend, coordinates="full")
    assert r.backend == backend and r.coordinates == "full"
    a = r.perp_factor
    before, after = ol.P_perp(pr.sub, p0.W), ol.P_perp(pr.sub, r.params.W)
    assert 1e-3 < abs(a) <= 1.0
    assert math.isclose(float(after.norm() / before.norm()), abs(a), rel_tol=1e-12)
    assert float((after - a * before).norm()) <= 1e-12 * abs(a) * float(before.norm())
    if cfg.weight_decay == 0 and cfg.norm_penalty == 0:
        assert a == 1.0


def test_perp_factor_is_nan_for_adam():
    """Contract: Adam's coordinate-wise steps have no perp factor, reported as nan."""
    pr = ol.teacher_problem(24, 12, 16, seed=510)
    r = ol.train(ol.init_network(24, 20, seed=514), pr.X, pr.y, ol.TrainConfig(lr=0.01, max_steps=20, optimizer="adam"))
    assert math.isnan(r.perp_factor)


# ------------------------------------------------------------------------------ recorded history

@pytest.mark.parametrize("opt,kw", [("gd", {}), ("sgd", {"batch_size": 4}), ("momentum", {}), ("adam", {})])
def test_recorded_parameters_are_those_of_a_run_stopped_at_that_step(opt, kw):
    """Contract of record_params: history.params[k] is the iterate at history.steps[k], that is the result
    of a separate run with max_steps = steps[k] (reference backend, to 1e-12); norm_sq is its squared norm
    and loss its logistic loss."""
    pr = ol.teacher_problem(24, 12, 16, seed=520)
    p0 = ol.init_network(24, 20, seed=524, bias="uniform")
    cfg = ol.TrainConfig(lr=0.05, max_steps=45, optimizer=opt, record_every=7, record_params=True, trained="Wbuc",
                         weight_decay=1e-3, **kw)
    h = ol.train(p0, pr.X, pr.y, cfg).history
    assert h.steps.tolist() == [0, 7, 14, 21, 28, 35, 42, 45] and len(h.params) == len(h.steps)
    for k, t in enumerate(h.steps.tolist()):
        alone = ol.train(p0, pr.X, pr.y, cfg.replace(max_steps=t, record_every=None, record_params=False),
                         backend="reference").params
        for f in "Wbuc":
            assert float((getattr(h.params[k], f) - getattr(alone, f)).abs().max()) <= 1e-12, (t, f)
        sq = float((alone.W**2).sum() + (alone.b**2).sum() + (alone.u**2).sum() + alone.c**2)
        assert math.isclose(float(h.norm_sq[k]), sq, rel_tol=1e-12)
        q = pr.y * (torch.relu(pr.X @ alone.W.T + alone.b) @ alone.u + alone.c)
        assert math.isclose(float(h.loss[k]), float(torch.log1p(torch.exp(-q)).mean()), rel_tol=1e-12)
        assert math.isclose(float(h.margin[k]), float(q.min()), rel_tol=1e-12, abs_tol=1e-14)


def test_history_log_loss_is_the_log_of_the_loss_where_it_does_not_underflow():
    """Contract of TrainHistory.log_loss: log L, equal to log(loss) wherever the loss is a normal float."""
    pr = ol.teacher_problem(24, 12, 16, seed=530)
    cfg = ol.TrainConfig(lr=0.5, max_steps=300, record_every=10, trained="Wbu")
    h = ol.train(ol.init_network(24, 20, seed=534), pr.X, pr.y, cfg).history
    assert h.loss.shape == h.log_loss.shape == (31,) and float(h.loss[-1]) < 1e-3
    assert torch.allclose(h.log_loss, torch.log(h.loss), rtol=0, atol=1e-12)


def test_history_at_finds_the_record_of_a_step():
    """Contract of TrainHistory.at: the index of the record made at a step, an error naming step otherwise."""
    pr = ol.teacher_problem(24, 12, 16, seed=540)
    h = ol.train(ol.init_network(24, 20, seed=544), pr.X, pr.y, ol.TrainConfig(lr=0.5, max_steps=23, record_every=5)).history
    assert h.steps.tolist() == [0, 5, 10, 15, 20, 23] and h.at(15) == 3 and h.at(23) == 5
    with pytest.raises(ValueError, match="^step: no record at step 7"):
        h.at(7)


def test_no_history_without_record_every():
    """Contract: the default config records nothing (history is None)."""
    pr = ol.teacher_problem(24, 12, 16, seed=540)
    assert ol.train(ol.init_network(24, 20, seed=544), pr.X, pr.y, ol.TrainConfig(lr=0.5, max_steps=3)).history is None


# ------------------------------------------------------------------------------ max-margin schedule

def _log_log_loss(q: torch.Tensor) -> torch.Tensor:
    """log(log(1 + e^{-q})) per entry, finite for every q: for q > 0 it is -q + log(log1p(x)/x) with
    x = e^{-q} (and log1p(x)/x = 1 - x/2 to 1e-17 once x < 1e-8, also where x underflows to 0)."""
    out = torch.empty_like(q)
    neg = q <= 0
    out[neg] = torch.log(torch.log1p(torch.exp(-q[neg])))
    x = torch.exp(-q[~neg])
    ratio = torch.where(x < 1e-8, 1 - x / 2, torch.log1p(x) / torch.where(x > 0, x, torch.ones_like(x)))
    out[~neg] = -q[~neg] + torch.log(ratio)
    return out


def _loss_normalised_gd(p: ol.TwoLayerParams, X, y, lr: float, steps: int):
    """The old train_max_margin, written out independently: full-batch GD on (W, b, u) with the step
    eta_t = lr / max(1, log(1/L_t)) applied to grad L / L, all in the log domain (autograd for the gradients).
    Returns the final (W, b, u) and log L at every iterate 0..steps."""
    W, b, u = p.W.clone(), p.b.clone(), p.u.clone()
    n = X.shape[0]
    log_losses = []
    for t in range(steps + 1):
        leaves = [v.clone().requires_grad_(True) for v in (W, b, u)]
        f = torch.relu(X @ leaves[0].T + leaves[1]) @ leaves[2] + p.c
        q = (y * f).detach()
        log_nL = torch.logsumexp(_log_log_loss(q), 0)             # log(n L)
        log_L = float(log_nL) - math.log(n)
        log_losses.append(log_L)
        if t == steps:
            break
        weight = -y * torch.exp(-torch.logaddexp(torch.zeros_like(q), q) - log_nL)   # (dL/df_j) / L
        (weight * f).sum().backward()
        eta = lr / max(1.0, -log_L)
        W, b, u = (v - eta * leaf.grad for v, leaf in zip((W, b, u), leaves))
    return (W, b, u), log_losses


@pytest.mark.parametrize("lr,steps,seed,underflows", [(0.5, 300, 2, False), (0.7, 400, 7, True)])
def test_max_margin_schedule_is_the_loss_normalised_gd(lr, steps, seed, underflows):
    """Contract of schedule='max_margin': it is the old loss-normalised GD (train_max_margin), checked against
    an independent log-domain implementation to 1e-12 after hundreds of steps; in the second run the loss
    underflows in float64 (log L < -709 at the end, L = 0) and training goes on to the last step."""
    n, d, m = 8, 30, 10
    X = ol.sphere_data(n, d, seed=seed)
    y = torch.tensor([1.0, -1.0] * (n // 2), dtype=F64)
    p0 = ol.init_network(d, m, seed=seed + 1, beta=0.1 / math.sqrt(d), u_scale=0.1, second_layer="gaussian")
    cfg = ol.TrainConfig(lr=lr, max_steps=steps, schedule="max_margin", trained="Wbu", record_every=50)
    res = ol.train(p0, X, y, cfg)
    (W, b, u), log_losses = _loss_normalised_gd(p0, X, y, lr, steps)
    assert res.steps == steps and res.backend == "reference"
    for mine, theirs in ((W, res.params.W), (b, res.params.b), (u, res.params.u)):
        assert float((mine - theirs).abs().max()) <= 1e-12
    assert torch.equal(res.params.c, p0.c)
    recorded = torch.tensor(log_losses, dtype=F64)[res.history.steps]
    assert torch.allclose(res.history.log_loss, recorded, rtol=1e-12, atol=0)
    assert (float(res.history.log_loss[-1]) < -709) == underflows
    if underflows:
        assert float(res.history.loss[-1]) == 0.0 and bool(torch.isfinite(res.params.W).all())
        assert float(res.history.margin[-1]) > float(res.history.margin[-2]) > 0   # still improving
