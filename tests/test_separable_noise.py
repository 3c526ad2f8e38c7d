"""Separability of one-step adversarial noises (ortho_lib.separability; Zhang, Yu, Lu, He 2023).

Unit tests of every public function, then theory checks on fresh seeds (never the chapter's seeds).
Each theory check is designed so that a correct implementation fails with probability below 1e-6;
the reasoning is in each docstring.
"""
import math

import numpy as np
import pytest
import torch
from scipy.stats import binom

import ortho_lib as ol
from ortho_lib.separability import (
    MLP, active_mass_fraction, adversarial_examples, cantelli_bound, cover_separable_probability,
    fgsm_noise, key_quantity, key_quantity_moments, lazy_decomposition, linear_probe,
    linearly_separable, load_digits_split, multiclass_noise, one_step_noise, paper_variance,
    projected_direction, projected_key_quantity_cdf, projected_key_quantity_moments,
    projected_separation_probability, sample_key_quantity, separating_direction, separation_margins,
    span_complement_projector, sphere_data, train_mlp,
)


def _net(d, m, seed, **kw):
    return ol.init_network(d, m, seed=seed, second_layer="gaussian", **kw)


def _ks_distance(u):
    u = np.sort(np.asarray(u))
    n = len(u)
    return float(np.max(np.maximum(np.arange(1, n + 1) / n - u, u - np.arange(n) / n)))


def _ks_critical(n, alpha=1e-7):
    # Dvoretzky-Kiefer-Wolfowitz (Massart's constant): P(sup|F_n - F| > eps) <= 2 exp(-2 n eps^2).
    return math.sqrt(math.log(2 / alpha) / (2 * n))


# ---------------------------------------------------------------- unit tests: binary network

def test_sphere_data_has_norm_sqrt_d_and_is_seeded():
    X = sphere_data(7, 13, seed=5)
    assert X.shape == (7, 13)
    assert torch.allclose(X.norm(dim=1), torch.full((7,), math.sqrt(13), dtype=X.dtype), atol=1e-12)
    assert torch.equal(X, sphere_data(7, 13, seed=5))


def test_sphere_data_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n"):
        sphere_data(0, 3, seed=0)
    with pytest.raises(TypeError, match="d"):
        sphere_data(3, "3", seed=0)


@pytest.mark.parametrize("bias", ["zero", "uniform"])
def test_one_step_noise_matches_autograd_of_the_logistic_loss(bias):
    p = _net(9, 17, 101, bias=bias)
    X = sphere_data(12, 9, seed=102)
    y = ol.random_labels(12, seed=103)
    Xg = X.clone().requires_grad_(True)
    torch.nn.functional.softplus(-y * ol.network_output(p, Xg)).sum().backward()
    assert torch.allclose(one_step_noise(p, X, y), Xg.grad, atol=1e-13)


def test_one_step_noise_rejects_bad_labels_and_params():
    p = _net(4, 5, 104)
    X = sphere_data(3, 4, seed=105)
    with pytest.raises(ValueError, match="y"):
        one_step_noise(p, X, torch.tensor([1.0, -1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="y"):
        one_step_noise(p, X, torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64))
    with pytest.raises(TypeError, match="params"):
        one_step_noise("net", X, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="X"):
        one_step_noise(p, sphere_data(3, 5, seed=1), torch.ones(3, dtype=torch.float64))


def test_fgsm_noise_is_the_sign_of_the_l2_noise():
    p = _net(6, 8, 106)
    X, y = sphere_data(5, 6, seed=107), ol.random_labels(5, seed=108)
    assert torch.equal(fgsm_noise(p, X, y), torch.sign(one_step_noise(p, X, y)))


def test_separating_direction_is_minus_W_transpose_a():
    p = _net(6, 8, 109)
    assert torch.allclose(separating_direction(p), -(p.W.T @ p.u), atol=1e-14)


def test_key_quantity_is_aTWWTDa_and_gives_the_margin_identity():
    p = _net(10, 30, 110)
    X, y = sphere_data(20, 10, seed=111), ol.random_labels(20, seed=112)
    D = ((X @ p.W.T) > 0).to(X.dtype)
    manual = torch.stack([p.u @ p.W @ p.W.T @ (D[j] * p.u) for j in range(20)])
    q = key_quantity(p, X)
    assert torch.allclose(q, manual, atol=1e-13)
    s = torch.sigmoid(y * ol.network_output(p, X))
    margins = separation_margins(separating_direction(p), one_step_noise(p, X, y), y)
    assert torch.allclose(margins, (1 - s) * q, atol=1e-13)


def test_key_quantity_rejects_a_direction_of_the_wrong_length():
    p = _net(5, 7, 113)
    with pytest.raises(ValueError, match="direction"):
        key_quantity(p, sphere_data(2, 5, seed=1), torch.ones(4, dtype=torch.float64))


def test_separation_margins_checks_shapes():
    with pytest.raises(ValueError, match="direction"):
        separation_margins(torch.ones(3, dtype=torch.float64), torch.ones(2, 4, dtype=torch.float64),
                           torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="y"):
        separation_margins(torch.ones(4, dtype=torch.float64), torch.ones(2, 4, dtype=torch.float64),
                           torch.ones(3, dtype=torch.float64))


def test_key_quantity_moments_full_rank_closed_form():
    for m, d in [(1, 1), (100, 100), (400, 40), (7, 300)]:
        mean, var = key_quantity_moments(m, d)
        assert mean == 0.5
        assert var == pytest.approx(5 / (4 * m) + 3 / (4 * d) + 9 / (4 * m * d), rel=1e-12)
    assert key_quantity_moments(10, 20, k=0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="k"):
        key_quantity_moments(10, 20, k=21)


def test_paper_variance_and_its_gap_to_the_exact_variance():
    m, d = 400, 40
    assert paper_variance(m, d) == pytest.approx(5 / 1600 + 1 / 40 + 2 / 16000)
    # the two differ by (1/4)(1/d)(1 - 1/m): E[D_i D_j] = 1/4, not 1/2
    assert paper_variance(m, d) - key_quantity_moments(m, d)[1] == pytest.approx((1 - 1 / m) / (4 * d), rel=1e-12)


def test_cantelli_bound_value_and_bad_threshold():
    assert cantelli_bound(0.5, 0.02, 0.0) == pytest.approx(0.02 / 0.27)
    with pytest.raises(ValueError, match="threshold"):
        cantelli_bound(0.5, 0.02, 0.6)
    with pytest.raises(ValueError, match="variance"):
        cantelli_bound(0.5, -1.0, 0.0)


def test_sample_key_quantity_is_seeded_and_matches_key_quantity():
    a = sample_key_quantity(8, 6, 50, seed=114, chunk=7)
    assert a.shape == (50,) and torch.equal(a, sample_key_quantity(8, 6, 50, seed=114, chunk=7))
    # one draw by hand, with the generator consumed in the same order (W, a, x)
    g = torch.Generator().manual_seed(115)
    W = torch.randn(1, 8, 6, generator=g, dtype=torch.float64) / math.sqrt(6)
    u = torch.randn(1, 8, generator=g, dtype=torch.float64) / math.sqrt(8)
    x = torch.randn(1, 6, generator=g, dtype=torch.float64)
    x = math.sqrt(6) * x / x.norm()
    p = ol.make_params(W[0], u=u[0])
    assert torch.allclose(sample_key_quantity(8, 6, 1, seed=115), key_quantity(p, x), atol=1e-13)


def test_span_complement_projector_is_the_orthogonal_projection():
    X = sphere_data(4, 9, seed=116)
    P = span_complement_projector(X)
    assert torch.allclose(P @ P, P, atol=1e-12) and torch.allclose(P, P.T, atol=1e-12)
    assert float((X @ P).abs().max()) < 1e-12
    assert int(round(float(torch.trace(P)))) == 5
    assert float(span_complement_projector(sphere_data(9, 9, seed=117)).abs().max()) == 0.0


def test_projected_direction_is_orthogonal_to_the_data_and_vanishes_when_n_ge_d():
    p = _net(12, 20, 118)
    X = sphere_data(5, 12, seed=119)
    vp = projected_direction(p, X)
    assert float((X @ vp).abs().max()) < 1e-12
    assert float(projected_direction(p, sphere_data(12, 12, seed=120)).abs().max()) == 0.0


def test_adversarial_examples_and_the_corollary_identity():
    p = _net(15, 25, 121)
    X, y = sphere_data(6, 15, seed=122), ol.random_labels(6, seed=123)
    Z = adversarial_examples(p, X, y, 0.7)
    assert torch.allclose(Z, X + 0.7 * one_step_noise(p, X, y), atol=1e-14)
    vp = projected_direction(p, X)
    s = torch.sigmoid(y * ol.network_output(p, X))
    assert torch.allclose(separation_margins(vp, Z, y), 0.7 * (1 - s) * key_quantity(p, X, vp), atol=1e-12)
    with pytest.raises(ValueError, match="eta"):
        adversarial_examples(p, X, y, 0.0)


def test_linearly_separable_on_small_examples():
    Z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert linearly_separable(Z, torch.tensor([1.0, -1.0], dtype=torch.float64))
    assert not linearly_separable(Z, torch.tensor([1.0, 1.0], dtype=torch.float64))
    # XOR through the origin: four points on the axes with alternating labels
    Z4 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    assert not linearly_separable(Z4, torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="y"):
        linearly_separable(Z, torch.tensor([1.0, 2.0], dtype=torch.float64))


def test_cover_separable_probability_values():
    assert cover_separable_probability(10, 10) == pytest.approx(1.0)
    assert cover_separable_probability(40, 20) == pytest.approx(0.5)
    assert cover_separable_probability(3, 2) == pytest.approx(0.75)   # 6 of 8 dichotomies of 3 points in R^2
    with pytest.raises(ValueError, match="n"):
        cover_separable_probability(0, 3)


def test_lazy_decomposition_is_exact_and_zero_without_training():
    p0 = _net(8, 30, 124)
    X = sphere_data(10, 8, seed=125)
    dec = lazy_decomposition(p0, p0, X)
    assert torch.allclose(dec.q_star, dec.q0, atol=1e-14)
    assert dec.bound_W == 0.0 and dec.bound_a == 0.0 and int(dec.n_flipped.sum()) == 0
    g = torch.Generator().manual_seed(126)
    p1 = p0.replace(W=p0.W + 0.05 * torch.randn(30, 8, generator=g, dtype=torch.float64),
                    u=p0.u + 0.05 * torch.randn(30, generator=g, dtype=torch.float64))
    dec = lazy_decomposition(p0, p1, X)
    assert torch.allclose(dec.q_star, dec.q0 + dec.E_flip + dec.E_W + dec.E_a, atol=1e-13)
    assert bool((dec.E_flip.abs() <= dec.bound_flip + 1e-13).all())
    assert bool((dec.E_W.abs() <= dec.bound_W + 1e-13).all()) and bool((dec.E_a.abs() <= dec.bound_a + 1e-13).all())


def test_lazy_decomposition_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="trained"):
        lazy_decomposition(_net(5, 6, 1), _net(5, 7, 2), sphere_data(3, 5, seed=3))


def test_active_mass_fraction_lies_in_unit_interval():
    rho = active_mass_fraction(_net(10, 40, 127), sphere_data(20, 10, seed=128))
    assert rho.shape == (20,) and bool(((rho >= 0) & (rho <= 1)).all())


def test_projected_separation_probability_known_values():
    assert projected_separation_probability(0) == 0.0
    # k = 1: P(|Z1/Z2| > tan(pi/8)) = 3/4 exactly for rho = 1/2
    assert projected_separation_probability(1) == pytest.approx(0.75, abs=1e-12)
    assert projected_separation_probability(5, 1.0) == pytest.approx(1.0)
    t = projected_separation_probability(3, torch.tensor([0.5, 0.25], dtype=torch.float64))
    assert t.shape == (2,) and float(t[0]) > float(t[1])
    with pytest.raises(ValueError, match="active_fraction"):
        projected_separation_probability(3, 1.5)


def test_projected_key_quantity_cdf_is_a_distribution_function():
    p = _net(12, 30, 129)
    X = sphere_data(1, 12, seed=130).expand(5, 12).contiguous()
    q = torch.tensor([-5.0, -0.05, 0.0, 0.05, 5.0], dtype=torch.float64)
    F = projected_key_quantity_cdf(q, p, X, 6)
    assert bool((F[1:] >= F[:-1]).all()) and float(F[0]) < 1e-6 and float(F[-1]) > 1 - 1e-6
    # P(q' <= 0) = 1 - P(F_kk > r)
    rho = active_mass_fraction(p, X[:1])
    assert float(F[2]) == pytest.approx(1 - float(projected_separation_probability(6, rho)[0]), abs=1e-4)


def test_projected_key_quantity_moments_match_the_exact_law():
    # mean and variance of lambda_+ U1 - |lambda_-| U2 with the same S
    p = _net(20, 50, 131)
    X = sphere_data(3, 20, seed=132)
    mu, sd = projected_key_quantity_moments(p, X, 8)
    S = active_mass_fraction(p, X) * float(p.u @ p.u)
    A = float(p.u @ p.u)
    lp, lm = (S + (S * A).sqrt()) / 40, ((S * A).sqrt() - S) / 40
    assert torch.allclose(mu, 8 * (lp - lm), atol=1e-14)
    assert torch.allclose(sd ** 2, 2 * 8 * (lp ** 2 + lm ** 2), atol=1e-14)


# ---------------------------------------------------------------- unit tests: multi-class protocol

@pytest.fixture(scope="module")
def digits():
    return load_digits_split(seed=7)


def test_load_digits_split_shapes_scaling_and_stratification(digits):
    assert digits.X_train.shape == (1198, 64) and digits.X_test.shape == (599, 64)
    assert float(digits.X_train.min()) >= 0 and float(digits.X_train.max()) <= 1
    assert torch.bincount(digits.y_test, minlength=10).min() >= 55


def test_load_digits_split_shuffle_keeps_class_counts_and_breaks_the_pairing():
    from sklearn.datasets import load_digits

    a, b = load_digits_split(seed=8), load_digits_split(seed=8, shuffle_labels=True)
    counts = lambda s: torch.bincount(torch.cat([s.y_train, s.y_test]), minlength=10)  # noqa: E731
    assert torch.equal(counts(a), counts(b))
    Xo, yo = load_digits(return_X_y=True)
    original = {tuple(row): int(lab) for row, lab in zip(Xo / 16.0, yo)}
    kept = np.mean([original[tuple(row)] == int(lab) for row, lab in zip(b.X_train.numpy(), b.y_train)])
    assert kept < 0.3          # about 1/10 of the images keep their label by chance
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_split(seed=1, test_fraction=1.5)


def test_train_mlp_is_reproducible_and_leaves_the_global_rng_alone(digits):
    X, y = digits.X_train[:200], digits.y_train[:200]
    state = torch.random.get_rng_state()
    r1 = train_mlp(X, y, width=16, lr=0.1, epochs=2, seed=9, snapshot_epochs=(0, 2))
    assert torch.equal(state, torch.random.get_rng_state())
    r2 = train_mlp(X, y, width=16, lr=0.1, epochs=2, seed=9, snapshot_epochs=(0, 2))
    assert sorted(r1.snapshots) == [0, 2] and r1.train_loss.shape == (2,)
    for a, b in zip(r1.snapshots[2].parameters(), r2.snapshots[2].parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(r1.snapshots[0].out.weight, r1.snapshots[2].out.weight)


def test_train_mlp_rejects_bad_arguments(digits):
    X, y = digits.X_train[:20], digits.y_train[:20]
    with pytest.raises(ValueError, match="lr"):
        train_mlp(X, y, width=4, lr=-1.0, epochs=1, seed=0)
    with pytest.raises(TypeError, match="y"):
        train_mlp(X, y.double(), width=4, lr=0.1, epochs=1, seed=0)
    with pytest.raises(ValueError, match="snapshot_epochs"):
        train_mlp(X, y, width=4, lr=0.1, epochs=1, seed=0, snapshot_epochs=(3,))


def test_multiclass_noise_matches_autograd_and_normalises(digits):
    X, y = digits.X_train[:30], digits.y_train[:30]
    torch.manual_seed(10)
    model = MLP(64, 12, 10)
    Xg = X.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(Xg) / 3.0, y, reduction="sum").backward()
    g = Xg.grad
    N = multiclass_noise(model, X, y, temperature=3.0)
    assert torch.allclose(N, g / g.norm(dim=1, keepdim=True), atol=1e-12)
    assert torch.allclose(N.norm(dim=1), torch.ones(30, dtype=N.dtype), atol=1e-12)
    assert torch.equal(multiclass_noise(model, X, y, norm="linf", temperature=3.0), torch.sign(g))


def test_multiclass_noise_targeted_descends_towards_the_next_class(digits):
    X, y = digits.X_train[:30], digits.y_train[:30]
    torch.manual_seed(11)
    model = MLP(64, 12, 10)
    Xg = X.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(Xg), (y + 1) % 10, reduction="sum").backward()
    N = multiclass_noise(model, X, y, targeted=True)
    assert torch.allclose(N, -Xg.grad / Xg.grad.norm(dim=1, keepdim=True), atol=1e-12)


def test_multiclass_noise_rejects_bad_arguments(digits):
    model = MLP(64, 4, 10)
    X, y = digits.X_train[:5], digits.y_train[:5]
    with pytest.raises(ValueError, match="norm"):
        multiclass_noise(model, X, y, norm="l1")
    with pytest.raises(ValueError, match="temperature"):
        multiclass_noise(model, X, y, temperature=0.0)
    with pytest.raises(TypeError, match="model"):
        multiclass_noise(lambda x: x, X, y)
    with pytest.raises(ValueError, match="y"):
        multiclass_noise(model, X, torch.full((5,), 10))


def test_linear_probe_separates_an_easy_problem_and_reports_convergence():
    g = torch.Generator().manual_seed(12)
    y = torch.arange(200) % 3
    F = torch.randn(200, 5, generator=g, dtype=torch.float64) + 10 * torch.nn.functional.one_hot(y, 5).double()
    r = linear_probe(F[:150], y[:150], F[150:], y[150:])
    assert r.train_accuracy == 1.0 and r.test_accuracy == 1.0 and r.converged
    with pytest.raises(ValueError, match="y_train"):
        linear_probe(F[:150], y[:149], F[150:], y[150:])
    with pytest.raises(ValueError, match="F_test"):
        linear_probe(F[:150], y[:150], F[150:, :4], y[150:])


# ---------------------------------------------------------------- theory checks on fresh seeds

def test_key_quantity_has_the_exact_mean_and_variance_not_the_heuristic_one():
    """Lemma: E q = 1/2, Var q = 5/(4m) + 3/(4d) + 9/(4md), over i.i.d. draws at (m, d) = (200, 20).

    With N = 12000 i.i.d. draws the sample mean and variance are within 5.3 (estimated) standard
    errors of the truth except with probability about 1.2e-7 each (central limit theorem; the standard
    error of the variance uses the sample kurtosis). The paper's heuristic variance is 28% larger,
    about 18 standard errors away, so it must be rejected.
    """
    m, d, N = 200, 20, 12_000
    Q = sample_key_quantity(m, d, N, seed=90_001)
    mean, var = key_quantity_moments(m, d)
    v = float(Q.var())
    kurt = float(((Q - Q.mean()) ** 4).mean()) / v ** 2
    se_var = v * math.sqrt((kurt - 1) / N)
    assert abs(float(Q.mean()) - mean) < 5.3 * math.sqrt(v / N)
    assert abs(v - var) < 5.3 * se_var
    assert abs(v - paper_variance(m, d)) > 5.3 * se_var


def test_theorem_3_1_floor_violations_obey_the_cantelli_binomial_bound():
    """P[q <= 1/32] <= Cantelli bound c (exact variance), for each of N i.i.d. draws at m = d = 64.

    The number of violations is then stochastically below Binomial(N, c); we reject only above the
    (1 - 1e-7)-quantile of that binomial, so a correct implementation fails with probability < 1e-7.
    """
    m = d = 64
    N = 4000
    Q = sample_key_quantity(m, d, N, seed=90_002)
    mean, var = key_quantity_moments(m, d)
    c = cantelli_bound(mean, var, 1 / 32)
    limit = binom.ppf(1 - 1e-7, N, c)
    assert int((Q <= 1 / 32).sum()) <= limit


def test_separation_by_v_depends_on_q_only_not_on_the_labels():
    """Theorem 3.1's reduction: y<v, r> > 0 exactly when q(x) > 0, whatever the labels (n = 400 > d = 64).

    An identity (the factor 1 - s(yf) lies in (0, 1)), checked on 10 fresh networks with random labels
    and with every label flipped; it cannot fail for a correct implementation.
    """
    for e in range(10):
        p = _net(64, 64, 90_100 + e)
        X, y = sphere_data(400, 64, seed=90_200 + e), ol.random_labels(400, seed=90_300 + e)
        q = key_quantity(p, X)
        for labels in (y, -y):
            marg = separation_margins(separating_direction(p), one_step_noise(p, X, labels), labels)
            assert torch.equal(marg > 0, q > 0)


def test_projected_key_quantity_follows_its_exact_law_at_initialisation():
    """Lemma (exact conditional law): u = P[q' <= observed | a, D] is Uniform(0, 1).

    One point per fresh network (d = 20, n = 12 data points, k = 8, m = 60), N = 1000 independent
    values; the Dvoretzky-Kiefer-Wolfowitz inequality makes the Kolmogorov-Smirnov distance exceed
    sqrt(log(2/1e-7)/(2N)) with probability below 1e-7 (the quadrature error is below 1e-4).
    """
    d, n, m, N = 20, 12, 60, 1000
    u = []
    for e in range(N):
        p = _net(d, m, 91_000 + e)
        X = sphere_data(n, d, seed=92_000 + e)
        q = key_quantity(p, X[:1], projected_direction(p, X))
        u.append(float(projected_key_quantity_cdf(q, p, X[:1], d - n)[0]))
    assert _ks_distance(u) < _ks_critical(N) + 1e-4


def test_perturbation_bound_of_theorem_3_6_holds_for_trained_networks():
    """Book's Theorem 3.6: q* = q0 + E_flip + E_W + E_a exactly and each |E| below its bound.

    Deterministic statement: checked on fresh networks trained with and without the second layer
    (no randomness can make it fail).
    """
    for e, second in enumerate([False, True]):
        p0 = _net(15, 60, 93_000 + e)
        X, y = sphere_data(30, 15, seed=93_100 + e), ol.random_labels(30, seed=93_200 + e)
        res = ol.train(p0, X, y, lr=0.5 if not second else 0.02, max_steps=300, train_bias=False,
                       train_second_layer=second)
        dec = lazy_decomposition(p0, res.params, X)
        assert torch.allclose(dec.q_star, dec.q0 + dec.E_flip + dec.E_W + dec.E_a, atol=1e-12)
        assert bool(((dec.q_star - dec.q0).abs() <= dec.total_bound + 1e-12).all())
        assert bool((dec.E_flip.abs() <= dec.bound_flip + 1e-12).all())
        if not second:
            assert float(dec.E_a.abs().max()) == 0.0


def test_projected_direction_is_frozen_and_follows_its_law_after_training():
    """Proposition: after GD on the first layer to margin 1 (n < d), v' is unchanged and
    u = P[q'_t <= observed | a, D^(t)] is Uniform(0, 1) across independent networks.

    N = 400 fresh networks, one training point each; DKW bounds the failure probability by 1e-7.
    """
    d, n, m, N = 20, 10, 40, 400
    X, y = sphere_data(n, d, seed=94_000), ol.random_labels(n, seed=94_001)
    u = []
    for e in range(N):
        p0 = _net(d, m, 94_100 + e)
        res = ol.train(p0, X, y, lr=1.0, max_steps=200, target_margin=1.0, train_bias=False)
        vp = projected_direction(p0, X)
        assert float((projected_direction(res.params, X) - vp).abs().max()) < 1e-12
        j = e % n
        q = key_quantity(res.params, X[j:j + 1], vp)
        u.append(float(projected_key_quantity_cdf(q, res.params, X[j:j + 1], d - n)[0]))
    assert _ks_distance(u) < _ks_critical(N) + 1e-4


def test_noise_probe_reads_random_labels_at_initialisation():
    """Multi-class analogue of Theorem 3.1 on digits with shuffled labels, fresh split and init seeds.

    At initialisation the L2 noise is -V^T D_x A^T (e_y - p) / ||.|| with p nearly uniform, so the label
    is written into the noise through the fixed rows of A. There is no closed-form failure
    probability here; the threshold 0.9 leaves a wide margin below the perfect accuracy measured in
    the chapter and far above the chance level 0.1 of the clean probe.
    """
    ds = load_digits_split(seed=95, shuffle_labels=True)
    model = train_mlp(ds.X_train, ds.y_train, width=64, lr=0.1, epochs=0, seed=96).snapshots[0]
    Ntr = multiclass_noise(model, ds.X_train, ds.y_train)
    Nte = multiclass_noise(model, ds.X_test, ds.y_test)
    noise = linear_probe(Ntr, ds.y_train, Nte, ds.y_test)
    clean = linear_probe(ds.X_train, ds.y_train, ds.X_test, ds.y_test)
    assert noise.test_accuracy > 0.9
    assert clean.test_accuracy < 0.3
