"""Data on a subspace and labels."""
import math

import pytest
import torch

import ortho_lib as ol


@pytest.fixture
def sub():
    return ol.random_subspace(20, 8, seed=0)


def test_sample_on_subspace_has_radius_sqrt_d_and_lies_in_P(sub):
    X = ol.sample_on_subspace(sub, 50, seed=1)
    assert X.shape == (50, 20)
    assert torch.allclose(X.norm(dim=1), torch.full((50,), math.sqrt(20), dtype=X.dtype), atol=1e-10)
    assert float(ol.distance_to_subspace(sub, X).max()) < 1e-12


def test_sample_with_offset_lies_on_affine_subspace(sub):
    c = ol.P_perp(sub, torch.ones(20, dtype=torch.float64))
    X = ol.sample_on_subspace(sub, 10, seed=1, offset=c)
    ol.check_on_subspace(sub, X, offset=c)
    with pytest.raises(ValueError, match="X: point 0 is off the subspace"):
        ol.check_on_subspace(sub, X)


def test_sampling_is_deterministic_given_seed(sub):
    assert torch.equal(ol.sample_on_subspace(sub, 5, seed=3), ol.sample_on_subspace(sub, 5, seed=3))
    assert not torch.equal(ol.sample_on_subspace(sub, 5, seed=3), ol.sample_on_subspace(sub, 5, seed=4))


def test_teacher_labels_follow_the_sign_of_the_teacher(sub):
    X = ol.sample_on_subspace(sub, 40, seed=1)
    v = ol.teacher_direction(sub, seed=2)
    y = ol.teacher_labels(X, v)
    assert abs(float(v.norm()) - 1) < 1e-12 and float(ol.distance_to_subspace(sub, v[None])[0]) < 1e-12
    assert torch.equal(y, torch.where(X @ v >= 0, 1.0, -1.0).double())


def test_random_labels_are_pm_one_and_balanced_on_average():
    y = ol.random_labels(4000, seed=0)
    assert set(y.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(y.mean())) < 0.1  # sd 0.016: failure prob ~ 1e-9


def test_bad_arguments_are_named(sub):
    with pytest.raises(ValueError, match="n must be >= 1"):
        ol.sample_on_subspace(sub, 0, seed=0)
    with pytest.raises(ValueError, match="radius must be > 0"):
        ol.sample_on_subspace(sub, 3, seed=0, radius=-1.0)
    with pytest.raises(ValueError, match="offset must have shape"):
        ol.sample_on_subspace(sub, 3, seed=0, offset=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="v must have shape"):
        ol.teacher_labels(torch.zeros(3, 20, dtype=torch.float64), torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="X must have 20 columns"):
        ol.check_on_subspace(sub, torch.zeros(3, 5, dtype=torch.float64))


def test_teacher_problem_follows_its_seeds_layout():
    """Contract of teacher_problem: P from seed, training points from seed + 1, the teacher from seed + 2,
    test points from seed + 3 (or test_seed), labels by the teacher (checked against the building blocks)."""
    pr = ol.teacher_problem(20, 8, 15, seed=40, n_test=9)
    sub = ol.random_subspace(20, 8, seed=40)
    assert torch.equal(pr.sub.basis, sub.basis) and torch.equal(pr.sub.perp_basis, sub.perp_basis)
    assert torch.equal(pr.X, ol.sample_on_subspace(sub, 15, seed=41))
    assert torch.equal(pr.v, ol.teacher_direction(sub, seed=42))
    assert torch.equal(pr.y, ol.teacher_labels(pr.X, pr.v))
    assert torch.equal(pr.X_test, ol.sample_on_subspace(sub, 9, seed=43))
    assert torch.equal(pr.y_test, ol.teacher_labels(pr.X_test, pr.v))
    other = ol.teacher_problem(20, 8, 15, seed=40, n_test=9, test_seed=7)
    assert torch.equal(other.X, pr.X) and torch.equal(other.X_test, ol.sample_on_subspace(sub, 9, seed=7))


def test_teacher_problem_without_test_points_has_empty_test_tensors():
    """Contract: n_test = 0 (the default) gives X_test (0, d) and y_test (0,)."""
    pr = ol.teacher_problem(10, 3, 4, seed=0)
    assert pr.X_test.shape == (0, 10) and pr.y_test.shape == (0,) and pr.X.shape == (4, 10)
    with pytest.raises(ValueError, match="^n_test must be >= 0"):
        ol.teacher_problem(10, 3, 4, seed=0, n_test=-1)
    with pytest.raises(ValueError, match="^seed must be >= 0"):
        ol.teacher_problem(10, 3, 4, seed=-1)


# ------------------------------------------------- data of the max-margin chapter (were in ortho_lib.kkt)
def test_sphere_data_has_norm_sqrt_d_and_is_deterministic():
    """(Also the former copy in the separable-noise tests: same shape, norm and seed checks.)"""
    X = ol.sphere_data(7, 50, seed=3)
    assert X.shape == (7, 50) and X.dtype == torch.float64
    assert torch.allclose(X.norm(dim=1), torch.full((7,), math.sqrt(50), dtype=torch.float64), atol=1e-12)
    assert torch.equal(X, ol.sphere_data(7, 50, seed=3))
    with pytest.raises(ValueError, match="n"):
        ol.sphere_data(0, 5, seed=0)


def test_obtuse_data_has_the_prescribed_augmented_gram():
    G0 = ol.maxmargin.augmented_gram(ol.data.obtuse_data(6, 30, seed=1))
    assert torch.allclose(G0, 31 * torch.eye(6, dtype=torch.float64), atol=1e-10)
    G = ol.maxmargin.augmented_gram(ol.data.obtuse_data(6, 30, seed=1, eps=0.1))
    off = G - torch.diag(G.diagonal())
    assert torch.allclose(G.diagonal(), torch.full((6,), 31.0, dtype=torch.float64), atol=1e-10)
    assert float(off.max()) <= 1e-10 and float(off.min()) >= -0.1 * 30 - 1e-10 and float(off.min()) < -0.1


def test_obtuse_data_rejects_bad_arguments():
    with pytest.raises(ValueError, match="eps"):
        ol.data.obtuse_data(10, 12, seed=0, eps=0.9)
    with pytest.raises(ValueError, match="n"):
        ol.data.obtuse_data(13, 12, seed=0)


def test_sphere_data_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n"):
        ol.sphere_data(0, 3, seed=0)
    with pytest.raises(TypeError, match="d"):
        ol.sphere_data(3, "3", seed=0)
