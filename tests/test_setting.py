"""The frozen-component lemma of the setting chapter (book/setting.md, ``lem-frozen``) on fresh seeds.

Every run trains in *full* coordinates (the reference loop, and the fused kernel with
``coordinates="full"``): ``W`` is updated as an ``m x d`` matrix and ``P`` is never used, so
``Pi_perp W(T)`` is measured, not rebuilt by formula, and the checks can fail.  Tolerances are the
chapter's rounding rule: a change of ``Pi_perp W`` counts as zero when it is at most
``4 (T + d) eps ||W||_F`` (relative: ``4 (t + d) eps ||W(t)||_F / ||Pi_perp W(t)||_F`` for the decay),
``eps`` the machine epsilon of float64.

False-failure probability: the lemma is an exact identity for every seed, so a correct implementation can
fail these checks only through rounding beyond the tolerance, which bounds the rounding of ``T`` updates and
one projection with a factor of 4 to spare (the chapter's runs stay below a tenth of it).  The
checks that something *moves* (Adam on a random P, the affine offset) fail only on a measure-zero set of
draws.  So the probability of a false failure is 0 for every test here (below 1e-6).  Seeds 2001-2099 are
used by no chapter.
"""
from __future__ import annotations

import pytest
import torch

import ortho_lib as ol

EPS = torch.finfo(torch.float64).eps
D, ELL, M, N = 60, 30, 80, 40         # smaller than the chapter's (200, 100, 300, 100), same shape of problem
CONFIGS = {
    "gd": ol.TrainConfig(lr=0.5, max_steps=3000, target_margin=1.0),
    "sgd": ol.TrainConfig(lr=0.2, max_steps=3000, target_margin=1.0, optimizer="sgd", batch_size=8),
    "momentum": ol.TrainConfig(lr=0.1, max_steps=3000, target_margin=1.0, optimizer="momentum", momentum=0.9),
    "adam": ol.TrainConfig(lr=0.01, max_steps=3000, target_margin=1.0, optimizer="adam"),
}


def _problem(sub: ol.Subspace, seed: int):
    X = ol.sample_on_subspace(sub, N, seed=seed + 1)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=seed + 2))
    return X, y, ol.init_network(D, M, seed=seed + 3)


def _tolerance(steps: int, W: torch.Tensor) -> float:
    return 4 * (steps + D) * EPS * float(W.norm())


@pytest.mark.claim("lem-frozen")
@pytest.mark.parametrize("seed", [2001, 2011, 2021])
@pytest.mark.parametrize("opt", ["gd", "sgd", "momentum"])
@pytest.mark.parametrize("kind", ["random", "coordinate"])
def test_gradient_methods_leave_the_orthogonal_part_within_rounding(seed, opt, kind):
    """GD, SGD and heavy ball, reference loop in full coordinates: ||Pi_perp(W(T) - W(0))||_F <= 4 (T + d) eps ||W(T)||_F,
    while the part in P moves by orders of magnitude more.  False-failure probability 0 (an identity up to rounding)."""
    sub = ol.random_subspace(D, ELL, seed=seed) if kind == "random" else ol.coordinate_subspace(D, ELL)
    X, y, p = _problem(sub, seed)
    res = ol.train(p, X, y, CONFIGS[opt], backend="reference", coordinates="full")
    assert res.reached
    dW = res.params.W - p.W
    tol = _tolerance(res.steps, res.params.W)
    assert float(ol.P_perp(sub, dW).norm()) <= tol
    assert float(ol.Pi_P(sub, dW).norm()) > 1e6 * tol


@pytest.mark.claim("lem-frozen")
@pytest.mark.parametrize("seed", [2031, 2041])
@pytest.mark.parametrize("opt", ["gd", "momentum"])
def test_the_fused_kernel_in_full_coordinates_also_keeps_the_orthogonal_part(seed, opt):
    """The compiled kernel, full coordinates (it never sees P): same rounding rule.  False-failure probability 0."""
    sub = ol.random_subspace(D, ELL, seed=seed)
    X, y, p = _problem(sub, seed)
    res = ol.train(p, X, y, CONFIGS[opt], backend="fused", coordinates="full")
    assert res.backend == "fused" and res.coordinates == "full" and res.reached
    assert float(ol.P_perp(sub, res.params.W - p.W).norm()) <= _tolerance(res.steps, res.params.W)


@pytest.mark.claim("lem-frozen")
@pytest.mark.parametrize("seed", [2051, 2061, 2071])
def test_adam_moves_the_orthogonal_part_on_a_random_subspace_only(seed):
    """The lemma's boundary: Adam on a random P moves Pi_perp W far beyond rounding (the check can see movement);
    on a coordinate-aligned P it does not.  False-failure probability 0 (movement fails only on a null set)."""
    sub = ol.random_subspace(D, ELL, seed=seed)
    X, y, p = _problem(sub, seed)
    res = ol.train(p, X, y, CONFIGS["adam"], backend="reference", coordinates="full")
    dW = res.params.W - p.W
    assert float(ol.P_perp(sub, dW).norm()) > 1e6 * _tolerance(res.steps, res.params.W)
    coord = ol.coordinate_subspace(D, ELL)
    Xc, yc, pc = _problem(coord, seed)
    rc = ol.train(pc, Xc, yc, CONFIGS["adam"], backend="reference", coordinates="full")
    assert float(ol.P_perp(coord, rc.params.W - pc.W).norm()) <= _tolerance(rc.steps, rc.params.W)


@pytest.mark.claim("lem-frozen")
@pytest.mark.parametrize("seed,lam", [(2081, 1e-3), (2085, 5e-3)])
@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_weight_decay_shrinks_the_orthogonal_part_by_exactly_one_minus_eta_lambda_per_step(seed, lam, backend):
    """||Pi_perp W(t)||_F = (1 - eta lambda)^t ||Pi_perp W(0)||_F, checked every 50 steps with the relative
    tolerance 4 (t + d) eps ||W(t)||_F / ||Pi_perp W(t)||_F.  False-failure probability 0."""
    sub = ol.random_subspace(D, ELL, seed=seed)
    X, y, p = _problem(sub, seed)
    eta, T = 0.5, 600
    cfg = ol.TrainConfig(lr=eta, max_steps=T, weight_decay=lam, record_every=50, record_params=backend == "reference")
    res = ol.train(p, X, y, cfg, backend=backend, coordinates="full")
    snapshots = list(zip(res.history.steps.tolist(), res.history.params)) if backend == "reference" \
        else [(res.steps, res.params)]
    norm0 = float(ol.P_perp(sub, p.W).norm())
    for t, q in snapshots:
        perp = float(ol.P_perp(sub, q.W).norm())
        deviation = abs(perp / norm0 / (1 - eta * lam) ** t - 1)
        assert deviation <= 4 * (t + D) * EPS * float(q.W.norm()) / perp, t
    assert (1 - eta * lam) ** T < 0.9        # the decay is real, not a rounding-sized effect


@pytest.mark.claim("lem-frozen")
@pytest.mark.parametrize("seed", [2091, 2095])
def test_an_affine_offset_unfreezes_exactly_the_direction_of_the_offset(seed):
    """Data on c + P, biases trained: Pi_perp W moves, only along Pi_perp c; the complement of span(P, c) stays
    within rounding.  False-failure probability 0."""
    sub = ol.random_subspace(D, ELL, seed=seed)
    c = 0.5 * ol.P_perp(sub, torch.randn(D, generator=torch.Generator().manual_seed(seed + 4), dtype=torch.float64))
    X = ol.sample_on_subspace(sub, N, seed=seed + 1, offset=c)
    y = ol.teacher_labels(X, ol.teacher_direction(sub, seed=seed + 2), offset=c)
    p = ol.init_network(D, M, seed=seed + 3)
    res = ol.train(p, X, y, CONFIGS["gd"], backend="reference", coordinates="full")
    dW = res.params.W - p.W
    span = ol.subspace_from_vectors(torch.cat([sub.basis.T, c[None, :]]))
    tol = _tolerance(res.steps, res.params.W)
    assert float(ol.P_perp(sub, dW).norm()) > 1e6 * tol
    assert float(ol.P_perp(span, ol.P_perp(sub, dW)).norm()) <= tol
    assert float(ol.P_perp(span, dW).norm()) <= tol
