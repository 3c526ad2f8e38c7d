"""Subspaces and projections."""
import math

import pytest
import torch

import ortho_lib as ol


def test_random_subspace_bases_are_orthonormal_and_complementary():
    s = ol.random_subspace(30, 12, seed=1)
    Q = torch.cat([s.basis, s.perp_basis], 1)
    assert s.d == 30 and s.ell == 12 and s.dim == 18
    assert torch.allclose(Q.T @ Q, torch.eye(30, dtype=Q.dtype), atol=1e-12)


def test_projections_sum_to_identity_and_are_idempotent():
    """Pi_P and P_perp applied to the identity (row-wise) are the two projection matrices (was projection_matrices)."""
    s = ol.random_subspace(10, 4, seed=2)
    I = torch.eye(10, dtype=torch.float64)
    PP, Pp = ol.Pi_P(s, I), ol.P_perp(s, I)
    assert torch.allclose(PP + Pp, I, atol=1e-12)
    assert torch.allclose(PP @ PP, PP, atol=1e-12) and torch.allclose(Pp @ PP, 0 * I, atol=1e-12)


def test_Pi_P_and_P_perp_act_row_wise():
    s = ol.random_subspace(8, 3, seed=3)
    X = torch.randn(5, 8, dtype=torch.float64)
    assert torch.allclose(ol.Pi_P(s, X) + ol.P_perp(s, X), X, atol=1e-12)
    assert torch.allclose(ol.subspaces.perp_coordinates(s, X).norm(dim=1), ol.P_perp(s, X).norm(dim=1), atol=1e-12)


def test_random_subspace_is_rotation_invariant_in_distribution():
    # E ||Pi_perp e_1||^2 = ell/d for a Haar subspace; average over 400 seeds (sd of mean ~ 0.01)
    vals = [float(ol.P_perp(ol.random_subspace(10, 4, seed=100 + k), torch.eye(10, dtype=torch.float64)[0]).norm() ** 2)
            for k in range(400)]
    mean = sum(vals) / len(vals)
    # Var of a Beta(2, 3) is 0.04, so sd of the mean is 0.01: 7 sd gives failure prob < 1e-11
    assert abs(mean - 0.4) < 0.07


def test_coordinate_subspace_uses_last_coordinates_for_perp():
    s = ol.coordinate_subspace(5, 2)
    x = torch.arange(5, dtype=torch.float64)
    assert ol.P_perp(s, x).tolist() == [0, 0, 0, 3, 4]


def test_subspace_from_vectors_spans_the_diagonal():
    s = ol.subspace_from_vectors(torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    assert s.dim == 1 and s.ell == 1
    v = ol.P_perp(s, torch.tensor([1.0, -1.0], dtype=torch.float64))
    assert torch.allclose(v, torch.tensor([1.0, -1.0], dtype=torch.float64), atol=1e-12)


def test_distance_to_subspace_with_offset():
    s = ol.coordinate_subspace(3, 1)
    c = torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 1.5]], dtype=torch.float64)
    assert ol.distance_to_subspace(s, x, c).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("d,ell", [(10, 0), (10, 10), (10, -1), (1, 1)])
def test_bad_ell_or_d_is_rejected_by_name(d, ell):
    with pytest.raises(ValueError, match=r"^(ell|d) must"):
        ol.random_subspace(d, ell, seed=0)


def test_non_integer_ell_is_rejected():
    with pytest.raises(TypeError, match="ell must be an integer"):
        ol.coordinate_subspace(10, 2.5)


def test_projection_rejects_wrong_dimension_and_nan():
    s = ol.random_subspace(6, 2, seed=0)
    with pytest.raises(ValueError, match="x must have last dimension d = 6"):
        ol.P_perp(s, torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="x contains non-finite"):
        ol.Pi_P(s, torch.full((6,), math.nan, dtype=torch.float64))


def test_subspace_from_dependent_vectors_is_rejected():
    with pytest.raises(ValueError, match="vectors must be linearly independent"):
        ol.subspace_from_vectors(torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="vectors must hold between 1 and d-1"):
        ol.subspace_from_vectors(torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize("which", ["basis", "perp_basis"])
def test_subspace_rejects_a_scaled_basis(which):
    """Contract of Subspace: its bases must be orthonormal; a basis scaled by 2 (same span) is rejected."""
    s = ol.random_subspace(8, 3, seed=5)
    bases = {"basis": s.basis, "perp_basis": s.perp_basis}
    bases[which] = 2 * bases[which]
    with pytest.raises(ValueError, match="^Subspace.basis and Subspace.perp_basis must have orthonormal columns"):
        ol.Subspace(**bases)
    ol.Subspace(s.basis, s.perp_basis)                                    # the unscaled pair is accepted


def test_subspace_rejects_bases_that_do_not_fill_R_d():
    """Contract of Subspace: basis (d, d - ell) and perp_basis (d, ell) together make a d x d matrix."""
    s = ol.random_subspace(8, 3, seed=5)
    with pytest.raises(ValueError, match=r"^Subspace.basis \(d, d - ell\) and Subspace.perp_basis"):
        ol.Subspace(s.basis, s.perp_basis[:, :2])
