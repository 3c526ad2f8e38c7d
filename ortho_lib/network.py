r"""The two-layer ReLU network and its initialisation.

.. math:: N(x) = \sum_{i=1}^m u_i\,\sigma(w_i^\top x + b_i) + c, \qquad \sigma(z) = \max(z, 0).

Parameters are plain tensors in :class:`TwoLayerParams`: ``W`` is ``(m, d)`` (row $i$ is $w_i$), ``b``
and ``u`` are ``(m,)``, ``c`` is a scalar output bias (0 and untrained in the theory).  A *stack* of
``E`` networks of equal shape carries a leading member axis on every field (``W`` ``(E, m, d)``, ...);
:func:`ortho_lib.train` trains a stack in one call, and :func:`network_output`, :func:`active_set`,
:func:`input_gradient` and :func:`orthogonal_gradient` evaluate every member at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
from torch import Tensor

from ._checks import check_choice, check_dtype, check_flag, check_float, check_int, check_members, check_points, \
    check_seed, check_size, check_tensor
from .subspaces import DEFAULT_DTYPE, Subspace, P_perp, Pi_P, _check_last_dim, _check_subspace


@dataclass(frozen=True)
class TwoLayerParams:
    r"""Parameters $(W, b, u, c)$ of $N(x) = u^\top \sigma(Wx + b) + c$, or a stack of ``E`` such networks.

    Attributes:
        W: ``(m, d)`` first layer, row $i$ is $w_i$ (``(E, m, d)`` for a stack).
        b: ``(m,)`` hidden biases (``(E, m)``).
        u: ``(m,)`` second layer (``(E, m)``).
        c: ``()`` output bias (``(E,)``); a Python number is accepted and converted.

    Checked on construction: float32 or float64 tensors of one dtype and device, matching shapes, finite
    values, at least one neuron, one input dimension and (for a stack) one member.
    """

    W: Tensor
    b: Tensor
    u: Tensor
    c: Tensor

    def __post_init__(self) -> None:
        W = check_tensor("TwoLayerParams.W", self.W, ndim=(2, 3))
        if 0 in W.shape:
            raise ValueError(f"TwoLayerParams.W must have at least one member, neuron and input dimension, "
                             f"got shape {tuple(W.shape)}")
        lead = tuple(W.shape[:-2])
        m = W.shape[-2]
        c = self.c
        if not isinstance(c, Tensor):
            c = torch.as_tensor(check_float("TwoLayerParams.c", c), dtype=W.dtype, device=W.device)
            object.__setattr__(self, "c", c)
        for name, shape in (("b", lead + (m,)), ("u", lead + (m,)), ("c", lead)):
            t = check_tensor(f"TwoLayerParams.{name}", getattr(self, name), shape=shape)
            if t.dtype != W.dtype or t.device != W.device:
                raise TypeError(f"TwoLayerParams.{name} must have the dtype and device of W ({W.dtype}, {W.device}), "
                                f"got {t.dtype}, {t.device}")

    @property
    def m(self) -> int:
        """Width (number of hidden neurons)."""
        return int(self.W.shape[-2])

    @property
    def d(self) -> int:
        """Input dimension."""
        return int(self.W.shape[-1])

    @property
    def is_stack(self) -> bool:
        """Whether this holds a stack of networks (a leading member axis)."""
        return self.W.ndim == 3

    def __len__(self) -> int:
        """Number of members ``E`` of a stack (a single network has no length)."""
        if not self.is_stack:
            raise TypeError("a single TwoLayerParams has no len(); only a stack has members")
        return int(self.W.shape[0])

    def member(self, e: int) -> "TwoLayerParams":
        """Member ``e`` of a stack, as a single network."""
        E = len(self)
        e = check_int("e", e, low=-E, high=E - 1)
        return TwoLayerParams(self.W[e], self.b[e], self.u[e], self.c[e])

    def members(self) -> list["TwoLayerParams"]:
        """The members of a stack, as a list of single networks."""
        return [self.member(e) for e in range(len(self))]

    @staticmethod
    def stack(nets: Sequence["TwoLayerParams"]) -> "TwoLayerParams":
        """Stack single networks of equal ``(m, d)`` into one ``TwoLayerParams`` with a member axis."""
        return _stack(nets, "nets")

    def clone(self) -> "TwoLayerParams":
        """A deep copy (tensors cloned)."""
        return TwoLayerParams(self.W.clone(), self.b.clone(), self.u.clone(), self.c.clone())

    def replace(self, **fields: Tensor) -> "TwoLayerParams":
        """A copy with some fields replaced (checked like a new one)."""
        return replace(self, **fields)

    def norm_sq(self) -> Tensor:
        r"""$\|\theta\|^2 = \|W\|_F^2 + \|b\|^2 + \|u\|^2 + c^2$, shape ``()`` (``(E,)`` for a stack)."""
        return ((self.W**2).sum((-1, -2)) + (self.b**2).sum(-1) + (self.u**2).sum(-1) + self.c**2)


def _stack(nets: object, name: str) -> TwoLayerParams:
    """:meth:`TwoLayerParams.stack`, with errors that name the caller's argument ``name``."""
    check_members(nets, name, TwoLayerParams)
    shapes = {tuple(p.W.shape) for p in nets}
    if len(shapes) != 1:
        raise ValueError(f"{name} must all have the same (m, d), got {sorted(shapes)}")
    dtypes = {p.W.dtype for p in nets}
    if len(dtypes) != 1:
        raise TypeError(f"{name} must all have the same dtype, got {sorted(map(str, dtypes))}")
    return TwoLayerParams(*(torch.stack([getattr(p, k) for p in nets]) for k in ("W", "b", "u", "c")))


def _unchecked(W: Tensor, b: Tensor, u: Tensor, c: Tensor) -> TwoLayerParams:
    """A TwoLayerParams without the constructor's checks (for internal hot loops on checked data)."""
    p = object.__new__(TwoLayerParams)
    for k, v in (("W", W), ("b", b), ("u", u), ("c", c)):
        object.__setattr__(p, k, v)
    return p


def default_beta(d: int) -> float:
    r"""The default initialisation scale $\beta = 1/\sqrt d$ of $w_i \sim \mathcal N(0, \beta^2 I_d)$."""
    return 1.0 / math.sqrt(check_int("d", d, low=1))


def init_network(
    d: int,
    m: int,
    *,
    seed: int,
    beta: Optional[float] = None,
    u_scale: float = 1.0,
    second_layer: str = "sign",
    bias: str = "zero",
    dtype: torch.dtype = DEFAULT_DTYPE,
) -> TwoLayerParams:
    r"""The book's initialisation.

    .. math:: w_i \sim \mathcal N(0, \beta^2 I_d),\quad \beta = 1/\sqrt d \text{ by default};\qquad
              u_i = s\,\epsilon_i/\sqrt m \text{ with } \epsilon_i = \pm 1 \text{ or } \epsilon_i\sim\mathcal N(0,1).

    Args:
        d: input dimension.
        m: width.
        seed: random seed (``W`` first, then ``u``, then ``b``).
        beta: standard deviation of each entry of ``W`` (default :func:`default_beta`).
        u_scale: the factor $s$ of the second layer (default 1; the authors' "small initialisation" of
            Figure 2 divides both layers by $\kappa$: ``beta=default_beta(d)/kappa, u_scale=1/kappa``).
        second_layer: ``"sign"`` — $\epsilon_i$ uniform on $\{\pm 1\}$ (the theory);
            ``"gaussian"`` — $\epsilon_i \sim \mathcal N(0, 1)$ (the authors' code).
        bias: ``"zero"`` — $b = 0$; ``"uniform"`` — PyTorch's ``nn.Linear`` default
            $b_i \sim U(-1/\sqrt d, 1/\sqrt d)$.
    Returns:
        :class:`TwoLayerParams` with ``c = 0``.  The draws are made in float64 and rounded to ``dtype``.
    """
    d = check_int("d", d, low=1)
    m = check_int("m", m, low=1)
    beta = default_beta(d) if beta is None else check_float("beta", beta, positive=True)
    u_scale = check_float("u_scale", u_scale, positive=True)
    check_choice("second_layer", second_layer, ("sign", "gaussian"))
    check_choice("bias", bias, ("zero", "uniform"))
    dtype = check_dtype("dtype", dtype)
    check_size("m and d", m, d)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    f64 = torch.float64
    W = torch.randn(m, d, generator=g, dtype=f64)
    W = W * beta
    if second_layer == "sign":
        u = (2 * torch.randint(0, 2, (m,), generator=g) - 1).to(f64) / math.sqrt(m)
    else:
        u = torch.randn(m, generator=g, dtype=f64) / math.sqrt(m)
    if u_scale != 1.0:
        u = u * u_scale
    if bias == "zero":
        b = torch.zeros(m, dtype=f64)
    else:
        b = (2 * torch.rand(m, generator=g, dtype=f64) - 1) / math.sqrt(d)
    return TwoLayerParams(W=W.to(dtype), b=b.to(dtype), u=u.to(dtype), c=torch.zeros((), dtype=dtype))


def _check_params(params: object, name: str = "params", *, single: bool = False) -> TwoLayerParams:
    """Return ``params`` if it is a :class:`TwoLayerParams` (a single network when ``single``), else raise naming it."""
    if not isinstance(params, TwoLayerParams):
        raise TypeError(f"{name} must be TwoLayerParams, got {type(params).__name__}")
    if check_flag("single", single) and params.is_stack:
        raise ValueError(f"{name} must be a single network, got a stack of {len(params)}; "
                         f"pass {name}.member(e)")
    return params


def _inputs(params: TwoLayerParams, X: object, name: str = "X") -> tuple[Tensor, bool]:
    """Check ``X`` against ``params``: ``(d,)`` or ``(n, d)`` (or ``(E, n, d)`` for a stack); returns ``(X, single)``."""
    _check_params(params)
    return check_points(name, X, params.d, len(params) if params.is_stack else None, params.W.dtype)


def _pre(params: TwoLayerParams, X: Tensor) -> Tensor:
    """$Z = XW^\\top + b$: ``(n, m)``, or ``(E, n, m)`` for a stack."""
    return X @ params.W.transpose(-1, -2) + params.b.unsqueeze(-2)


def _squeeze(t: Tensor, single: bool) -> Tensor:
    return t.squeeze(-2) if single else t


def preactivations(params: TwoLayerParams, X: Tensor) -> Tensor:
    r"""$Z = X W^\top + b$, shape ``(n, m)`` for ``X`` of shape ``(n, d)`` (``(E, n, m)`` for a stack)."""
    X, single = _inputs(params, X)
    return _squeeze(_pre(params, X), single)


def network_output(params: TwoLayerParams, X: Tensor) -> Tensor:
    r"""$N(x_j) = u^\top\sigma(W x_j + b) + c$ for each row: ``(n, d)`` -> ``(n,)`` (or ``(d,)`` -> ``()``).

    For a stack of ``E`` networks: ``(n, d)`` or ``(E, n, d)`` -> ``(E, n)``.
    """
    X, single = _inputs(params, X)
    out = (torch.relu(_pre(params, X)) @ params.u.unsqueeze(-1)).squeeze(-1) + params.c.unsqueeze(-1)
    return out.squeeze(-1) if single else out


def active_set(params: TwoLayerParams, x0: Tensor) -> Tensor:
    r"""The active set $I(x_0) = \{i : w_i^\top x_0 + b_i > 0\}$ as a boolean mask.

    ``(d,)`` -> ``(m,)``; ``(n, d)`` -> ``(n, m)``; a stack adds a leading ``E``.  $k = |I(x_0)|$ is
    ``active_set(...).sum(-1)``.
    """
    X, single = _inputs(params, x0, "x0")
    return _squeeze(_pre(params, X) > 0, single)


def input_gradient(params: TwoLayerParams, X: Tensor) -> Tensor:
    r"""$\nabla_x N(x) = \sum_{i \in I(x)} u_i w_i = W^\top (u \odot \mathbb 1[Wx+b>0])$.

    ``(n, d)`` -> ``(n, d)``; ``(d,)`` -> ``(d,)``; a stack adds a leading ``E``.  (At a kink, $\sigma'(0) = 0$.)
    """
    X, single = _inputs(params, X)
    A = (_pre(params, X) > 0).to(X.dtype)
    return _squeeze((A * params.u.unsqueeze(-2)) @ params.W, single)


def split_gradient(sub: Subspace, g: Tensor) -> tuple[Tensor, Tensor]:
    r"""Split vectors into their parts in $P$ and $P^\perp$: $g = \Pi_P g + \Pi_\perp g$.

    ``g``: ``(..., d)``; returns ``(g_P, g_perp)``, each of the same shape.
    """
    g = _check_last_dim(sub, g, "g")
    return Pi_P(sub, g), P_perp(sub, g)


def orthogonal_gradient(params: TwoLayerParams, sub: Subspace, X: Tensor) -> Tensor:
    r"""$g_\perp(x) = \Pi_\perp \nabla_x N(x) = \sum_{i\in I(x)} u_i \Pi_\perp w_i$, shape as :func:`input_gradient`."""
    _check_subspace(sub, _check_params(params).d, against="the network's inputs")
    return P_perp(sub, input_gradient(params, X))
