"""Property tests: every public callable refuses bad input with an error that names the caller's argument.

Each test takes one kind of bad input, and for every public callable (see ``api_cases.CASES``) and every
argument of that kind, lets Hypothesis generate bad values and replace the argument of a valid call by
them.  The answer must be a ``TypeError`` or ``ValueError`` whose message starts with the argument's
name (or, for a mismatch between two arguments, with one of them) — never a plausible wrong answer, a
silent nan or a crash deep inside.  (The one exception, an integer tensor converted exactly, must then
give the result of the float call.)  Hypothesis runs derandomised: the same examples in every run.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import api_cases as A

PROPERTY = settings(derandomize=True, deadline=None, max_examples=6, database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


def assert_refused(case: A.Case, overrides: dict, names: tuple, equivalent: Optional[dict] = None) -> None:
    """The call must raise TypeError/ValueError naming one of ``names`` (or equal the ``equivalent`` call)."""
    try:
        result = case.call(**overrides)
    except (TypeError, ValueError) as err:
        assert A.names_argument(str(err), names), f"{case.name}: the message should start with one of {names}: {err}"
        return
    shown = {k: (type(v).__name__, getattr(v, "dtype", None), getattr(v, "shape", v if not hasattr(v, "W") else ""))
             for k, v in overrides.items()}
    assert equivalent is not None, f"{case.name} accepted {shown} and returned {str(result)[:200]}"
    assert A.same(result, case.call(**equivalent)), f"{case.name} accepted {shown} but answered differently"


def pairs(*kinds: str, where=lambda case, arg, spec: True) -> list:
    """(case, argument) for every argument of these kinds whose valid value is set, as pytest parameters."""
    out = []
    for case in A.CASES:
        for arg, spec in case.spec.items():
            if spec.kind in kinds and where(case, arg, spec) and (arg in case.args or spec.kind in ("int", "float",
                                                                                                   "flag", "choice",
                                                                                                   "dtype", "seed",
                                                                                                   "lim", "sub")):
                out.append(pytest.param(case, arg, id=f"{case.name}:{arg}"))
    return out


def tensor_valued(case, arg, spec) -> bool:
    return isinstance(case.args.get(arg), torch.Tensor)


def test_every_public_callable_has_a_case():
    missing = [name for name in A.public_callables() if name not in A.BY_NAME]
    assert not missing, f"add a Case to tests/api_cases.py for {missing}"


# ------------------------------------------------------------------------------------------ tensors

@pytest.mark.parametrize("case, arg", pairs("tensor", where=tensor_valued))
@PROPERTY
@given(dtype=st.sampled_from(A.BAD_DTYPES))
def test_integer_bool_half_and_complex_tensors_are_refused_naming_the_argument(case, arg, dtype):
    v = case.args[arg]
    equivalent = None if dtype.is_complex else {arg: v.to(dtype).to(torch.float64)}
    assert_refused(case, {arg: v.to(dtype)}, A.allowed_names(case, arg), equivalent)


@pytest.mark.parametrize("case, arg", pairs("tensor", where=lambda c, a, s: tensor_valued(c, a, s) and c.args[a].numel()))
@PROPERTY
@given(data=st.data(), bad=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_nan_and_infinite_tensor_entries_are_refused_naming_the_argument(case, arg, data, bad):
    v = case.args[arg].clone()
    v.view(-1)[data.draw(st.integers(0, v.numel() - 1), label="index")] = bad
    assert_refused(case, {arg: v}, A.allowed_names(case, arg))


@pytest.mark.parametrize("case, arg", pairs("tensor", where=lambda c, a, s: tensor_valued(c, a, s) and s.ndims))
@PROPERTY
@given(data=st.data())
def test_tensors_of_a_wrong_rank_are_refused_naming_the_argument(case, arg, data):
    spec, v = case.spec[arg], case.args[arg]
    rank = data.draw(st.integers(0, max(spec.ndims) + 2).filter(lambda r: r not in spec.ndims), label="rank")
    flat = v.reshape(-1)
    bad = flat[0] if rank == 0 else flat.reshape((1,) * (rank - 1) + (flat.numel(),))
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg, "rows") + A.allowed_names(case, arg, "last"))


@pytest.mark.parametrize("case, arg", pairs("tensor", where=lambda c, a, s: tensor_valued(c, a, s) and s.last))
@PROPERTY
@given(extra=st.integers(-3, 3).filter(lambda k: k != 0))
def test_a_last_axis_of_the_wrong_length_is_refused_naming_the_argument(case, arg, extra):
    v = case.args[arg]
    if v.shape[-1] + extra < 1:
        extra = 1
    bad = v[..., : v.shape[-1] + extra] if extra < 0 else torch.cat([v, v[..., :1].expand(*v.shape[:-1], extra)], -1)
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg, "last"))


def _has_row_partner(case, arg, spec) -> bool:
    return bool(spec.rows) and sum(t.rows == spec.rows for t in case.spec.values()) > 1 and isinstance(
        case.args.get(arg), torch.Tensor) and case.args[arg].shape[0] > 1


@pytest.mark.parametrize("case, arg", pairs("tensor", "labels", "classes", where=_has_row_partner))
@PROPERTY
@given(keep=st.integers(0, 100))
def test_a_row_count_that_disagrees_with_the_other_arguments_is_refused(case, arg, keep):
    v = case.args[arg]
    k = keep % v.shape[0]  # 0 .. n-1 rows: always fewer than the others have
    assert_refused(case, {arg: v[:k]}, A.allowed_names(case, arg, "rows"))


@pytest.mark.parametrize("case, arg", pairs("tensor", "labels", "classes", where=tensor_valued))
@PROPERTY
@given(kind=st.sampled_from(["list", "ndarray", "float", "str"]))
def test_non_tensors_are_refused_naming_the_argument(case, arg, kind):
    v = case.args[arg]
    if v.ndim == 0 and kind != "str":
        kind = "str"  # a 0-d tensor as a number or 0-d array is a valid value (TwoLayerParams.c)
    bad = {"list": v.tolist(), "ndarray": v.numpy(), "float": 0.5, "str": "X"}[kind]
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg))


@pytest.mark.parametrize("case, arg", pairs("tensor", "labels", "classes", "params", "sub",
                                            where=lambda c, a, s: not s.optional and a in c.args))
def test_none_is_refused_where_a_value_is_required(case, arg):
    assert_refused(case, {arg: None}, A.allowed_names(case, arg))


# ------------------------------------------------------------------------------------------- labels

@pytest.mark.parametrize("case, arg", pairs("labels", where=tensor_valued))
@PROPERTY
@given(data=st.data(), value=st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: f not in (1.0, -1.0)))
def test_labels_other_than_plus_and_minus_one_are_refused(case, arg, data, value):
    y = case.args[arg].clone()
    y[data.draw(st.integers(0, y.numel() - 1), label="index")] = value
    assert_refused(case, {arg: y}, A.allowed_names(case, arg))


@pytest.mark.parametrize("case, arg", pairs("labels", where=tensor_valued))
@PROPERTY
@given(kind=st.sampled_from(["bool", "uint8 of -1", "uint8 0/1", "float 0/1", "complex"]))
def test_bool_uint8_zero_one_and_complex_labels_are_refused(case, arg, kind):
    y = case.args[arg]
    bad = {"bool": y > 0, "uint8 of -1": y.to(torch.int8).to(torch.uint8), "uint8 0/1": (y > 0).to(torch.uint8),
           "float 0/1": (y > 0).to(torch.float64), "complex": y.to(torch.complex128)}[kind]
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg))


@pytest.mark.parametrize("case, arg", pairs("classes", where=tensor_valued))
@PROPERTY
@given(data=st.data())
def test_class_indices_that_are_not_integers_in_range_are_refused(case, arg, data):
    y, spec = case.args[arg], case.spec[arg]
    kinds = ["float", "bool", "negative"] + (["too large"] if spec.high is not None else [])
    kind = data.draw(st.sampled_from(kinds), label="kind")
    bad = {"float": lambda: y.to(torch.float64), "bool": lambda: y > 0,
           "negative": lambda: A.perturbed(y, data.draw(st.integers(-10**6, -1), label="class")),
           "too large": lambda: A.perturbed(y, data.draw(st.integers(10, 10**6), label="class"))}[kind]()
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg))


# ------------------------------------------------------------------------------------------ numbers

@pytest.mark.parametrize("case, arg", pairs("float"))
@PROPERTY
@given(bad=st.sampled_from([math.nan, math.inf, -math.inf]) | st.floats(allow_infinity=False).map(lambda f: f * math.nan))
def test_nan_and_infinite_numbers_are_refused_naming_the_argument(case, arg, bad):
    if bad == math.inf and case.spec[arg].inf_ok:
        bad = -math.inf
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg))


@pytest.mark.parametrize("case, arg", pairs("float", where=lambda c, a, s: s.low is not None or s.high is not None))
@PROPERTY
@given(data=st.data())
def test_numbers_out_of_their_range_are_refused_naming_the_argument(case, arg, data):
    s = case.spec[arg]
    options = []
    if s.low is not None:
        options.append(st.floats(max_value=s.low, exclude_max=not s.strict_low, allow_nan=False, allow_infinity=False))
    if s.high is not None:
        options.append(st.floats(min_value=s.high, exclude_min=not s.strict_high, allow_nan=False, allow_infinity=False))
    bad = data.draw(st.one_of(options), label="value")
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg))


NOT_A_NUMBER = st.one_of(st.text(max_size=3), st.booleans(), st.just(np.bool_(True)),
                         st.complex_numbers(allow_nan=False).filter(lambda z: z.imag != 0), st.just([1.0]),
                         st.just(object()))


@pytest.mark.parametrize("case, arg", pairs("float", "int", "seed"))
@PROPERTY
@given(bad=NOT_A_NUMBER)
def test_strings_bools_and_complex_numbers_are_refused_where_a_number_is_needed(case, arg, bad):
    if isinstance(bad, list) and case.spec[arg].tensor_ok:
        bad = ["1.0"]
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg))


@pytest.mark.parametrize("case, arg", pairs("int"))
@PROPERTY
@given(data=st.data())
def test_integers_out_of_range_and_fractions_are_refused_naming_the_argument(case, arg, data):
    s = case.spec[arg]
    options = [st.floats(allow_nan=False, allow_infinity=True).filter(lambda f: not float(f).is_integer())]
    if s.low is not None:
        options.append(st.integers(max_value=int(s.low) - 1))
    if s.high is not None:
        options.append(st.integers(min_value=int(s.high) + 1))
    bad = data.draw(st.one_of(options), label="value")
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg))


@pytest.mark.parametrize("case, arg", pairs("int", where=lambda c, a, s: s.size))
@PROPERTY
@given(size=st.integers(min_value=10**12, max_value=10**30))
def test_sizes_that_would_exhaust_memory_are_refused_before_allocating(case, arg, size):
    assert_refused(case, {arg: size}, A.allowed_names(case, arg))


@pytest.mark.parametrize("case, arg", pairs("seed"))
@PROPERTY
@given(bad=st.integers(max_value=-1) | st.integers(min_value=2**64) | st.floats(allow_nan=True).filter(
    lambda f: not float(f).is_integer()))
def test_seeds_outside_zero_to_two_to_the_64_are_refused(case, arg, bad):
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg))


# ----------------------------------------------------------------------------- flags, choices, dtypes

@pytest.mark.parametrize("case, arg", pairs("flag"))
@PROPERTY
@given(bad=st.one_of(st.text(max_size=4), st.integers(), st.none(), st.floats(allow_nan=False)))
def test_flags_that_are_not_bools_are_refused(case, arg, bad):
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg))


@pytest.mark.parametrize("case, arg", pairs("choice"))
@PROPERTY
@given(data=st.data())
def test_unknown_choices_are_refused_naming_the_argument(case, arg, data):
    choices = case.spec[arg].choices
    bad = data.draw(st.one_of(st.text(max_size=6).filter(lambda t: t not in choices), st.integers(), st.none(),
                              st.just([choices[0]])), label="value")
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg))


@pytest.mark.parametrize("case, arg", pairs("dtype"))
@PROPERTY
@given(bad=st.sampled_from([torch.int64, torch.int32, torch.bool, torch.float16, torch.bfloat16, torch.complex128,
                            "float64", np.float64, float]))
def test_dtypes_other_than_float32_and_float64_are_refused(case, arg, bad):
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg))


@pytest.mark.parametrize("case, arg", pairs("lim"))
@PROPERTY
@given(bad=st.one_of(st.tuples(st.floats(), st.floats()).filter(lambda t: not (math.isfinite(t[0]) and math.isfinite(t[1])
                                                                                and t[0] < t[1])),
                     st.text(max_size=3), st.none(), st.tuples(st.floats(-1, 1))))
def test_plot_ranges_that_are_not_two_increasing_finite_numbers_are_refused(case, arg, bad):
    assert_refused(case, {arg: bad}, A.allowed_names(case, arg))


# ----------------------------------------------------------------------------- networks, subspaces

@pytest.mark.parametrize("case, arg", pairs("params", where=lambda c, a, s: a in c.args))
@PROPERTY
@given(kind=st.sampled_from(["tuple", "dict", "stack", "other d"]))
def test_objects_that_are_not_a_suitable_network_are_refused(case, arg, kind):
    p, spec = case.args[arg], case.spec[arg]
    if kind == "stack" and not spec.single or kind == "other d" and not A._has_partner(case, arg):
        kind = "tuple"
    bad = A.bad_network(p, kind)
    names = A._partner_names(case, arg) if kind == "other d" else A.allowed_names(case, arg)
    assert_refused(case, {arg: bad}, names)


@pytest.mark.parametrize("case, arg", pairs("sub", where=lambda c, a, s: a in c.args))
@PROPERTY
@given(kind=st.sampled_from(["str", "basis tensor", "other d"]))
def test_objects_that_are_not_a_suitable_subspace_are_refused(case, arg, kind):
    if kind == "other d" and not A._has_partner(case, arg):
        kind = "str"
    bad = {"str": "P", "basis tensor": A.SUB.basis, "other d": A.ol.random_subspace(A.D + 1, 1, seed=0)}[kind]
    names = A._partner_names(case, arg) if kind == "other d" else A.allowed_names(case, arg)
    assert_refused(case, {arg: bad}, names)


# -------------------------------------------------------------------------------------- empty inputs

def _row_groups(case) -> list:
    return sorted({s.rows for a, s in case.spec.items() if s.rows and isinstance(case.args.get(a), torch.Tensor)})


@pytest.mark.parametrize("case, group", [pytest.param(c, g, id=f"{c.name}:{g}") for c in A.CASES if c.empty == "ok"
                                         for g in _row_groups(c)])
def test_zero_points_give_an_error_naming_an_argument_or_a_result_without_nan(case, group):
    overrides = {a: case.args[a][:0] for a, s in case.spec.items() if s.rows == group and isinstance(case.args.get(a), torch.Tensor)}
    names = tuple(a for a, s in case.spec.items() if s.rows == group or s.kind == "params") + ("groups",)
    try:
        result = case.call(**overrides)
    except (TypeError, ValueError) as err:
        assert A.names_argument(str(err), names), f"{case.name}: {err}"
        return
    flat = result if isinstance(result, (tuple, list)) else [getattr(result, f) for f in getattr(
        result, "__dataclass_fields__", ())] or [result]
    for r in flat:
        if isinstance(r, torch.Tensor) and r.is_floating_point():
            assert not bool(torch.isnan(r.detach()).any()), f"{case.name} returned nan for zero points"
        if isinstance(r, float):
            assert not math.isnan(r), f"{case.name} returned nan for zero points"
