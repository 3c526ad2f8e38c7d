r"""Minimal $L_2$ perturbations of the two-layer network: certified lower bounds, exact minima, attacks.

For a point $x_0$ with $N(x_0)\neq0$ and $s=\mathrm{sign}\,N(x_0)$, the *minimal flip distance* is

.. math:: \rho(x_0) \;=\; \min\bigl\{\|\delta\|_2 \;:\; s\,N(x_0+\delta)\le 0\bigr\},

and its restriction to a subspace with orthonormal basis $Q$ (``basis``, shape ``(d, k)``; for
instance $Q_\perp$, a basis of $P^\perp$) is $\rho_Q(x_0) = \min\{\|v\| : s\,N(x_0 + Qv)\le0\}$ (note
$\|Qv\| = \|v\|$).  Since $v\mapsto N(x_0 + Qv)$ is again a two-layer network (of $v$, with first layer
$WQ$ and biases $Wx_0 + b$, see :func:`restrict_to_subspace`), every function below takes an optional
``basis`` and then works in those coordinates.  Three tools bracket $\rho$:

* :func:`crown_certified_radius` — a certified **lower** bound (CROWN / $\alpha$-CROWN for one hidden
  layer over an $L_2$ ball, closed-form dual norm), found by bisection on the radius;
* :func:`exact_min_distance_milp` — the **exact** value, from a mixed-integer program with big-M ReLU
  constraints solved by SCIP (``pyscipopt``), practical when few neurons are unstable in the ball;
* :func:`ddn_min_distance` — an **upper** bound: the smallest adversarial perturbation found by the
  Decoupled Direction and Norm attack of Foolbox 3 (``DDNAttack``), on the binary network wrapped as
  the two-class logits $(-N/2, N/2)$ (:class:`TwoClassLogits`).

Every perturbation along a fixed direction (the universal one, or the gradient) is one more upper bound;
see :func:`ortho_lib.perturbations.flip_norm_along`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from ._checks import check_choice, check_flag, check_float, check_int, check_seed, check_tensor, tolerance
from .network import TwoLayerParams, _check_params, network_output

__all__ = [
    "restrict_to_subspace",
    "preactivation_bounds",
    "crown_lower_bound",
    "crown_certified_radius",
    "MilpResult",
    "exact_min_distance_milp",
    "TwoClassLogits",
    "AttackResult",
    "ddn_min_distance",
]


# --------------------------------------------------------------------------------------------------
# argument handling shared by the functions below
# --------------------------------------------------------------------------------------------------

def _check_basis(basis: Optional[Tensor], d: int, dtype: torch.dtype) -> Optional[Tensor]:
    if basis is None:
        return None
    Q = check_tensor("basis", basis, ndim=2)
    if Q.shape[0] != d or not 1 <= Q.shape[1] <= d:
        raise ValueError(f"basis must have shape (d, k) = ({d}, k) with 1 <= k <= {d}, got {tuple(Q.shape)}")
    tol = tolerance(Q.dtype, dtype)
    Q = Q.detach().to(dtype)
    gram = Q.T @ Q
    if float((gram - torch.eye(Q.shape[1], dtype=dtype)).abs().max()) > tol:
        raise ValueError("basis must have orthonormal columns (basis.T @ basis = I)")
    return Q


def _points(params: TwoLayerParams, X: Tensor, name: str = "X") -> tuple[Tensor, bool]:
    X = check_tensor(name, X, ndim=(1, 2))
    single = X.ndim == 1
    if single:
        X = X[None, :]
    if X.shape[1] != params.d:
        raise ValueError(f"{name} must have last dimension d = {params.d}, got shape {tuple(X.shape)}")
    return X.to(params.W.dtype), single


def _local_problem(params: TwoLayerParams, X: Tensor, basis: Optional[Tensor], name: str = "X"):
    """Pre-activations ``H0 (n, m)``, effective first layer ``A (m, k)``, signs ``s (n,)``, outputs ``f0 (n,)``
    (a point with ``N = 0`` is refused naming the caller's argument ``name``)."""
    H0 = X @ params.W.T + params.b
    f0 = torch.relu(H0) @ params.u + params.c
    A = params.W if basis is None else params.W @ basis
    if bool((f0 == 0).any()):
        j = int((f0 == 0).nonzero()[0])
        raise ValueError(f"{name}: N(x) = 0 at point {j}; the flip distance needs N(x0) != 0")
    return H0, A, torch.sign(f0), f0


def restrict_to_subspace(params: TwoLayerParams, x0: Tensor, basis: Tensor) -> TwoLayerParams:
    r"""The network $g(v) = N(x_0 + Qv)$ of $v\in\mathbb R^k$, as a two-layer network.

    .. math:: g(v) = \sum_i u_i\,\sigma\bigl((WQ)_i^\top v + w_i^\top x_0 + b_i\bigr) + c .

    Args:
        params: the network $N$ (``W`` of shape ``(m, d)``).
        x0: ``(d,)`` base point.
        basis: ``(d, k)`` orthonormal columns $Q$.
    Returns:
        :class:`TwoLayerParams` with ``W`` of shape ``(m, k)``, ``b = W x0 + b``, the same ``u`` and ``c``.
    """
    params = _check_params(params, single=True)
    x0 = check_tensor("x0", x0, shape=(params.d,)).to(params.W.dtype)
    if basis is None:
        raise TypeError("basis must be a (d, k) tensor with orthonormal columns, got None")
    Q = _check_basis(basis, params.d, params.W.dtype)
    return TwoLayerParams(W=params.W @ Q, b=params.W @ x0 + params.b, u=params.u, c=params.c)


def preactivation_bounds(
    params: TwoLayerParams, X: Tensor, radius: float | Tensor, *, basis: Optional[Tensor] = None
) -> tuple[Tensor, Tensor]:
    r"""Exact ranges of the pre-activations over the ball $\{x_0 + \delta : \|\delta\|\le r\}$.

    .. math:: \ell_i = w_i^\top x_0 + b_i - r\,\|w_i\|, \qquad \upsilon_i = w_i^\top x_0 + b_i + r\,\|w_i\|,

    with $\|w_i\|$ replaced by $\|Q^\top w_i\|$ when the ball is restricted to $\delta = Qv$.

    Args:
        X: ``(n, d)`` centres (or ``(d,)``).
        radius: a number, or ``(n,)`` radii (one per centre), all ``>= 0``.
    Returns:
        ``(lower, upper)``, each ``(n, m)`` (or ``(m,)`` for a single centre).
    """
    params = _check_params(params, single=True)
    X, single = _points(params, X)
    Q = _check_basis(basis, params.d, params.W.dtype)
    r = _radii(radius, X.shape[0], params.W.dtype)
    H0 = X @ params.W.T + params.b
    A = params.W if Q is None else params.W @ Q
    spread = r[:, None] * A.norm(dim=1)[None, :]
    lo, hi = H0 - spread, H0 + spread
    return (lo[0], hi[0]) if single else (lo, hi)


def _radii(radius: float | Tensor, n: int, dtype: torch.dtype) -> Tensor:
    if isinstance(radius, Tensor):
        r = check_tensor("radius", radius, ndim=(0, 1)).to(dtype)
        if r.ndim == 1 and r.shape[0] != n:
            raise ValueError(f"radius must be a number or have shape ({n},), got {tuple(r.shape)}")
        r = r.expand(n).clone()
    else:
        r = torch.full((n,), check_float("radius", radius, nonnegative=True), dtype=dtype)
    if bool((r < 0).any()):
        raise ValueError("radius must be >= 0")
    return r


# --------------------------------------------------------------------------------------------------
# CROWN / alpha-CROWN for one hidden layer over an L2 ball
# --------------------------------------------------------------------------------------------------

def _crown_terms(H0: Tensor, A: Tensor, s: Tensor, r: Tensor, u: Tensor, c: Tensor):
    """The pieces of the linear relaxation that do not depend on the free lower slopes alpha."""
    rho = A.norm(dim=1)                                   # (m,)
    lo = H0 - r[:, None] * rho                            # (n, m)
    hi = H0 + r[:, None] * rho
    coef = s[:, None] * u[None, :]                        # c_i = s u_i, (n, m)
    active = lo >= 0
    unstable = (lo < 0) & (hi > 0)
    width = torch.where(unstable, hi - lo, torch.ones_like(hi))
    up_slope = torch.where(unstable, hi / width, torch.zeros_like(hi))
    use_upper = unstable & (coef < 0)                     # relu <= up_slope (h - lo)
    free = unstable & (coef >= 0)                         # relu >= alpha h, alpha in [0, 1]
    fixed_slope = torch.where(active, torch.ones_like(hi), torch.where(use_upper, up_slope, torch.zeros_like(hi)))
    offset = torch.where(use_upper, -coef * up_slope * lo, torch.zeros_like(hi)).sum(1) + s * c
    alpha0 = torch.where(free & (hi >= -lo), torch.ones_like(hi), torch.zeros_like(hi))
    return coef, fixed_slope, free, offset, alpha0


def _crown_value(alpha: Tensor, H0: Tensor, A: Tensor, r: Tensor, coef: Tensor, fixed_slope: Tensor,
                 free: Tensor, offset: Tensor) -> Tensor:
    lam = coef * torch.where(free, alpha, fixed_slope)   # lambda_i, (n, m)
    return (lam * H0).sum(1) + offset - r * (lam @ A).norm(dim=1)


def crown_lower_bound(
    params: TwoLayerParams,
    X: Tensor,
    radius: float | Tensor,
    *,
    basis: Optional[Tensor] = None,
    method: str = "crown",
    alpha_steps: int = 60,
) -> Tensor:
    r"""A certified lower bound on $\min_{\|\delta\|\le r} s\,N(x_0+\delta)$, $s = \mathrm{sign}\,N(x_0)$.

    With $c_i = s u_i$ and the exact pre-activation ranges $[\ell_i, \upsilon_i]$ of
    :func:`preactivation_bounds`, each term $c_i\sigma(h_i)$ is bounded below by a linear function
    $\lambda_i h_i + \mu_i$: $c_ih_i$ if $\ell_i\ge0$; $0$ if $\upsilon_i\le0$; for an unstable neuron
    the chord $c_i\frac{\upsilon_i}{\upsilon_i-\ell_i}(h_i-\ell_i)$ when $c_i<0$ and
    $c_i\alpha_i h_i$ with $\alpha_i\in[0,1]$ when $c_i\ge0$.  Minimising the sum exactly over the ball,

    .. math:: s\,N(x_0+\delta) \;\ge\; \sum_i \lambda_i h_i(x_0) + \sum_i\mu_i + s c
              - r\,\Bigl\|\sum_i \lambda_i w_i\Bigr\|_2 ,

    (with $Q^\top w_i$ in place of $w_i$ for a restricted ball).  ``method="crown"`` takes
    $\alpha_i = \mathbb 1[\upsilon_i\ge-\ell_i]$; ``"alpha-crown"`` maximises the bound over
    $\alpha\in[0,1]$ (a concave problem) by ``alpha_steps`` projected gradient steps started at the
    CROWN choice, and returns the best bound met (every $\alpha$ gives a valid bound).

    Args:
        X: ``(n, d)`` centres (or ``(d,)``), with $N \ne 0$ there.
        radius: a number or ``(n,)`` radii.
    Returns:
        ``(n,)`` lower bounds (a scalar for one centre).  A positive value certifies that no
        perturbation in the ball flips the sign.
    """
    params = _check_params(params, single=True)
    X, single = _points(params, X)
    Q = _check_basis(basis, params.d, params.W.dtype)
    check_choice("method", method, ("crown", "alpha-crown"))
    alpha_steps = check_int("alpha_steps", alpha_steps, low=0)
    r = _radii(radius, X.shape[0], params.W.dtype)
    H0, A, s, _ = _local_problem(params, X, Q)
    out = _crown_bound(H0, A, s, r, params.u, params.c, method, alpha_steps)
    return out[0] if single else out


def _crown_bound(H0, A, s, r, u, c, method, alpha_steps) -> Tensor:
    coef, fixed_slope, free, offset, alpha0 = _crown_terms(H0, A, s, r, u, c)
    with torch.no_grad():
        best = _crown_value(alpha0, H0, A, r, coef, fixed_slope, free, offset)
    if method == "crown" or alpha_steps == 0 or not bool(free.any()):
        return best
    alpha = alpha0.clone().requires_grad_(True)
    step = 0.5
    for t in range(alpha_steps):
        val = _crown_value(alpha, H0, A, r, coef, fixed_slope, free, offset)
        (grad,) = torch.autograd.grad(val.sum(), alpha)
        with torch.no_grad():
            best = torch.maximum(best, val.detach())
            # normalised projected gradient ascent with a decreasing step (per centre)
            gnorm = (grad * free).norm(dim=1, keepdim=True).clamp_min(1e-300)
            alpha += step / math.sqrt(t + 1) * grad / gnorm
            alpha.clamp_(0.0, 1.0)
    with torch.no_grad():
        best = torch.maximum(best, _crown_value(alpha, H0, A, r, coef, fixed_slope, free, offset))
    return best


def crown_certified_radius(
    params: TwoLayerParams,
    X: Tensor,
    *,
    basis: Optional[Tensor] = None,
    method: str = "crown",
    iters: int = 40,
    max_radius: float = 1e3,
    alpha_steps: int = 60,
) -> Tensor:
    r"""The largest radius (to bisection accuracy) at which CROWN certifies the sign of $N$.

    Bisection on $r$: ``lo`` is always a radius whose :func:`crown_lower_bound` is positive (0 to
    start), ``hi`` one where it is not (found by doubling from 1, capped at ``max_radius``).  The
    returned ``lo`` is a certified lower bound on the minimal flip distance $\rho(x_0)$ (or $\rho_Q$
    with ``basis``): no perturbation of smaller norm changes the sign.

    Args:
        X: ``(n, d)`` points (or ``(d,)``) with $N\ne0$.
        basis: optional ``(d, k)`` orthonormal basis restricting perturbations to $\delta = Qv$.
        method: ``"crown"`` or ``"alpha-crown"`` (see :func:`crown_lower_bound`).
        iters: bisection steps after bracketing (relative accuracy about ``2**-iters``).
        max_radius: cap on the search; a point certified up to it gets ``max_radius``.
    Returns:
        ``(n,)`` certified radii (a scalar for one point).
    """
    params = _check_params(params, single=True)
    X, single = _points(params, X)
    Q = _check_basis(basis, params.d, params.W.dtype)
    check_choice("method", method, ("crown", "alpha-crown"))
    iters = check_int("iters", iters, low=1)
    max_radius = check_float("max_radius", max_radius, positive=True)
    alpha_steps = check_int("alpha_steps", alpha_steps, low=0)
    H0, A, s, _ = _local_problem(params, X, Q)
    n = X.shape[0]
    dt = params.W.dtype

    def certified(r: Tensor) -> Tensor:
        return _crown_bound(H0, A, s, r, params.u, params.c, method, alpha_steps) > 0

    lo = torch.zeros(n, dtype=dt)
    hi = torch.ones(n, dtype=dt).clamp_max(max_radius)
    open_ = torch.ones(n, dtype=torch.bool)           # still certified at hi: keep doubling
    while bool(open_.any()):
        ok = certified(hi) & open_
        lo = torch.where(ok, hi, lo)
        capped = ok & (hi >= max_radius)
        open_ = ok & ~capped
        hi = torch.where(open_, (2 * hi).clamp_max(max_radius), hi)
    done = lo >= max_radius
    for _ in range(iters):
        mid = (lo + hi) / 2
        ok = certified(mid)
        lo = torch.where(ok & ~done, mid, lo)
        hi = torch.where(~ok & ~done, mid, hi)
    return lo[0] if single else lo


# --------------------------------------------------------------------------------------------------
# exact minimal distance: a mixed-integer program solved by SCIP
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MilpResult:
    r"""What :func:`exact_min_distance_milp` returns.

    Attributes:
        distance: the minimal flip distance found ($\sqrt{t^*}$; ``inf`` when no flip exists in the ball).
        lower: SCIP's proven lower bound on it (equal to ``distance`` up to tolerances when optimal).
        delta: ``(d,)`` a minimising perturbation in input space ($Qv^*$ with a basis).
        value: $N(x_0 + \delta)$ at that perturbation (about 0: the solution sits on the boundary).
        n_unstable: neurons unstable in the ball.
        n_binary: binary variables used (the unstable neurons with $s\,u_i<0$, see below).
        status: SCIP's status string (``"optimal"``, ``"infeasible"``, ``"timelimit"``, ...).
    """

    distance: float
    lower: float
    delta: Tensor
    value: float
    n_unstable: int
    n_binary: int
    status: str


def exact_min_distance_milp(
    params: TwoLayerParams,
    x0: Tensor,
    *,
    radius: Optional[float] = None,
    start: Optional[Tensor] = None,
    basis: Optional[Tensor] = None,
    node_limit: int = 100_000,
    time_limit: float = 600.0,
    verbose: bool = False,
) -> MilpResult:
    r"""The exact minimal flip distance $\rho(x_0)$ (or $\rho_Q(x_0)$) by mixed-integer programming.

    Inside the ball $\|\delta\|\le R$ (``radius``; it must contain a flip) the pre-activations
    $h_i = w_i^\top(x_0+\delta) + b_i$ lie in $[\ell_i,\upsilon_i]$ (:func:`preactivation_bounds`).
    Stable neurons are linear ($a_i = h_i$ or $a_i = 0$).  For an unstable neuron only one side of
    $a_i = \sigma(h_i)$ matters: if $s u_i > 0$ a larger $a_i$ only makes the flip constraint harder, so
    the convex relaxation $a_i \ge \max(0, h_i)$ is exact; if $s u_i < 0$ the non-convex side
    $a_i \le \max(0, h_i)$ is encoded with a binary $z_i$ (big-M):

    .. math:: a_i \ge 0,\quad a_i \le h_i - \ell_i(1-z_i),\quad a_i \le \upsilon_i z_i .

    The program is $\min t$ subject to $\|\delta\|^2\le t\le R^2$ and $s\,(\sum_i u_ia_i + c)\le 0$,
    with $s = \mathrm{sign}\,N(x_0)$: a mixed-integer program with one convex quadratic constraint,
    which SCIP solves to optimality (relative gap $10^{-7}$).  Since $N(x_0+\delta)$ depends on $\delta$
    only through $W\delta$, the minimiser lies in the row space of $W$ (of $WQ$), and the program is
    written in an orthonormal basis of that space: at most $\min(m, d)$ continuous variables, scaled by
    $R$.  When the optimum is far inside the ball the program is solved a second time in the ball of
    radius (optimum)$\,(1 + 10^{-6})$, so that SCIP's absolute tolerances are relative to the answer:
    ``distance`` and ``lower`` then agree to about $10^{-6}$ relative.  A known flipping perturbation
    ``start`` (an attack's result) is handed to SCIP as the first incumbent; then ``radius`` defaults to
    its norm.  SCIP stops at ``node_limit`` nodes (deterministic) or ``time_limit`` seconds; then
    ``status`` says
    so and ``[lower, distance]`` is the proven bracket.  SCIP's random seeds are fixed, so on one machine a
    solve is repeatable; across machines the floating-point path (and the status: ``"optimal"`` or
    ``"gaplimit"`` when the relative gap is closed to $10^{-7}$) may differ, while ``distance`` and ``lower``
    agree to the stated gap: report the relative gap ``(distance - lower) / distance``, not the status.

    Args:
        x0: ``(d,)`` point with $N(x_0)\ne 0$.
        radius: $R > 0$, the search ball (default: the norm of ``start``, enlarged by $10^{-9}$).
        start: optional ``(d,)`` perturbation with $s\,N(x_0 + \text{start}) \le 0$ (in span$(Q)$ with a basis).
        basis: optional ``(d, k)`` orthonormal $Q$; then $\delta = Qv$ and the variables are $v$.
        node_limit, time_limit: SCIP's limits.
        verbose: show SCIP's log.
    Returns:
        :class:`MilpResult`.
    """
    params = _check_params(params, single=True)
    x0 = check_tensor("x0", x0, shape=(params.d,)).to(params.W.dtype)
    Q = _check_basis(basis, params.d, params.W.dtype)
    node_limit = check_int("node_limit", node_limit, low=1)
    time_limit = check_float("time_limit", time_limit, positive=True)
    verbose = check_flag("verbose", verbose)
    params = TwoLayerParams(*(t.detach() for t in (params.W, params.b, params.u, params.c)))  # solved off the graph
    x0 = x0.detach()
    H0, A, s, _ = _local_problem(params, x0[None, :], Q, "x0")
    sgn = float(s[0])
    v_start = None
    if start is not None:
        start = check_tensor("start", start, shape=(params.d,))
        tol = tolerance(start.dtype, params.W.dtype)
        start = start.detach().to(params.W.dtype)
        v_start = start if Q is None else Q.T @ start
        if Q is not None and float((Q @ v_start - start).norm()) > tol * max(1.0, float(start.norm())):
            raise ValueError("start must lie in the span of basis")
        if sgn * float(network_output(params, x0 + start)) > 0:
            raise ValueError("start must flip the sign of N at x0 (s N(x0 + start) <= 0)")
    if radius is None:
        if v_start is None:
            raise ValueError("radius or start must be given")
        R = float(v_start.norm()) * (1 + 1e-9) + 1e-12
    else:
        R = check_float("radius", radius, positive=True)
        if v_start is not None and float(v_start.norm()) > R:
            raise ValueError(f"start has norm {float(v_start.norm()):.6g} > radius {R:.6g}")
    # N(x0 + delta) depends on delta only through A delta: the minimiser lies in the row space of A,
    # so optimise over coordinates y in an orthonormal basis B of it (v = B y, ||v|| = ||y||, A v = (A B) y).
    _, S, Vh = torch.linalg.svd(A, full_matrices=False)
    B = Vh[S > S.max() * 1e-12].T                     # (k, r), r = rank(A) <= min(m, k)
    AB = A @ B
    rho = A.norm(dim=1)
    y_start = None if v_start is None else B.T @ v_start   # dropping the null-space part keeps the flip
    out = _solve_min_flip_milp(params, H0[0], AB, rho, sgn, R, y_start, node_limit, time_limit, verbose)
    status, y, dual = out[0], out[1], out[2]
    if status == "optimal" and float(y.norm()) < 0.5 * R:
        # SCIP's tolerances are absolute in units of R: solve again in a ball just around the optimum
        R2 = float(y.norm()) * (1 + 1e-6) + 1e-12
        out2 = _solve_min_flip_milp(params, H0[0], AB, rho, sgn, R2, y, node_limit, time_limit, verbose)
        if out2[0] == "optimal":
            out = out2
    status, y, dual, n_unstable, n_binary = out
    if y is None:
        return MilpResult(math.inf, math.inf if status == "infeasible" else 0.0,
                          torch.full((params.d,), math.nan, dtype=params.W.dtype), math.nan, n_unstable,
                          n_binary, status)
    vs = B @ y
    delta = vs if Q is None else Q @ vs
    dist = float(y.norm())
    value = float(network_output(params, x0 + delta))
    return MilpResult(dist, min(math.sqrt(dual), dist), delta, value, n_unstable, n_binary, status)


def _scip_model(pyscipopt, name: str, node_limit, time_limit, verbose):
    """A SCIP model with the limits, the relative gap 1e-7 and fixed seeds shared by the flip programs."""
    model = pyscipopt.Model(name)
    model.hideOutput(not verbose)
    model.setParam("limits/time", time_limit)
    model.setParam("limits/nodes", node_limit)
    model.setParam("limits/gap", 1e-7)
    # SCIP's random choices (LP permutations, tie-breaking in branching) from fixed seeds, stated here so
    # that the search, and with it the answer, does not depend on a default that may change
    model.setParam("randomization/randomseedshift", 0)
    model.setParam("randomization/permutationseed", 0)
    model.setParam("randomization/lpseed", 0)
    return model


def _scip_flip_constraint(pyscipopt, model, params, v, Al, h0, lo, hi, sgn):
    r"""Add $s\,N \le 0$ over the scaled perturbation variables ``v``: hidden unit $i$ has pre-activation
    $h_i = \sum_j$ ``Al[i][j] v[j]`` $+$ ``h0[i]`` $\in$ [``lo[i]``, ``hi[i]``] on the feasible set. Units off on
    the whole set are dropped, units on the whole set are linear; for the rest $a_i \ge h_i$ is exact where
    $s u_i > 0$ (a larger $a_i$ only hurts the flip), and a big-M binary encodes $a_i \le 
elu(h_i)$
    where $s u_i < 0$.  Returns ``(aux, n_unstable, n_binary)``; ``aux`` holds ``(a_i, z_i or None, i)``
    for a warm start."""
    u = params.u.tolist()
    k = len(v)
    acts, aux = [], []
    n_unstable = n_binary = 0
    for i in range(params.m):
        if hi[i] <= 0:                      # off on the whole feasible set
            continue
        h = pyscipopt.quicksum(Al[i][j] * v[j] for j in range(k) if Al[i][j] != 0.0) + h0[i]
        if lo[i] >= 0:                      # on on the whole feasible set: linear
            acts.append((u[i], h))
            continue
        n_unstable += 1
        a = model.addVar(f"a{i}", lb=0.0, ub=hi[i])
        z = None
        if sgn * u[i] > 0:
            model.addCons(a >= h)
        else:
            z = model.addVar(f"z{i}", vtype="B")
            n_binary += 1
            model.addCons(a <= h - lo[i] * (1 - z))
            model.addCons(a <= hi[i] * z)
        acts.append((u[i], a))
        aux.append((a, z, i))
    model.addCons(sgn * (pyscipopt.quicksum(ui * ai for ui, ai in acts) + float(params.c)) <= 0)
    return aux, n_unstable, n_binary


def _scip_solve(model, v, t, aux, start, t_start, hs, dtype):
    """Warm-start ``model`` from the scaled point ``start`` (a list, or None) with objective value ``t_start``
    and pre-activations ``hs``, solve, and return ``(status, v, dual bound of t)`` with ``v`` a tensor in
    the scaled variables (None when SCIP found no solution).  The objective is ``t``, minimised."""
    model.setObjective(t, "minimize")
    if start is not None:
        sol = model.createSol()
        for vj, val in zip(v, start):
            model.setSolVal(sol, vj, val)
        model.setSolVal(sol, t, t_start)
        for a, z, i in aux:
            model.setSolVal(sol, a, max(hs[i], 0.0))
            if z is not None:
                model.setSolVal(sol, z, 1.0 if hs[i] > 0 else 0.0)
        model.addSol(sol, free=True)
    model.optimize()
    status = str(model.getStatus())
    if model.getNSols() == 0:
        return status, None, math.inf
    best = model.getBestSol()
    return status, torch.tensor([model.getSolVal(best, vj) for vj in v], dtype=dtype), \
        max(float(model.getDualbound()), 0.0)


def _solve_min_flip_milp(params, h0_t, AB, rho, sgn, R, y_start, node_limit, time_limit, verbose):
    """One SCIP solve in the ball of radius R, in row-space coordinates y scaled by R (y = R v', |v'| <= 1),
    so that SCIP's absolute tolerances are relative to the radius."""
    import pyscipopt

    k = AB.shape[1]
    lo, hi = (h0_t - R * rho).tolist(), (h0_t + R * rho).tolist()
    model = _scip_model(pyscipopt, "min_flip_distance", node_limit, time_limit, verbose)
    v = [model.addVar(f"v{j}", lb=-1.0, ub=1.0) for j in range(k)]
    t = model.addVar("t", lb=0.0, ub=1.0)
    model.addCons(pyscipopt.quicksum(vj * vj for vj in v) <= t)
    aux, n_unstable, n_binary = _scip_flip_constraint(pyscipopt, model, params, v, (R * AB).tolist(),
                                                      h0_t.tolist(), lo, hi, sgn)
    warm = y_start is not None and float(y_start.norm()) <= R
    status, y, dual = _scip_solve(
        model, v, t, aux, (y_start / R).tolist() if warm else None,
        min(float(y_start @ y_start) / R**2 * (1 + 1e-12), 1.0) if warm else 0.0,
        (h0_t + AB @ y_start).tolist() if warm else None, AB.dtype)
    return status, None if y is None else R * y, R * R * dual, n_unstable, n_binary


# --------------------------------------------------------------------------------------------------
# Foolbox's DDN attack on the binary network
# --------------------------------------------------------------------------------------------------

class TwoClassLogits(torch.nn.Module):
    r"""The binary network as a two-class classifier: logits $(-N(x)/2,\; N(x)/2)$.

    Class 1 is predicted exactly when $N(x) > 0$, and the cross-entropy of the true class is the logistic
    loss $\log(1 + e^{-yN})$.  With a ``basis`` $Q$ and base points $X_0$ the module maps a batch
    $V$ (``(n, k)``) to the logits of $N(x_{0,j} + Q v_j)$: an attack on it only moves inside
    $\mathrm{span}(Q)$.
    """

    def __init__(self, params: TwoLayerParams, base: Optional[Tensor] = None, basis: Optional[Tensor] = None):
        super().__init__()
        params = _check_params(params, single=True)
        if (base is None) != (basis is None):
            raise ValueError("base and basis must be given together (or neither)")
        self.register_buffer("W", params.W.detach().clone())
        self.register_buffer("b", params.b.detach().clone())
        self.register_buffer("u", params.u.detach().clone())
        self.register_buffer("c", params.c.detach().clone())
        if basis is not None:
            Q = _check_basis(basis, params.d, params.W.dtype)
            base_t, _ = _points(params, base, "base")
            self.register_buffer("Q", Q)
            self.register_buffer("base", base_t)
        else:
            self.Q = None
            self.base = None

    def forward(self, V: Tensor) -> Tensor:
        """``(n, d)`` inputs (``(n, k)`` coordinates with a basis) -> ``(n, 2)`` logits $(-N/2, N/2)$."""
        k = self.W.shape[1] if self.Q is None else self.Q.shape[1]
        V = check_tensor("V", V, shape=(None, k)).to(self.W.dtype)
        if self.Q is not None:
            if V.shape[0] != self.base.shape[0]:
                raise ValueError(f"V must have one row per base point ({self.base.shape[0]}), got {V.shape[0]}")
            X = self.base + V @ self.Q.T
        else:
            X = V
        f = torch.relu(X @ self.W.T + self.b) @ self.u + self.c
        return torch.stack([-f / 2, f / 2], dim=1)


@dataclass(frozen=True)
class AttackResult:
    r"""What :func:`ddn_min_distance` returns.

    Attributes:
        distance: ``(n,)`` norms of the smallest adversarial perturbations found (``inf`` where none).
        delta: ``(n, d)`` those perturbations, in input space (zero where none was found).
        success: ``(n,)`` bool, whether the perturbed point is on the other side ($s\,N \le 0$).
    """

    distance: Tensor
    delta: Tensor
    success: Tensor


def ddn_min_distance(
    params: TwoLayerParams,
    X: Tensor,
    *,
    basis: Optional[Tensor] = None,
    steps: int = 500,
    gamma: float = 0.02,
    init_epsilon: float | Sequence[float] = 1.0,
    seed: int = 0,
) -> AttackResult:
    r"""Smallest $L_2$ perturbation that Foolbox's DDN attack finds, per point (an upper bound on $\rho$).

    Runs ``foolbox.attacks.DDNAttack`` (Foolbox 3.3.4) on :class:`TwoClassLogits` with unbounded
    inputs (``bounds=(-inf, inf)``) and the labels $\mathbb 1[N(x_0) > 0]$.  DDN alternates a gradient
    step on the cross-entropy with a projection onto the sphere of radius $\varepsilon$, and shrinks
    $\varepsilon$ by $(1-\gamma)$ after an adversarial iterate and grows it by $(1+\gamma)$ otherwise; it
    returns the smallest adversarial iterate seen.  Given several ``init_epsilon`` values the attack is
    restarted from each, and the smallest successful perturbation per point is kept.  With ``basis``
    the attack runs on $v\mapsto N(x_0 + Qv)$, so every perturbation lies in $\mathrm{span}(Q)$.  The
    torch random state is forked and seeded with ``seed`` (DDN draws random directions only where a
    gradient vanishes), so results are reproducible and the caller's random state is left alone.

    Args:
        X: ``(n, d)`` points with $N\ne0$ (or ``(d,)``).
        basis: optional ``(d, k)`` orthonormal basis.
        steps, gamma: DDN's parameters.
        init_epsilon: DDN's initial radius, or a sequence of them (one run each).
    Returns:
        :class:`AttackResult` (``distance`` and ``success`` of shape ``(n,)``, ``delta`` ``(n, d)``).
    """
    with warnings.catch_warnings():          # foolbox 3.3.4 imports a deprecated scipy.ndimage path
        warnings.simplefilter("ignore", DeprecationWarning)
        import foolbox

    params = _check_params(params, single=True)
    X, _ = _points(params, X)
    X = X.detach()
    Q = _check_basis(basis, params.d, params.W.dtype)
    steps = check_int("steps", steps, low=1)
    gamma = check_float("gamma", gamma, positive=True, below=1.0)
    eps_list = [init_epsilon] if not isinstance(init_epsilon, (list, tuple)) else list(init_epsilon)
    if not eps_list:
        raise ValueError("init_epsilon must hold at least one value")
    eps_list = [check_float("init_epsilon", e, positive=True) for e in eps_list]
    seed = check_seed("seed", seed)
    _, _, s, _ = _local_problem(params, X, Q)
    labels = (s > 0).long()
    if Q is None:
        module, inputs = TwoClassLogits(params), X.clone()
    else:
        module = TwoClassLogits(params, base=X, basis=Q)
        inputs = X.new_zeros(X.shape[0], Q.shape[1])
    module.eval()
    fmodel = foolbox.PyTorchModel(module, bounds=(-math.inf, math.inf), device=X.device)
    criterion = foolbox.criteria.Misclassification(labels)
    best_dist = torch.full((X.shape[0],), math.inf, dtype=X.dtype)
    best_delta = torch.zeros_like(X)
    for eps0 in eps_list:
        attack = foolbox.attacks.DDNAttack(init_epsilon=eps0, steps=steps, gamma=gamma)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            adv, _, _ = attack(fmodel, inputs, criterion, epsilons=None)
        step = adv.detach() - inputs
        delta = step if Q is None else step @ Q.T
        ok = s * network_output(params, X + delta) <= 0
        dist = torch.where(ok, step.norm(dim=1), torch.full_like(best_dist, math.inf))
        better = dist < best_dist
        best_dist = torch.where(better, dist, best_dist)
        best_delta = torch.where(better[:, None], delta, best_delta)
    return AttackResult(distance=best_dist, delta=best_delta, success=torch.isfinite(best_dist))
