"""Argument checks shared by the public functions.

Every check raises ``ValueError`` (or ``TypeError``) whose message starts with the
name of the offending argument, so a reader sees at once which input was wrong.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor


def check_int(name: str, value: object, *, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """Return ``value`` as an int, or raise naming ``name`` if it is not an integer in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        isinstance(value, float) and value.is_integer()
    ):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    v = int(value)
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
) -> float:
    """Return ``value`` as a finite float, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, Tensor) and value.numel() == 1:
            value = float(value)
        else:
            raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonnegative and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    if below is not None and v >= below:
        raise ValueError(f"{name} must be < {below}, got {v}")
    return v


def check_tensor(
    name: str,
    x: object,
    *,
    ndim: Optional[int | Sequence[int]] = None,
    shape: Optional[Sequence[Optional[int]]] = None,
    finite: bool = True,
) -> Tensor:
    """Check that ``x`` is a floating tensor of the given rank/shape with finite entries."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimension(s), got shape {tuple(x.shape)}")
    if shape is not None:
        if x.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, x.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if finite and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return x


def check_labels(name: str, y: object, n: Optional[int] = None) -> Tensor:
    """Check that ``y`` is a 1-D tensor of +-1 labels (of length ``n`` if given)."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of +-1 labels, got {type(y).__name__}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(y.shape)}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} must have length {n} (one label per point), got {y.shape[0]}")
    if y.numel() and not bool(((y == 1) | (y == -1)).all()):
        bad = y[(y != 1) & (y != -1)][:3].tolist()
        raise ValueError(f"{name} must contain only +1 and -1, found {bad}")
    return y


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return str(value)
