"""Unit tests of ortho_lib.image_subspaces against independent implementations (small synthetic images).

Every check is deterministic (fixed inputs, exact identities up to rounding) except the Monte Carlo check
of the ten-class moments, whose tolerance is set for a false-failure probability below 1e-7 (see there).
"""
from __future__ import annotations

import math

import pytest
import torch

import ortho_lib as ol
from ortho_lib import image_subspaces as ims
from ortho_lib.gradients import gperp_chi2_statistic
from ortho_lib.mlp import MLP

F64 = torch.float64
D, N, M = 36, 12, 9


def _images(n=N, seed=0):
    """Nonnegative 'images' of 36 pixels whose first and last 5 pixels are never lit."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, D, generator=g, dtype=F64)
    X[:, :5] = 0.0
    X[:, -5:] = 0.0
    X[X < 0.2] = 0.0
    return X


def _mlp(d=D, width=7, classes=4, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(d, width, classes)


def test_zero_pixels_and_pixel_subspace():
    X = _images()
    zero = ims.zero_pixels(X)
    assert zero.dtype == torch.bool and zero.shape == (D,)
    assert bool(zero[:5].all() and zero[-5:].all())
    assert torch.equal(zero, (X == 0).all(0))
    sub = ims.pixel_subspace(zero)
    assert sub.ell == int(zero.sum()) and sub.dim == D - int(zero.sum())
    v = torch.randn(D, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ol.P_perp(sub, v), torch.where(zero, v, torch.zeros_like(v)))
    assert float(ol.distance_to_subspace(sub, X).max()) == 0.0


def test_pixel_subspace_refuses_bad_masks():
    with pytest.raises(TypeError, match="^zero"):
        ims.pixel_subspace(torch.zeros(D))
    with pytest.raises(ValueError, match="^zero"):
        ims.pixel_subspace(torch.zeros(D, dtype=torch.bool))
    with pytest.raises(ValueError, match="^zero"):
        ims.pixel_subspace(torch.ones(D, dtype=torch.bool))
    with pytest.raises(ValueError, match="^X"):
        ims.zero_pixels(torch.zeros(0, D, dtype=F64))


def test_balanced_subset_takes_per_class_rows_of_each_label():
    X = torch.arange(40, dtype=F64)[:, None].repeat(1, 3)
    y = torch.tensor([1.0, -1.0] * 20)
    Xs, ys = ims.balanced_subset(X, y, 5, seed=3)
    assert Xs.shape == (10, 3) and int((ys == 1).sum()) == 5 and int((ys == -1).sum()) == 5
    assert torch.equal(y[Xs[:, 0].long()], ys)                        # rows keep their labels
    assert len(set(Xs[:, 0].tolist())) == 10                          # without replacement
    assert torch.equal(ims.balanced_subset(X, y, 5, seed=3)[0], Xs)   # reproducible
    with pytest.raises(ValueError, match="^per_class"):
        ims.balanced_subset(X, y, 21, seed=0)


def test_data_spectrum_reconstructs_the_data_and_completes_the_basis():
    X = _images()
    s = ims.data_spectrum(X)
    assert s.rank == int(torch.linalg.matrix_rank(X))
    V = s.directions
    assert torch.allclose(V.T @ V, torch.eye(D, dtype=F64), atol=1e-12)
    assert bool((s.sigma[:-1] >= s.sigma[1:]).all()) and bool((s.sigma[s.rank:] == 0).all())
    assert torch.allclose(X @ V[:, s.rank:], torch.zeros(N, D - s.rank, dtype=F64), atol=1e-12)
    assert torch.allclose((X @ V).norm(dim=0), s.sigma, atol=1e-10)
    sub = ims.pca_subspace(s, 3)
    assert sub.dim == 3 and torch.allclose(sub.basis, V[:, :3])
    with pytest.raises(ValueError, match="^k"):
        ims.pca_subspace(s, D)
    with pytest.raises(TypeError, match="^spectrum"):
        ims.pca_subspace(X, 3)


def test_pixel_gperp_statistic_matches_the_subspace_version_and_handles_stacks():
    X = _images()
    zero = ims.zero_pixels(X)
    sub = ims.pixel_subspace(zero)
    nets = [ol.init_network(D, M, seed=s, bias="uniform") for s in range(3)]
    stack = ol.TwoLayerParams.stack(nets)
    S = ims.pixel_gperp_statistic(stack, zero, X)
    assert S.shape == (3, N)
    for e, p in enumerate(nets):
        A = ol.active_set(p, X).any(1)
        ref = gperp_chi2_statistic(p, sub, X[A])
        assert torch.allclose(S[e, A], ref, rtol=1e-12)
        assert bool(S[e, ~A].isnan().all())
    S2 = ims.pixel_gperp_statistic(nets[0], zero, X, beta=0.5)
    assert torch.allclose(S2, S[0] * (1 / D) / 0.25, rtol=1e-12, equal_nan=True)


def test_tail_gperp_statistic_matches_explicit_projection():
    X = _images()
    s = ims.data_spectrum(X)
    p = ol.init_network(D, M, seed=5, bias="uniform")
    T = ims.tail_gperp_statistic(p, X, s, [2, 7])
    uI = ol.active_set(p, X).to(F64) @ p.u**2
    for row, k in enumerate([2, 7]):
        g = ol.orthogonal_gradient(p, ims.pca_subspace(s, k), X)
        ref = (g**2).sum(1) * D / uI / (D - k)
        ok = uI > 0
        assert torch.allclose(T[row, ok], ref[ok], rtol=1e-10)
    with pytest.raises(ValueError, match=r"^ks\[1\]"):
        ims.tail_gperp_statistic(p, X, s, [2, D])


def test_movement_and_gradient_energy_ratios():
    X = _images()
    s = ims.data_spectrum(X)
    y = torch.tensor([1.0, -1.0] * (N // 2))
    p0 = ol.init_network(D, M, seed=6, bias="uniform")
    p1 = ol.train(p0, X, y, ol.TrainConfig(lr=0.5, max_steps=20)).params
    rho = ims.movement_ratios(p0, p1, s.directions)
    ref = torch.stack([((p1.W - p0.W) @ v).norm() / (p0.W @ v).norm() for v in s.directions.T])
    assert torch.allclose(rho, ref, rtol=1e-12)
    assert float(rho[s.rank:].max()) < 1e-12                       # no movement where sigma_r = 0
    lam = ims.gradient_energy_ratios(p0, p1, X, s.directions)
    assert float(lam[s.rank:].max()) < 1e-20
    assert bool((ims.gradient_energy_ratios(p0, p0, X, s.directions) == 0).all())
    ec = ims.effective_codimension(p0, p1, s, X)
    assert ec.ell == int((lam <= 1).sum()) >= D - s.rank
    assert ec.subspace.ell == ec.ell
    with pytest.raises(ValueError, match="^trained"):
        ims.movement_ratios(p0, ol.init_network(D, M + 1, seed=0), s.directions)
    with pytest.raises(ValueError, match="^threshold"):
        ims.effective_codimension(p0, p1, s, X, threshold=1e300)


def test_multiclass_statistic_matches_autograd():
    X = _images()
    zero = ims.zero_pixels(X)
    model = _mlp()
    y = torch.tensor([0, 1, 2, 3] * 3)
    q, var = ims.multiclass_gperp_statistic(model, zero, X, y)
    Xg = X.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(Xg), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, Xg)
    H = model.hidden(X)
    kappa = (H > 0).to(F64) * ((torch.softmax(model(X), 1) - torch.eye(4, dtype=F64)[y]) @ model.out.weight)
    ell0 = int(zero.sum())
    ref = (g[:, zero] ** 2).sum(1) / ((1 / (3 * D)) * (kappa**2).sum(1) * ell0)
    ok = (kappa**2).sum(1) > 0
    assert torch.allclose(q[ok], ref[ok].detach(), rtol=1e-10)
    assert bool((var[ok] > 0).all())


def test_multiclass_moments_by_monte_carlo():
    """Redraw V_{:,Z} uniformly R times at a fixed kappa: the sample mean and variance of q must match.

    With R = 20000 draws the sample mean has sd sqrt(var/R); |mean - 1| < 6 sd fails with probability
    about 2e-9 (normal approximation of a mean of 20000 i.i.d. draws). The sample variance of q has
    relative sd about sqrt((kurt_q - 1)/R) < 0.02 here; a 15% tolerance is over 7 of those sd's.
    """
    ell0, m, R = 40, 6, 20000
    g = torch.Generator().manual_seed(12)
    kappa = torch.randn(m, generator=g, dtype=F64)
    a = 1 / math.sqrt(D)
    Vz = (2 * torch.rand(R, m, ell0, generator=g, dtype=F64) - 1) * a
    gz = torch.einsum("i,rip->rp", kappa, Vz)
    q = (gz**2).sum(1) / ((a**2 / 3) * (kappa**2).sum() * ell0)
    var = (2 + (9 / 5 - 3) * (kappa**4).sum() / (kappa**2).sum() ** 2) / ell0
    assert abs(float(q.mean()) - 1) < 6 * math.sqrt(float(var) / R)
    assert abs(float(q.var()) / float(var) - 1) < 0.15


def test_class_direction_and_fooling_rates():
    X = _images()
    zero = ims.zero_pixels(X)
    model = _mlp()
    z = ims.class_direction(model, zero, 2)
    assert abs(float(z.norm()) - 1) < 1e-12 and bool((z[~zero] == 0).all())
    A = model.out.weight.detach()
    ref = ((A[2] - A.mean(0)) @ model.hidden.weight.detach()) * zero
    assert torch.allclose(z, ref / ref.norm(), atol=1e-14)
    rates = ims.fooling_rates(model, X, z, [0.0, 1e3])
    assert float(rates[0]) == 0.0
    with torch.no_grad():
        pred0 = model(X).argmax(1)
        pool = pred0 != 2
        hit = model(X + 1e3 * z).argmax(1) == 2
    if bool(pool.any()):
        t = ims.fooling_rates(model, X, z, [1e3], target=2)
        assert abs(float(t[0]) - float((hit & pool).sum() / pool.sum())) < 1e-12
    with pytest.raises(ValueError, match="^norms"):
        ims.fooling_rates(model, X, z, [-1.0])
    with pytest.raises(ValueError, match="^target"):
        ims.class_direction(model, zero, 4)
    with pytest.raises(TypeError, match="^model"):
        ims.class_direction(ol.init_network(D, 3, seed=0), zero, 0)


def test_first_order_target_norms_solve_the_linearised_race():
    X = _images()
    zero = ims.zero_pixels(X)
    model = _mlp(seed=3)
    c = 1
    z = ims.class_direction(model, zero, c)
    a = ims.first_order_target_norms(model, X, z, c)
    with torch.no_grad():
        H = model.hidden(X)
        act = (H > 0).to(F64)
        f = model(X)
        J = (act * (model.hidden.weight @ z)) @ model.out.weight.T     # linearised rate per logit
    for j in range(N):
        if not math.isfinite(float(a[j])):
            continue
        lin = f[j] + a[j] * J[j]                                       # logits at alpha*, pattern frozen
        assert float(lin[c] - lin.max()) > -1e-9                       # class c leads (or ties)
        if float(a[j]) > 0:
            before = f[j] + 0.999 * a[j] * J[j]
            assert int(before.argmax()) != c                           # and not before
