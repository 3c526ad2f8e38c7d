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
    gP, gperp = ol.network.split_gradient(sub, ol.input_gradient(p, X))
    assert torch.allclose(gP + gperp, ol.input_gradient(p, X), atol=1e-12)
    assert torch.allclose(gperp, ol.orthogonal_gradient(p, sub, X), atol=1e-12)


def test_two_layer_params_checks_its_fields_on_construction():
    """Contract of TwoLayerParams (replaces make_params' checks): all four fields given, shapes matching W,
    one dtype, finite values; c may be a Python number."""
    W = torch.ones(4, 3, dtype=torch.float64)
    z = torch.zeros(4, dtype=torch.float64)
    p = ol.TwoLayerParams(W, z, z, 0.5)
    assert p.m == 4 and p.d == 3 and p.c.dtype == torch.float64 and float(p.c) == 0.5
    with pytest.raises(ValueError, match=r"^TwoLayerParams.u must have shape \(4,\)"):
        ol.TwoLayerParams(W, z, torch.ones(3, dtype=torch.float64), 0.0)
    with pytest.raises(ValueError, match="^TwoLayerParams.c must be finite"):
        ol.TwoLayerParams(W, z, z, float("inf"))
    with pytest.raises(ValueError, match="^TwoLayerParams.W contains non-finite"):
        ol.TwoLayerParams(W * float("nan"), z, z, 0.0)
    with pytest.raises(TypeError, match="^TwoLayerParams.b must have the dtype and device of W"):
        ol.TwoLayerParams(W, z.float(), z, 0.0)
    with pytest.raises(ValueError, match=r"^TwoLayerParams.W must have 2 or 3 dimension"):
        ol.TwoLayerParams(torch.ones(3, dtype=torch.float64), z, z, 0.0)
    with pytest.raises(ValueError, match="^TwoLayerParams.W contains non-finite"):
        p.replace(W=W * float("nan"))                                     # replace checks like a new one


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


# ----------------------------------------------------------------------------- scales of the initialisation

def test_default_beta_is_one_over_sqrt_d_and_the_default_scale():
    """Contract of default_beta: 1/sqrt(d), the scale init_network uses when beta is not given."""
    assert ol.default_beta(64) == 0.125
    assert torch.equal(ol.init_network(64, 5, seed=3).W, ol.init_network(64, 5, seed=3, beta=0.125).W)
    with pytest.raises(ValueError, match="^d must be >= 1"):
        ol.default_beta(0)


@pytest.mark.parametrize("second_layer", ["sign", "gaussian"])
def test_small_initialisation_scales_both_layers_of_the_same_draw(second_layer):
    """Contract of beta and u_scale (replaces kkt.small_init): with beta = c beta_0 and u_scale = c, the draw
    is c times the default draw in both layers, the biases unchanged."""
    c = 1e-3
    p = ol.init_network(30, 20, seed=4, beta=c * ol.default_beta(30), u_scale=c, second_layer=second_layer)
    ref = ol.init_network(30, 20, seed=4, second_layer=second_layer)
    assert torch.allclose(p.W, c * ref.W, rtol=1e-15, atol=0) and torch.allclose(p.u, c * ref.u, rtol=1e-15, atol=0)
    assert float(p.b.abs().max()) == 0.0
    with pytest.raises(ValueError, match="^u_scale must be > 0"):
        ol.init_network(3, 2, seed=0, u_scale=-1.0)


# ----------------------------------------------------------------------------- stacks of networks

E = 3


def _stack(d=6, m=9, seed=20):
    nets = [ol.init_network(d, m, seed=seed + e, bias="uniform", second_layer="gaussian") for e in range(E)]
    return nets, ol.TwoLayerParams.stack(nets)


def test_stack_holds_the_members_along_a_leading_axis():
    """Contract of TwoLayerParams.stack/member/members: member e of the stack is network e, bitwise."""
    nets, st = _stack()
    assert st.is_stack and len(st) == E and st.W.shape == (E, 9, 6) and st.c.shape == (E,)
    assert st.m == 9 and st.d == 6 and not nets[0].is_stack
    for e, (net, back) in enumerate(zip(nets, st.members())):
        for f in "Wbuc":
            assert torch.equal(getattr(st.member(e), f), getattr(net, f))
            assert torch.equal(getattr(back, f), getattr(net, f))
    assert torch.equal(st.member(-1).W, nets[-1].W)


def test_stack_and_member_reject_bad_input():
    """Contract: stacks are of single networks of one shape and dtype; a single network has no members."""
    nets, st = _stack()
    with pytest.raises(ValueError, match=r"^nets must all have the same \(m, d\)"):
        ol.TwoLayerParams.stack([nets[0], ol.init_network(6, 8, seed=0)])
    with pytest.raises(TypeError, match="^nets must all have the same dtype"):
        ol.TwoLayerParams.stack([nets[0], ol.init_network(6, 9, seed=0, dtype=torch.float32)])
    with pytest.raises(TypeError, match=r"^nets\[0\] must be a single TwoLayerParams"):
        ol.TwoLayerParams.stack([st])
    with pytest.raises(TypeError, match="^nets must be a non-empty sequence"):
        ol.TwoLayerParams.stack([])
    with pytest.raises(ValueError, match=f"^e must be <= {E - 1}"):
        st.member(E)
    with pytest.raises(TypeError, match="no len"):
        len(nets[0])


def test_norm_sq_is_the_squared_norm_of_all_four_fields():
    """Contract of norm_sq: ||W||_F^2 + ||b||^2 + ||u||^2 + c^2, one per member for a stack."""
    nets, st = _stack()
    nets = [n.replace(c=torch.tensor(0.3 * e - 0.2, dtype=torch.float64)) for e, n in enumerate(nets)]
    st = ol.TwoLayerParams.stack(nets)
    for e, n in enumerate(nets):
        flat = torch.cat([n.W.flatten(), n.b, n.u, n.c.reshape(1)])
        assert math.isclose(float(n.norm_sq()), float(flat @ flat), rel_tol=1e-14)
        assert math.isclose(float(st.norm_sq()[e]), float(flat @ flat), rel_tol=1e-14)
    assert n.norm_sq().shape == () and st.norm_sq().shape == (E,)


EVALUATIONS = {
    "network_output": lambda p, X, sub: ol.network_output(p, X),
    "preactivations": lambda p, X, sub: ol.preactivations(p, X),
    "active_set": lambda p, X, sub: ol.active_set(p, X),
    "input_gradient": lambda p, X, sub: ol.input_gradient(p, X),
    "orthogonal_gradient": lambda p, X, sub: ol.orthogonal_gradient(p, sub, X),
}


@pytest.mark.parametrize("name", list(EVALUATIONS))
def test_evaluations_on_a_stack_equal_per_member_evaluation(name):
    """Contract: on a stack, each evaluation returns a leading member axis whose entry e is the evaluation of
    member e: for shared points (n, d) and (d,), and for one set of points per member (E, n, d)."""
    f = EVALUATIONS[name]
    nets, st = _stack()
    sub = ol.random_subspace(6, 2, seed=30)
    X = torch.randn(5, 6, generator=torch.Generator().manual_seed(31), dtype=torch.float64)
    Xe = torch.randn(E, 5, 6, generator=torch.Generator().manual_seed(32), dtype=torch.float64)
    shared, one, own = f(st, X, sub), f(st, X[0], sub), f(st, Xe, sub)
    for e, net in enumerate(nets):
        assert torch.allclose(shared[e].double(), f(net, X, sub).double(), rtol=0, atol=1e-14)
        assert torch.allclose(one[e].double(), f(net, X[0], sub).double(), rtol=0, atol=1e-14)
        assert torch.allclose(own[e].double(), f(net, Xe[e], sub).double(), rtol=0, atol=1e-14)
    assert shared.shape[:2] == (E, 5) and one.shape[0] == E and one.shape[1:] == f(nets[0], X[0], sub).shape


def test_stack_evaluation_rejects_a_wrong_member_axis():
    """Contract: per-member points must have a leading axis of E."""
    nets, st = _stack()
    with pytest.raises(ValueError, match=f"^X must have a leading axis of E = {E}"):
        ol.network_output(st, torch.zeros(E + 1, 2, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="^X must have 1 or 2 dimension"):
        ol.network_output(nets[0], torch.zeros(E, 2, 6, dtype=torch.float64))
