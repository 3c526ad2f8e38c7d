"""Unit tests of ortho_lib.manifolds (a sphere of tunable curvature, its tangent and normal spaces) and of
ortho_lib.data.sample_sphere_manifold, on fresh seeds (10**6 and up).

Randomised checks and their failure probability for a correct implementation: the uniformity test of
the sampler uses Hoeffding's inequality on 2k coordinate means (probability below 1e-9 in total).
Everything else is deterministic up to floating-point rounding.
"""
from __future__ import annotations

import math

import pytest
import torch

import ortho_lib as ol
from ortho_lib import manifolds
from ortho_lib.manifolds import SphereManifold, antipodes, inward_normal, normal_split, sphere_manifold

SEED = 10**6
F64 = torch.float64


def _sphere(d=30, k=4, radius=2.0, seed=SEED, **kw) -> SphereManifold:
    return sphere_manifold(d, k, radius=radius, seed=seed, **kw)


def test_points_lie_on_the_sphere_with_the_requested_norm_radius_and_plane():
    s = _sphere(norm=7.0)
    X = ol.data.sample_sphere_manifold(s, 50, seed=SEED + 1)
    assert torch.allclose(X.norm(dim=1), torch.full((50,), 7.0, dtype=F64), atol=1e-12)
    assert torch.allclose((X - s.centre).norm(dim=1), torch.full((50,), 2.0, dtype=F64), atol=1e-12)
    assert float(ol.P_perp(s.plane, X - s.centre).abs().max()) < 1e-12
    assert float((s.plane.basis.T @ s.centre).abs().max()) < 1e-12
    assert float(ol.distance_to_subspace(s.span, X).max()) < 1e-12
    assert s.curvature == pytest.approx(0.5) and s.k == 4 and s.dim == 3 and s.d == 30
    assert s.span.dim == 5 and s.span.ell == 25
    assert s.norm == pytest.approx(7.0)


def test_the_default_norm_is_sqrt_d_and_the_largest_radius_is_a_great_sphere_of_the_plane():
    s = _sphere(d=30, k=4, radius=math.sqrt(30))
    assert float(s.centre.norm()) == 0.0
    assert s.span.dim == 4
    X = ol.data.sample_sphere_manifold(s, 10, seed=SEED + 2)
    assert torch.allclose(X.norm(dim=1), torch.full((10,), math.sqrt(30), dtype=F64), atol=1e-12)


def test_one_seed_gives_one_orientation_for_every_radius():
    a, b = _sphere(radius=1.0), _sphere(radius=4.0)
    assert torch.equal(a.plane.basis, b.plane.basis)
    assert torch.allclose(a.centre / a.centre.norm(), b.centre / b.centre.norm(), atol=1e-15)
    assert float(ol.distance_to_subspace(a.span, b.span.basis.T).max()) < 1e-12
    assert not torch.equal(a.plane.basis, _sphere(radius=1.0, seed=SEED + 1).plane.basis)


def test_sampling_is_reproducible_and_uniform_on_the_sphere():
    s = _sphere(d=12, k=3, radius=1.5, seed=SEED + 3)
    n = 20000
    X = ol.data.sample_sphere_manifold(s, n, seed=SEED + 4)
    assert torch.equal(X, ol.data.sample_sphere_manifold(s, n, seed=SEED + 4))
    xi = (X - s.centre) / s.radius @ s.plane.basis       # (n, k) unit vectors, uniform on S^{k-1}
    # Hoeffding: each coordinate lies in [-1, 1] (mean 0) and its square in [0, 1] (mean 1/k);
    # P[|mean - E| > t] <= 2 exp(-n t^2 / 2) and 2 exp(-2 n t^2): with t = 0.05 and 0.03 each is < 1e-10.
    assert float(xi.mean(0).abs().max()) < 0.05
    assert float((xi.pow(2).mean(0) - 1 / 3).abs().max()) < 0.03


def test_normal_split_gives_three_orthogonal_parts_in_the_right_spaces():
    s = _sphere(seed=SEED + 5)
    X = ol.data.sample_sphere_manifold(s, 40, seed=SEED + 6)
    G = torch.randn(40, s.d, generator=torch.Generator().manual_seed(SEED + 7), dtype=F64)
    t, nu, out = normal_split(s, X, G)
    assert float((t + nu + out - G).abs().max()) < 1e-13
    for a, b in ((t, nu), (t, out), (nu, out)):
        assert float((a * b).sum(1).abs().max()) < 1e-12
    radial = X - s.centre
    assert float((t * radial).sum(1).abs().max()) < 1e-12                   # tangent: orthogonal to x - c ...
    assert float((t @ s.centre).abs().max()) < 1e-12                        # ... and to c,
    assert float(ol.P_perp(s.plane, t).abs().max()) < 1e-12                 # and in the plane
    c_hat = s.centre / s.centre.norm()
    basis = torch.stack([radial / radial.norm(dim=1, keepdim=True), c_hat.expand_as(radial)], 1)  # (n, 2, d)
    in_pair = torch.einsum("nkd,nk->nd", basis, torch.einsum("nkd,nd->nk", basis, nu))
    assert float((in_pair - nu).abs().max()) < 1e-12                        # in span(x - c, c)
    assert float(ol.Pi_P(s.span, out).abs().max()) < 1e-12                  # outside S


def test_without_a_centre_the_in_span_normal_is_radial():
    s = _sphere(d=20, k=3, radius=math.sqrt(20), seed=SEED + 8)
    X = ol.data.sample_sphere_manifold(s, 10, seed=SEED + 9)
    G = torch.randn(10, 20, generator=torch.Generator().manual_seed(SEED + 10), dtype=F64)
    _, nu, _ = normal_split(s, X, G)
    radial = X / X.norm(dim=1, keepdim=True)
    assert torch.allclose(nu, (G * radial).sum(1, keepdim=True) * radial, atol=1e-13)


def test_the_out_of_span_part_of_the_input_gradient_is_the_orthogonal_gradient_for_S():
    s = _sphere(seed=SEED + 11)
    X = ol.data.sample_sphere_manifold(s, 25, seed=SEED + 12)
    p = ol.init_network(s.d, 20, seed=SEED + 13, bias="uniform")
    out = normal_split(s, X, ol.input_gradient(p, X)).normal_out_of_span
    assert torch.allclose(out, ol.orthogonal_gradient(p, s.span, X), atol=1e-13)


def test_inward_normal_and_antipodes():
    s = _sphere(seed=SEED + 14)
    X = ol.data.sample_sphere_manifold(s, 15, seed=SEED + 15)
    nu = inward_normal(s, X)
    assert torch.allclose(nu.norm(dim=1), torch.ones(15, dtype=F64), atol=1e-14)
    assert torch.allclose(X + s.radius * nu, s.centre.expand_as(X), atol=1e-12)
    A = antipodes(s, X)
    assert torch.allclose((X + A) / 2, s.centre.expand_as(X), atol=1e-12)
    normal_split(s, A, A)                                                   # antipodes are on the sphere


def test_points_off_the_sphere_are_refused_naming_X():
    s = _sphere(seed=SEED + 16)
    X = ol.data.sample_sphere_manifold(s, 5, seed=SEED + 17)
    with pytest.raises(ValueError, match=r"^X: point 2 is not on the sphere"):
        inward_normal(s, torch.cat([X[:2], 1.1 * X[2:3], X[3:]]))
    with pytest.raises(ValueError, match=r"^X must have d = 30 columns"):
        antipodes(s, X[:, :-1])
    with pytest.raises(ValueError, match=r"^G must have the shape of X"):
        normal_split(s, X, X[:-1])
    with pytest.raises(TypeError, match=r"^sphere must be a SphereManifold"):
        inward_normal(s.plane, X)


def test_bad_arguments_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"^radius must be at most norm"):
        sphere_manifold(30, 4, radius=6.0, seed=1)
    with pytest.raises(ValueError, match=r"^radius must be > 0"):
        sphere_manifold(30, 4, radius=0.0, seed=1)
    with pytest.raises(ValueError, match=r"^k must be <= 28"):
        sphere_manifold(30, 29, radius=1.0, seed=1)
    with pytest.raises(ValueError, match=r"^k must be >= 2"):
        sphere_manifold(30, 1, radius=1.0, seed=1)
    s = _sphere()
    with pytest.raises(ValueError, match=r"^SphereManifold.centre must be orthogonal"):
        SphereManifold(plane=s.plane, centre=s.plane.basis[:, 0], radius=1.0)
    with pytest.raises(ValueError, match=r"^SphereManifold.radius must be > 0"):
        SphereManifold(plane=s.plane, centre=s.centre, radius=-1.0)
    with pytest.raises(TypeError, match=r"^SphereManifold.plane must be a Subspace"):
        SphereManifold(plane="P", centre=s.centre, radius=1.0)
    with pytest.raises(TypeError, match=r"^sphere must be a SphereManifold"):
        ol.data.sample_sphere_manifold(s.plane, 5, seed=1)


def test_float32_spheres_sample_in_float32():
    s = sphere_manifold(20, 3, radius=2.0, seed=SEED + 18, dtype=torch.float32)
    X = ol.data.sample_sphere_manifold(s, 8, seed=SEED + 19)
    assert X.dtype == torch.float32
    assert manifolds.normal_split(s, X, X).tangent.dtype == torch.float32
