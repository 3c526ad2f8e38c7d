"""Separability of one-step adversarial noises (ortho_lib.separability; Zhang, Yu, Lu, He 2023).

Unit tests of every public function of ortho_lib.separability, then theory checks on fresh seeds (never the
chapter's seeds).  The functions that moved out of the module are tested with their new modules: the noises in
test_perturbations.py, the closed forms in test_theory.py, the digits protocol in test_datasets.py, test_mlp.py
and test_probes.py.
Each theory check is designed so that a correct implementation fails with probability below 1e-6;
the reasoning is in each docstring.
"""
import math

import numpy as np
import pytest
import torch
from scipy.stats import binom

import ortho_lib as ol
from ortho_lib.data import sphere_data
from ortho_lib.datasets import load_digits_split
from ortho_lib.mlp import train_mlp
from ortho_lib.perturbations import adversarial_examples, multiclass_noise, one_step_noise
from ortho_lib.probes import linear_probe
from ortho_lib.separability import (
    active_mass_fraction, key_quantity, lazy_decomposition, linearly_separable, projected_direction,
    projected_key_quantity_cdf, projected_key_quantity_moments, sample_key_quantity, separating_direction,
    separation_margins, span_complement_projector,
)
from ortho_lib.theory import cantelli_bound, key_quantity_moments, paper_variance, projected_separation_probability


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


def test_sample_key_quantity_is_seeded_and_matches_key_quantity():
    a = sample_key_quantity(8, 6, 50, seed=114, chunk=7)
    assert a.shape == (50,) and torch.equal(a, sample_key_quantity(8, 6, 50, seed=114, chunk=7))
    # one draw by hand, with the generator consumed in the same order (W, a, x)
    g = torch.Generator().manual_seed(115)
    W = torch.randn(1, 8, 6, generator=g, dtype=torch.float64) / math.sqrt(6)
    u = torch.randn(1, 8, generator=g, dtype=torch.float64) / math.sqrt(8)
    x = torch.randn(1, 6, generator=g, dtype=torch.float64)
    x = math.sqrt(6) * x / x.norm()
    p = ol.TwoLayerParams(W[0], torch.zeros(8, dtype=torch.float64), u[0], 0.0)
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


@pytest.mark.claim("thm-sep-examples")
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


# ---------------------------------------------------------------- theory checks on fresh seeds

@pytest.mark.claim("lem-sep-moments")
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


@pytest.mark.claim("thm-sep-init")
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


@pytest.mark.claim("thm-sep-init")
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


@pytest.mark.claim("lem-sep-projected-law")
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


@pytest.mark.claim("thm-sep-lazy-bound")
@pytest.mark.claim("thm-sep-ntk")
def test_perturbation_bound_of_theorem_3_6_holds_for_trained_networks():
    """Book's Theorem 3.6: q* = q0 + E_flip + E_W + E_a exactly and each |E| below its bound.

    Deterministic statement: checked on fresh networks trained with and without the second layer
    (no randomness can make it fail).
    """
    for e, second in enumerate([False, True]):
        p0 = _net(15, 60, 93_000 + e)
        X, y = sphere_data(30, 15, seed=93_100 + e), ol.random_labels(30, seed=93_200 + e)
        res = ol.train(p0, X, y, ol.TrainConfig(lr=0.5 if not second else 0.02, max_steps=300,
                                                trained="Wu" if second else "W"))
        dec = lazy_decomposition(p0, res.params, X)
        assert torch.allclose(dec.q_star, dec.q0 + dec.E_flip + dec.E_W + dec.E_a, atol=1e-12)
        assert bool(((dec.q_star - dec.q0).abs() <= dec.total_bound + 1e-12).all())
        assert bool((dec.E_flip.abs() <= dec.bound_flip + 1e-12).all())
        if not second:
            assert float(dec.E_a.abs().max()) == 0.0


@pytest.mark.claim("prop-sep-frozen")
def test_projected_direction_is_frozen_and_follows_its_law_after_training():
    """Proposition: after GD on the first layer to margin 1 (n < d), v' is unchanged and
    u = P[q'_t <= observed | a, D^(t)] is Uniform(0, 1) across independent networks.

    N = 400 fresh networks, one training point each; DKW bounds the failure probability by 1e-7.
    """
    d, n, m, N = 20, 10, 40, 400
    X, y = sphere_data(n, d, seed=94_000), ol.random_labels(n, seed=94_001)
    nets = [_net(d, m, 94_100 + e) for e in range(N)]
    trained = ol.train(nets, X, y, ol.TrainConfig(lr=1.0, max_steps=200, target_margin=1.0, trained="W")).params
    u = []
    for e, p0 in enumerate(nets):
        p = trained.member(e)
        vp = projected_direction(p0, X)
        assert float((projected_direction(p, X) - vp).abs().max()) < 1e-12
        j = e % n
        q = key_quantity(p, X[j:j + 1], vp)
        u.append(float(projected_key_quantity_cdf(q, p, X[j:j + 1], d - n)[0]))
    assert _ks_distance(u) < _ks_critical(N) + 1e-4


@pytest.mark.claim("obs-sep-probe")
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


# ------------------------------------------------------------- the regime of Theorem 3.6, real data
@pytest.mark.claim("prop-sep-fixed-layer")
def test_fitting_with_a_fixed_second_layer_moves_the_first_layer_by_at_least_sqrt_m_over_d():
    """Proposition: with a fixed second layer, sqrt(m)||dW||_op >= sqrt(m/d)/||a|| once a point goes from
    y f <= 0 to y f >= 1.  Deterministic given the proposition; the premise (some point starts on the wrong
    side) fails only if all 100 random labels agree with the initial signs, probability 2^-100."""
    d, n = 30, 60
    for seed in range(7100, 7104):
        X, y = sphere_data(n, d, seed=seed), ol.random_labels(n, seed=seed + 1)
        for m in (100, 600):
            p0 = _net(d, m, seed=seed + 2)
            res = ol.train(p0, X, y, ol.TrainConfig(lr=1.0, max_steps=2000, target_margin=1.0, trained="W"))
            assert res.reached
            assert bool((y * ol.network_output(p0, X) <= 0).any())
            dW = torch.linalg.matrix_norm(res.params.W - p0.W, ord=2)
            assert float(dW) * math.sqrt(m) >= math.sqrt(m / d) / float(p0.u.norm()) * (1 - 1e-12)


@pytest.mark.claim("obs-sep-regime")
def test_training_both_layers_to_margin_one_leaves_the_lazy_regime():
    """Observation: trained to margin 1 on n = 2d random labels with both layers and a small step, no network
    is in the regime sqrt(m)||dW||_op <= 1 and sqrt(m)||da|| <= 1 (measured sqrt(m)||da|| of 20-130 against the
    threshold 1), the trained network's own direction separates every training noise, and at width 2000 the
    initial direction no longer does so reliably.  12 fresh initialisations and data sets.  The first two parts
    have margins of a factor 20 or more; for the last, the initial direction separated at least 90% of the
    noises in about a quarter of our runs, so all 12 doing so has probability about 0.25^12 < 1e-7."""
    d, n, m = 50, 100, 2000
    cfg = ol.TrainConfig(lr=0.05, max_steps=5000, target_margin=1.0, trained="Wu")
    init_sep = []
    for seed in range(7200, 7212):
        X, y = sphere_data(n, d, seed=seed), ol.random_labels(n, seed=seed + 1)
        p0 = _net(d, m, seed=seed + 2)
        res = ol.train(p0, X, y, cfg)
        assert res.reached
        dec = lazy_decomposition(p0, res.params, X)
        assert dec.da_sqrt_m > 1
        own = separation_margins(separating_direction(res.params), one_step_noise(res.params, X, y), y)
        assert bool((own > 0).all())
        init_sep.append(float((dec.q_star > 0).double().mean()))
    assert min(init_sep) < 0.9


@pytest.mark.claim("obs-sep-probe")
def test_digits_noise_probe_erodes_with_distance_under_shuffled_labels_and_a_large_step():
    """Observation on fresh seeds (split seed 5, network seeds 40-42): with shuffled labels the FGSM probe is
    near perfect at initialisation and after the small step, lower after the large step, and the large-step
    networks travelled further from their initialisation.  In the chapter (ten seeds) the medians were
    1.00 / 1.00 against a large-step median near 0.9 and a worst seed well below, with distances several times
    larger; the test compares medians of three seeds with margins of several chapter spreads (normal
    approximation: false failure below 1e-6)."""
    from ortho_lib.probes import probe_protocol

    ds = load_digits_split(seed=5, shuffle_labels=True)
    fgsm = {"FGSM": {"norm": "linf"}}
    small = probe_protocol(ds, lr=0.05, epochs=30, seeds=[40, 41, 42], variants=fgsm)
    large = probe_protocol(ds, lr=1.0, epochs=60, seeds=[40, 41, 42], variants=fgsm, probe_init=False)
    init = [r["probe_test"] for r in small if r["epoch"] == 0]
    after_small = [r for r in small if r["epoch"] == 30]
    assert min(init) >= 0.97 and np.median([r["probe_test"] for r in after_small]) >= 0.97
    assert np.median([r["probe_test"] for r in large]) < np.median([r["probe_test"] for r in after_small])
    assert np.median([r["distance"] for r in large]) > 2 * np.median([r["distance"] for r in after_small])


@pytest.mark.claim("obs-sep-mnist")
def test_mnist_noise_probe_beats_the_clean_probe():
    """Observation on a fresh split (seed 3) and network seed 11, two epochs at the small step: L2 and FGSM
    noise probes test at >= 0.97 while the clean-image probe tests below 0.93 (the chapter: noises >= 0.99,
    clean 0.89; the clean probe of a 4000-image linear model varies by about 0.01 between splits, so the
    margins are several spreads wide: false failure estimated below 1e-6)."""
    from ortho_lib.datasets import load_mnist_split
    from ortho_lib.probes import probe_protocol

    mn = load_mnist_split(seed=3)
    clean = linear_probe(mn.X_train, mn.y_train, mn.X_test, mn.y_test)
    rows = probe_protocol(mn, lr=0.05, epochs=2, seeds=[11], probe_init=False)
    assert min(r["probe_test"] for r in rows) >= 0.97
    assert clean.test_accuracy < 0.93
