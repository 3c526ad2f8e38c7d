r"""The two-layer ReLU network and its initialisation.

.. math:: N(x) = \sum_{i=1}^m u_i\,\sigma(w_i^\top x + b_i) + c, \qquad \sigma(z) = \max(z, 0).

Parameters are stored as plain tensors in :class:`TwoLayerParams`: ``W`` is ``(m, d)`` (row $i$ is
$w_i$), ``b`` and ``u`` are ``(m,)``, ``c`` is a scalar output bias (0 and untrained in the theory).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import Tensor

from ._checks import check_choice, check_float, check_int, check_tensor
from .subspaces import DEFAULT_DTYPE, Subspace, P_perp, Pi_P


@dataclass(frozen=True)
class TwoLayerParams:
    r"""Parameters $(W, b, u, c)$ of $N(x) = u^\top \sigma(Wx + b) + c$.

    Attributes:
        W: ``(m, d)`` first layer, row $i$ is $w_i$.
        b: ``(m,)`` hidden biases.
        u: ``(m,)`` second layer.
        c: ``()`` output bias.
    """

    W: Tensor
    b: Tensor
    u: Tensor
    c: Tensor

    @property
    def m(self) -> int:
        """Width (number of hidden neurons)."""
        return int(self.W.shape[0])

    @property
    def d(self) -> int:
        """Input dimension."""
        return int(self.W.shape[1])

    def clone(self) -> "TwoLayerParams":
        """A deep copy (tensors cloned)."""
        return TwoLayerParams(self.W.clone(), self.b.clone(), self.u.clone(), self.c.clone())

    def replace(self, **kw: Tensor) -> "TwoLayerParams":
        """A copy with some fields replaced."""
        return replace(self, **kw)


def make_params(W: Tensor, b: Optional[Tensor] = None, u: Optional[Tensor] = None, c: float | Tensor = 0.0) -> TwoLayerParams:
    """Build checked :class:`TwoLayerParams` from explicit tensors (``b`` defaults to 0, ``u`` to $\\pm 1/\\sqrt m$ alternating)."""
    W = check_tensor("W", W, ndim=2)
    m, _ = W.shape
    b = W.new_zeros(m) if b is None else check_tensor("b", b, shape=(m,)).to(W.dtype)
    if u is None:
        u = torch.tensor([(-1.0) ** i for i in range(m)], dtype=W.dtype) / math.sqrt(m)
    u = check_tensor("u", u, shape=(m,)).to(W.dtype)
    c_t = torch.as_tensor(c, dtype=W.dtype)
    if c_t.ndim != 0 or not torch.isfinite(c_t):
        raise ValueError(f"c must be a finite scalar, got {c!r}")
    return TwoLayerParams(W, b, u, c_t)


def init_network(
    d: int,
    m: int,
    *,
    seed: int,
    beta: Optional[float] = None,
    second_layer: str = "sign",
    bias: str = "zero",
    dtype: torch.dtype = DEFAULT_DTYPE,
) -> TwoLayerParams:
    r"""The paper's initialisation.

    .. math:: w_i \sim \mathcal N(0, \beta^2 I_d), \quad \beta = 1/\sqrt d \text{ by default}.

    Args:
        d: input dimension.
        m: width.
        seed: random seed (``W`` first, then ``u``, then ``b``).
        beta: standard deviation of each entry of ``W`` (default $1/\sqrt d$).
        second_layer: ``"sign"`` — $u_i$ uniform on $\{\pm 1/\sqrt m\}$ (the theory);
            ``"gaussian"`` — $u_i \sim \mathcal N(0, 1/m)$ (the authors' code).
        bias: ``"zero"`` — $b = 0$; ``"uniform"`` — PyTorch's ``nn.Linear`` default
            $b_i \sim U(-1/\sqrt d, 1/\sqrt d)$.
    Returns:
        :class:`TwoLayerParams` with ``c = 0``.
    """
    d = check_int("d", d, low=1)
    m = check_int("m", m, low=1)
    beta = 1.0 / math.sqrt(d) if beta is None else check_float("beta", beta, positive=True)
    check_choice("second_layer", second_layer, ("sign", "gaussian"))
    check_choice("bias", bias, ("zero", "uniform"))
    g = torch.Generator().manual_seed(check_int("seed", seed))
    W = beta * torch.randn(m, d, generator=g, dtype=dtype)
    if second_layer == "sign":
        u = (2 * torch.randint(0, 2, (m,), generator=g) - 1).to(dtype) / math.sqrt(m)
    else:
        u = torch.randn(m, generator=g, dtype=dtype) / math.sqrt(m)
    if bias == "zero":
        b = torch.zeros(m, dtype=dtype)
    else:
        b = (2 * torch.rand(m, generator=g, dtype=dtype) - 1) / math.sqrt(d)
    return TwoLayerParams(W=W, b=b, u=u, c=torch.zeros((), dtype=dtype))


def _check_inputs(params: TwoLayerParams, X: Tensor, name: str = "X") -> tuple[Tensor, bool]:
    if not isinstance(params, TwoLayerParams):
        raise TypeError(f"params must be TwoLayerParams, got {type(params).__name__}")
    X = check_tensor(name, X, ndim=(1, 2))
    single = X.ndim == 1
    if single:
        X = X.unsqueeze(0)
    if X.shape[1] != params.d:
        raise ValueError(f"{name} must have last dimension d = {params.d}, got shape {tuple(X.shape)}")
    return X.to(params.W.dtype), single


def preactivations(params: TwoLayerParams, X: Tensor) -> Tensor:
    r"""$Z = X W^\top + b$, shape ``(n, m)`` for ``X`` of shape ``(n, d)``."""
    X, single = _check_inputs(params, X)
    Z = X @ params.W.T + params.b
    return Z[0] if single else Z


def network_output(params: TwoLayerParams, X: Tensor) -> Tensor:
    r"""$N(x_j) = u^\top\sigma(W x_j + b) + c$ for each row: ``(n, d)`` -> ``(n,)`` (or ``(d,)`` -> ``()``)."""
    X, single = _check_inputs(params, X)
    out = torch.relu(X @ params.W.T + params.b) @ params.u + params.c
    return out[0] if single else out


def active_set(params: TwoLayerParams, x0: Tensor) -> Tensor:
    r"""The active set $I(x_0) = \{i : w_i^\top x_0 + b_i > 0\}$ as a boolean mask.

    ``(d,)`` -> ``(m,)``; ``(n, d)`` -> ``(n, m)``.  $k = |I(x_0)|$ is ``active_set(...).sum(-1)``.
    """
    X, single = _check_inputs(params, x0, "x0")
    A = (X @ params.W.T + params.b) > 0
    return A[0] if single else A


def input_gradient(params: TwoLayerParams, X: Tensor) -> Tensor:
    r"""$\nabla_x N(x) = \sum_{i \in I(x)} u_i w_i = W^\top (u \odot \mathbb 1[Wx+b>0])$.

    ``(n, d)`` -> ``(n, d)``; ``(d,)`` -> ``(d,)``.  (At a kink, $\sigma'(0) = 0$.)
    """
    X, single = _check_inputs(params, X)
    A = ((X @ params.W.T + params.b) > 0).to(X.dtype)
    G = (A * params.u) @ params.W
    return G[0] if single else G


def split_gradient(sub: Subspace, g: Tensor) -> tuple[Tensor, Tensor]:
    r"""Split gradients into their parts in $P$ and $P^\perp$: $g = \Pi_P g + \Pi_\perp g$.

    ``g``: ``(..., d)``; returns ``(g_P, g_perp)``, each of the same shape.
    """
    return Pi_P(sub, g), P_perp(sub, g)


def orthogonal_gradient(params: TwoLayerParams, sub: Subspace, X: Tensor) -> Tensor:
    r"""$g_\perp(x) = \Pi_\perp \nabla_x N(x) = \sum_{i\in I(x)} u_i \Pi_\perp w_i$, shape as ``X``."""
    return P_perp(sub, input_gradient(params, X))
