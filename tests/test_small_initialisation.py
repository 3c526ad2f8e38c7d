"""Theorem C (small initialisation), checked on fresh seeds (not the chapter's).

Every probabilistic check is designed so that a correct implementation fails with probability below
1e-6: exact laws are tested with a KS test at level 1e-7 on independent networks, high-probability bounds
by a binomial tail on the number of violations, and uniform certificates with a confidence parameter t
chosen so that the union over all networks fails with probability below 1e-7.
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import ortho_lib as ol
from ortho_lib.theory import certified_radius, perp_lipschitz_bound, tail_probability

D, ELL, M, N_TRAIN = 64, 48, 32, 40
SCALES = (D ** -0.5, D ** -1.0, D ** -1.5)


@pytest.fixture(scope="module")
def problem(make_teacher_problem):
    """A fresh subspace, training set and test points (seeds unused by the chapter)."""
    return make_teacher_problem(D, ELL, N_TRAIN, seed=910_000)


def _trained(problem, seed: int, beta: float, steps: int = 40):
    sub, X, y, _ = problem
    p0 = ol.init_network(D, M, seed=seed, beta=beta)
    return ol.train(p0, X, y, lr=0.5, max_steps=steps).params


@pytest.fixture(scope="module")
def gperp_samples(problem):
    """For 150 independent networks (50 per scale): ||g_perp(x0)||^2 / (beta^2 ||u_I||^2) after training."""
    sub, _, _, X_test = problem
    x0 = X_test[0]                      # fixed before any network is drawn: independent of Pi_perp W(0)
    out = []
    for s in range(150):
        beta = SCALES[s % 3]
        p = _trained(problem, 920_000 + s, beta)
        active = ol.active_set(p, x0)
        uI2 = float((p.u[active] ** 2).sum())
        if uI2 == 0.0:                  # k = 0: the law is conditional on I, skip the empty set
            continue
        g2 = float(ol.orthogonal_gradient(p, sub, x0).norm() ** 2)
        out.append(g2 / (beta**2 * uI2))
    return torch.tensor(out, dtype=torch.float64)


def test_gperp_after_training_has_exact_chi2_law_at_every_scale(gperp_samples):
    assert gperp_samples.numel() >= 140
    p = stats.kstest(gperp_samples.numpy(), "chi2", args=(ELL,)).pvalue
    assert p > 1e-7, f"normalised orthogonal gradient is not chi^2_{ELL} (KS p = {p:.2e})"


def test_gperp_two_sided_bound_fails_no_more_often_than_laurent_massart_allows(gperp_samples):
    # each sample violates [ell/2, 2 ell] with probability at most 2 e^{-ell/16}
    K = gperp_samples.numel()
    violations = int(((gperp_samples < ELL / 2) | (gperp_samples > 2 * ELL)).sum())
    limit = int(stats.binom.isf(1e-7, K, min(1.0, 2 * tail_probability(ELL))))
    assert violations <= limit, f"{violations} of {K} samples outside the two-sided bound (limit {limit})"


def test_gperp_is_proportional_to_beta_for_a_fixed_draw(problem):
    # same Gaussian draw at two scales, no training: g_perp scales exactly with beta (I(x0) is scale-free)
    sub, _, _, X_test = problem
    for s in range(5):
        p1 = ol.init_network(D, M, seed=930_000 + s, beta=D ** -0.5)
        p2 = ol.init_network(D, M, seed=930_000 + s, beta=D ** -1.5)
        g1 = ol.orthogonal_gradient(p1, sub, X_test)
        g2 = ol.orthogonal_gradient(p2, sub, X_test)
        assert torch.allclose(g2, g1 * D ** -1.0, rtol=1e-12, atol=1e-15)


def test_lipschitz_inequality_along_P_perp_holds_for_every_input(problem):
    # deterministic part 2: |N(x + z) - N(x)| <= ||W Q_perp||_op ||z|| for any x in R^d, z in P_perp
    sub = problem[0]
    gen = torch.Generator().manual_seed(940_000)
    for s in range(6):
        p = _trained(problem, 940_100 + s, SCALES[s % 3])
        op = float(torch.linalg.matrix_norm(p.W @ sub.perp_basis, ord=2))
        x = 10 * torch.randn(300, D, generator=gen, dtype=torch.float64)        # not only points of P
        z = ol.P_perp(sub, torch.randn(300, D, generator=gen, dtype=torch.float64))
        z = z * (torch.rand(300, 1, generator=gen, dtype=torch.float64) * 50 / z.norm(dim=1, keepdim=True))
        change = (ol.network_output(p, x + z) - ol.network_output(p, x)).abs()
        assert bool((change <= op * z.norm(dim=1) * (1 + 1e-12) + 1e-12).all())


def test_operator_norm_bound_fails_no_more_often_than_gaussian_concentration_allows(problem):
    # ||W(0) Q_perp||_op <= beta (sqrt m + sqrt l + t) fails w.p. <= e^{-t^2/2}; count over 1000 draws
    sub = problem[0]
    t, K = 2.0, 1000
    violations = 0
    for s in range(K):
        beta = SCALES[s % 3]
        W = ol.init_network(D, M, seed=950_000 + s, beta=beta).W
        op = float(torch.linalg.matrix_norm(W @ sub.perp_basis, ord=2))
        violations += op > perp_lipschitz_bound(beta, M, ELL, t)
    limit = int(stats.binom.isf(1e-7, K, math.exp(-t * t / 2)))
    assert violations <= limit, f"{violations} of {K} draws above the bound (limit {limit})"


def test_no_perturbation_in_P_perp_shorter_than_certified_radius_flips_the_sign(problem):
    # part 3 on 12 networks; t makes the union of the 12 Lipschitz events fail w.p. <= 12 e^{-t^2/2} = 1e-7
    sub, _, _, X_test = problem
    n_net = 12
    t = math.sqrt(2 * math.log(n_net / 1e-7))
    gen = torch.Generator().manual_seed(960_000)
    pts = X_test[1:]
    for s in range(n_net):
        beta = SCALES[s % 3]
        p = _trained(problem, 960_100 + s, beta)
        N0 = ol.network_output(p, pts)
        keep = N0 != 0
        x, N0 = pts[keep], N0[keep]
        r = torch.tensor([certified_radius(float(a), beta, M, ELL, t) for a in N0], dtype=torch.float64)
        dirs = [ol.universal_direction(p, sub).expand_as(x),
                -torch.sign(N0)[:, None] * ol.orthogonal_gradient(p, sub, x)]
        dirs += [ol.P_perp(sub, torch.randn(x.shape, generator=gen, dtype=torch.float64)) for _ in range(10)]
        for v in dirs:
            for sign in (1.0, -1.0):
                z = sign * 0.999 * r[:, None] * v / v.norm(dim=1, keepdim=True)
                assert bool((torch.sign(ol.network_output(p, x + z)) == torch.sign(N0)).all())


def test_certified_radius_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"^beta must"):
        certified_radius(1.0, -0.1, M, ELL)
    with pytest.raises(ValueError, match=r"^t must"):
        perp_lipschitz_bound(0.1, M, ELL, t=-1.0)
    with pytest.raises(TypeError, match=r"^m must"):
        perp_lipschitz_bound(0.1, 2.5, ELL)
