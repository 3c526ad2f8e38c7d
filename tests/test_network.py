"""The network, its initialisation, input gradients and active sets."""
import math

import pytest
import torch

import ortho_lib as ol


def _autograd_input_gradient(p, X):
    X = X.clone().requires_grad_(True)
    ol.network_output(p, X).sum().backward()
    return X.grad


def test_init_network_shapes_and_second_layer_values():
    p = ol.init_network(12, 40, seed=0)
    assert p.W.shape == (40, 12) and p.b.shape == (40,) and p.u.shape == (40,) and p.c.ndim == 0
    assert torch.allclose(p.u.abs(), torch.full((40,), 1 / math.sqrt(40), dtype=p.u.dtype))
    assert float(p.b.abs().max()) == 0.0


def test_init_network_variance_is_beta_squared():
    p = ol.init_network(100, 2000, seed=1, beta=0.3)
    # 200000 entries: sample variance has relative sd ~ 0.003, so 5% is > 15 sd
    assert abs(float(p.W.var()) / 0.09 - 1) < 0.05


def test_uniform_bias_and_gaussian_second_layer_options():
    p = ol.init_network(16, 500, seed=2, second_layer="gaussian", bias="uniform")
    assert float(p.b.abs().max()) <= 1 / math.sqrt(16)
    assert len(p.u.unique()) == 500


def test_network_output_matches_the_formula():
    p = ol.init_network(5, 7, seed=3, bias="uniform")
    X = torch.randn(4, 5, dtype=torch.float64)
    manual = torch.stack([sum(p.u[i] * max(float(p.W[i] @ x + p.b[i]), 0.0) for i in range(7)) for x in X])
    assert torch.allclose(ol.network_output(p, X), manual.to(X.dtype), atol=1e-12)
    assert ol.network_output(p, X[0]).ndim == 0


def test_input_gradient_matches_autograd():
    p = ol.init_network(6, 9, seed=4, bias="uniform")
    X = torch.randn(8, 6, dtype=torch.float64)
    assert torch.allclose(ol.input_gradient(p, X), _autograd_input_gradient(p, X), atol=1e-12)


def test_active_set_and_gradient_formula_agree():
    p = ol.init_network(6, 9, seed=5)
    x = torch.randn(6, dtype=torch.float64)
    A = ol.active_set(p, x)
    assert A.shape == (9,) and A.dtype == torch.bool
    assert torch.allclose(ol.input_gradient(p, x), (p.u[A, None] * p.W[A]).sum(0), atol=1e-12)
    assert ol.active_set(p, x[None]).shape == (1, 9)


def test_split_and_orthogonal_gradient():
    sub = ol.random_subspace(6, 2, seed=0)
    p = ol.init_network(6, 9, seed=6)
    X = ol.sample_on_subspace(sub, 3, seed=1)
    gP, gperp = ol.split_gradient(sub, ol.input_gradient(p, X))
    assert torch.allclose(gP + gperp, ol.input_gradient(p, X), atol=1e-12)
    assert torch.allclose(gperp, ol.orthogonal_gradient(p, sub, X), atol=1e-12)


def test_make_params_defaults_and_checks():
    p = ol.make_params(torch.ones(4, 3, dtype=torch.float64))
    assert p.m == 4 and p.d == 3 and float(p.b.abs().sum()) == 0
    with pytest.raises(ValueError, match=r"u must have shape \(4\)"):
        ol.make_params(torch.ones(4, 3, dtype=torch.float64), u=torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="c must be a finite scalar"):
        ol.make_params(torch.ones(4, 3, dtype=torch.float64), c=float("inf"))


def test_bad_inputs_are_named():
    p = ol.init_network(5, 3, seed=0)
    with pytest.raises(ValueError, match="X must have last dimension d = 5"):
        ol.network_output(p, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="x0 must have last dimension"):
        ol.active_set(p, torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="X contains non-finite"):
        ol.input_gradient(p, torch.full((2, 5), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="second_layer must be one of"):
        ol.init_network(5, 3, seed=0, second_layer="uniform")
    with pytest.raises(ValueError, match="beta must be > 0"):
        ol.init_network(5, 3, seed=0, beta=0.0)
    with pytest.raises(TypeError, match="params must be TwoLayerParams"):
        ol.network_output("net", torch.zeros(5, dtype=torch.float64))


def test_preactivations_are_Wx_plus_b():
    p = ol.init_network(4, 6, seed=7, bias="uniform")
    X = torch.randn(3, 4, dtype=torch.float64)
    assert torch.allclose(ol.preactivations(p, X), X @ p.W.T + p.b, atol=1e-14)
    assert ol.preactivations(p, X[0]).shape == (6,)
    with pytest.raises(ValueError, match="X must have last dimension d = 4"):
        ol.preactivations(p, torch.zeros(3, dtype=torch.float64))
