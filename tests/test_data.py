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


def test_gaussian_sampling_lies_in_P(sub):
    X = ol.sample_gaussian_on_subspace(sub, 7, seed=0, scale=2.0)
    assert X.shape == (7, 20) and float(ol.distance_to_subspace(sub, X).max()) < 1e-12


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


def test_as_labels_rejects_other_values():
    assert ol.as_labels([1, -1, 1]).tolist() == [1.0, -1.0, 1.0]
    with pytest.raises(ValueError, match=r"y must contain only \+1 and -1"):
        ol.as_labels([1, 0, -1])


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
