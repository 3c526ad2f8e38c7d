r"""Perturbations orthogonal to the data: the universal direction, flip norms, first-order estimates."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_classes, check_flag, check_float, check_int, check_labels, check_tensor, \
    unit_directions
from .network import TwoLayerParams, _inputs, _check_params, input_gradient, network_output
from .subspaces import Subspace, P_perp, Pi_P, _check_subspace


def universal_direction(params: TwoLayerParams, sub: Subspace) -> Tensor:
    r"""The universal direction $z = \Pi_\perp \sum_i u_i w_i = \Pi_\perp W^\top u$, shape ``(d,)``.

    It does not depend on the input, and with a fixed second layer it does not change in training.
    """
    _check_params(params, single=True)
    _check_subspace(sub, params.d, against="the network's inputs")
    return P_perp(sub, params.u @ params.W)


def alignment_coefficients(params: TwoLayerParams, sub: Subspace) -> Tensor:
    r"""$a_i = \langle \Pi_\perp w_i, z\rangle$ for the universal direction $z$, shape ``(m,)``."""
    z = universal_direction(params, sub)
    return P_perp(sub, params.W) @ z


def first_order_flip_estimate(params: TwoLayerParams, sub: Subspace, X: Tensor) -> Tensor:
    r"""$|N(x_0)|/\|g_\perp(x_0)\|$ per row of ``X`` (``(n, d)`` -> ``(n,)``): the linearised flip distance in $P^\perp$."""
    _check_subspace(sub, _check_params(params).d, against="the network's inputs")
    g = P_perp(sub, input_gradient(params, X))
    return network_output(params, X).abs() / g.norm(dim=-1)


class FlipNorms(NamedTuple):
    r"""What :func:`flip_norm_along` returns, per point.

    Attributes:
        norm: ``(n,)`` the smallest $\alpha \ge 0$ with $s_0 N(x_0 + \alpha v) \le 0$ ($s_0 = \operatorname{sign} N(x_0)$);
            ``inf`` when there is none (within ``max_norm``); ``nan`` where $N(x_0) = 0$, a point with no sign
            to flip.
        flat: ``(n,)`` bool, True where that first zero starts a stretch on which $N \equiv 0$ (every neuron
            inactive and $c = 0$): the output vanishes there rather than changing sign.
    """

    norm: Tensor
    flat: Tensor


def flip_norm_along(
    params: TwoLayerParams,
    X: Tensor,
    direction: Tensor,
    *,
    side: str = "descend",
    max_norm: float = math.inf,
) -> FlipNorms:
    r"""The exact distance, along a direction, at which $N$ first reaches the other sign, per point.

    With $v$ the unit direction and $s_0 = \operatorname{sign} N(x_0)$, ``side="descend"`` moves along
    $x_0 - s_0\alpha v$ (towards the other class along $v$), ``side="both"`` takes the smaller of the moves
    along $+v$ and $-v$.  Along a ray $x_0 + \alpha r$ the network is piecewise linear in $\alpha$:

    .. math:: N(x_0 + \alpha r) = c + \sum_i u_i\,\sigma(z_i + \alpha\,s_i),\qquad z_i = w_i^\top x_0 + b_i,\ s_i = w_i^\top r,

    with breakpoints $\alpha_i = -z_i/s_i > 0$, at each of which the slope changes by $u_i|s_i|$.  The
    function walks the sorted breakpoints, finds the first linear piece on which $s_0 N$ reaches 0 and
    solves for the crossing on it (the value at the start of that piece recomputed directly), so the
    first crossing is never missed, however soon it reverses.

    Args:
        params: a single network.
        X: ``(n, d)`` points.
        direction: ``(d,)`` (the same for all points, e.g. the universal one) or ``(n, d)`` (one per point).
        side: ``"descend"`` or ``"both"``.
        max_norm: report ``inf`` beyond this distance (default: no limit).
    Returns:
        :class:`FlipNorms` (``norm`` and ``flat``, each ``(n,)``).
    """
    _check_params(params, single=True)
    X, _ = _inputs(params, check_tensor("X", X, ndim=2))
    n, d = X.shape
    V = unit_directions(direction, n, d, X.dtype)
    check_choice("side", side, ("descend", "both"))
    max_norm = check_float("max_norm", max_norm, positive=True, allow_inf=True)
    s0 = torch.sign(network_output(params, X))
    if side == "descend":
        a, flat = _first_zero(params, X, -s0[:, None] * V, s0)
    else:
        a1, f1 = _first_zero(params, X, V, s0)
        a2, f2 = _first_zero(params, X, -V, s0)
        first = a1 <= a2
        a, flat = torch.where(first, a1, a2), torch.where(first, f1, f2)
    a = torch.where(a > max_norm, torch.full_like(a, math.inf), a)
    undefined = s0 == 0
    a = torch.where(undefined, torch.full_like(a, math.nan), a)
    return FlipNorms(norm=a, flat=flat & ~undefined & torch.isfinite(a))


def max_descent_slope(params: TwoLayerParams, X: Tensor, direction: Tensor, *, limit: Tensor) -> Tensor:
    r"""The largest slope of $\varphi(\alpha) = s_0\,N(x_0 - s_0\alpha v)$ on $[0, \text{limit})$, exactly, per point.

    With $v$ the unit direction and $s_0 = \operatorname{sign} N(x_0)$, $\varphi$ is piecewise linear; its slope
    on a piece is $-\sum_{i\ \text{active}} u_i\,w_i^\top v$ (times $s_0^2 = 1$), and the active set changes only
    at the breakpoints $\alpha_i$ where $w_i^\top(x_0 - s_0\alpha v) + b_i = 0$.  The function walks the sorted
    breakpoints (as :func:`flip_norm_along` does) and returns the largest slope among the pieces that start
    before ``limit``.  $\varphi$ is non-increasing on $[0, \text{limit}]$ exactly when the result is $\le 0$ —
    part 1 of the universal theorem says so along $v = \hat z$ when every neuron is aligned.

    Args:
        params: a single network.
        X: ``(n, d)`` points with $N(x_0) \ne 0$.
        direction: ``(d,)`` or ``(n, d)`` non-zero direction(s) $v$.
        limit: ``(n,)`` (or a number) the end of the interval per point, e.g. the flip norm; ``> 0``.
    Returns:
        ``(n,)`` the largest slope of $\varphi$ on the interval.
    """
    _check_params(params, single=True)
    X, _ = _inputs(params, check_tensor("X", X, ndim=2))
    n, d = X.shape
    V = unit_directions(direction, n, d, X.dtype)
    if isinstance(limit, Tensor):
        lim = check_tensor("limit", limit, ndim=(0, 1), finite=False)
        if lim.ndim == 1 and lim.shape[0] != n:
            raise ValueError(f"limit must be a number or have shape ({n},), got {tuple(lim.shape)}")
        lim = lim.detach().to(X.dtype).expand(n).clone()
    else:
        lim = torch.full((n,), check_float("limit", limit, positive=True, allow_inf=True), dtype=X.dtype)
    if bool(torch.isnan(lim).any()) or bool((lim <= 0).any()):
        raise ValueError("limit must be > 0 at every point")
    with torch.no_grad():
        W, b, u = params.W.detach(), params.b.detach(), params.u.detach()
        N0 = torch.relu(X @ W.T + b) @ u + params.c.detach()
        s0 = torch.sign(N0)
        if bool((s0 == 0).any()):
            raise ValueError(f"X: N(x) = 0 at point {int((s0 == 0).nonzero()[0])}; the slope needs N(x0) != 0")
        R = -s0[:, None] * V
        Z = X @ W.T + b
        S = R @ W.T
        on0 = (Z > 0) | ((Z == 0) & (S > 0))
        bp = torch.where(S != 0, -Z / torch.where(S != 0, S, torch.ones_like(S)), torch.full_like(S, math.inf))
        bp = torch.where(bp > 0, bp, torch.full_like(bp, math.inf))
        order = torch.argsort(bp, dim=1)
        alphas = torch.gather(bp, 1, order)
        dslope = torch.gather(u[None, :] * S.abs(), 1, order)
        dslope = torch.where(torch.isfinite(alphas), dslope, torch.zeros_like(dslope))
        slope0 = (on0.to(X.dtype) * S) @ u
        slopes = torch.cat([slope0[:, None], slope0[:, None] + torch.cumsum(dslope, 1)], 1)   # (n, m+1)
        starts = torch.cat([torch.zeros(n, 1, dtype=X.dtype), alphas], 1)
        inside = starts < lim[:, None]
        vals = torch.where(inside, s0[:, None] * slopes, torch.full_like(slopes, -math.inf))
        return vals.max(1).values


def _first_zero(params: TwoLayerParams, X: Tensor, R: Tensor, s0: Tensor) -> tuple[Tensor, Tensor]:
    """First ``alpha >= 0`` with ``s0 * N(X + alpha R) <= 0`` per row (``inf`` if none), and the flat-zero flag."""
    n, m = X.shape[0], params.m
    dt = X.dtype
    Z = X @ params.W.T + params.b                      # z_i at alpha = 0, (n, m)
    S = R @ params.W.T                                 # slopes s_i along the ray, (n, m)
    u, c = params.u, params.c
    on0 = (Z > 0) | ((Z == 0) & (S > 0))               # active just after alpha = 0
    # neuron i changes state at alpha_i = -z_i / s_i when that is > 0 (then sign z_i = -sign s_i)
    bp = torch.where(S != 0, -Z / torch.where(S != 0, S, torch.ones_like(S)), torch.full_like(S, math.inf))
    bp = torch.where(bp > 0, bp, torch.full_like(bp, math.inf))
    order = torch.argsort(bp, dim=1)
    alphas = torch.gather(bp, 1, order)                # sorted breakpoints, inf-padded, (n, m)
    dslope = torch.gather(u[None, :] * S.abs(), 1, order)
    dslope = torch.where(torch.isfinite(alphas), dslope, torch.zeros_like(dslope))
    dcount = torch.gather(torch.where(S > 0, 1, -1).expand(n, m), 1, order)
    dcount = torch.where(torch.isfinite(alphas), dcount, torch.zeros_like(dcount))
    f0 = torch.relu(Z) @ u + c
    slope0 = (on0.to(dt) * S) @ u
    # piece k runs from A[k] to A[k+1]: A = [0, alphas...]; slope on piece k = slope0 + cumsum(dslope)[k-1]
    A = torch.cat([torch.zeros(n, 1, dtype=dt), alphas], 1)                   # (n, m+1)
    slopes = torch.cat([slope0[:, None], slope0[:, None] + torch.cumsum(dslope, 1)], 1)   # (n, m+1)
    counts = torch.cat([on0.sum(1, keepdim=True), on0.sum(1, keepdim=True) + torch.cumsum(dcount, 1)], 1)
    lengths = torch.where(torch.isfinite(A[:, 1:]), A[:, 1:] - A[:, :-1], torch.zeros_like(A[:, 1:]))
    vals = torch.cat([f0[:, None], f0[:, None] + torch.cumsum(slopes[:, :-1] * lengths, 1)], 1)  # N at A[k]
    # the first piece whose end value (or, for the last finite piece, its slope) reaches the other sign
    finite = torch.isfinite(A)
    end_vals = torch.where(finite[:, 1:], vals[:, 1:], torch.full_like(vals[:, 1:], math.nan))
    hit_end = (s0[:, None] * end_vals <= 0) & finite[:, 1:]
    last = finite.sum(1) - 1                                                  # index of the last breakpoint
    k_end = torch.where(hit_end.any(1), torch.argmax(hit_end.to(torch.int8), 1), torch.full_like(last, -1))
    tail_hits = s0 * torch.gather(slopes, 1, last[:, None])[:, 0] < 0          # beyond the last breakpoint
    k = torch.where(k_end >= 0, k_end, last)                                  # piece index (starts at A[k])
    found = (k_end >= 0) | tail_hits
    start = torch.gather(A, 1, k[:, None])[:, 0]
    # recompute the start value and the slope of the piece directly (no accumulated rounding)
    mid = start + torch.where(k_end >= 0, 0.5 * (torch.gather(A, 1, (k + 1).clamp(max=m)[:, None])[:, 0] - start),
                              torch.ones_like(start))
    mid = torch.where(torch.isfinite(mid), mid, start + 1.0)
    v_start = torch.relu(Z + start[:, None] * S) @ u + c
    act = ((Z + mid[:, None] * S) > 0).to(dt)
    sl = (act * S) @ u
    cross = start - v_start / torch.where(sl != 0, sl, torch.ones_like(sl))
    cross = torch.where((s0 * v_start <= 0), start, cross)
    ok = found & ((sl != 0) | (s0 * v_start <= 0))
    cross = torch.where(ok, torch.clamp(cross, min=start), torch.full_like(cross, math.inf))
    # active neurons after the piece's end, counting every breakpoint tied with it (neurons that switch on there too)
    end = torch.gather(A, 1, (k + 1).clamp(max=m)[:, None])
    cnt = torch.gather(counts, 1, (A <= end).sum(1, keepdim=True) - 1)[:, 0]
    flat = ok & (cnt == 0) & (c == 0)
    return cross, flat


# ------------------------------------------------------------------- the universal direction, per point

def opposing_active_count(params: TwoLayerParams, X: Tensor) -> Tensor:
    r"""$k_\mp(x_0) = |\{i : w_i^\top x_0 + b_i > 0,\ \mathrm{sign}(u_i) = -\mathrm{sign}\,N(x_0)\}|$ per row.

    The active neurons that push against the current label: the universal theorem's flip bound counts only
    them.  ``(n, d)`` -> ``(n,)`` integers (``(d,)`` -> ``()``); $0$ where $N(x_0) = 0$.
    """
    params = _check_params(params, single=True)
    X, single = _inputs(params, X)
    s = torch.sign(network_output(params, X))
    opp = ((X @ params.W.T + params.b) > 0) & (torch.sign(params.u)[None, :] == -s[:, None]) & (s[:, None] != 0)
    k = opp.sum(1)
    return k[0] if single else k


def robust_projection(params: TwoLayerParams, sub: Subspace) -> TwoLayerParams:
    r"""The network $N_P(x) = N(\Pi_P x)$: first layer $W\Pi_P$, the same $b$, $u$ and $c$.

    It equals $N$ on $P$ (same outputs, margins and accuracy there), is constant along $P^\perp$
    ($N_P(x + z) = N_P(x)$ for $z \in P^\perp$), and its unrestricted minimal flip distance at $x_0 \in P$ is
    the minimal flip distance of $N$ *within* $P$.  By the frozen-component lemma it is also the network that
    the same training produces from the initialisation $W(0)\Pi_P$ (orthogonal part zero).

    Args:
        params: a single network, or a stack (``W`` of shape ``(E, m, d)``).
        sub: the data subspace $P$.
    Returns:
        :class:`TwoLayerParams` of the same shapes.
    """
    params = _check_params(params)
    _check_subspace(sub, params.d, against="the network's inputs")
    return params.replace(W=Pi_P(sub, params.W).to(params.W.dtype))


class UniversalFlips(NamedTuple):
    r"""What :func:`universal_flips` returns: the universal direction and the quantities of the universal
    theorem and of the first-order picture, per point (``n`` points).

    Attributes:
        z: ``(d,)`` the universal direction $z = \Pi_\perp W^\top u$.
        a: ``(m,)`` the alignment coefficients $a_i = \langle \Pi_\perp w_i, z\rangle$.
        N0: ``(n,)`` $N(x_0)$.  s: ``(n,)`` its sign.
        k: ``(n,)`` active neurons $|I(x_0)|$.  k_opp: ``(n,)`` opposing active neurons $k_\mp$.
        g: ``(n, d)`` the orthogonal gradients $g_\perp(x_0)$.
        flip: ``(n,)`` the exact flip norm along $-s\hat z$ (``inf`` beyond ``max_norm``).
        bound: ``(n,)`` the theorem's bound $4\sqrt2|N(x_0)|(m/k_\mp)\sqrt{d/\ell}$ (``inf`` where $k_\mp = 0$).
        first_order: ``(n,)`` the first-order flip norm $|N(x_0)|\,\|z\|/\langle g_\perp(x_0), z\rangle$
            (negative where the direction starts the wrong way).
        hypotheses: :class:`ortho_lib.theory.UniversalHypotheses` of the network.
    """

    z: Tensor
    a: Tensor
    N0: Tensor
    s: Tensor
    k: Tensor
    k_opp: Tensor
    g: Tensor
    flip: Tensor
    bound: Tensor
    first_order: Tensor
    hypotheses: "object"


def universal_flips(params: TwoLayerParams, sub: Subspace, X: Tensor, *, max_norm: float = math.inf) -> UniversalFlips:
    r"""Everything the universal theorem and the first-order picture say about the points ``X``, measured.

    For each $x_0$: the exact flip norm along $-s\hat z$ (:func:`flip_norm_along`), the theorem's bound
    (:func:`ortho_lib.theory.universal_flip_bound`), the first-order flip norm, $k$ and $k_\mp$; for the
    network: $z$, the $a_i$ and the theorem's hypotheses (:func:`ortho_lib.theory.universal_hypotheses`).

    Args:
        params: a single network.
        sub: the data subspace $P$.
        X: ``(n, d)`` points (of $P$, for the theorem to apply).
        max_norm: flip norms beyond it are reported as ``inf``.
    Returns:
        :class:`UniversalFlips`.
    """
    from . import theory

    params = _check_params(params, single=True)
    sub = _check_subspace(sub, params.d, against="the network's inputs")
    X, _ = _inputs(params, check_tensor("X", X, ndim=2))
    max_norm = check_float("max_norm", max_norm, positive=True, allow_inf=True)
    with torch.no_grad():
        p = params.replace(**{k: getattr(params, k).detach() for k in ("W", "b", "u", "c")})
        z = universal_direction(p, sub).to(p.W.dtype)
        a = P_perp(sub, p.W).to(p.W.dtype) @ z
        N0 = network_output(p, X)
        s = torch.sign(N0)
        k = ((X @ p.W.T + p.b) > 0).sum(1)
        k_opp = opposing_active_count(p, X)
        g = P_perp(sub, input_gradient(p, X)).to(p.W.dtype)
        flip = flip_norm_along(p, X, z, max_norm=max_norm).norm
        d, m, ell = p.d, p.m, sub.ell
        scale = 4 * math.sqrt(2) * m * math.sqrt(d / ell)
        bound = torch.where(k_opp > 0, scale * N0.abs() / k_opp.clamp_min(1).to(N0.dtype),
                            torch.full_like(N0, math.inf))
        first_order = N0.abs() * z.norm() / (g @ z)
    return UniversalFlips(z=z, a=a, N0=N0, s=s, k=k, k_opp=k_opp, g=g, flip=flip, bound=bound,
                          first_order=first_order, hypotheses=theory.universal_hypotheses(p, sub))


class InitialAlignment(NamedTuple):
    r"""What :func:`initial_alignment` returns, one entry per independent initialisation.

    Attributes:
        aligned_fraction: ``(draws,)`` the fraction of aligned neurons, $\mathrm{sign}(a_i) = \mathrm{sign}(u_i)$.
        hold: ``(draws,)`` bool, whether all hypotheses of the universal theorem hold (every neuron aligned,
            $|a_i| \ge \ell/(4d\sqrt m)$, $\|z\|^2 \le 2\ell/d$).
    """

    aligned_fraction: Tensor
    hold: Tensor


def initial_alignment(m: int, ell: int, *, d: int, draws: int, seed: int) -> InitialAlignment:
    r"""The universal theorem's alignment events over ``draws`` independent initialisations, sampled directly.

    The events involve only $u$ and $\Pi_\perp W(0)$, whose $P^\perp$-coordinates are i.i.d.
    $\mathcal N(0, 1/d)$ under the book's initialisation ($\beta = 1/\sqrt d$), independent of $u$ with
    $u_i$ uniform on $\{\pm 1/\sqrt m\}$.  So they are drawn here without building a network or a subspace:
    an $m\times\ell$ Gaussian matrix $G$ and a sign vector per draw, $z = G^\top u$, $a = Gz$ (the same law
    as :func:`ortho_lib.theory.universal_hypotheses` on a fresh ``init_network``, whatever $P$).

    Args:
        m: width.  ell: codimension $\ell$.  d: input dimension (sets $\beta = 1/\sqrt d$; $d > \ell$).
        draws: number of independent initialisations.  seed: random seed.
    Returns:
        :class:`InitialAlignment`.
    """
    from ._checks import check_seed, check_size
    from .theory import _hypotheses_in_coordinates

    m = check_int("m", m, low=1)
    ell = check_int("ell", ell, low=1)
    d = check_int("d", d, low=ell + 1)
    draws = check_int("draws", draws, low=1)
    seed = check_seed("seed", seed)
    check_size("m and ell", m, ell)
    check_size("draws", draws)
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, 2**22 // (m * ell))
    fracs, holds = [], []
    for start in range(0, draws, chunk):
        e = min(chunk, draws - start)
        G = torch.randn(e, m, ell, generator=gen, dtype=torch.float64) / math.sqrt(d)
        u = (2.0 * torch.randint(0, 2, (e, m), generator=gen, dtype=torch.int64) - 1).to(torch.float64) / math.sqrt(m)
        mis, min_ratio, z_ratio = _hypotheses_in_coordinates(G, u, d)
        fracs.append(1.0 - mis.to(torch.float64) / m)
        holds.append((mis == 0) & (min_ratio >= 1.0) & (z_ratio <= 1.0))
    return InitialAlignment(aligned_fraction=torch.cat(fracs), hold=torch.cat(holds))


# ------------------------------------------------------------------------- one-step adversarial noises

def one_step_noise(params: TwoLayerParams, X: Tensor, y: Tensor) -> Tensor:
    r"""The one-step $L_2$ adversarial noise $r_x = \nabla_x \ell(x, y)$ of the logistic loss, per point.

    .. math:: r_{x_j} = -\bigl(1 - s(y_j f(x_j))\bigr)\, y_j\, W^\top D_{x_j} a,
              \qquad \ell(x, y) = -\log s\bigl(y f(x)\bigr) = \log(1 + e^{-y f(x)}).

    (With biases, $D_x = \mathrm{diag}(\mathbb 1[Wx + b > 0])$; the output bias does not enter.)

    Args:
        params: the network ($a$ = ``params.u``).
        X: ``(n, d)`` inputs.  y: ``(n,)`` labels in $\{\pm 1\}$.
    Returns:
        ``(n, d)`` noises; the adversarial example is $x_j + \eta\, r_{x_j}$.
    """
    _check_params(params, single=True)
    X, _ = _inputs(params, check_tensor("X", X, ndim=2))
    y = check_labels("y", y, X.shape[0]).to(X.dtype)
    f = network_output(params, X)
    weight = -(1.0 - torch.sigmoid(y * f)) * y          # -(1 - s(y f)) y, shape (n,)
    return weight[:, None] * input_gradient(params, X)  # W^T D_x a per row

def fgsm_noise(params: TwoLayerParams, X: Tensor, y: Tensor) -> Tensor:
    r"""The one-step $L_\infty$ (FGSM) noise $\mathrm{sign}(r_x)$, shape ``(n, d)``."""
    return torch.sign(one_step_noise(params, X, y))

def adversarial_examples(params: TwoLayerParams, X: Tensor, y: Tensor, eta: float) -> Tensor:
    r"""$x_j + \eta\, r_{x_j}$ with the one-step noise of :func:`one_step_noise`, shape ``(n, d)``."""
    eta = check_float("eta", eta, positive=True)
    return X + eta * one_step_noise(params, X, y)

def multiclass_noise(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    norm: str = "l2",
    temperature: float = 1.0,
    targeted: bool = False,
    n_classes: int = 10,
) -> Tensor:
    r"""One-step adversarial noise of a classifier, one per input, of unit $L_2$ norm or in $\{-1,0,1\}^d$.

    With $g_j = \nabla_x\, \mathrm{CE}\bigl(f(x_j)/T,\ t_j\bigr)$ (softmax temperature $T$):

    * untargeted ($t_j = y_j$): the noise ascends the loss, $\delta_j = g_j$;
    * targeted ($t_j = (y_j + 1) \bmod K$): it descends the loss of the target, $\delta_j = -g_j$;

    then ``norm="l2"`` returns $\delta_j/\|\delta_j\|$ (the $L_2$ one-step noise) and ``norm="linf"``
    returns $\mathrm{sign}(\delta_j)$ (FGSM).  Multiply by the budget $\epsilon$ to get the perturbation.
    A row whose gradient vanishes exactly (a saturated softmax, or no active hidden unit) comes back as
    the zero vector in both cases; count them with ``(noise == 0).all(1).sum()``.

    Args:
        model: maps ``(n, d)`` to ``(n, K)`` logits.  X: ``(n, d)``.  y: ``(n,)`` int64 classes.
    Returns:
        ``(n, d)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    X = check_tensor("X", X, ndim=2)
    n_classes = check_int("n_classes", n_classes, low=2)
    y = check_classes("y", y, X.shape[0], n_classes)
    check_choice("norm", norm, ("l2", "linf"))
    T = check_float("temperature", temperature, positive=True)
    targeted = check_flag("targeted", targeted)
    t = (y + 1) % n_classes if targeted else y
    weights = next(iter(model.parameters()), None)
    Xg = X.detach().to(X.dtype if weights is None else weights.dtype).clone().requires_grad_(True)
    with torch.enable_grad():
        try:
            logits = model(Xg)
        except RuntimeError as err:
            raise ValueError(f"X: the model cannot be applied to X of shape {tuple(X.shape)} ({err})") from None
        if logits.shape != (X.shape[0], n_classes):
            raise ValueError(f"n_classes: the model gives logits of shape {tuple(logits.shape)}, expected "
                             f"({X.shape[0]}, {n_classes})")
        loss = nn.functional.cross_entropy(logits / T, t, reduction="sum")
        (g,) = torch.autograd.grad(loss, Xg)
    delta = -g if targeted else g
    if norm == "linf":
        return torch.sign(delta)
    nrm = delta.norm(dim=1, keepdim=True)
    return torch.where(nrm > 0, delta / nrm.clamp_min(torch.finfo(delta.dtype).tiny), torch.zeros_like(delta))
