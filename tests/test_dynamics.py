"""Unit tests of ortho_lib.dynamics: snapshots of many networks at many moments (exact against separate
runs of ol.train), the orthogonal profile (against its definition) and the log-log slope.  Fresh seeds
(2 * 10**6 and up); every check is deterministic up to floating-point rounding.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ortho_lib as ol
from ortho_lib import dynamics
from ortho_lib.gradients import active_second_layer_norm_sq

SEED = 2 * 10**6
F64 = torch.float64


def _problems(E=3, d=12, ell=6, n=10, m=16, seed=SEED):
    sub = ol.random_subspace(d, ell, seed=seed)
    X = torch.stack([ol.sample_on_subspace(sub, n, seed=seed + 10 * e + 1) for e in range(E)])
    y = torch.stack([ol.teacher_labels(X[e], ol.teacher_direction(sub, seed=seed + 10 * e + 2)) for e in range(E)])
    nets = [ol.init_network(d, m, seed=seed + 10 * e + 3) for e in range(E)]
    return sub, X, y, nets


@pytest.mark.parametrize("optimizer, trained", [("gd", "Wb"), ("gd", "Wbu"), ("adam", "Wb"), ("momentum", "Wbu")])
def test_snapshots_at_steps_are_the_networks_after_that_many_steps(optimizer, trained):
    sub, X, y, nets = _problems()
    cfg = ol.TrainConfig(lr=0.01 if optimizer == "adam" else 0.2, max_steps=1, optimizer=optimizer, trained=trained,
                         target_margin=5.0)
    steps = [0, 3, 17]
    snaps = dynamics.snapshots(nets, X, y, cfg, steps=steps, sub=sub)
    assert (snaps.E, snaps.K, snaps.by, snaps.points) == (3, 3, "steps", (0, 3, 17))
    assert snaps.steps.tolist() == [steps] * 3
    for e in range(3):
        for k, t in enumerate(steps):
            ref = ol.train(nets[e], X[e], y[e], cfg.replace(max_steps=t, target_margin=None), backend="reference")
            assert float((snaps.at(e, k).W - ref.params.W).abs().max()) < 1e-12
            assert float((snaps.at(e, k).u - ref.params.u).abs().max()) < 1e-12
            assert float(snaps.margin[e, k]) == pytest.approx(ref.final_margin, abs=1e-12)


def test_snapshots_at_margins_stop_where_a_target_margin_run_stops():
    sub, X, y, nets = _problems(seed=SEED + 100)
    cfg = ol.TrainConfig(lr=0.5, max_steps=2000)
    snaps = dynamics.snapshots(nets, X, y, cfg, margins=[0.5, 1.5])
    assert bool(snaps.reached.all())
    assert bool((snaps.steps[:, 0] <= snaps.steps[:, 1]).all())
    for e in range(3):
        for k, g in enumerate((0.5, 1.5)):
            ref = ol.train(nets[e], X[e], y[e], cfg.replace(target_margin=g), backend="reference")
            assert int(snaps.steps[e, k]) == ref.steps
            assert float(snaps.margin[e, k]) >= g
            assert float((snaps.at(e, k).W - ref.params.W).abs().max()) < 1e-12


def test_snapshots_of_one_network_on_a_shared_training_set():
    sub, X, y, nets = _problems(seed=SEED + 200)
    snaps = dynamics.snapshots(nets[0], X[0], y[0], ol.TrainConfig(lr=0.3, max_steps=1), steps=[2, 5])
    assert (snaps.E, snaps.K) == (1, 2)
    ref = ol.train(nets[0], X[0], y[0], ol.TrainConfig(lr=0.3, max_steps=5), backend="reference")
    assert float((snaps.at(0, -1).W - ref.params.W).abs().max()) < 1e-12


def test_snapshots_refuse_bad_arguments_naming_them():
    sub, X, y, nets = _problems(seed=SEED + 300)
    cfg = ol.TrainConfig(lr=0.1, max_steps=3)
    with pytest.raises(ValueError, match=r"^steps and margins: give exactly one"):
        dynamics.snapshots(nets, X, y, cfg)
    with pytest.raises(ValueError, match=r"^steps and margins: give exactly one"):
        dynamics.snapshots(nets, X, y, cfg, steps=[1], margins=[1.0])
    with pytest.raises(ValueError, match=r"^steps\[1\] must be >= 0"):
        dynamics.snapshots(nets, X, y, cfg, steps=[1, -2])
    with pytest.raises(TypeError, match=r"^steps must be a non-empty list"):
        dynamics.snapshots(nets, X, y, cfg, steps=[])
    with pytest.raises(ValueError, match=r"^margins\[0\] must be finite"):
        dynamics.snapshots(nets, X, y, cfg, margins=[math.nan])
    with pytest.raises(ValueError, match=r"^X must have a leading axis of E = 3"):
        dynamics.snapshots(nets, X[:2], y, cfg, steps=[1])
    with pytest.raises(ValueError, match=r"^y must have a leading axis of E = 3"):
        dynamics.snapshots(nets, X, y[:2], cfg, steps=[1])
    with pytest.raises(TypeError, match=r"^config must be a TrainConfig"):
        dynamics.snapshots(nets, X, y, {"lr": 0.1}, steps=[1])
    with pytest.raises(TypeError, match=r"^params must be TwoLayerParams"):
        dynamics.snapshots("nets", X, y, cfg, steps=[1])
    snaps = dynamics.snapshots(nets, X, y, cfg, steps=[1])
    with pytest.raises(ValueError, match=r"^k must be <= 0"):
        snaps.at(0, 1)


def test_orthogonal_profile_matches_its_definition():
    sub, X, y, nets = _problems(seed=SEED + 400, d=20, ell=10, m=30)
    p = ol.train(nets[0], X[0], y[0], ol.TrainConfig(lr=0.5, max_steps=30, trained="Wbu")).params
    Z = ol.sample_on_subspace(sub, 50, seed=SEED + 401)
    prof = dynamics.orthogonal_profile(p, sub, Z)
    g = ol.orthogonal_gradient(p, sub, Z)
    assert torch.allclose(prof.gperp, g.norm(dim=1), atol=1e-14)
    assert torch.allclose(prof.uI_sq, active_second_layer_norm_sq(p, Z), atol=1e-14)
    assert torch.allclose(prof.output, ol.network_output(p, Z).abs(), atol=1e-14)
    assert torch.equal(prof.flip, ol.flip_norm_along(p, Z, g).norm)
    assert prof.rms == pytest.approx(float(g.norm(dim=1).pow(2).mean().sqrt()), rel=1e-14)
    assert prof.predicted_rms == pytest.approx(math.sqrt(10 / 20 * float(prof.uI_sq.mean())), rel=1e-14)
    assert dynamics.orthogonal_profile(p, sub, Z, beta=0.5).predicted_rms == \
        pytest.approx(0.5 * math.sqrt(10 * float(prof.uI_sq.mean())), rel=1e-14)


def test_orthogonal_profile_reports_nan_where_no_neuron_is_active():
    sub, X, y, nets = _problems(seed=SEED + 500)
    p = nets[0].replace(b=torch.full((16,), -1e3, dtype=F64))
    prof = dynamics.orthogonal_profile(p, sub, X[0])
    assert bool(torch.isnan(prof.flip).all()) and bool((prof.gperp == 0).all())
    with pytest.raises(ValueError, match=r"^X must have d = 12 columns"):
        dynamics.orthogonal_profile(p, sub, X[0][:, :-1])
    with pytest.raises(ValueError, match=r"^beta must be > 0"):
        dynamics.orthogonal_profile(p, sub, X[0], beta=0.0)


def test_loglog_slope_recovers_a_power_law_and_refuses_bad_values():
    x = np.geomspace(0.5, 40, 7)
    assert dynamics.loglog_slope(x, 3 * x**0.7) == pytest.approx(0.7, abs=1e-12)
    assert dynamics.loglog_slope(torch.tensor(x), torch.tensor(2 / x)) == pytest.approx(-1.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"^y must be positive"):
        dynamics.loglog_slope([1.0, 2.0], [1.0, -1.0])
    with pytest.raises(ValueError, match=r"^x must hold at least two distinct"):
        dynamics.loglog_slope([2.0, 2.0], [1.0, 3.0])
    with pytest.raises(ValueError, match=r"^x and y must hold the same number"):
        dynamics.loglog_slope([1.0, 2.0, 3.0], [1.0, 3.0])
    with pytest.raises(TypeError, match=r"^x must be a float32 or float64 tensor"):
        dynamics.loglog_slope(torch.tensor([1, 2]), [1.0, 3.0])
    with pytest.raises(ValueError, match=r"^y\[1\] must be finite"):
        dynamics.loglog_slope([1.0, 2.0], [1.0, math.inf])
