"""Theorem D (weight decay), checked on fresh seeds (not the chapter's), and the closed forms it adds.

Deterministic identities (exact decay, the projected gradient of the regularised objective, Euler's
balance) are checked to rounding error. The exact law of the decayed orthogonal gradient is checked by a
KS test at level 1e-7 over independent networks, and the certified radius with a confidence parameter t
that makes the union over all networks fail with probability below 1e-7.
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import ortho_lib as ol
from ortho_lib.train import loss_and_grads
from ortho_lib.theory import (
    LOGISTIC_BALANCE_MAX, lambert_w0, perp_lipschitz_bound, stationary_margin_bound,
    stationary_norm_bound, weight_decay_factor,
)

D, ELL, M, N_TRAIN = 64, 48, 32, 40
ETA = 0.5


@pytest.fixture(scope="module")
def problem(make_teacher_problem):
    """A fresh subspace, training set and test points (seeds unused by the chapter)."""
    return make_teacher_problem(D, ELL, N_TRAIN, seed=810_000)


# --- the closed forms added to ortho_lib.theory -------------------------------------------------------

@pytest.mark.parametrize("x", [0.0, 1e-300, 1e-8, 0.1, 1 / math.e, 1.0, 2.0, math.e, 3.0, 50.0, 1e4, 1e12, 1e300])
def test_lambert_w0_solves_w_exp_w_equals_x(x):
    w = lambert_w0(x)
    assert w >= 0
    if x < 1e300:
        assert math.isclose(w * math.exp(w), x, rel_tol=1e-13, abs_tol=1e-300)
    else:
        assert math.isclose(w + math.log(w), math.log(x), rel_tol=1e-14)


def test_lambert_w0_known_values():
    assert lambert_w0(0.0) == 0.0
    assert math.isclose(lambert_w0(math.e), 1.0, rel_tol=1e-15)
    assert math.isclose(lambert_w0(2 * math.exp(2)), 2.0, rel_tol=1e-14)


def test_lambert_w0_rejects_negative_and_non_numbers():
    with pytest.raises(ValueError, match=r"^x must"):
        lambert_w0(-0.1)
    with pytest.raises(ValueError, match=r"^x must"):
        lambert_w0(float("nan"))
    with pytest.raises(TypeError, match=r"^x must"):
        lambert_w0("1")


def test_logistic_balance_max_is_the_maximum_of_q_over_one_plus_exp_q():
    q = torch.linspace(-5, 20, 2_000_001, dtype=torch.float64)
    h = q / (1 + torch.exp(q))
    assert float(h.max()) <= LOGISTIC_BALANCE_MAX + 1e-15
    assert float(h.max()) >= LOGISTIC_BALANCE_MAX - 1e-12
    assert math.isclose(LOGISTIC_BALANCE_MAX, lambert_w0(1 / math.e), rel_tol=1e-15)


def test_stationary_norm_bound_is_balance_max_over_lambda():
    for lam in (1e-3, 0.1, 2.0):
        assert math.isclose(stationary_norm_bound(lam), LOGISTIC_BALANCE_MAX / lam, rel_tol=1e-15)
    with pytest.raises(ValueError, match=r"^lam must"):
        stationary_norm_bound(0.0)


def test_stationary_margin_bound_is_lambert_of_r2_over_lambda_and_at_least_one():
    assert math.isclose(stationary_margin_bound(0.01, 101.0), lambert_w0(10_100.0), rel_tol=1e-15)
    assert stationary_margin_bound(100.0, 1.0) == 1.0
    caps = [stationary_margin_bound(lam, 101.0) for lam in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)]
    assert all(a > b for a, b in zip(caps, caps[1:]))          # decreasing in lambda
    assert caps[0] < math.log(101.0 / 1e-4)                     # below ln(R^2/lambda)


def test_stationary_margin_bound_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"^lam must"):
        stationary_margin_bound(-1.0, 10.0)
    with pytest.raises(ValueError, match=r"^radius_sq must"):
        stationary_margin_bound(0.1, 0.0)
    with pytest.raises(TypeError, match=r"^radius_sq must"):
        stationary_margin_bound(0.1, None)


# --- part 1: exact decay --------------------------------------------------------------------------------

@pytest.mark.parametrize("lam,steps", [(1e-3, 300), (0.01, 200), (0.05, 100)])
def test_perp_weights_decay_exactly_by_one_minus_eta_lambda_per_step(problem, lam, steps):
    sub, X, y, _ = problem
    for s in range(3):
        p0 = ol.init_network(D, M, seed=820_000 + 10 * s, beta=D ** -0.5)
        res = ol.train(p0, X, y, lr=ETA, max_steps=steps, weight_decay=lam)
        c = weight_decay_factor(ETA, lam, steps)
        assert math.isclose(res.decay_factor, c, rel_tol=1e-12)
        dev = (ol.P_perp(sub, res.params.W) - c * ol.P_perp(sub, p0.W)).abs().max()
        assert float(dev) < 1e-13


def test_gperp_is_decayed_initial_sum_over_final_active_set(problem):
    sub, X, y, X_test = problem
    for s, lam in enumerate((1e-3, 0.01, 0.03)):
        p0 = ol.init_network(D, M, seed=830_000 + s)
        p = ol.train(p0, X, y, lr=ETA, max_steps=150, weight_decay=lam).params
        c = weight_decay_factor(ETA, lam, 150)
        A = ol.active_set(p, X_test).to(p.W.dtype)
        predicted = c * ol.P_perp(sub, (A * p.u) @ p0.W)
        assert float((ol.orthogonal_gradient(p, sub, X_test) - predicted).abs().max()) < 1e-13


def test_decayed_gperp_has_exact_chi2_law(problem):
    # 150 independent networks with weight decay: ||g_perp||^2 / (c^2 beta^2 ||u_I||^2) ~ chi^2_ell
    sub, X, y, X_test = problem
    x0 = X_test[0]
    lams, steps, beta = (1e-3, 5e-3, 0.02), 60, D ** -0.5
    samples = []
    for s in range(150):
        lam = lams[s % 3]
        p0 = ol.init_network(D, M, seed=840_000 + s, beta=beta)
        p = ol.train(p0, X, y, lr=ETA, max_steps=steps, weight_decay=lam).params
        active = ol.active_set(p, x0)
        uI2 = float((p.u[active] ** 2).sum())
        if uI2 == 0.0:
            continue
        c = weight_decay_factor(ETA, lam, steps)
        samples.append(float(ol.orthogonal_gradient(p, sub, x0).norm() ** 2) / (c * c * beta * beta * uI2))
    assert len(samples) >= 140
    p_value = stats.kstest(samples, "chi2", args=(ELL,)).pvalue
    assert p_value > 1e-7, f"decayed orthogonal gradient is not chi^2_{ELL} (KS p = {p_value:.2e})"


def test_decayed_certified_radius_is_never_beaten_in_P_perp(problem):
    # radius |N_T| / (c_T beta (sqrt m + sqrt l + t)); 10 networks, union failure <= 10 e^{-t^2/2} = 1e-7
    sub, X, y, X_test = problem
    n_net = 10
    t = math.sqrt(2 * math.log(n_net / 1e-7))
    gen = torch.Generator().manual_seed(850_000)
    pts, beta = X_test[1:], D ** -0.5
    for s in range(n_net):
        lam = (0.003, 0.01)[s % 2]
        p = ol.train(ol.init_network(D, M, seed=850_100 + s), X, y, lr=ETA, max_steps=100, weight_decay=lam).params
        c = weight_decay_factor(ETA, lam, 100)
        N0 = ol.network_output(p, pts)
        keep = N0 != 0
        x, N0 = pts[keep], N0[keep]
        r = N0.abs() / (c * perp_lipschitz_bound(beta, M, ELL, t))
        dirs = [ol.universal_direction(p, sub).expand_as(x)]
        dirs += [ol.P_perp(sub, torch.randn(x.shape, generator=gen, dtype=torch.float64)) for _ in range(10)]
        for v in dirs:
            for sign in (1.0, -1.0):
                z = sign * 0.999 * r[:, None] * v / v.norm(dim=1, keepdim=True)
                assert bool((torch.sign(ol.network_output(p, x + z)) == torch.sign(N0)).all())


# --- part 2: the stationary limit -------------------------------------------------------------------------

def test_perp_part_of_regularised_gradient_is_lambda_times_perp_weights(problem):
    sub, X, y, _ = problem
    gen = torch.Generator().manual_seed(860_000)
    for s in range(5):
        p = ol.init_network(D, M, seed=860_100 + s, bias="uniform")
        p = p.replace(W=p.W + 0.3 * torch.randn(M, D, generator=gen, dtype=torch.float64))
        lam = 10.0 ** -(s + 1)
        _, _, g = loss_and_grads(p, X, y)
        lhs = ol.P_perp(sub, g["W"] + lam * p.W)
        assert float((lhs - lam * ol.P_perp(sub, p.W)).abs().max()) < 1e-14


def test_network_without_perp_part_is_constant_along_P_perp(problem):
    sub = problem[0]
    gen = torch.Generator().manual_seed(870_000)
    p = ol.init_network(D, M, seed=870_001, bias="uniform")
    p = p.replace(W=ol.Pi_P(sub, p.W))                    # Pi_perp W = 0, as at a stationary point
    x = 10 * torch.randn(200, D, generator=gen, dtype=torch.float64)
    z = 100 * ol.P_perp(sub, torch.randn(200, D, generator=gen, dtype=torch.float64))
    assert float((ol.network_output(p, x + z) - ol.network_output(p, x)).abs().max()) < 1e-12
    assert float(ol.orthogonal_gradient(p, sub, x).abs().max()) < 1e-15


def test_long_weight_decay_training_removes_perp_part_to_rounding_level(problem):
    sub, X, y, X_test = problem
    p = ol.train(ol.init_network(D, M, seed=880_000), X, y, lr=ETA, max_steps=1500, weight_decay=0.05).params
    assert weight_decay_factor(ETA, 0.05, 1500) < 1e-16
    assert float(ol.P_perp(sub, p.W).abs().max()) < 1e-14
    z = math.sqrt(D) * ol.P_perp(sub, torch.randn(D, generator=torch.Generator().manual_seed(880_001),
                                                  dtype=torch.float64))
    assert float((ol.network_output(p, X_test + z) - ol.network_output(p, X_test)).abs().max()) < 1e-12


# --- part 3: the balance behind the price --------------------------------------------------------------

def test_euler_balance_identity_holds_at_every_point(problem):
    # lambda ||theta||^2 - mean q/(1+e^q) = <grad L_lambda, theta>, for any (W, b), stationary or not
    _, X, y, _ = problem
    for s, lam in enumerate((1e-3, 0.03, 0.3)):
        p0 = ol.init_network(D, M, seed=890_000 + s, bias="uniform")
        p = ol.train(p0, X, y, lr=ETA, max_steps=50 * (s + 1), weight_decay=lam).params
        _, f, g = loss_and_grads(p, X, y)
        q = y * f
        theta2 = float((p.W ** 2).sum() + (p.b ** 2).sum())
        inner = float(((g["W"] + lam * p.W) * p.W).sum() + ((g["b"] + lam * p.b) * p.b).sum())
        balance = float((q * torch.sigmoid(-q)).mean())
        assert math.isclose(lam * theta2 - balance, inner, rel_tol=1e-9, abs_tol=1e-13)
