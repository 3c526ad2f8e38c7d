"""Property tests: every public callable gives the same answer for equivalent spellings of a valid input.

A NumPy or 0-d tensor number gives the result of the Python number, a NumPy bool that of the bool, integer
or float32 labels that of float64 labels, inputs that require grad that of the same values without, and
float32 inputs the float64 answer to float32 precision.  Seeds anywhere in ``[0, 2**64)`` are accepted
and reproducible.  Nothing valid is refused.  (Cases and comparisons: ``api_cases``.)
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import api_cases as A

VARIANTS = settings(derandomize=True, deadline=None, max_examples=3, database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_same_as_valid_call(case: A.Case, overrides: dict, reference: dict | None = None, *, rtol: float = 1e-12,
                              floor: float = 0.0) -> None:
    """``case.call(**overrides)`` must succeed and equal the valid call (with ``reference`` overrides, if any)."""
    result = case.call(**overrides)
    expected = A.base_result(case) if not reference else case.call(**reference)
    assert A.same(result, expected, rtol=rtol, atol=rtol, floor=floor), \
        f"{case.name}: {sorted(overrides)} changed the result"


def pairs(kind: str, where=lambda case, arg, spec: True) -> list:
    """(case, argument) for every argument of this kind with a value in the valid call."""
    return [pytest.param(c, a, id=f"{c.name}:{a}") for c in A.CASES for a, s in c.spec.items()
            if s.kind == kind and s.variants and A.default_of(c, a) is not None and where(c, a, s)]


def cases(where=lambda case: True) -> list:
    return [pytest.param(c, id=c.name) for c in A.CASES if where(c)]


# ------------------------------------------------------------------------------------------ numbers

INT_SPELLINGS = {"np.int64": np.int64, "np.int32": np.int32, "np.uint32": np.uint32, "0-d tensor": torch.tensor,
                 "0-d ndarray": np.array, "integral float": float, "np.float64": np.float64}


@pytest.mark.parametrize("case, arg", pairs("int", where=lambda c, a, s: 0 <= A.default_of(c, a) < 2**31))
@VARIANTS
@given(spelling=st.sampled_from(sorted(INT_SPELLINGS)))
def test_numpy_tensor_and_integral_float_integers_give_the_python_int_result(case, arg, spelling):
    assert_same_as_valid_call(case, {arg: INT_SPELLINGS[spelling](A.default_of(case, arg))})


FLOAT_SPELLINGS = {"np.float64": np.float64, "0-d ndarray": np.array, "0-d tensor": lambda v: torch.tensor(v, dtype=torch.float64),
                   "np.float32": np.float32}


@pytest.mark.parametrize("case, arg", pairs("float"))
@VARIANTS
@given(spelling=st.sampled_from(sorted(FLOAT_SPELLINGS)))
def test_numpy_and_tensor_floats_give_the_python_float_result(case, arg, spelling):
    v = A.default_of(case, arg)
    if spelling == "0-d tensor" and case.spec[arg].tensor_ok:
        spelling = "np.float64"  # a tensor there means "one result per entry"
    value = FLOAT_SPELLINGS[spelling](v)
    reference = {arg: float(np.float32(v))} if spelling == "np.float32" else None
    assert_same_as_valid_call(case, {arg: value}, reference)


@pytest.mark.parametrize("case, arg", pairs("flag"))
def test_numpy_bools_give_the_bool_result(case, arg):
    assert_same_as_valid_call(case, {arg: np.bool_(A.default_of(case, arg))})


@pytest.mark.parametrize("case, arg", pairs("seed"))
@VARIANTS
@given(spelling=st.sampled_from(["np.uint64", "np.int64", "0-d tensor"]))
def test_numpy_and_tensor_seeds_give_the_python_int_result(case, arg, spelling):
    v = A.default_of(case, arg)
    value = {"np.uint64": np.uint64, "np.int64": np.int64, "0-d tensor": torch.tensor}[spelling](v)
    assert_same_as_valid_call(case, {arg: value})


@pytest.mark.parametrize("case, arg", pairs("seed"))
@settings(VARIANTS, max_examples=2)
@given(seed=st.integers(min_value=2**63 - 8, max_value=2**64 - 1))
def test_seeds_up_to_two_to_the_64_are_accepted_and_reproducible(case, arg, seed):
    first = case.call(**{arg: seed})
    assert A.same(case.call(**{arg: seed}), first)


# ------------------------------------------------------------------------------------------- labels

@pytest.mark.parametrize("case, arg", pairs("labels"))
@VARIANTS
@given(dtype=st.sampled_from([torch.int8, torch.int16, torch.int32, torch.int64, torch.float32]))
def test_signed_integer_and_float32_labels_give_the_float64_label_result(case, arg, dtype):
    assert_same_as_valid_call(case, {arg: case.args[arg].to(dtype)})


@pytest.mark.parametrize("case, arg", pairs("classes"))
@VARIANTS
@given(dtype=st.sampled_from([torch.int8, torch.int16, torch.int32, torch.uint8]))
def test_narrow_integer_class_indices_give_the_int64_result(case, arg, dtype):
    assert_same_as_valid_call(case, {arg: case.args[arg].to(dtype)})


# -------------------------------------------------------------------------- requires_grad, float32

def _floating_args(case) -> list:
    return sorted(a for a, v in case.args.items() if isinstance(v, A.NETWORKS + (A.ol.Subspace,))
                  or isinstance(v, torch.Tensor) and v.is_floating_point())


@pytest.mark.parametrize("case", cases(lambda c: any(not isinstance(c.args[a], A.ol.Subspace) for a in _floating_args(c))))
@pytest.mark.filterwarnings("error:Converting a tensor with requires_grad")
@VARIANTS
@given(data=st.data())
def test_inputs_that_require_grad_give_the_same_result(case, data):
    names = [a for a in _floating_args(case) if not isinstance(case.args[a], A.ol.Subspace)]
    chosen = data.draw(st.sets(st.sampled_from(names), min_size=1), label="requires_grad")
    assert_same_as_valid_call(case, {a: A._grad(case.args[a]) for a in chosen})


@pytest.mark.parametrize("case", cases(lambda c: c.f32 != "skip" and _floating_args(c)))
@VARIANTS
@given(data=st.data())
def test_float32_inputs_give_the_float64_result_to_float32_precision(case, data):
    if case.name in A.DATACLASSES:  # the fields of one object share a dtype: convert them together
        chosen = _floating_args(case)
    else:
        chosen = data.draw(st.sets(st.sampled_from(_floating_args(case)), min_size=1), label="float32")
    overrides = {a: A._f32(case.args[a]) for a in chosen}
    if case.f32 == "equal":
        assert_same_as_valid_call(case, overrides, rtol=1e-3, floor=1.0)
    else:  # iterative solvers and attacks: float32 must be accepted; the path may differ
        case.call(**overrides)


@pytest.mark.parametrize("case, arg", pairs("dtype"))
def test_a_float32_dtype_gives_the_float64_result_rounded_to_float32(case, arg):
    result = case.call(**{arg: torch.float32})
    tensors = [t for t in (result if isinstance(result, (tuple, list)) else getattr(result, "__dict__", {}).values()
                           if not isinstance(result, torch.Tensor) else [result]) if isinstance(t, torch.Tensor)]
    assert all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())
    assert A.same(result, A.base_result(case), rtol=1e-5, atol=1e-5, floor=1.0)
