r"""Sizes of perturbations orthogonal to the data in the $L_\infty$ and $L_1$ norms.

Three tools (book/other_norms.md):

* the exact means of $\|v\|_\infty$ and $\|v\|_1$ for a uniformly random unit vector $v$ of $\mathbb R^k$
  (:func:`expected_linf_norm`, :func:`expected_l1_norm`) and a tail bound (:func:`linf_tail_bound`): the
  universal direction $\hat z$ is such a vector with $k = \ell$ for a coordinate-aligned $P$ and $k = d$
  for a random (Haar) $P$;
* the first-order smallest $L_\infty$ (or $L_1$) perturbation in $P^\perp$, a linear program
  (:func:`perp_dual_norm`: $h(g) = \max\{\langle g, \delta\rangle : \delta\in P^\perp,
  \|\delta\|_\infty\le 1\}$, so that the linearised flip size is $|N(x_0)|/h(g_\perp)$);
* the exact smallest $L_\infty$ perturbation inside a subspace that flips a two-layer ReLU network, a
  mixed-integer *linear* program solved by SCIP (:func:`exact_min_linf_milp`), and, for a
  coordinate-aligned subspace, the smallest $\varepsilon$ at which Foolbox's $L_\infty$ PGD attack on the
  coordinates of that subspace succeeds (:func:`linf_pgd_min_epsilon`).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ._checks import check_choice, check_flag, check_float, check_int, check_seed, check_tensor, derived_seed, \
    tolerance
from .attacks import MilpResult, _check_basis, _local_problem, _points, _scip_flip_constraint, _scip_model, \
    _scip_solve
from .network import TwoLayerParams, _check_params, network_output
from .subspaces import Subspace, _check_subspace

__all__ = [
    "expected_gaussian_norm",
    "expected_gaussian_max",
    "expected_linf_norm",
    "expected_l1_norm",
    "linf_tail_bound",
    "is_coordinate_basis",
    "perp_dual_norm",
    "exact_min_linf_milp",
    "linf_pgd_min_epsilon",
]


# ---------------------------------------------------------------------- a random unit vector of R^k

def expected_gaussian_norm(k: int) -> float:
    r"""$\mathbb E\|g\|_2 = \sqrt2\,\Gamma(\tfrac{k+1}2)/\Gamma(\tfrac k2)$ for $g\sim\mathcal N(0, I_k)$."""
    k = check_int("k", k, low=1)
    return math.sqrt(2.0) * math.exp(math.lgamma((k + 1) / 2) - math.lgamma(k / 2))


def expected_gaussian_max(k: int) -> float:
    r"""$\mathbb E\max_i|g_i| = \int_0^\infty \bigl(1 - (2\Phi(a) - 1)^k\bigr)\,\mathrm da$ for $g\sim\mathcal N(0, I_k)$.

    Computed by adaptive quadrature (the integrand is smooth and falls like $k\,e^{-a^2/2}$), to about
    $10^{-10}$ relative.
    """
    from scipy import integrate, stats

    k = check_int("k", k, low=1)
    # 1 - (1 - 2 Phibar(a))^k, written with log1p/expm1 so that it keeps its digits where it is tiny
    f = lambda a: -math.expm1(k * math.log1p(-2.0 * stats.norm.sf(a)))  # noqa: E731
    top = math.sqrt(2 * math.log(2 * k)) + 12.0
    mid = math.sqrt(2 * math.log(2 * k))
    val = integrate.quad(f, 0.0, mid, limit=200, epsabs=1e-13, epsrel=1e-11)[0]
    val += integrate.quad(f, mid, top, limit=200, epsabs=1e-13, epsrel=1e-11)[0]
    return val


def expected_linf_norm(k: int) -> float:
    r"""$\mathbb E\|v\|_\infty$ for $v$ uniform on the unit sphere of $\mathbb R^k$, exactly:

    .. math:: \mathbb E\|v\|_\infty = \frac{\mathbb E\max_i|g_i|}{\mathbb E\|g\|_2},

    because $g = \|g\|\,v$ with $\|g\|$ independent of $v$.  It lies in $[1/\sqrt k, 1]$ and behaves like
    $\sqrt{2\log k / k}$ for large $k$.
    """
    return expected_gaussian_max(k) / expected_gaussian_norm(k)


def expected_l1_norm(k: int) -> float:
    r"""$\mathbb E\|v\|_1 = k\sqrt{2/\pi}\,/\,\mathbb E\|g\|_2 = k\,\Gamma(\tfrac k2)/(\sqrt\pi\,\Gamma(\tfrac{k+1}2))$
    for $v$ uniform on the unit sphere of $\mathbb R^k$; it lies in $[1, \sqrt k]$ and behaves like $\sqrt{2k/\pi}$."""
    k = check_int("k", k, low=1)
    return k * math.sqrt(2.0 / math.pi) / expected_gaussian_norm(k)


def linf_tail_bound(k: int, t: float) -> float:
    r"""The level $a$ with $\Pr[\|v\|_\infty \ge a] \le e^{-t}$: $a = \sqrt{2(\log(2k) + t)/k}$ (capped at 1).

    From the cap bound $\Pr[v_1\ge\varepsilon]\le e^{-k\varepsilon^2/2}$ and a union bound over the $2k$
    signed coordinates.
    """
    k = check_int("k", k, low=1)
    t = check_float("t", t, nonnegative=True)
    return min(1.0, math.sqrt(2.0 * (math.log(2 * k) + t) / k))


# ---------------------------------------------------------------- first order: a linear program

def is_coordinate_basis(basis: Tensor) -> bool:
    """Whether every column of ``basis`` is $\\pm$ a coordinate vector (a coordinate-aligned subspace)."""
    Q = check_tensor("basis", basis, ndim=2).detach()
    nz = (Q.abs() > tolerance(Q.dtype)).sum(0)
    return bool((nz == 1).all()) and bool(((Q.abs().amax(0) - 1).abs() < tolerance(Q.dtype)).all())


def perp_dual_norm(sub: Subspace, g: Tensor, *, norm: str = "linf") -> tuple[Tensor, Tensor]:
    r"""$h(g) = \max\{\langle g, \delta\rangle : \delta \in P^\perp,\ \|\delta\|_p \le 1\}$ and a maximiser, per row of ``g``.

    The first-order smallest perturbation in $P^\perp$ that brings $N(x_0)$ to zero has $L_p$ norm
    $|N(x_0)|/h(\nabla N(x_0))$ (only $g_\perp$ matters, since $\langle g, \delta\rangle = \langle g_\perp, \delta\rangle$).
    By LP duality $h(g) = \min_{c \in P}\|g_\perp - c\|_{q}$, $q$ the dual exponent ($q = 1$ for $p = \infty$,
    $q = \infty$ for $p = 1$); for $g \in P^\perp$,

    .. math:: \frac{\|g\|_2^2}{\|g\|_\infty} \le h_\infty(g) \le \|g\|_1, \qquad
              \frac{\|g\|_2^2}{\|g\|_1} \le h_1(g) \le \|g\|_\infty,

    with equality on the right for a coordinate-aligned $P$.  ``norm="linf"`` solves the linear program
    $\max g^\top\delta$ subject to $Q_P^\top\delta = 0$, $-1\le\delta_j\le1$ (or, when $\ell < d/3$, the same
    program in the coordinates $v$ of $\delta = Q_\perp v$ with $-1 \le Q_\perp v \le 1$, which is smaller);
    ``norm="l1"`` writes $\delta = \delta^+ - \delta^-$ with $\sum_j(\delta^+_j + \delta^-_j) \le 1$.  Both are solved by
    HiGHS (``scipy.optimize.linprog``); a coordinate-aligned $P$ has the closed forms $\|g_\perp\|_1$ (attained at
    the signs of $g_\perp$) and $\|g_\perp\|_\infty$.

    Args:
        sub: the data subspace $P$ (perturbations live in $P^\perp$).
        g: ``(d,)`` or ``(n, d)`` gradients.
        norm: ``"linf"`` or ``"l1"``, the norm of the perturbation.
    Returns:
        ``(h, delta)``: ``h`` of shape ``()`` or ``(n,)``; ``delta`` the maximisers, shaped like ``g``.
    """
    from scipy.optimize import linprog

    _check_subspace(sub)
    g = check_tensor("g", g, ndim=(1, 2))
    if g.shape[-1] != sub.d:
        raise ValueError(f"g must have last dimension d = {sub.d} (that of sub), got shape {tuple(g.shape)}")
    check_choice("norm", norm, ("linf", "l1"))
    single = g.ndim == 1
    G = (g[None, :] if single else g).detach().to(sub.basis.dtype)
    QP = sub.basis.detach().cpu().numpy()
    Qp = sub.perp_basis.detach().cpu().numpy()
    d, ell = Qp.shape
    coordinate = is_coordinate_basis(sub.perp_basis)
    J = np.abs(Qp).argmax(0)
    hs, deltas = [], []
    for row in G.cpu().numpy():
        row = Qp @ (Qp.T @ row)                       # g_perp
        delta = np.zeros(d)
        if coordinate:
            gJ = row[J]
            if norm == "linf":
                h = float(np.abs(gJ).sum())
                delta[J] = np.sign(gJ)
            else:
                j = int(np.abs(gJ).argmax())
                h = float(abs(gJ[j]))
                delta[J[j]] = np.sign(gJ[j])
        elif norm == "linf" and 3 * ell < d:
            res = linprog(-(Qp.T @ row), A_ub=np.vstack([Qp, -Qp]), b_ub=np.ones(2 * d),
                          bounds=[(None, None)] * ell, method="highs")
            _check_lp(res)
            h, delta = float(-res.fun), Qp @ res.x
        elif norm == "linf":
            res = linprog(-row, A_eq=QP.T, b_eq=np.zeros(d - ell), bounds=[(-1.0, 1.0)] * d, method="highs")
            _check_lp(res)
            h, delta = float(-res.fun), res.x
        else:
            c = np.concatenate([-row, row])
            res = linprog(c, A_ub=np.ones((1, 2 * d)), b_ub=[1.0], A_eq=np.hstack([QP.T, -QP.T]),
                          b_eq=np.zeros(d - ell), bounds=[(0, None)] * (2 * d), method="highs")
            _check_lp(res)
            h, delta = float(-res.fun), res.x[:d] - res.x[d:]
        hs.append(h)
        deltas.append(delta)
    h_t = torch.tensor(hs, dtype=G.dtype)
    d_t = torch.tensor(np.array(deltas).reshape(len(deltas), d), dtype=G.dtype)
    return (h_t[0], d_t[0]) if single else (h_t, d_t)


def _check_lp(res) -> None:
    if res.status != 0:
        raise RuntimeError(f"perp_dual_norm: the linear program failed ({res.message})")


# ------------------------------------------------------------------- exact: a mixed-integer LP

def exact_min_linf_milp(
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
    r"""The exact smallest $L_\infty$ perturbation (inside $\mathrm{span}(Q)$) that flips a two-layer network.

    .. math:: \rho_\infty(x_0) = \min\bigl\{\|\delta\|_\infty : \delta\in\mathrm{span}(Q),\ s\,N(x_0+\delta)\le 0\bigr\},
              \qquad s = \operatorname{sign}N(x_0).

    With $\delta = Qv$ and a box $\|\delta\|_\infty\le R$ (``radius``; it must contain a flip), each
    pre-activation $h_i = w_i^\top(x_0+\delta)+b_i$ lies in $[h_i(x_0) - R\|\Pi_Q w_i\|_1,\ h_i(x_0) + R\|\Pi_Q w_i\|_1]$
    (Hölder: $w_i^\top\delta = (\Pi_Qw_i)^\top\delta$).  The ReLUs are encoded exactly as in
    :func:`ortho_lib.attacks.exact_min_distance_milp` (the convex side as a linear inequality, the other side
    with a binary and big-M), and the objective $t$ with $-t\le(Qv)_j\le t$ for every coordinate $j$ is
    linear: the whole problem is a mixed-integer *linear* program, solved to optimality by SCIP.  For a
    coordinate subspace the constraints reduce to $|v_j|\le t$.  When the optimum is far inside the box the
    program is solved again in the box of side (optimum)$\,(1+10^{-6})$, so SCIP's absolute tolerances are
    relative to the answer.

    Args:
        params: a single two-layer network.
        x0: ``(d,)`` point with $N(x_0)\ne0$.
        radius: $R$ (default: the $L_\infty$ norm of ``start``, enlarged by $10^{-9}$).
        start: optional ``(d,)`` flipping perturbation in $\mathrm{span}(Q)$, handed to SCIP as a first solution.
        basis: ``(d, k)`` orthonormal $Q$ (default: the whole space, $Q = I$).
        node_limit, time_limit, verbose: SCIP's limits and log.
    Returns:
        :class:`ortho_lib.attacks.MilpResult` (``distance`` is the $L_\infty$ norm; ``lower`` SCIP's bound).
    """
    import pyscipopt

    params = _check_params(params, single=True)
    params = TwoLayerParams(*(t.detach() for t in (params.W, params.b, params.u, params.c)))
    x0 = check_tensor("x0", x0, shape=(params.d,)).detach().to(params.W.dtype)
    Q = _check_basis(basis, params.d, params.W.dtype)
    if Q is None:
        Q = torch.eye(params.d, dtype=params.W.dtype)
    node_limit = check_int("node_limit", node_limit, low=1)
    time_limit = check_float("time_limit", time_limit, positive=True)
    verbose = check_flag("verbose", verbose)
    H0, A, s, _ = _local_problem(params, x0[None, :], Q, "x0")
    sgn = float(s[0])
    v_start = None
    if start is not None:
        start = check_tensor("start", start, shape=(params.d,)).detach().to(params.W.dtype)
        v_start = Q.T @ start
        tol = tolerance(params.W.dtype)
        if float((Q @ v_start - start).norm()) > tol * max(1.0, float(start.norm())):
            raise ValueError("start must lie in the span of basis")
        if sgn * float(network_output(params, x0 + start)) > 0:
            raise ValueError("start must flip the sign of N at x0 (s N(x0 + start) <= 0)")
    if radius is None:
        if v_start is None:
            raise ValueError("radius or start must be given")
        R = float((Q @ v_start).abs().max()) * (1 + 1e-9) + 1e-12
    else:
        R = check_float("radius", radius, positive=True)
        if v_start is not None and float((Q @ v_start).abs().max()) > R * (1 + 1e-12):
            raise ValueError(f"start has L_inf norm {float((Q @ v_start).abs().max()):.6g} > radius {R:.6g}")
    spread = (params.W @ Q @ Q.T).abs().sum(1)          # ||Pi_Q w_i||_1
    out = _solve_linf(pyscipopt, params, H0[0], A, Q, spread, sgn, R, v_start, node_limit, time_limit, verbose)
    status, v = out[0], out[1]
    if status == "optimal" and v is not None:
        opt = float((Q @ v).abs().max())
        if opt < 0.5 * R:
            out2 = _solve_linf(pyscipopt, params, H0[0], A, Q, spread, sgn, opt * (1 + 1e-6) + 1e-12, v, node_limit,
                               time_limit, verbose)
            if out2[0] == "optimal":
                out = out2
    status, v, dual, n_unstable, n_binary = out
    if v is None:
        return MilpResult(math.inf, math.inf if status == "infeasible" else 0.0,
                          torch.full((params.d,), math.nan, dtype=params.W.dtype), math.nan, n_unstable, n_binary,
                          status)
    delta = Q @ v
    dist = float(delta.abs().max())
    return MilpResult(dist, min(dual, dist), delta, float(network_output(params, x0 + delta)), n_unstable, n_binary,
                      status)


def _solve_linf(pyscipopt, params, h0_t, A, Q, spread, sgn, R, v_start, node_limit, time_limit, verbose):
    """One SCIP solve in the box ||Q v||_inf <= R, with variables scaled by R (v = R v')."""
    k = Q.shape[1]
    lo, hi = (h0_t - R * spread).tolist(), (h0_t + R * spread).tolist()
    model = _scip_model(pyscipopt, "min_linf_flip", node_limit, time_limit, verbose)
    v = [model.addVar(f"v{j}", lb=None, ub=None) for j in range(k)]
    t = model.addVar("t", lb=0.0, ub=1.0)
    Qn = Q.tolist()
    for j in range(Q.shape[0]):
        row = [(Qn[j][c], v[c]) for c in range(k) if abs(Qn[j][c]) > 0.0]
        if not row:
            continue
        expr = pyscipopt.quicksum(q * vc for q, vc in row)
        model.addCons(expr <= t)
        model.addCons(-expr <= t)
    aux, n_unstable, n_binary = _scip_flip_constraint(pyscipopt, model, params, v, (R * A).tolist(),
                                                      h0_t.tolist(), lo, hi, sgn)
    warm = v_start is not None and float((Q @ v_start).abs().max()) <= R
    status, vv, dual = _scip_solve(
        model, v, t, aux, (v_start / R).tolist() if warm else None,
        min(float((Q @ v_start).abs().max()) / R * (1 + 1e-12), 1.0) if warm else 0.0,
        (h0_t + A @ v_start).tolist() if warm else None, A.dtype)
    return status, None if vv is None else R * vv, R * dual, n_unstable, n_binary


# ------------------------------------------------------------------ an attack from Foolbox

class _ScaledRestricted(torch.nn.Module):
    r"""Two-class logits $(-N/2, N/2)$ of $v\mapsto N(x_j + \varepsilon_j\,Qv)$, one base point and scale per row."""

    def __init__(self, params: TwoLayerParams, base: Tensor, Q: Tensor, scale: Tensor):
        super().__init__()
        for name, t in (("W", params.W), ("b", params.b), ("u", params.u), ("c", params.c), ("base", base),
                        ("Q", Q), ("scale", scale)):
            self.register_buffer(name, t.detach().clone())

    def forward(self, V: Tensor) -> Tensor:
        X = self.base + (self.scale[:, None] * V.to(self.W.dtype)) @ self.Q.T
        f = torch.relu(X @ self.W.T + self.b) @ self.u + self.c
        return torch.stack([-f / 2, f / 2], dim=1)


def linf_pgd_min_epsilon(
    params: TwoLayerParams,
    X: Tensor,
    *,
    basis: Tensor,
    upper: Tensor,
    steps: int = 50,
    rel_stepsize: float = 0.1,
    bisections: int = 20,
    seed: int = 0,
) -> Tensor:
    r"""The smallest $\varepsilon$ at which Foolbox's $L_\infty$ PGD, restricted to a coordinate subspace, flips each point.

    For a coordinate-aligned $\mathrm{span}(Q)$ (each column $\pm e_j$) the set
    $\{\delta\in\mathrm{span}(Q) : \|\delta\|_\infty\le\varepsilon\}$ is the box $\{Qv : \|v\|_\infty\le\varepsilon\}$,
    so an $L_\infty$ attack on the coordinates $v$ is an $L_\infty$ attack restricted to the subspace.  (For
    any other subspace that set is a polytope that PGD's box projection does not respect, and the function
    refuses.)  Per point, $\varepsilon$ is bisected between 0 and ``upper`` (a known flipping size):
    ``foolbox.attacks.LinfPGD`` (Foolbox 3.3.4; random start, ``steps`` sign-gradient steps of
    ``rel_stepsize``$\,\varepsilon$, projection on the box) runs on all points at once on the module
    $v\mapsto N(x_j + \varepsilon_j Qv)$ with $\|v\|_\infty\le 1$, and a point's upper end moves down when
    the attack succeeds.  The result is an upper bound on $\rho_\infty$ (an attack can miss a flip), to a
    relative bisection accuracy of $2^{-\text{bisections}}$.

    Args:
        X: ``(n, d)`` points with $N\ne0$.
        basis: ``(d, k)`` coordinate-aligned orthonormal basis.
        upper: ``(n,)`` flipping $L_\infty$ sizes (for example along the universal direction).
        steps, rel_stepsize: PGD's settings.  bisections: bisection steps.  seed: torch seed of the random starts.
    Returns:
        ``(n,)`` the smallest successful $\varepsilon$ found (``upper`` where PGD never succeeded below it).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import foolbox

    params = _check_params(params, single=True)
    X, _ = _points(params, X)
    X = X.detach()
    Q = _check_basis(basis, params.d, params.W.dtype)
    if Q is None or not is_coordinate_basis(Q):
        raise ValueError("basis must be coordinate-aligned (each column +-e_j): for any other subspace the set "
                         "{delta in span(Q) : ||delta||_inf <= eps} is a polytope that PGD's box projection does not "
                         "respect; use exact_min_linf_milp or perp_dual_norm there")
    n = X.shape[0]
    up = check_tensor("upper", upper, shape=(n,)).detach().to(X.dtype).clone()
    if bool((up <= 0).any()):
        raise ValueError("upper must be positive")
    steps = check_int("steps", steps, low=1)
    rel_stepsize = check_float("rel_stepsize", rel_stepsize, positive=True)
    bisections = check_int("bisections", bisections, low=1)
    seed = check_seed("seed", seed)
    if n == 0:                      # no points: nothing to attack (Foolbox refuses an empty batch)
        return up
    _, _, s, _ = _local_problem(params, X, Q)
    labels = (s > 0).long()
    lo = torch.zeros_like(up)
    hi = up.clone()
    criterion = foolbox.criteria.Misclassification(labels)
    attack = foolbox.attacks.LinfPGD(rel_stepsize=rel_stepsize, steps=steps, random_start=True)
    for it in range(bisections):
        mid = (lo + hi) / 2
        module = _ScaledRestricted(params, X, Q, mid).eval()
        fmodel = foolbox.PyTorchModel(module, bounds=(-math.inf, math.inf), device=X.device)
        zeros = X.new_zeros(n, Q.shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(seed, it))
            _, clipped, _ = attack(fmodel, zeros, criterion, epsilons=1.0)
        Vc = clipped.detach().clamp(-1.0, 1.0)
        ok = s * network_output(params, X + (mid[:, None] * Vc) @ Q.T) <= 0
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    return hi
