"""Argument checks shared by the public functions: every input is checked here, once.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, bad value) whose
message starts with the name of the offending argument as the caller wrote it (``X must ...``,
``TrainConfig.lr must ...``, ``params.W ...``), so a reader sees at once which input was wrong.

The rules, in one place:

* **numbers** — Python and NumPy integers and floats, 0-d NumPy arrays and 0-d tensors are accepted and
  converted; booleans, strings, complex numbers, nan and infinities are refused (:func:`check_int`,
  :func:`check_float`).  An integer may also be given as an integral float (``5.0``).
* **flags** — ``bool`` or ``numpy.bool_`` only (:func:`check_flag`): the string ``"no"`` is not False.
* **tensors** — float32 or float64 only, finite (:func:`check_tensor`); integer, boolean, half-precision
  and complex tensors are refused rather than silently cast.  Tensors that require grad are accepted;
  functions that convert to NumPy or must not build a graph detach them (:func:`to_numpy`).
* **labels** — exactly +1 and -1 in a floating or signed-integer tensor (:func:`check_labels`); ``bool``
  and ``uint8`` tensors are refused (``True``/255 are not labels), and so are floats such as 0.5 or 0.
* **seeds** — integers in ``[0, 2**64)`` (:func:`check_seed`); derived streams wrap (:func:`derived_seed`).
* **tolerances** — scaled to the precision of the data (:func:`tolerance`), so float32 inputs pass
  where float64 ones do.
* **sizes** — a size whose array would hold more than :data:`MAX_ELEMENTS` numbers is refused before
  anything is allocated (:func:`check_size`).
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64)
SIGNED_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64)
#: The largest array (in numbers) a size argument may ask for: 2**31 float64 numbers are 16 GiB.
MAX_ELEMENTS = 2**31


def _unwrap(value: object) -> object:
    """A 0-d NumPy array or a 0-d tensor as its Python scalar; anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, Tensor) and value.ndim == 0:
        return value.detach().item()
    return value


def check_int(name: str, value: object, *, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """Return ``value`` as an int, or raise naming ``name`` if it is not an integer in [low, high].

    Python and NumPy integers, 0-d integer arrays and tensors, and real numbers with an integral value
    (``5.0``) are accepted; booleans, strings, nan and infinities are not.
    """
    v = _unwrap(value)
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got the bool {value!r}")
    if isinstance(v, numbers.Integral):
        v = int(v)
    elif isinstance(v, numbers.Real) and math.isfinite(float(v)) and float(v).is_integer():
        v = int(v)
    else:
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {v}")
    return v


def check_float(
    name: str,
    value: object,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    below: Optional[float] = None,
    allow_inf: bool = False,
) -> float:
    """Return ``value`` as a finite float (or ``+inf`` with ``allow_inf``), or raise naming ``name``.

    Python and NumPy numbers, 0-d arrays and one-element tensors are accepted; booleans, strings and
    complex numbers are not.
    """
    v = value
    if isinstance(v, Tensor) and v.numel() == 1 and v.dtype != torch.bool and not v.is_complex():
        v = v.detach().reshape(()).item()
    v = _unwrap(v)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(v)
    if math.isnan(v) or (math.isinf(v) and not (allow_inf and v > 0)):
        raise ValueError(f"{name} must be {'a number or +inf' if allow_inf else 'finite'}, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonnegative and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    if below is not None and v >= below:
        raise ValueError(f"{name} must be < {below}, got {v}")
    return v


def check_flag(name: str, value: object) -> bool:
    """Return ``value`` as a bool if it is ``True``/``False`` (or a NumPy bool), else raise naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return str(value)


def check_seed(name: str, value: object) -> int:
    """Return ``value`` as a seed for ``torch.Generator.manual_seed``: an integer in ``[0, 2**64)``."""
    return check_int(name, value, low=0, high=2**64 - 1)


def derived_seed(seed: int, offset: int) -> int:
    """``seed + offset`` wrapped into ``[0, 2**64)``: the seed of a further stream derived from a checked seed."""
    return (seed + offset) % 2**64


def check_dtype(name: str, value: object) -> torch.dtype:
    """Check that ``value`` is ``torch.float32`` or ``torch.float64`` (the precisions the library computes in)."""
    if value not in FLOAT_DTYPES or not isinstance(value, torch.dtype):
        raise TypeError(f"{name} must be torch.float32 or torch.float64, got {value!r}")
    return value


def check_size(names: str, *dims: int) -> None:
    """Refuse sizes whose array of ``prod(dims)`` numbers would exceed :data:`MAX_ELEMENTS` (before allocating).

    ``names`` is how the message starts: the argument or arguments that set the size (``"n and d"``).
    """
    count = math.prod(int(k) for k in dims)
    if count > MAX_ELEMENTS:
        raise ValueError(f"{names} would need an array of {count:.3g} numbers "
                         f"({8 * count / 2**30:.3g} GiB in float64), more than the {MAX_ELEMENTS:.3g} this library "
                         "allocates at once; choose smaller values")


def tolerance(*dtypes: torch.dtype) -> float:
    r"""A relative tolerance for checks on data of these dtypes: $\sqrt{\varepsilon}$ of the least precise.

    About ``1.5e-8`` for float64 and ``3.5e-4`` for float32: rounding to that precision passes, real
    mistakes (a point off its subspace, a basis that is not orthonormal) do not.
    """
    return math.sqrt(max(torch.finfo(dt).eps for dt in dtypes))


def check_tensor(
    name: str,
    x: object,
    *,
    ndim: Optional[int | Sequence[int]] = None,
    shape: Optional[Sequence[Optional[int]]] = None,
    finite: bool = True,
) -> Tensor:
    """Check that ``x`` is a float32/float64 tensor of the given rank/shape with finite entries."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32 or float64 tensor, got {x.dtype} "
                        f"(convert it explicitly, e.g. {name}.to(torch.float64))")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimension(s), got shape {tuple(x.shape)}")
    if shape is not None:
        if x.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, x.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if finite and not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return x


def check_labels(name: str, y: object, shape: int | Sequence[int], dtype: Optional[torch.dtype] = None) -> Tensor:
    """Check that ``y`` holds labels +1/-1 of the given shape (an int ``n`` means ``(n,)``); convert to ``dtype``.

    Floating and signed-integer tensors are accepted; ``bool``, ``uint8`` and complex tensors are not
    (``True`` and 255 are not labels), and neither is any value other than exactly +1 or -1.
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of +1/-1 labels, got {type(y).__name__}")
    if not (y.is_floating_point() or y.dtype in SIGNED_INT_DTYPES):
        raise TypeError(f"{name} must hold +1/-1 in a float or signed-integer tensor, got dtype {y.dtype}")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if tuple(y.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} (one label per point), got {tuple(y.shape)}")
    y_ = y.detach()
    if y.numel() and not bool(((y_ == 1) | (y_ == -1)).all()):
        bad = y_[(y_ != 1) & (y_ != -1)][:3].tolist()
        raise ValueError(f"{name} must contain only +1 and -1, found {bad}")
    return y_ if dtype is None else y_.to(dtype)  # labels carry no gradient


def check_classes(name: str, y: object, n: int, n_classes: Optional[int] = None) -> Tensor:
    """Check that ``y`` is an integer tensor of ``n`` class indices (in ``0..n_classes-1`` if given); returns int64."""
    if not isinstance(y, Tensor) or y.dtype not in SIGNED_INT_DTYPES + (torch.uint8,):
        raise TypeError(f"{name} must be an integer torch.Tensor of class indices, got "
                        f"{getattr(y, 'dtype', type(y).__name__)}")
    if tuple(y.shape) != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one class per row of X), got {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or (n_classes is not None and int(y.max()) >= n_classes)):
        top = "" if n_classes is None else f"..{n_classes - 1}"
        raise ValueError(f"{name} must hold classes in 0{top}, got range {int(y.min())}..{int(y.max())}")
    return y.to(torch.int64)


def to_numpy(x: Tensor) -> np.ndarray:
    """``x`` as a NumPy array (detached from any graph, on the CPU)."""
    return x.detach().cpu().numpy()


def unit_directions(direction: object, n: int, d: int, dtype) -> "torch.Tensor":
    """``direction`` (``(d,)``, one for all points, or ``(n, d)``, one per point; non-zero) as ``(n, d)``
    unit rows of ``dtype``."""
    V = check_tensor("direction", direction, ndim=(1, 2))
    if V.shape[-1] != d or (V.ndim == 2 and V.shape[0] != n):
        raise ValueError(f"direction must have shape ({d},) or ({n}, {d}), got {tuple(V.shape)}")
    norms = V.norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("direction must be non-zero")
    return (V / norms).to(dtype).expand(n, d)


def check_points(name: str, X: object, d: int, members: Optional[int], dtype) -> tuple:
    """Check network inputs ``X``: ``(d,)`` or ``(n, d)``, or ``(E, n, d)`` with ``E = members`` for a stack
    (``members`` None for a single network).  Returns ``(X as (.., n, d) of dtype, single)``: ``single`` when
    ``X`` was one point, which comes back as ``(1, d)``."""
    X = check_tensor(name, X, ndim=(1, 2) if members is None else (1, 2, 3))
    if X.shape[-1] != d:
        raise ValueError(f"{name} must have last dimension d = {d} to match the network, got shape {tuple(X.shape)}")
    if X.ndim == 3 and X.shape[0] != members:
        raise ValueError(f"{name} must have a leading axis of E = {members} (one set per member), got {X.shape[0]}")
    single = X.ndim == 1
    if single:
        X = X.unsqueeze(0)
    return X.to(dtype), single


def check_training_set(X: object, y: object, d: int, members: Optional[int], dtype) -> tuple:
    """Check a training set for a network: X ``(n, d)`` with ``n >= 1`` (or ``(E, n, d)`` with ``E = members``
    for a stack; ``members`` None for a single network), y ``(n,)`` labels in {-1, +1} (or ``(E, n)``, one
    set per member).  Returns ``(X, y)`` of ``dtype``."""
    X = check_tensor("X", X, ndim=2 if members is None else (2, 3))
    if X.shape[-1] != d:
        raise ValueError(f"X must have d = {d} columns to match params, got shape {tuple(X.shape)}")
    if X.ndim == 3 and X.shape[0] != members:
        raise ValueError(f"X must have a leading axis of E = {members} (one training set per member), got {X.shape[0]}")
    n = X.shape[-2]
    if n < 1:
        raise ValueError("X must hold at least one point")
    per_member = members is not None and isinstance(y, torch.Tensor) and y.ndim == 2
    return X.to(dtype), check_labels("y", y, (members, n) if per_member else (n,), dtype)


def check_members(nets: object, name: str, kind: type) -> None:
    """``nets`` must be a non-empty sequence of single (not stacked) networks of class ``kind``; errors name
    the caller's argument ``name`` (and the index of a bad member)."""
    if isinstance(nets, kind) or not isinstance(nets, Sequence) or isinstance(nets, (str, bytes)) or len(nets) == 0:
        raise TypeError(f"{name} must be a non-empty sequence of {kind.__name__}, got {type(nets).__name__}")
    for i, p in enumerate(nets):
        if not isinstance(p, kind) or p.is_stack:
            raise TypeError(f"{name}[{i}] must be a single {kind.__name__}, got {type(p).__name__}"
                            + (" (a stack)" if isinstance(p, kind) else ""))
