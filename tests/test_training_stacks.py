"""Training a stack of networks in one call (ortho_lib.train with a list, a TwoLayerParams stack and one
config per member): each member is trained exactly as if alone, and per-member settings are restricted to
the fields that may differ.  Everything here is deterministic (bitwise comparisons on the reference backend).
"""
import dataclasses
import math

import pytest
import torch

import ortho_lib as ol
from ortho_lib.training import PER_MEMBER

E, D, ELL, M, N = 4, 16, 8, 10, 12


def _nets(seed=700):
    return [ol.init_network(D, M, seed=seed + e, bias="uniform") for e in range(E)]


def _shared():
    return ol.teacher_problem(D, ELL, N, seed=600)


def _own_data():
    """One training set per member: X (E, n, d), y (E, n)."""
    probs = [ol.teacher_problem(D, ELL, N, seed=610 + 10 * e) for e in range(E)]
    return torch.stack([p.X for p in probs]), torch.stack([p.y for p in probs])


BASE = ol.TrainConfig(lr=0.1, max_steps=60, optimizer="momentum", target_margin=1.0, record_every=5, trained="Wbu")


def _configs():
    """Members differing in every per-member field; members 0 and 1 stop at their target, 2 and 3 run out."""
    return [BASE.replace(lr=0.05 + 0.05 * e, max_steps=(60, 80, 5, 9)[e], target_margin=(0.3, 0.5, 3.0, 2.0)[e],
                         momentum=0.5 + 0.1 * e, weight_decay=1e-3 * e, norm_penalty=0.01 * e) for e in range(E)]


def _assert_same_result(member: ol.TrainResult, alone: ol.TrainResult):
    """Bitwise equality of two single-network results (parameters, scalars and history)."""
    for f in "Wbuc":
        assert torch.equal(getattr(member.params, f), getattr(alone.params, f)), f
        assert torch.equal(getattr(member.initial, f), getattr(alone.initial, f)), f
    for f in ("steps", "reached", "final_loss", "final_margin", "lr_sum", "decay_factor", "perp_factor"):
        assert getattr(member, f) == getattr(alone, f), f
    assert member.config == alone.config
    for f in ("steps", "loss", "log_loss", "margin", "norm_sq"):
        assert torch.equal(getattr(member.history, f), getattr(alone.history, f)), f


def test_every_member_of_a_stack_equals_training_it_alone():
    """Contract of train on a stack: member e of the result is bitwise the result of training network e alone
    with config e (reference backend), whatever the other members do; per-member lr, budget, target,
    momentum, weight decay and norm penalty."""
    nets, pr, cfgs = _nets(), _shared(), _configs()
    res = ol.train(ol.TwoLayerParams.stack(nets), pr.X, pr.y, cfgs, backend="reference")
    assert res.is_stack and len(res) == E and res.steps.shape == (E,)
    assert res.reached.tolist() == [True, True, False, False]         # both ways of stopping occur
    for e in range(E):
        _assert_same_result(res.member(e), ol.train(nets[e], pr.X, pr.y, cfgs[e], backend="reference"))


def test_members_train_on_their_own_data():
    """Contract: X (E, n, d) and y (E, n) give each member its own training set."""
    nets, cfgs = _nets(720), _configs()
    X, y = _own_data()
    res = ol.train(nets, X, y, cfgs, backend="reference")
    for e in range(E):
        _assert_same_result(res.member(e), ol.train(nets[e], X[e], y[e], cfgs[e], backend="reference"))


def test_members_can_share_inputs_and_have_their_own_labels():
    """Contract: X (n, d) shared with y (E, n) trains member e on (X, y[e])."""
    nets, pr = _nets(730), _shared()
    y = torch.stack([pr.y, -pr.y, pr.y.flip(0), pr.y])
    res = ol.train(nets, pr.X, y, BASE, backend="reference")
    for e in range(E):
        _assert_same_result(res.member(e), ol.train(nets[e], pr.X, y[e], BASE, backend="reference"))


def test_a_list_and_a_stack_train_the_same():
    """Contract: a list of networks is trained as their stack."""
    nets, pr = _nets(740), _shared()
    a = ol.train(nets, pr.X, pr.y, BASE, backend="reference")
    b = ol.train(ol.TwoLayerParams.stack(nets), pr.X, pr.y, BASE, backend="reference")
    for f in "Wbuc":
        assert torch.equal(getattr(a.params, f), getattr(b.params, f))


def test_the_default_backend_agrees_with_the_reference_on_a_stack():
    """Contract of backend='auto' (the fused or batched engine): the reference's iterates up to rounding."""
    nets, pr = _nets(745), _shared()
    cfgs = [c.replace(record_every=None) for c in _configs()]
    ref = ol.train(nets, pr.X, pr.y, cfgs, backend="reference")
    auto = ol.train(nets, pr.X, pr.y, cfgs)
    assert auto.backend != "reference" and torch.equal(auto.steps, ref.steps)
    for f in "Wbuc":
        assert float((getattr(auto.params, f) - getattr(ref.params, f)).abs().max()) <= 1e-12, f


def test_member_round_trips():
    """Contract of TrainResult.member/members: member(e) holds entry e of every per-member field; the
    members' parameters restack to the stack; negative indices count from the end; others are rejected."""
    nets, pr, cfgs = _nets(750), _shared(), _configs()
    res = ol.train(nets, pr.X, pr.y, cfgs, backend="reference")
    members = res.members()
    assert len(members) == E and not members[0].is_stack
    restacked = ol.TwoLayerParams.stack([r.params for r in members])
    for f in "Wbuc":
        assert torch.equal(getattr(restacked, f), getattr(res.params, f))
    for e, r in enumerate(members):
        assert r.steps == int(res.steps[e]) and r.reached == bool(res.reached[e])
        assert r.final_loss == float(res.final_loss[e]) and r.perp_factor == float(res.perp_factor[e])
        assert r.config == cfgs[e] and r.history is res.history[e]
        assert torch.equal(r.initial.W, nets[e].W)
    assert torch.equal(res.member(-1).params.W, res.member(E - 1).params.W)
    with pytest.raises(ValueError, match=f"^e must be <= {E - 1}"):
        res.member(E)


def test_a_single_network_gives_a_single_result():
    """Contract: one network in, one result out (plain floats, no member axis)."""
    pr = _shared()
    r = ol.train(_nets()[0], pr.X, pr.y, BASE)
    assert not r.is_stack and isinstance(r.steps, int) and isinstance(r.final_loss, float)
    assert r.config == BASE and r.history.steps.ndim == 1
    with pytest.raises(TypeError, match="no len"):
        len(r)


STRUCTURAL = [f.name for f in dataclasses.fields(ol.TrainConfig) if f.name not in PER_MEMBER]
OTHER_VALUE = dict(optimizer="gd", betas=(0.8, 0.9), eps=1e-6, batch_size=3, trained="Wb", schedule="max_margin",
                   record_every=7, record_params=True, seed=3, strict=True)


def test_per_member_fields_are_exactly_the_documented_six():
    """Contract: members may differ only in lr, max_steps, target_margin, momentum, weight_decay, norm_penalty."""
    assert set(PER_MEMBER) == {"lr", "max_steps", "target_margin", "momentum", "weight_decay", "norm_penalty"}
    assert set(STRUCTURAL) == set(OTHER_VALUE)


@pytest.mark.parametrize("field", STRUCTURAL)
def test_members_may_not_differ_in_a_structural_field(field):
    """Contract: a config differing from config[0] in any other field is rejected, naming the field."""
    nets, pr = _nets(), _shared()
    odd = BASE.replace(**{field: OTHER_VALUE[field]})
    assert getattr(odd, field) != getattr(BASE, field)
    with pytest.raises(ValueError, match=rf"^config\[2\]\.{field} must equal config\[0\]\.{field}"):
        ol.train(nets, pr.X, pr.y, [BASE, BASE, odd, BASE])


def test_members_agree_on_having_a_target_margin():
    """Contract: either every member has a target_margin or none has."""
    nets, pr = _nets(), _shared()
    with pytest.raises(ValueError, match="^config: either every member has a target_margin or none has"):
        ol.train(nets, pr.X, pr.y, [BASE, BASE.replace(target_margin=None), BASE, BASE])


def test_bad_stack_arguments_are_named():
    """Contract: one config per member, one training set per member, equal shapes; messages name the argument."""
    nets, pr = _nets(), _shared()
    with pytest.raises(ValueError, match=f"^config must hold one TrainConfig per member \\(E = {E}\\)"):
        ol.train(nets, pr.X, pr.y, [BASE] * (E - 1))
    with pytest.raises(TypeError, match=r"^config\[1\] must be a TrainConfig"):
        ol.train(nets, pr.X, pr.y, [BASE, None, BASE, BASE])
    X, y = _own_data()
    with pytest.raises(ValueError, match=f"^X must have a leading axis of E = {E}"):
        ol.train(nets, X[:2], y[:2], BASE)
    with pytest.raises(ValueError, match=r"^y must have shape \(4, 12\)"):
        ol.train(nets, X, y[:, :5], BASE)
    with pytest.raises(ValueError, match=r"^X must have 2 dimension"):
        ol.train(nets[0], X, y[0], BASE)
    with pytest.raises(ValueError, match=r"^params must all have the same \(m, d\)"):
        ol.train([nets[0], ol.init_network(D, M + 1, seed=0)], pr.X, pr.y, BASE)


def test_train_margin_and_accuracy_on_a_stack_are_per_member():
    """Contract: on a stack, train_margin and accuracy return (E,) tensors, entry e that of member e (shared
    data, or X (E, n, d) with y (E, n))."""
    nets, pr = _nets(760), _shared()
    st = ol.TwoLayerParams.stack(nets)
    X, y = _own_data()
    for args, per in (((pr.X, pr.y), lambda e: (pr.X, pr.y)), ((X, y), lambda e: (X[e], y[e]))):
        margins, accs = ol.train_margin(st, *args), ol.accuracy(st, *args)
        assert margins.shape == accs.shape == (E,) and accs.dtype == torch.float64
        for e, net in enumerate(nets):
            assert math.isclose(float(margins[e]), ol.train_margin(net, *per(e)), rel_tol=1e-13, abs_tol=1e-14)
            assert float(accs[e]) == ol.accuracy(net, *per(e))
    assert 0.0 < float(ol.accuracy(st, pr.X, pr.y).min()) < 1.0     # not a trivial case
