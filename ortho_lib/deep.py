r"""Deep ReLU networks: $L$ hidden layers, and the book's questions asked again at any depth.

.. math:: z_1 = W_1 x + b_1,\qquad z_{l+1} = W_{l+1}\,\sigma(z_l) + b_{l+1}\ (l < L),\qquad
          N(x) = u^\top \sigma(z_L) + c,\qquad \sigma(t) = \max(t, 0).

A network with $L$ hidden layers has $L + 1$ layers of weights: $L = 1$ is the book's two-layer network,
$L = 2$ a three-layer network, $L = 3$ a four-layer one.  Parameters are plain tensors in
:class:`DeepParams`: ``weights[0]`` is $W_1$ of shape ``(m_1, d)``, ``weights[l]`` is $W_{l+1}$ of shape
``(m_{l+1}, m_l)``, ``biases[l]`` is $b_{l+1}$, ``u`` the ``(m_L,)`` output layer and ``c`` the output bias.
A *stack* of ``E`` networks of equal shapes carries a leading member axis on every field, as
:class:`ortho_lib.TwoLayerParams` does; :func:`ortho_lib.train` trains a stack in one call.

The quantity that replaces the two-layer network's $u\odot\mathbb 1[\text{active}]$ is the
**back-propagated vector** at the first layer,

.. math:: \delta(x) = \frac{\partial N}{\partial z_1}(x) = D_1 W_2^\top D_2 W_3^\top \cdots W_L^\top D_L\, u
          \in \mathbb R^{m_1}, \qquad D_l = \mathrm{diag}\bigl(\mathbb 1[z_l > 0]\bigr),

so that $\nabla_x N(x) = W_1^\top\delta(x)$ and the orthogonal gradient is
$g_\perp(x) = (\Pi_\perp W_1)^\top\delta(x)$ (:func:`backprop_vector`, :func:`orthogonal_gradient`).
For $L = 1$, $\delta(x) = u \odot \mathbb 1[W_1x + b_1 > 0]$.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ._checks import (check_choice, check_dtype, check_flag, check_float, check_int, check_labels, check_seed,
                      check_members, check_points, check_size, check_tensor, check_training_set, unit_directions)
from .subspaces import DEFAULT_DTYPE, Subspace, P_perp, _check_subspace

__all__ = [
    "DeepParams",
    "init_network",
    "preactivations",
    "network_output",
    "backprop_vector",
    "input_gradient",
    "orthogonal_gradient",
    "train_margin",
    "flip_norm_along",
    "universal_direction",
    "orthogonal_cosine_cdf",
    "orthogonal_cosine_quantile",
    "arc_cosine_alignment",
]


# ----------------------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class DeepParams:
    r"""Parameters of $N(x) = u^\top\sigma(W_L\cdots\sigma(W_1x+b_1)\cdots + b_L) + c$, or a stack of ``E``.

    Attributes:
        weights: $L \ge 1$ tensors; ``weights[0]`` is ``(m_1, d)``, ``weights[l]`` is ``(m_{l+1}, m_l)``
            (each with a leading ``E`` for a stack).  A list is accepted and stored as a tuple.
        biases: $L$ tensors ``(m_l,)`` (``(E, m_l)``).
        u: ``(m_L,)`` output layer (``(E, m_L)``).
        c: ``()`` output bias (``(E,)``); a Python number is accepted and converted.

    Checked on construction: float32 or float64 tensors of one dtype and device, chained shapes, finite
    values, at least one hidden layer, neuron, input dimension and (for a stack) member.
    """

    weights: tuple
    biases: tuple
    u: Tensor
    c: Tensor

    def __post_init__(self) -> None:
        Ws, bs = self.weights, self.biases
        for name, seq in (("weights", Ws), ("biases", bs)):
            if isinstance(seq, Tensor) or not isinstance(seq, Sequence) or isinstance(seq, (str, bytes)):
                raise TypeError(f"DeepParams.{name} must be a tuple or list of tensors (one per hidden layer), "
                                f"got {type(seq).__name__}")
        if len(Ws) < 1:
            raise ValueError("DeepParams.weights must hold at least one layer (W_1)")
        if len(bs) != len(Ws):
            raise ValueError(f"DeepParams.biases must hold one tensor per hidden layer ({len(Ws)}), got {len(bs)}")
        W1 = check_tensor("DeepParams.weights[0]", Ws[0], ndim=(2, 3))
        lead = tuple(W1.shape[:-2])
        if 0 in W1.shape:
            raise ValueError(f"DeepParams.weights[0] must have at least one member, neuron and input dimension, "
                             f"got shape {tuple(W1.shape)}")
        prev = W1.shape[-2]
        for l in range(1, len(Ws)):
            W = check_tensor(f"DeepParams.weights[{l}]", Ws[l], ndim=len(lead) + 2)
            if tuple(W.shape[:-2]) != lead or W.shape[-1] != prev or W.shape[-2] < 1:
                raise ValueError(f"DeepParams.weights[{l}] must have shape {lead + ('m', prev)} (its input is layer "
                                 f"{l}'s width {prev}), got {tuple(W.shape)}")
            prev = W.shape[-2]
        c = self.c
        if not isinstance(c, Tensor):
            c = torch.as_tensor(check_float("DeepParams.c", c), dtype=W1.dtype, device=W1.device)
            object.__setattr__(self, "c", c)
        checks = [(f"biases[{l}]", bs[l], lead + (Ws[l].shape[-2],)) for l in range(len(Ws))]
        checks += [("u", self.u, lead + (prev,)), ("c", c, lead)]
        for name, t, shape in checks:
            check_tensor(f"DeepParams.{name}", t, shape=shape)
        for name, t in [(f"weights[{l}]", Ws[l]) for l in range(len(Ws))] + [(n, t) for n, t, _ in checks]:
            if t.dtype != W1.dtype or t.device != W1.device:
                raise TypeError(f"DeepParams.{name} must have the dtype and device of weights[0] "
                                f"({W1.dtype}, {W1.device}), got {t.dtype}, {t.device}")
        object.__setattr__(self, "weights", tuple(Ws))
        object.__setattr__(self, "biases", tuple(bs))

    # -------------------------------------------------------------------------------- shape facts
    @property
    def n_hidden(self) -> int:
        """Number of hidden layers $L$."""
        return len(self.weights)

    @property
    def depth(self) -> int:
        """Number of layers of weights, $L + 1$ (2 for the book's two-layer network)."""
        return len(self.weights) + 1

    @property
    def widths(self) -> tuple:
        """The hidden widths $(m_1, \\dots, m_L)$."""
        return tuple(int(W.shape[-2]) for W in self.weights)

    @property
    def d(self) -> int:
        """Input dimension."""
        return int(self.weights[0].shape[-1])

    @property
    def W1(self) -> Tensor:
        """The first layer $W_1$, ``(m_1, d)`` (``(E, m_1, d)``): the only layer that sees the input."""
        return self.weights[0]

    @property
    def is_stack(self) -> bool:
        """Whether this holds a stack of networks (a leading member axis)."""
        return self.weights[0].ndim == 3

    def __len__(self) -> int:
        """Number of members ``E`` of a stack (a single network has no length)."""
        if not self.is_stack:
            raise TypeError("a single DeepParams has no len(); only a stack has members")
        return int(self.weights[0].shape[0])

    # -------------------------------------------------------------------------------- members
    def tensors(self) -> list:
        """Every parameter tensor, in the order ``weights..., biases..., u, c``."""
        return [*self.weights, *self.biases, self.u, self.c]

    def _from_tensors(self, ts: Sequence[Tensor]) -> "DeepParams":
        L = self.n_hidden
        return DeepParams(tuple(ts[:L]), tuple(ts[L:2 * L]), ts[2 * L], ts[2 * L + 1])

    def member(self, e: int) -> "DeepParams":
        """Member ``e`` of a stack, as a single network."""
        E = len(self)
        e = check_int("e", e, low=-E, high=E - 1)
        return self._from_tensors([t[e] for t in self.tensors()])

    def members(self) -> list:
        """The members of a stack, as a list of single networks."""
        return [self.member(e) for e in range(len(self))]

    @staticmethod
    def stack(nets: Sequence["DeepParams"]) -> "DeepParams":
        """Stack single networks of equal shapes into one ``DeepParams`` with a member axis."""
        return _stack(nets, "nets")

    def clone(self) -> "DeepParams":
        """A deep copy (tensors cloned)."""
        return self._from_tensors([t.clone() for t in self.tensors()])

    def replace(self, **fields: object) -> "DeepParams":
        """A copy with some fields replaced (checked like a new one)."""
        return replace(self, **fields)

    def norm_sq(self) -> Tensor:
        r"""$\|\theta\|^2$, the sum of squares of every parameter: shape ``()`` (``(E,)`` for a stack)."""
        lead = 1 if self.is_stack else 0
        return sum((t ** 2).reshape(*t.shape[:lead], -1).sum(-1) for t in self.tensors())


def _stack(nets: object, name: str) -> DeepParams:
    """:meth:`DeepParams.stack`, with errors naming the caller's argument ``name``."""
    check_members(nets, name, DeepParams)
    shapes = {(p.d,) + p.widths for p in nets}
    if len(shapes) != 1:
        raise ValueError(f"{name} must all have the same input dimension and widths, got {sorted(shapes)}")
    if len({p.W1.dtype for p in nets}) != 1:
        raise TypeError(f"{name} must all have the same dtype")
    first = nets[0]
    return first._from_tensors([torch.stack(ts) for ts in zip(*(p.tensors() for p in nets))])


def _check_deep_params(params: object, name: str = "params", *, single: bool = False) -> DeepParams:
    """Return ``params`` if it is a :class:`DeepParams` (a single network when ``single``), else raise naming it."""
    if not isinstance(params, DeepParams):
        raise TypeError(f"{name} must be DeepParams, got {type(params).__name__}")
    if check_flag("single", single) and params.is_stack:
        raise ValueError(f"{name} must be a single network, got a stack of {len(params)}; pass {name}.member(e)")
    return params


def init_network(
    d: int,
    widths: Sequence[int],
    *,
    seed: int,
    beta: Optional[float] = None,
    gain: float = math.sqrt(2.0),
    second_layer: str = "sign",
    dtype: torch.dtype = DEFAULT_DTYPE,
) -> DeepParams:
    r"""The book's initialisation, extended to $L$ hidden layers.

    .. math:: (W_1)_{ij} \sim \mathcal N(0, \beta^2),\ \beta = 1/\sqrt d;\qquad
              (W_l)_{ij} \sim \mathcal N\bigl(0, g^2/m_{l-1}\bigr)\ (l \ge 2);\qquad
              b_l = 0;\qquad u_i = \pm 1/\sqrt{m_L}.

    The first layer has the book's scale (its orthogonal part is what the theory is about); the layers above
    it have He's scale $g = \sqrt 2$ {He et al. 2015}, under which a ReLU layer keeps the size of its input
    (for $\|x\| = \sqrt d$ every pre-activation is about $\mathcal N(0, 1)$) and $\|\delta(x)\|^2 \approx 1/2$
    at every depth.  With one hidden layer and the sign second layer the draws are exactly those of
    :func:`ortho_lib.init_network` with the same seed.

    Args:
        d: input dimension.
        widths: hidden widths $(m_1, \dots, m_L)$, $L \ge 1$.
        seed: random seed ($W_1$ first, then $W_2, \dots, W_L$, then $u$).
        beta: standard deviation of the entries of $W_1$ (default $1/\sqrt d$).
        gain: $g$ of the layers above the first.
        second_layer: ``"sign"`` ($u_i = \pm1/\sqrt{m_L}$) or ``"gaussian"`` ($u_i\sim\mathcal N(0, 1/m_L)$).
        dtype: float32 or float64 (drawn in float64, then rounded).
    """
    d = check_int("d", d, low=1)
    if isinstance(widths, (str, bytes, Tensor)) or not isinstance(widths, Sequence) or len(widths) == 0:
        raise TypeError(f"widths must be a non-empty list of hidden widths, got {widths!r}")
    widths = [check_int(f"widths[{l}]", w, low=1) for l, w in enumerate(widths)]
    beta = 1.0 / math.sqrt(d) if beta is None else check_float("beta", beta, positive=True)
    gain = check_float("gain", gain, positive=True)
    check_choice("second_layer", second_layer, ("sign", "gaussian"))
    dtype = check_dtype("dtype", dtype)
    for l, (a, b) in enumerate(zip([d] + widths[:-1], widths)):
        check_size(f"widths[{l}]", a, b)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    f64 = torch.float64
    Ws = [torch.randn(widths[0], d, generator=g, dtype=f64) * beta]
    for l in range(1, len(widths)):
        Ws.append(torch.randn(widths[l], widths[l - 1], generator=g, dtype=f64) * (gain / math.sqrt(widths[l - 1])))
    m = widths[-1]
    if second_layer == "sign":
        u = (2 * torch.randint(0, 2, (m,), generator=g) - 1).to(f64) / math.sqrt(m)
    else:
        u = torch.randn(m, generator=g, dtype=f64) / math.sqrt(m)
    bs = [torch.zeros(w, dtype=f64) for w in widths]
    return DeepParams(tuple(W.to(dtype) for W in Ws), tuple(b.to(dtype) for b in bs), u.to(dtype),
                      torch.zeros((), dtype=dtype))


# ------------------------------------------------------------------------------------ evaluation

def _inputs(params: DeepParams, X: object, name: str = "X") -> tuple[Tensor, bool]:
    """Check ``X``: ``(d,)`` or ``(n, d)`` (or ``(E, n, d)`` for a stack); returns ``(X as (.., n, d), single)``."""
    _check_deep_params(params)
    return check_points(name, X, params.d, len(params) if params.is_stack else None, params.W1.dtype)


def _bias(b: Tensor) -> Tensor:
    return b.unsqueeze(-2)            # (m,) -> (1, m); (E, m) -> (E, 1, m)


def _forward(params: DeepParams, X: Tensor) -> list:
    """Pre-activations $[z_1, \\dots, z_L]$, each ``(n, m_l)`` (``(E, n, m_l)`` for a stack)."""
    zs = []
    h = X
    for W, b in zip(params.weights, params.biases):
        z = h @ W.transpose(-1, -2) + _bias(b)
        zs.append(z)
        h = torch.relu(z)
    return zs


def _output(params: DeepParams, zs: list) -> Tensor:
    return (torch.relu(zs[-1]) @ params.u.unsqueeze(-1)).squeeze(-1) + params.c.unsqueeze(-1)


def _backprop(params: DeepParams, zs: list) -> Tensor:
    """$\\delta = \\partial N / \\partial z_1$ from the pre-activations, ``(.., n, m_1)``."""
    delta = (zs[-1] > 0).to(zs[-1].dtype) * params.u.unsqueeze(-2)
    for l in range(params.n_hidden - 1, 0, -1):
        delta = (delta @ params.weights[l]) * (zs[l - 1] > 0).to(delta.dtype)
    return delta


def _squeeze(t: Tensor, single: bool) -> Tensor:
    return t.squeeze(-2) if single else t


def preactivations(params: DeepParams, X: Tensor) -> list:
    r"""$[z_1(x), \dots, z_L(x)]$ for each row of ``X``: a list of ``(n, m_l)`` tensors (``(E, n, m_l)`` for a stack)."""
    X, single = _inputs(params, X)
    return [_squeeze(z, single) for z in _forward(params, X)]


def network_output(params: DeepParams, X: Tensor) -> Tensor:
    r"""$N(x_j)$ for each row: ``(n, d)`` -> ``(n,)`` (``(d,)`` -> ``()``); a stack gives ``(E, n)``."""
    X, single = _inputs(params, X)
    out = _output(params, _forward(params, X))
    return out.squeeze(-1) if single else out


def backprop_vector(params: DeepParams, X: Tensor) -> Tensor:
    r"""The back-propagated vector $\delta(x) = \partial N/\partial z_1 = D_1W_2^\top D_2\cdots W_L^\top D_L u$.

    ``(n, d)`` -> ``(n, m_1)``; ``(d,)`` -> ``(m_1,)``; a stack adds a leading ``E``.  (At a kink,
    $\sigma'(0) = 0$.)  For one hidden layer it is $u\odot\mathbb 1[W_1x+b_1>0]$.
    """
    X, single = _inputs(params, X)
    return _squeeze(_backprop(params, _forward(params, X)), single)


def input_gradient(params: DeepParams, X: Tensor) -> Tensor:
    r"""$\nabla_x N(x) = W_1^\top\delta(x)$, shape as ``X`` (a stack adds a leading ``E``)."""
    X, single = _inputs(params, X)
    return _squeeze(_backprop(params, _forward(params, X)) @ params.W1, single)


def orthogonal_gradient(params: DeepParams, sub: Subspace, X: Tensor) -> Tensor:
    r"""$g_\perp(x) = \Pi_\perp\nabla_x N(x) = (\Pi_\perp W_1)^\top\delta(x)$, shape as :func:`input_gradient`."""
    _check_subspace(sub, _check_deep_params(params).d, against="the network's inputs")
    return P_perp(sub, input_gradient(params, X))


def train_margin(params: DeepParams, X: Tensor, y: Tensor) -> Union[float, Tensor]:
    r"""$\min_j y_jN(x_j)$ (a float; ``(E,)`` for a stack)."""
    X, y = _data(params, X, y)
    out = (y * _output(params, _forward(params, X))).amin(-1)
    return out if params.is_stack else float(out.detach())


# ------------------------------------------------------------------------------ flip norms along a ray

def flip_norm_along(
    params: DeepParams,
    X: Tensor,
    direction: Tensor,
    *,
    side: str = "descend",
    max_norm: float = math.inf,
) -> Tensor:
    r"""The exact distance along a direction at which $N$ first reaches the other sign, per point.

    With $v$ the unit direction and $s_0 = \operatorname{sign}N(x_0)$, ``side="descend"`` moves along
    $x_0 - s_0\alpha v$ and ``side="both"`` takes the smaller of the moves along $+v$ and $-v$ (as
    :func:`ortho_lib.flip_norm_along` does for two layers).  Along a ray the network is piecewise linear in
    $\alpha$; the function walks its linear pieces: at the current $\alpha$ it fixes every layer's
    activation pattern (a neuron at zero counts as active when its pre-activation is rising), propagates
    the values and the slopes $\mathrm d z_l/\mathrm d\alpha$ layer by layer, takes the nearest $\alpha$ at
    which any neuron of any layer changes state, and solves for the crossing on the piece in between.  So
    the first crossing is never missed, however soon it reverses.

    Args:
        params: a single network.
        X: ``(n, d)`` points.
        direction: ``(d,)`` (one for all points) or ``(n, d)`` (one per point), non-zero.
        side: ``"descend"`` or ``"both"``.
        max_norm: report ``inf`` beyond this distance (default: no limit).
    Returns:
        ``(n,)`` flip norms: ``inf`` where there is no crossing (within ``max_norm``), ``nan`` where $N(x_0) = 0$.
    """
    _check_deep_params(params, single=True)
    X, _ = _inputs(params, check_tensor("X", X, ndim=2))
    n, d = X.shape
    V = unit_directions(direction, n, d, X.dtype)
    check_choice("side", side, ("descend", "both"))
    max_norm = check_float("max_norm", max_norm, positive=True, allow_inf=True)
    with torch.no_grad():
        s0 = torch.sign(network_output(params, X))
        if side == "descend":
            a = _first_zero(params, X, -s0[:, None] * V, s0, max_norm)
        else:
            a = torch.minimum(_first_zero(params, X, V, s0, max_norm), _first_zero(params, X, -V, s0, max_norm))
    a = torch.where(a > max_norm, torch.full_like(a, math.inf), a)
    return torch.where(s0 == 0, torch.full_like(a, math.nan), a)


def _first_zero(params: DeepParams, X: Tensor, R: Tensor, s0: Tensor, max_norm: float) -> Tensor:
    """First ``alpha >= 0`` with ``s0 * N(X + alpha R) <= 0`` per row (``inf`` if none within ``max_norm``)."""
    n = X.shape[0]
    dt = X.dtype
    alpha = torch.zeros(n, dtype=dt)
    result = torch.full((n,), math.inf, dtype=dt)
    todo = s0 != 0
    # a neuron whose pre-activation is within `tol` of 0 is decided by its slope (it sits on a breakpoint);
    # `tol` is 1e-12 relative in float64 and as many rounding units in lower precision (in float32 a step to a
    # breakpoint leaves it ~1e-7 away, and a tolerance below that would step by less than a rounding unit forever)
    tol = 1e-12 * (torch.finfo(dt).eps / torch.finfo(torch.float64).eps) * (
        1.0 + (float(X.norm(dim=1).max()) if n else 0.0))
    budget = 4 * sum(params.widths) + 16          # a neuron may turn on and off several times along a ray
    for _ in range(budget * 50):
        if not bool(todo.any()):
            return result
        idx = todo.nonzero().flatten()
        x = X[idx] + alpha[idx, None] * R[idx]
        z = x @ params.W1.T + params.biases[0]
        s = R[idx] @ params.W1.T
        step = torch.full((len(idx),), math.inf, dtype=dt)
        for l in range(params.n_hidden):
            on = (z > tol) | ((z.abs() <= tol) & (s > 0))
            leaving = (on & (s < 0)) | (~on & (s > 0) & (z < -tol))
            t = torch.where(leaving, -z / torch.where(leaving, s, torch.ones_like(s)), torch.full_like(z, math.inf))
            step = torch.minimum(step, t.clamp_min(0).amin(1))
            h, hs = on.to(dt) * z, on.to(dt) * s
            if l + 1 < params.n_hidden:
                z = h @ params.weights[l + 1].T + params.biases[l + 1]
                s = hs @ params.weights[l + 1].T
        f = h @ params.u + params.c
        fs = hs @ params.u
        sg = s0[idx]
        crossed_now = sg * f <= 0
        falling = sg * fs < 0
        t_cross = torch.where(falling, -f / torch.where(falling, fs, torch.ones_like(fs)), torch.full_like(f, math.inf))
        hit = crossed_now | (falling & (t_cross <= step))
        t_hit = torch.where(crossed_now, torch.zeros_like(f), t_cross)
        result[idx[hit]] = alpha[idx[hit]] + t_hit[hit]
        stuck = ~hit & ~torch.isfinite(step)           # linear to infinity without crossing
        alpha[idx] = alpha[idx] + torch.where(hit | stuck, torch.zeros_like(step), step)
        beyond = alpha[idx] > max_norm
        todo[idx[hit | stuck | beyond]] = False
    raise RuntimeError("flip_norm_along: too many linear pieces along the ray; pass a smaller max_norm")


def universal_direction(params: DeepParams, sub: Subspace, X: Tensor) -> Tensor:
    r"""The candidate universal direction $z = (\Pi_\perp W_1)^\top\bar\delta$, $\bar\delta = \frac1n\sum_j\delta(x_j)$.

    It is the mean of the orthogonal gradients $g_\perp(x_j)$ over the points ``X`` (the training points, say),
    shape ``(d,)``.  For one hidden layer $\bar\delta_i = u_i\,f_i$ with $f_i$ the fraction of the points on
    which neuron $i$ is active, close to the two-layer direction $\Pi_\perp W^\top u$ when every $f_i\approx 1/2$.
    """
    _check_deep_params(params, single=True)
    _check_subspace(sub, params.d, against="the network's inputs")
    X, _ = _inputs(params, check_tensor("X", X, ndim=2))
    if X.shape[0] < 1:
        raise ValueError("X must hold at least one point")
    return P_perp(sub, backprop_vector(params, X).mean(0) @ params.W1)


def orthogonal_cosine_cdf(c: Union[float, Tensor], rho: float, ell: int, *, nodes: int = 400) -> Tensor:
    r"""$\Pr[\cos\angle(g_\perp(x), g_\perp(x')) \le c]$ given the back-propagated vectors, for $\rho = \cos\angle(\delta(x), \delta(x'))$.

    Conditionally on everything training sees, $Q_\perp^\top g_\perp(x) = Z^\top\delta(x)$ with $Z$ an
    $m\times\ell$ matrix of i.i.d. $\mathcal N(0,\beta^2)$ entries, so (with $\sigma = \sqrt{1-\rho^2}$)

    .. math:: \cos\angle(g_\perp(x), g_\perp(x')) \overset{d}{=} \frac{Y}{\sqrt{Y^2 + \sigma^2 C}},\qquad
              Y = \rho A + \sigma T,

    with $A\sim\chi_\ell$, $T\sim\mathcal N(0,1)$, $C\sim\chi^2_{\ell-1}$ independent; hence
    $\Pr[\cos\le c] = \mathbb E\,\Phi\bigl((c\,\sigma\sqrt{C/(1-c^2)} - \rho A)/\sigma\bigr)$, computed here on a
    ``nodes`` x ``nodes`` grid of quantiles of $A$ and $C$ (midpoint rule in probability, error about
    $10^{-5}$ for 400 nodes).

    Args:
        c: a number or a tensor of values in $(-1, 1)$.
        rho: $\rho\in(-1, 1)$.
        ell: $\ell\ge 2$.
    Returns:
        the CDF at ``c`` (a tensor of its shape, float64).
    """
    ell = check_int("ell", ell, low=2)
    rho = check_float("rho", rho)
    if not -1 < rho < 1:
        raise ValueError(f"rho must lie in (-1, 1), got {rho}")
    nodes = check_int("nodes", nodes, low=10, high=5000)
    ct = check_tensor("c", c).detach().double() if isinstance(c, Tensor) else \
        torch.tensor(check_float("c", c), dtype=torch.float64)
    if bool(((ct <= -1) | (ct >= 1)).any()):
        raise ValueError("c must lie in (-1, 1)")
    A, C = _chi_nodes(ell, nodes)
    sig = math.sqrt(1 - rho * rho)
    flat = ct.reshape(-1)
    rootC = torch.sqrt(C)
    cdf = torch.empty_like(flat)
    for i, ci in enumerate(flat.tolist()):          # one (nodes x nodes) grid at a time
        arg = (ci * sig / math.sqrt(1 - ci * ci) * rootC[None, :] - rho * A[:, None]) / sig
        cdf[i] = torch.special.ndtr(arg).mean()
    return cdf.reshape(ct.shape)


@functools.lru_cache(maxsize=32)
def _chi_nodes(ell: int, nodes: int) -> tuple[Tensor, Tensor]:
    """Midpoint quantiles of chi_ell and chi^2_(ell-1) (the integration nodes of orthogonal_cosine_cdf)."""
    from scipy import stats as _stats

    q = (torch.arange(nodes, dtype=torch.float64) + 0.5) / nodes
    return torch.as_tensor(_stats.chi.ppf(q.numpy(), ell)), torch.as_tensor(_stats.chi2.ppf(q.numpy(), ell - 1))


def orthogonal_cosine_quantile(q: float, rho: float, ell: int, *, nodes: int = 200, iters: int = 40) -> float:
    r"""The ``q``-quantile of the conditional law of :func:`orthogonal_cosine_cdf`, by bisection on $c$."""
    q = check_float("q", q)
    if not 0 < q < 1:
        raise ValueError(f"q must lie in (0, 1), got {q}")
    iters = check_int("iters", iters, low=1)
    lo, hi = -1.0 + 1e-12, 1.0 - 1e-12
    for _ in range(iters):
        mid = (lo + hi) / 2
        if float(orthogonal_cosine_cdf(mid, rho, ell, nodes=nodes)) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def arc_cosine_alignment(n_hidden: int, rho0: float = 0.0) -> float:
    r"""The infinite-width prediction of $\cos\angle(\delta(x), \delta(x'))$ at initialisation (a heuristic).

    With $b = 0$, He's scale above the first layer and inputs of equal norm at cosine $\rho_0$, the
    pre-activations of layer $l$ at $x$ and $x'$ are, for infinite width, Gaussian with correlation
    $\rho_l$, $\rho_1 = \rho_0$, $\rho_{l+1} = \kappa_1(\rho_l)$, and back-propagation through layer $l$
    multiplies the cosine of the back-propagated vectors by $\kappa_0(\rho_l)$ (treating the weights of the
    backward pass as independent of the forward pass):

    .. math:: \cos\angle(\delta(x),\delta(x')) \;\to\; \prod_{l=1}^{L}\kappa_0(\rho_l),\qquad
              \kappa_0(\rho) = 1 - \frac{\arccos\rho}{\pi},\quad
              \kappa_1(\rho) = \frac{\sqrt{1-\rho^2} + (\pi - \arccos\rho)\,\rho}{\pi},

    the arc-cosine kernels of degrees 0 and 1 (Cho and Saul 2009).  For $\rho_0 = 0$: $1/2$, $0.302$, $0.200$
    for $L = 1, 2, 3$.
    """
    L = check_int("n_hidden", n_hidden, low=1)
    rho = check_float("rho0", rho0)
    if not -1 <= rho <= 1:
        raise ValueError(f"rho0 must lie in [-1, 1], got {rho}")
    out = 1.0
    for _ in range(L):
        out *= 1.0 - math.acos(rho) / math.pi
        rho = (math.sqrt(max(0.0, 1.0 - rho * rho)) + (math.pi - math.acos(rho)) * rho) / math.pi
    return out


# --------------------------------------------------------------------------------------- training

def _data(params: DeepParams, X: object, y: object) -> tuple[Tensor, Tensor]:
    """Check a training set: X ``(n, d)`` (or ``(E, n, d)``), y ``(n,)`` (or ``(E, n)``)."""
    _check_deep_params(params)
    return check_training_set(X, y, params.d, len(params) if params.is_stack else None, params.W1.dtype)


def _train_deep(params, X, y, config, *, sub=None, backend="auto", coordinates="auto", device=None, dtype=None,
               stats=None):
    r"""Train one deep network, or a stack of them, on the logistic loss (called by :func:`ortho_lib.train`).

    The iteration is that of :func:`ortho_lib.training._train_reference` for two layers, with the gradients
    computed by autograd: before each update the full-batch loss and margin of every member are evaluated;
    a member stops at its first iterate whose margin reaches ``target_margin`` or when its budget ends (its
    parameters are then left alone while the others go on).  The update of each trained parameter $\theta$
    with gradient $\nabla$ of the mean logistic loss (mini-batch for SGD) is
    GD/SGD $\theta \leftarrow \theta - \eta_t(\nabla + \lambda\theta)$, heavy ball
    $v \leftarrow \mu v + \nabla + \lambda\theta,\ \theta\leftarrow\theta-\eta_t v$, or Adam (on $\nabla+\lambda\theta$).
    ``TrainConfig.trained``: ``W`` is every weight matrix $W_1,\dots,W_L$, ``b`` every hidden bias, ``u`` the
    output layer, ``c`` the output bias (default ``"Wb"``: the output layer fixed, as in the theory).

    A stack trains all members at once (one batched forward and backward pass per step); each member's
    iterates are those of training it alone, up to rounding.  Only ``backend`` ``"auto"``/``"reference"``,
    ``coordinates`` ``"auto"``/``"full"``, a constant or callable schedule and ``norm_penalty = 0`` are
    supported for deep networks.
    """
    from .training import TrainHistory, TrainResult, _check_sub, _configs, MarginNotReached

    single = isinstance(params, DeepParams) and not params.is_stack
    if isinstance(params, DeepParams):
        stack = params if params.is_stack else DeepParams.stack([params])
    else:
        stack = _stack(list(params), "params")
    stack = stack._from_tensors([t.detach() for t in stack.tensors()])
    E = len(stack)
    if single:
        X = check_tensor("X", X, ndim=2)
        y = check_labels("y", y, (X.shape[0],))
    X, y = (t.detach() if isinstance(t, Tensor) else t for t in (X, y))
    Xc, yc = _data(stack, X, y)
    configs = _configs(config, E)
    cfg = configs[0]
    check_choice("backend", backend, ("auto", "reference", "batched", "fused"))
    if backend not in ("auto", "reference"):
        raise ValueError(f"backend={backend!r} trains two-layer networks only; deep networks train with "
                         "backend='auto' or 'reference'")
    check_choice("coordinates", coordinates, ("auto", "full", "subspace", "span"))
    if coordinates not in ("auto", "full"):
        raise ValueError(f"coordinates={coordinates!r} is for two-layer networks; deep networks train in full coordinates")
    if device is not None and torch.device(device) != stack.W1.device:
        raise ValueError(f"device must be None (deep networks train where their parameters are), got {device!r}")
    if dtype is not None and dtype != stack.W1.dtype:
        raise ValueError(f"dtype must be None or the parameters' dtype {stack.W1.dtype}, got {dtype}")
    if stats is not None and not isinstance(stats, dict):
        raise TypeError(f"stats must be None or a dict to fill, got {type(stats).__name__}")
    if sub is not None:
        _check_sub(sub, stack.d, Xc)
    if cfg.schedule == "max_margin":
        raise ValueError("TrainConfig.schedule='max_margin' is implemented for two-layer networks only; use a "
                         "constant or callable schedule for DeepParams")
    if any(c.norm_penalty > 0 for c in configs):
        raise ValueError("TrainConfig.norm_penalty is implemented for two-layer networks only; use weight_decay")
    n = Xc.shape[-2]
    for e, c in enumerate(configs):
        if c.batch_size is not None and c.batch_size > n:
            raise ValueError(f"config{'' if single else f'[{e}]'}.batch_size must be <= n = {n}, got {c.batch_size}")
    out = _train_loop(stack, Xc, yc, configs)
    if stats is not None:
        stats["backend"] = "reference"
        stats["coordinates"] = "full"
    result = TrainResult(
        params=out["params"], initial=stack, steps=out["steps"], reached=out["reached"], final_loss=out["loss"],
        final_margin=out["margin"], lr_sum=out["lr_sum"], decay_factor=out["decay"], perp_factor=out["perp"],
        history=None if cfg.record_every is None else tuple(
            TrainHistory(**{k: torch.tensor(v, dtype=torch.int64 if k == "steps" else torch.float64)
                            for k, v in h.items() if k != "params"},
                         params=tuple(h["params"]) if cfg.record_params else None) for h in out["history"]),
        config=tuple(configs), backend="reference", coordinates="full")
    if single:
        result = result.member(0)
    missed = [e for e, c in enumerate(configs) if c.strict and not bool(out["reached"][e])]
    if missed:
        raise MarginNotReached(result.summary() if single else result.member(missed[0]).summary()
                               + f" (members {missed})")
    return result


def _train_loop(stack: DeepParams, X: Tensor, y: Tensor, configs: tuple) -> dict:
    """The training loop of :func:`_train_deep` on a checked stack (see its docstring)."""
    from .training import _log_logistic

    cfg = configs[0]
    E = len(stack)
    L = stack.n_hidden
    n = X.shape[-2]
    dt = stack.W1.dtype
    f64 = dict(dtype=torch.float64)
    col = lambda vals: torch.tensor(vals, dtype=dt)                    # noqa: E731  (E,) per-member settings
    lr, lam, mo = col([c.lr for c in configs]), col([c.weight_decay for c in configs]), col([c.momentum for c in configs])
    max_steps = torch.tensor([c.max_steps for c in configs], dtype=torch.int64)
    target = None if cfg.target_margin is None else col([c.target_margin for c in configs])
    b1, b2 = cfg.betas
    heavy, adam = cfg.optimizer == "momentum", cfg.optimizer == "adam"
    bs = n if cfg.batch_size is None else cfg.batch_size
    if cfg.optimizer == "sgd" and cfg.batch_size is None:
        bs = 1
    # which tensors train: W -> every weight matrix, b -> every hidden bias, u, c
    names = ["W"] * L + ["b"] * L + ["u", "c"]
    state = [t.clone() for t in stack.tensors()]
    trained = [k in cfg.trained for k in names]
    buf = [torch.zeros_like(t) if tr else None for t, tr in zip(state, trained)]
    buf2 = [torch.zeros_like(t) if tr else None for t, tr in zip(state, trained)]
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(n, generator=gen)
    pos = 0
    steps = torch.zeros(E, dtype=torch.int64)
    lr_sum = torch.zeros(E, **f64)
    decay = torch.ones(E, **f64)
    a_perp = torch.ones(E, **f64)
    ca = torch.zeros(E, **f64)
    history = [dict(steps=[], loss=[], log_loss=[], margin=[], norm_sq=[], params=[]) for _ in range(E)]
    logged_final = torch.zeros(E, dtype=torch.bool)
    Xs = X if X.ndim == 3 else X.expand(E, *X.shape)
    ys = y if y.ndim == 2 else y.expand(E, n)

    def net(ts):
        return _Unchecked(ts, L)

    def view(e=None):
        return stack._from_tensors([t.clone() for t in state]) if e is None else \
            stack._from_tensors([t[e].clone() for t in state])

    t_global = 0
    while True:
        with torch.no_grad():
            f = _output(net(state), _forward(net(state), Xs))           # (E, n)
            yf = ys * f
            loss = torch.nn.functional.softplus(-yf).mean(-1)
            margin = yf.amin(-1)
        if not bool(torch.isfinite(loss).all()):
            raise FloatingPointError(f"training diverged at step {t_global} (loss {loss.tolist()}); lower lr")
        reached = (margin >= target) if target is not None else torch.zeros(E, dtype=torch.bool)
        done = reached | (steps >= max_steps)
        if cfg.record_every is not None:
            log_L = torch.logsumexp(_log_logistic(yf), -1) - math.log(n)
            nsq = sum((t ** 2).reshape(E, -1).sum(-1) for t in state)
            for e in range(E):
                if logged_final[e]:
                    continue
                if int(steps[e]) % cfg.record_every == 0 or bool(done[e]):
                    h = history[e]
                    h["steps"].append(int(steps[e]))
                    h["loss"].append(float(loss[e]))
                    h["log_loss"].append(float(log_L[e]))
                    h["margin"].append(float(margin[e]))
                    h["norm_sq"].append(float(nsq[e]))
                    if cfg.record_params:
                        h["params"].append(view(e))
                    logged_final[e] = bool(done[e])
        if bool(done.all()):
            break
        active = ~done
        # the gradients of this update (mini-batch for SGD), by autograd on the sum of the members' losses
        if bs == n:
            Xb, yb = Xs, ys
        else:
            if pos + bs > n:
                perm = torch.randperm(n, generator=gen)
                pos = 0
            idx = perm[pos: pos + bs]
            pos += bs
            Xb, yb = Xs[:, idx], ys[:, idx]
        leaves = [t.detach().requires_grad_(tr) for t, tr in zip(state, trained)]
        with torch.enable_grad():
            fb = _output(net(leaves), _forward(net(leaves), Xb))
            lb = torch.nn.functional.softplus(-yb * fb).mean(-1).sum()
            grads = torch.autograd.grad(lb, [t for t, tr in zip(leaves, trained) if tr])
        grads = iter(grads)
        eta = lr.clone()
        if callable(cfg.schedule):
            eta = lr * col([check_float("TrainConfig.schedule(step, loss)", cfg.schedule(int(steps[e]), float(loss[e])),
                                        positive=True) if bool(active[e]) else 1.0 for e in range(E)])
        t_global += 1
        steps = steps + active.to(torch.int64)
        act64 = active.to(torch.float64)
        lr_sum = lr_sum + act64 * eta.to(torch.float64)
        decay = decay * torch.where(active, 1.0 - eta.to(torch.float64) * lam.to(torch.float64), torch.ones(E, **f64))
        if heavy:
            ca = torch.where(active, mo.to(torch.float64) * ca + lam.to(torch.float64) * a_perp, ca)
            a_perp = torch.where(active, a_perp - eta.to(torch.float64) * ca, a_perp)
        else:
            a_perp = torch.where(active, a_perp * (1.0 - eta.to(torch.float64) * lam.to(torch.float64)), a_perp)
        for i, tr in enumerate(trained):
            if not tr:
                continue
            t = state[i]
            shape = (E,) + (1,) * (t.ndim - 1)
            g = next(grads)
            g = g + lam.reshape(shape) * t
            mask = active.reshape(shape)
            et = eta.reshape(shape)
            if cfg.optimizer in ("gd", "sgd"):
                new = t - et * g
            elif heavy:
                buf[i] = torch.where(mask, mo.reshape(shape) * buf[i] + g, buf[i])
                new = t - et * buf[i]
            else:
                buf[i] = torch.where(mask, b1 * buf[i] + (1 - b1) * g, buf[i])
                buf2[i] = torch.where(mask, b2 * buf2[i] + (1 - b2) * g * g, buf2[i])
                k = steps.reshape(shape).clamp_min(1).to(dt)
                mhat = buf[i] / (1 - b1 ** k)
                vhat = buf2[i] / (1 - b2 ** k)
                new = t - et * mhat / (vhat.sqrt() + cfg.eps)
            state[i] = torch.where(mask, new, t)
    final = stack._from_tensors(state)
    return dict(params=final, steps=steps, reached=reached, loss=loss.to(torch.float64), margin=margin.to(torch.float64),
                lr_sum=lr_sum, decay=decay, perp=a_perp if not adam else torch.full((E,), math.nan, **f64),
                history=history)


class _Unchecked:
    """A view of a list of parameter tensors with :class:`DeepParams`' attribute names, without its checks
    (the training loop builds one per step)."""

    def __init__(self, ts: Sequence[Tensor], L: int):
        self.weights = tuple(ts[:L])
        self.biases = tuple(ts[L:2 * L])
        self.u = ts[2 * L]
        self.c = ts[2 * L + 1]
        self.n_hidden = L
