"""Property tests: the public dataclasses check their fields on construction (one place for every caller).

``Subspace`` must hold orthonormal bases of P and its complement, ``TwoLayerParams`` consistent float
tensors, ``TrainConfig`` settings of the right kind; a malformed object is refused with an error naming
the field, so no function downstream ever sees one.  (The generic bad-input properties of these
constructors are in ``test_bad_inputs.py``.)
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import ortho_lib as ol
from ortho_lib import training

PROPERTY = settings(derandomize=True, deadline=None, max_examples=25, database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=[HealthCheck.too_slow])

SUB = ol.random_subspace(7, 3, seed=0)
P = ol.init_network(5, 4, seed=1)


def refused(make, *names: str) -> str:
    """The message of the TypeError/ValueError that ``make()`` raises; it must start with one of ``names``."""
    with pytest.raises((TypeError, ValueError)) as info:
        make()
    message = str(info.value)
    assert message.startswith(names), message
    return message


@PROPERTY
@given(scale=st.floats(0.01, 100).filter(lambda s: abs(s - 1) > 1e-6))
def test_a_subspace_basis_scaled_by_a_factor_other_than_one_is_refused(scale):
    refused(lambda: ol.Subspace(SUB.basis * scale, SUB.perp_basis), "Subspace.basis")


@PROPERTY
@given(angle=st.floats(1e-2, math.pi / 2), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_a_perp_basis_tilted_towards_the_subspace_is_refused(angle, dtype):
    C = math.cos(angle) * SUB.perp_basis + math.sin(angle) * SUB.basis[:, : SUB.ell]
    refused(lambda: ol.Subspace(SUB.basis.to(dtype), C.to(dtype)), "Subspace.basis")


@PROPERTY
@given(k=st.integers(0, 7).filter(lambda k: k != 4))
def test_bases_that_do_not_split_r_d_are_refused(k):
    B = torch.eye(7, dtype=torch.float64)
    refused(lambda: ol.Subspace(B[:, :k], B[:, 4:]), "Subspace.basis")


def test_a_subspace_with_bases_of_two_dtypes_is_refused():
    refused(lambda: ol.Subspace(SUB.basis, SUB.perp_basis.float()), "Subspace.perp_basis")


def test_a_float32_subspace_rounded_from_a_float64_one_is_accepted():
    sub = ol.Subspace(SUB.basis.float(), SUB.perp_basis.float())
    assert sub.d == 7 and sub.ell == 3


@PROPERTY
@given(field=st.sampled_from(["b", "u"]), delta=st.integers(-3, 3).filter(lambda k: k != 0))
def test_params_whose_bias_or_second_layer_length_differs_from_the_width_are_refused(field, delta):
    t = getattr(P, field)
    bad = t[: t.shape[0] + delta] if delta < 0 else torch.cat([t, t[:delta]])
    refused(lambda: P.replace(**{field: bad}), f"TwoLayerParams.{field}")


@PROPERTY
@given(field=st.sampled_from(["b", "u", "c"]))
def test_params_whose_fields_differ_in_dtype_from_w_are_refused(field):
    refused(lambda: P.replace(**{field: getattr(P, field).float()}), f"TwoLayerParams.{field}")


@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0, 4, 5)])
def test_params_without_neurons_inputs_or_members_are_refused(shape):
    W = torch.zeros(shape, dtype=torch.float64)
    lead = shape[:-2]
    refused(lambda: ol.TwoLayerParams(W, torch.zeros(*lead, shape[-2], dtype=torch.float64),
                                      torch.zeros(*lead, shape[-2], dtype=torch.float64),
                                      torch.zeros(lead, dtype=torch.float64)), "TwoLayerParams.W")


def test_params_accept_an_output_bias_given_as_a_numpy_number():
    import numpy as np

    assert float(ol.TwoLayerParams(P.W, P.b, P.u, np.float32(0.25)).c) == 0.25


@PROPERTY
@given(trained=st.text(alphabet="WbucxyZ ", max_size=6))
def test_trained_is_accepted_exactly_when_it_is_distinct_letters_of_wbuc_including_w(trained):
    valid = bool(trained) and set(trained) <= set("Wbuc") and len(set(trained)) == len(trained) and "W" in trained
    if valid:
        assert set(training.TrainConfig(lr=0.1, max_steps=1, trained=trained).trained) == set(trained)
    else:
        refused(lambda: training.TrainConfig(lr=0.1, max_steps=1, trained=trained), "TrainConfig.trained")


@PROPERTY
@given(flag=st.sampled_from(["record_params", "strict"]), value=st.one_of(st.text(max_size=3), st.integers(0, 1)))
def test_train_config_flags_must_be_bools_not_strings_or_numbers(flag, value):
    refused(lambda: training.TrainConfig(lr=0.1, max_steps=1, target_margin=1.0, record_every=1, **{flag: value}),
            f"TrainConfig.{flag}")


def test_train_refuses_stacked_labels_for_a_single_network():
    X = ol.sphere_data(6, 5, seed=0)
    y = ol.random_labels(6, seed=1)
    refused(lambda: ol.train(P, X, y[None, :], training.TrainConfig(lr=0.1, max_steps=1)), "y")


def test_train_names_the_list_element_that_is_not_a_network():
    X = ol.sphere_data(6, 5, seed=0)
    y = ol.random_labels(6, seed=1)
    message = refused(lambda: ol.train([P, "net"], X, y, training.TrainConfig(lr=0.1, max_steps=1)), "params")
    assert message.startswith("params[1]")


def test_training_from_parameters_that_require_grad_builds_no_graph():
    X = ol.sphere_data(6, 5, seed=0)
    y = ol.random_labels(6, seed=1)
    Pg = ol.TwoLayerParams(*(t.clone().requires_grad_(True) for t in (P.W, P.b, P.u, P.c)))
    out = ol.train(Pg, X, y, training.TrainConfig(lr=0.1, max_steps=3), backend="reference")
    assert not out.params.W.requires_grad
    ref = ol.train(P, X, y, training.TrainConfig(lr=0.1, max_steps=3), backend="reference")
    assert torch.equal(out.params.W, ref.params.W)
