r"""The compiled CPU backend of :func:`ortho_lib.train` (``backend="fused"``).

A PyTorch step of a small network is some thirty tiny tensor operations, each paying a dispatch cost, and
a PyTorch step of a large one makes several passes over $m\times n$ arrays besides its one matrix
product.  This module compiles (with Numba) one loop per coordinate system that runs every step of a
network's training, so that a step costs what its arithmetic costs.  It implements the iteration of the
reference loop (:func:`ortho_lib.training._train_reference`; full batch, GD or heavy ball, weight decay,
norm penalty, per-member budgets and targets, a recorded history), for every member on its own:

.. math:: Z = W F^\top + b\mathbf 1^\top,\quad f = u^\top\mathrm{relu}(Z) + c,\quad
          g_j = -y_j\,\mathrm{sigmoid}(-y_jf_j)/n,\quad G_{ij} = g_j u_i\,\mathbb 1[Z_{ij} > 0],

.. math:: \nabla_W = G F,\quad \nabla_b = G\mathbf 1,\quad \nabla_u = \mathrm{relu}(Z)\, g,\quad
          \nabla_c = \mathbf 1^\top g .

Two kernels, one per kind of coordinates (``coordinates`` of :func:`ortho_lib.train`):

* :func:`_train_features` — ``"full"`` ($F = X$) or ``"subspace"`` ($F = XQ_P$, the coordinates of the
  inputs in $P$; see :mod:`ortho_lib._batched`).  A step costs $2mnk$ multiply-adds for $k$ features.
  The weights are held transposed, ``(k, m)``, and $Z$ as ``(n, m)``, so that every inner loop runs over
  the $m$ neurons and vectorises, whatever $n$ and $k$ (the Figure 2 sweep has $n = 7$, $k = 2$).
* :func:`_train_span` — ``"span"``, the data-span (Gram) coordinates of :mod:`ortho_lib._batched`:
  $\tilde W(t) = a_t\tilde W(0) + A_t\tilde X$ and $Z = a_t Z(0) + A_t\tilde K$ with
  $\tilde K = \tilde X\tilde X^\top$, so a step costs one $m\times n\times n$ product, whatever $d$.  The
  rows (neurons) are processed in blocks of :data:`ROW_BLOCK`: for each block one pass forms
  $-\eta G$ and updates $A$ (and $u$), one BLAS product updates $Z \leftarrow (1-\eta\lambda)Z - \eta G\tilde K$
  and one pass accumulates the next step's outputs $f$ from the new rows while they are in cache.  GD
  updates $Z$ in place; heavy ball recomputes $Z = a Z(0) + A\tilde K$ from its coefficients each step.
  The norm $\|\tilde W\|_F^2 = a^2\|\tilde W(0)\|_F^2 + a\langle Z(0), A\rangle + \langle Z, A\rangle$ (norm
  penalty, recorded history) needs no product.

Members are independent.  :func:`run` hands them to :func:`workers_default` threads (the kernels release
the GIL) from one queue, longest budget first, so a thread that finishes early (or gets less of a busy
machine) takes the next member; the arithmetic of a member does not depend on the thread that runs it, so
the results do not depend on the number of threads (tested bit for bit).  Products inside the span kernel
call the single-threaded BLAS (limited to one thread while the kernels run).  Sums over neurons may be
reassociated by the compiler (``fastmath`` reassociation and contraction only: nan and inf keep their
meaning), which changes rounding, not results: the contract is agreement with the reference to
$10^{-12}$ in float64.  float32 arrays run the same code in float32.  The kernels are compiled on first
use and cached on disk.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import os
import threading
import time
from typing import NamedTuple, Optional

import numpy as np

# Rows (neurons) per block of the span kernel: a block of Z, A and the BLAS operands stays in L1/L2, and
# OpenBLAS's small-matrix path is fastest for blocks of at most about 100 rows (measured: 75 GFLOP/s in
# float64 for 32-100 rows against 49 for 128-256 and 31 for one 1000-row product).
ROW_BLOCK = 64
# Threads (None: workers_default()); tests and the benchmark set it.
WORKERS: Optional[int] = None

_KERNELS = None  # (train_features, train_span), made by kernels() on first use
_xxgemm = None   # Numba's BLAS gemm wrapper (an external function), set by kernels()


# ------------------------------------------------------------------ what travels to the kernels

class Hyper(NamedTuple):
    """Per-member hyperparameters, ``(E,)`` arrays named as in :class:`ortho_lib.TrainConfig`."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    norm_penalty: np.ndarray
    target_margin: np.ndarray  # 0 where there is no target (see Options.has_target)
    max_steps: np.ndarray      # int64


class Options(NamedTuple):
    """Settings shared by every member (structural fields of the config)."""

    heavy_ball: bool      # optimizer == "momentum"
    train_b: bool
    train_u: bool
    train_c: bool
    has_target: bool
    record_every: int     # 0: no history
    record_params: bool   # keep the parameters at every record
    norm_penalty: bool    # any member has a norm penalty


class Features(NamedTuple):
    """Data of the feature kernel: ``F (E_F, n, k)`` features of each point, ``y (E_y, n)``.  A leading
    axis of 1 is shared by every member."""

    F: np.ndarray
    y: np.ndarray


class FeatureState(NamedTuple):
    """Trained in place by the feature kernel.  ``W (E, k, m)`` (transposed), ``b, u (E, m)``, ``c (E,)``;
    ``perp_sq (E,)`` is $\\|\\Pi_\\perp W(0)\\|_F^2$ in subspace coordinates (0 in full ones)."""

    W: np.ndarray
    b: np.ndarray
    u: np.ndarray
    c: np.ndarray
    perp_sq: np.ndarray


class Gram(NamedTuple):
    """Data of the span kernel: ``K (E_K, n, n)`` the Gram matrix $\\tilde X\\tilde X^\\top$, ``y (E_y, n)``."""

    K: np.ndarray
    y: np.ndarray


class SpanState(NamedTuple):
    r"""Trained in place by the span kernel.  ``Z (E, m, n)`` is $\tilde W\tilde X^\top$ (the
    pre-activations minus ``zfix``); ``A (E, m, n)`` the span coefficients; ``B`` the heavy-ball buffer of
    ``A`` and ``Z0`` $= \tilde W(0)\tilde X^\top$ (``(1, 1, 1)`` placeholders when unused); ``zfix (E, m)``
    the untrained bias $b(0)$ (zeros when $b$ is trained, then part of $\tilde W$); ``u (E, m)``, ``c (E,)``;
    ``w0_sq (E,)`` $\|\tilde W(0)\|_F^2$ and ``fixed_sq (E,)`` $\|b(0)\|^2$ when $b$ is not trained (else 0)."""

    Z: np.ndarray
    A: np.ndarray
    B: np.ndarray
    Z0: np.ndarray
    zfix: np.ndarray
    u: np.ndarray
    c: np.ndarray
    w0_sq: np.ndarray
    fixed_sq: np.ndarray


class Outputs(NamedTuple):
    """Written by the kernels per member: ``steps (E,)`` int64, ``yf (E, n)`` $y_jN(x_j)$ at the final
    iterate, ``loss (E,)``, ``perp_factor (E,)`` ($a_T$ with $\\Pi_\\perp W(T) = a_T\\Pi_\\perp W(0)$),
    ``diverged (E,)`` bool."""

    steps: np.ndarray
    yf: np.ndarray
    loss: np.ndarray
    perp_factor: np.ndarray
    diverged: np.ndarray


class History(NamedTuple):
    """Records (every ``record_every`` steps and at the last), ``(E, H)`` each, and ``length (E,)``; with
    ``record_params`` the kernel's own parameters at each record: ``W (E, H, k, m)`` (feature kernel) or the
    span coefficients ``A`` as ``W (E, H, m, n)`` (span kernel), ``b, u (E, H, m)``, ``c (E, H)`` and the
    perp factor ``a (E, H)`` (placeholders of size 1 otherwise)."""

    steps: np.ndarray
    loss: np.ndarray
    log_loss: np.ndarray
    margin: np.ndarray
    norm_sq: np.ndarray
    length: np.ndarray
    W: np.ndarray
    b: np.ndarray
    u: np.ndarray
    c: np.ndarray
    a: np.ndarray


# ------------------------------------------------------------------------------ compilation

@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether the fused backend can run (Numba is installed; it is imported only by :func:`kernels`)."""
    return importlib.util.find_spec("numba") is not None


def kernels():
    """The compiled ``(train_features, train_span)`` (Numba imported, the kernels loaded from the disk cache
    or compiled, on first use, not when :mod:`ortho_lib` is imported)."""
    global _KERNELS, _softplus, _log_logistic, _step_scalars, _relu, _accumulate_outputs, _gemm_rows, _xxgemm
    if _KERNELS is None:
        if not available():
            raise ModuleNotFoundError("the fused backend needs numba (pip install numba)")
        import numba
        from numba import types
        from numba.np.linalg import ensure_blas

        ensure_blas()  # Numba's gemm wrapper bound to SciPy's BLAS (loaded now, before it is limited to one thread)
        ptr = types.voidptr
        _xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
            types.char, types.char, types.char, types.intp, types.intp, types.intp,  # kind, transa, transb, m, n, k
            ptr, ptr, types.intp, ptr, types.intp, ptr, ptr, types.intp))           # alpha, a, lda, b, ldb, beta, c, ldc

        # Reassociation and contraction only: nan and inf keep their meaning (a diverging run is detected).
        flags = {"reassoc", "contract"}
        helper = numba.njit(cache=True, nogil=True, inline="always", fastmath=flags)
        _softplus = helper(_softplus)
        _log_logistic = helper(_log_logistic)
        _relu = helper(_relu)
        _step_scalars = helper(_step_scalars)
        _accumulate_outputs = helper(_accumulate_outputs)
        _gemm_rows = helper(_gemm_rows)
        jit = numba.njit(cache=True, nogil=True, fastmath=flags)
        _KERNELS = (jit(_train_features), jit(_train_span))
    return _KERNELS


def _softplus(x):  # pragma: no cover - compiled
    """PyTorch's softplus (beta 1, threshold 20): x above 20, else log(1 + e^x)."""
    return x if x > 20.0 else math.log1p(math.exp(x))


def _log_logistic(v):  # pragma: no cover - compiled
    """log(log(1 + e^-v)) without underflow for large v (as ortho_lib.training._log_logistic)."""
    if v > 30.0:
        return -v + math.log1p(-0.5 * math.exp(-v))
    return math.log(_softplus(-v))


def _relu(z, zero):  # pragma: no cover - compiled
    """max(z, 0) in z's precision (``zero`` is 0 of that type), propagating nan as torch.relu does."""
    return zero if z <= zero else z


def _step_scalars(yf, y, n, t, e, hyper, opts, hist, out):  # pragma: no cover - compiled
    """The per-iterate bookkeeping shared by both kernels, from ``yf`` $= y_jN(x_j)$: the margin, the
    stopping rule, the loss when it is needed and the record.  Returns (done, record, loss): loss is nan
    unless it was needed (a record, the last iterate, or a loss that may be infinite); a non-finite loss
    marks the member diverged and stops it, as the reference raises."""
    margin = math.inf
    nan_seen = False
    for j in range(n):
        v = yf[j]
        if v < margin:
            margin = v
        if v != v:
            nan_seen = True
    if nan_seen:
        margin = math.nan
    done = (opts.has_target and margin >= hyper.target_margin[e]) or t >= hyper.max_steps[e]
    record = opts.record_every > 0 and (t % opts.record_every == 0 or done)
    loss = math.nan
    # the loss is finite whenever every y_j f_j > -1e300 (each term is at most |y_j f_j| + log 2)
    if done or record or not (margin > -1e300):
        acc = 0.0
        for j in range(n):
            acc += _softplus(-yf[j])
        loss = acc / n
        if not math.isfinite(loss):
            out.diverged[e] = True
            done = True
    if record:
        h = hist.length[e]
        hist.steps[e, h] = t
        hist.loss[e, h] = loss
        hist.margin[e, h] = margin
        mx = -math.inf
        for j in range(n):
            ll = _log_logistic(yf[j])
            if ll > mx:
                mx = ll
        acc = 0.0
        for j in range(n):
            acc += math.exp(_log_logistic(yf[j]) - mx)
        hist.log_loss[e, h] = mx + math.log(acc) - math.log(n)
        hist.length[e] = h + 1
    return done, record, loss


# --------------------------------------------------------------------------- the feature kernel

def _train_features(order, data, hyper, opts, state, out, hist):  # pragma: no cover - compiled
    r"""Train the members listed in ``order`` (int64 indices) in place, one after the other, in feature
    coordinates: ``data`` :class:`Features`, ``hyper`` :class:`Hyper`, ``opts`` :class:`Options`, ``state``
    :class:`FeatureState`, ``out`` :class:`Outputs`, ``hist`` :class:`History`."""
    E, k, m = state.W.shape
    n = data.F.shape[1]
    dt = state.W.dtype
    Z = np.empty((n, m), dt)   # Z[j, i] = z_i(x_j)
    gW = np.empty((k, m), dt)
    gb = np.empty(m, dt)
    gu = np.empty(m, dt)
    vW = np.empty((k, m), dt)
    vb = np.empty(m, dt)
    vu = np.empty(m, dt)
    h = np.empty(m, dt)
    yf = np.empty(n, dt)
    g = np.empty(n, dt)
    cast = np.zeros(5, dt)     # scalars rounded to the working precision
    zero = cast[4]
    for e in order:
        F = data.F[e if data.F.shape[0] > 1 else 0]
        y = data.y[e if data.y.shape[0] > 1 else 0]
        W, b, u = state.W[e], state.b[e], state.u[e]
        c = state.c[e]
        lr, wd, mo, pen = hyper.lr[e], hyper.weight_decay[e], hyper.momentum[e], hyper.norm_penalty[e]
        perp_sq = state.perp_sq[e]
        vW[:, :] = 0.0
        vb[:] = 0.0
        vu[:] = 0.0
        vc = 0.0
        a = 1.0  # Pi_perp W(t) = a Pi_perp W(0), and its heavy-ball coefficient ca
        ca = 0.0
        t = 0
        loss = math.nan
        while True:
            # forward: Z = F W + b (rows j), y_j f_j = y_j (u^T relu(z_j) + c)
            for j in range(n):
                Zj = Z[j]
                for i in range(m):
                    Zj[i] = b[i]
                for l in range(k):
                    x = F[j, l]
                    Wl = W[l]
                    for i in range(m):
                        Zj[i] += x * Wl[i]
                s = 0.0
                for i in range(m):
                    s += u[i] * _relu(Zj[i], zero)
                yf[j] = y[j] * (s + c)
            done, record, loss = _step_scalars(yf, y, n, t, e, hyper, opts, hist, out)
            if record:
                sq = a * a * perp_sq + c * c
                for i in range(m):
                    for l in range(k):
                        sq += W[l, i] * W[l, i]
                    sq += b[i] * b[i] + u[i] * u[i]
                h_ = hist.length[e] - 1
                hist.norm_sq[e, h_] = sq
                if opts.record_params:
                    hist.W[e, h_, :, :] = W
                    hist.b[e, h_, :] = b
                    hist.u[e, h_, :] = u
                    hist.c[e, h_] = c
                    hist.a[e, h_] = a
            if done:
                break
            # backward: G_ij = g_j u_i 1[z_ij > 0], accumulated as u_i sum_j g_j 1[z_ij > 0] (x_j, 1)
            gc = 0.0
            for j in range(n):
                gj = -y[j] / (1.0 + math.exp(yf[j])) / n
                g[j] = gj
                gc += gj
            gW[:, :] = 0.0
            gb[:] = 0.0
            gu[:] = 0.0
            for j in range(n):
                Zj = Z[j]
                gj = g[j]
                cast[0] = gj
                gjc = cast[0]
                for i in range(m):
                    hi = gjc if Zj[i] > zero else zero
                    h[i] = hi
                    gb[i] += hi
                if opts.train_u:
                    for i in range(m):
                        gu[i] += gjc * _relu(Zj[i], zero)
                for l in range(k):
                    x = F[j, l]
                    gWl = gW[l]
                    for i in range(m):
                        gWl[i] += x * h[i]
            for i in range(m):
                gb[i] *= u[i]
            for l in range(k):
                gWl = gW[l]
                for i in range(m):
                    gWl[i] *= u[i]
            # the norm penalty pen ||(W, b)||_F: gradient pen (W, b) / ||(W, b)|| (on b only if b is trained)
            pn = 0.0
            if opts.norm_penalty and pen > 0.0:
                sq = a * a * perp_sq
                for l in range(k):
                    for i in range(m):
                        sq += W[l, i] * W[l, i]
                for i in range(m):
                    sq += b[i] * b[i]
                nrm = math.sqrt(sq)
                if nrm > 0.0:
                    pn = pen / nrm
            cast[0] = lr
            cast[1] = wd
            cast[2] = mo
            cast[3] = pn
            lr_, wd_, mo_, pn_ = cast[0], cast[1], cast[2], cast[3]
            # update (every gradient above was taken at the current iterate)
            if opts.heavy_ball:
                for l in range(k):
                    Wl, vWl, gWl = W[l], vW[l], gW[l]
                    for i in range(m):
                        vWl[i] = mo_ * vWl[i] + (gWl[i] + pn_ * Wl[i] + wd_ * Wl[i])
                        Wl[i] -= lr_ * vWl[i]
                if opts.train_b:
                    for i in range(m):
                        vb[i] = mo_ * vb[i] + (gb[i] + pn_ * b[i] + wd_ * b[i])
                        b[i] -= lr_ * vb[i]
                if opts.train_u:
                    for i in range(m):
                        vu[i] = mo_ * vu[i] + (gu[i] + wd_ * u[i])
                        u[i] -= lr_ * vu[i]
                if opts.train_c:
                    vc = mo * vc + (gc + wd * c)
                    c -= lr * vc
                ca = mo * ca + (wd + pn) * a
                a = a - lr * ca
            else:
                for l in range(k):
                    Wl, gWl = W[l], gW[l]
                    for i in range(m):
                        Wl[i] -= lr_ * (gWl[i] + pn_ * Wl[i] + wd_ * Wl[i])
                if opts.train_b:
                    for i in range(m):
                        b[i] -= lr_ * (gb[i] + pn_ * b[i] + wd_ * b[i])
                if opts.train_u:
                    for i in range(m):
                        u[i] -= lr_ * (gu[i] + wd_ * u[i])
                if opts.train_c:
                    c -= lr * (gc + wd * c)
                a = a * (1.0 - lr * (wd + pn))
            t += 1
        state.c[e] = c
        out.steps[e] = t
        out.loss[e] = loss
        out.perp_factor[e] = a
        for j in range(n):
            out.yf[e, j] = yf[j]


# ------------------------------------------------------------------------------ the span kernel

def _accumulate_outputs(Z, u, zfix, f, i0, r, zero):  # pragma: no cover - compiled
    """f_j += sum_i u_i relu(Z_ij + zfix_i) over rows i0 .. i0 + r - 1, four rows per pass over f."""
    ii = 0
    while ii + 4 <= r:
        i = i0 + ii
        u0, u1, u2, u3 = u[i], u[i + 1], u[i + 2], u[i + 3]
        z0, z1, z2, z3 = zfix[i], zfix[i + 1], zfix[i + 2], zfix[i + 3]
        Z0, Z1, Z2, Z3 = Z[i], Z[i + 1], Z[i + 2], Z[i + 3]
        for j in range(f.shape[0]):
            f[j] += ((u0 * _relu(Z0[j] + z0, zero) + u1 * _relu(Z1[j] + z1, zero))
                     + (u2 * _relu(Z2[j] + z2, zero) + u3 * _relu(Z3[j] + z3, zero)))
        ii += 4
    while ii < r:
        i = i0 + ii
        ui, zi, Zi = u[i], zfix[i], Z[i]
        for j in range(f.shape[0]):
            f[j] += ui * _relu(Zi[j] + zi, zero)
        ii += 1


def _gemm_rows(Z, i0, r, D, K, ab):  # pragma: no cover - compiled
    """Z[i0:i0+r] <- ab[1] Z[i0:i0+r] + ab[0] D[:r] K (row-major; BLAS gemm through Numba's own wrapper, the
    one np.dot calls, with beta)."""
    n = K.shape[0]
    kind = 100 if Z.itemsize == 8 else 115  # 'd' or 's'
    # column-major view: C (n x r) = K^T (n x n) D^T (n x r), i.e. row-major C = D K
    _xxgemm(kind, 110, 110, n, r, n, ab[0:].ctypes, K.ctypes, n, D.ctypes, n, ab[1:].ctypes, Z[i0:].ctypes, n)


def _train_span(order, data, hyper, opts, state, out, hist, block):  # pragma: no cover - compiled
    r"""Train the members listed in ``order`` in place, one after the other, in span coordinates:
    ``data`` :class:`Gram`, ``state`` :class:`SpanState` (the rest as :func:`_train_features`); ``block``
    rows per product."""
    E, m, n = state.Z.shape
    dt = state.Z.dtype
    D = np.empty((block, n), dt)   # GD: -lr G of a block of rows
    f = np.empty(n, dt)            # u^T relu(Z) per point, for the current iterate
    yf = np.empty(n, dt)
    g = np.empty(n, dt)
    coef = np.empty(n, dt)
    vu = np.empty(m, dt)
    ab = np.ones(2, dt)            # alpha and beta of the products
    cast = np.zeros(7, dt)
    zero = cast[6]
    for e in order:
        K = data.K[e if data.K.shape[0] > 1 else 0]
        y = data.y[e if data.y.shape[0] > 1 else 0]
        Z, A, zfix, u = state.Z[e], state.A[e], state.zfix[e], state.u[e]
        B = state.B[e if state.B.shape[0] > 1 else 0]
        Z0 = state.Z0[e if state.Z0.shape[0] > 1 else 0]
        c = state.c[e]
        lr, wd, mo, pen = hyper.lr[e], hyper.weight_decay[e], hyper.momentum[e], hyper.norm_penalty[e]
        vu[:] = 0.0
        vc = 0.0
        a = 1.0
        ca = 0.0
        t = 0
        loss = math.nan
        f[:] = 0.0
        _accumulate_outputs(Z, u, zfix, f, 0, m, zero)
        while True:
            for j in range(n):
                yf[j] = y[j] * (f[j] + c)
            done, record, loss = _step_scalars(yf, y, n, t, e, hyper, opts, hist, out)
            need_norm = record or (opts.norm_penalty and pen > 0.0 and not done)
            wsq = 0.0
            if need_norm:  # ||W~||^2 = a^2 ||W~(0)||^2 + a <Z(0), A> + <Z, A>
                s0 = 0.0
                s1 = 0.0
                for i in range(m):
                    for j in range(n):
                        s0 += Z0[i, j] * A[i, j]
                        s1 += Z[i, j] * A[i, j]
                wsq = a * a * state.w0_sq[e] + a * s0 + s1
            if record:
                sq = wsq + state.fixed_sq[e] + c * c
                for i in range(m):
                    sq += u[i] * u[i]
                h_ = hist.length[e] - 1
                hist.norm_sq[e, h_] = sq
                if opts.record_params:
                    hist.W[e, h_, :, :] = A
                    hist.u[e, h_, :] = u
                    hist.c[e, h_] = c
                    hist.a[e, h_] = a
            if done:
                break
            gc = 0.0
            for j in range(n):
                gj = -y[j] / (1.0 + math.exp(yf[j])) / n
                g[j] = gj
                gc += gj
                coef[j] = -lr * gj
            pn = 0.0
            if opts.norm_penalty and pen > 0.0:
                nrm = math.sqrt(wsq + state.fixed_sq[e])
                if nrm > 0.0:
                    pn = pen / nrm
            fac = 1.0 - lr * (wd + pn)
            if opts.heavy_ball:
                ca = mo * ca + (wd + pn) * a
                a_next = a - lr * ca
            else:
                a_next = a * fac
            cast[0] = lr
            cast[1] = wd
            cast[2] = mo
            cast[3] = fac
            cast[4] = wd + pn
            cast[5] = a_next
            lr_, mo_, fac_, shrink_, anext_ = cast[0], cast[2], cast[3], cast[4], cast[5]
            ab[1] = 0.0 if opts.heavy_ball else fac_
            f[:] = 0.0
            for i0 in range(0, m, block):
                r = min(m, i0 + block) - i0
                for ii in range(r):
                    i = i0 + ii
                    ui, zf = u[i], zfix[i]
                    Zi, Ai = Z[i], A[i]
                    gui = 0.0
                    if opts.train_u:
                        for j in range(n):
                            gui += _relu(Zi[j] + zf, zero) * g[j]
                    if opts.heavy_ball:  # B <- mo B + G + (wd + pn) A;  A <- A - lr B
                        Bi = B[i]
                        for j in range(n):
                            gm = ui * g[j] if Zi[j] + zf > zero else zero
                            Bi[j] = mo_ * Bi[j] + gm + shrink_ * Ai[j]
                            Ai[j] -= lr_ * Bi[j]
                        if opts.train_u:
                            vu[i] = mo * vu[i] + (gui + wd * ui)
                            u[i] = ui - lr * vu[i]
                    else:  # D = -lr G;  A <- fac A + D
                        Di = D[ii]
                        for j in range(n):
                            d = ui * coef[j] if Zi[j] + zf > zero else zero
                            Di[j] = d
                            Ai[j] = fac_ * Ai[j] + d
                        if opts.train_u:
                            u[i] = ui - lr * (gui + wd * ui)
                if opts.heavy_ball:  # Z = a Z(0) + A K
                    _gemm_rows(Z, i0, r, A[i0:], K, ab)
                    for ii in range(r):
                        Zi, Z0i = Z[i0 + ii], Z0[i0 + ii]
                        for j in range(n):
                            Zi[j] += anext_ * Z0i[j]
                else:  # Z <- fac Z + D K
                    _gemm_rows(Z, i0, r, D, K, ab)
                _accumulate_outputs(Z, u, zfix, f, i0, r, zero)
            if opts.train_c:
                if opts.heavy_ball:
                    vc = mo * vc + (gc + wd * c)
                    c -= lr * vc
                else:
                    c -= lr * (gc + wd * c)
            a = a_next
            t += 1
        state.c[e] = c
        out.steps[e] = t
        out.loss[e] = loss
        out.perp_factor[e] = a
        for j in range(n):
            out.yf[e, j] = yf[j]


# ------------------------------------------------------------------------------- the driver

def workers_default() -> int:
    """Threads the fused backend uses: :data:`WORKERS` if set, else the cores this process may run on (not
    ``torch.get_num_threads()``, which the book's builds set to 1 for torch's own small operations)."""
    if WORKERS is not None:
        return max(1, int(WORKERS))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def step_cost(coordinates: str, m: int, n: int, k: int) -> float:
    r"""Estimated nanoseconds of one network-step (float64, one thread), fitted to the kernels' CPU time on
    this machine over $m \in \{50, 200, 1000\}$, $n \in \{7, \dots, 100\}$, $k \in \{2, \dots, 128\}$ (within
    about 30%): the feature kernel does $2mnk$ multiply-adds in hand-written loops; the span kernel does
    $mn^2$ in BLAS products (about three times faster per multiply-add) plus its elementwise passes, a
    cost per row and one BLAS call per block of :data:`ROW_BLOCK` rows."""
    if coordinates == "span":
        return 0.04 * m * n * n + 0.5 * m * n + 8.0 * m + 1000.0 * -(-m // ROW_BLOCK) + 25.0 * n
    return m * n * (0.33 * k + 0.4) + 25.0 * n


def choose_coordinates(coordinates: str, m: int, d: int, n: int, p: Optional[int], train_b: bool) -> str:
    r"""The coordinates asked for, or (``"auto"``) the faster per step by :func:`step_cost`: the features
    ($k = d$, or $k = \dim P$ when ``sub`` is given) or the span (cost independent of $d$).  The cost is
    continuous where the choice changes (both estimates agree there), so it has no step in $d$."""
    if coordinates != "auto":
        return coordinates
    k = d if p is None else p  # the bias is a separate vector in the feature kernel
    features = "full" if p is None else "subspace"
    return "span" if step_cost("span", m, n, k) < step_cost(features, m, n, k) else features


def _schedule(max_steps: np.ndarray, workers: int) -> list:
    """Members in chunks, longest budget first (so the queue ends with the short ones): about eight chunks
    per thread, so that threads stay balanced and each call has some work."""
    E = len(max_steps)
    order = np.argsort(-max_steps, kind="stable").astype(np.int64)
    size = max(1, E // (8 * workers))
    return [order[s: s + size] for s in range(0, E, size)]


def _run_threads(train, chunks: list, workers: int, args: tuple) -> None:
    """Run ``train(chunk, *args)`` for every chunk, ``workers`` threads taking chunks from one queue."""
    if workers == 1 or len(chunks) == 1:
        for ch in chunks:
            train(ch, *args)
        return
    lock = threading.Lock()
    queue = list(reversed(chunks))
    errors: list = []

    def worker() -> None:
        while True:
            with lock:
                if not queue or errors:
                    return
                ch = queue.pop()
            try:
                train(ch, *args)
            except BaseException as exc:  # pragma: no cover - re-raised below
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(workers, len(chunks)))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries (None without threadpoolctl)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - optional
        return None
    return ThreadpoolController()


class _OneBlasThread:
    """Context: the BLAS that the span kernel calls runs single-threaded (the kernel's own threads are the
    parallelism; a multi-threaded BLAS call inside them would wait for busy cores)."""

    def __enter__(self):
        ctl = _blas_controller()
        self._limit = None if ctl is None else ctl.limit(limits=1, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self._limit is not None:
            self._limit.restore_original_limits()
        return False


def _history(E: int, H: int, shape: tuple, m: int, opts: Options, dt) -> History:
    """Empty records for ``E`` members (``H`` each); parameter records only with ``record_params``."""
    P = H if opts.record_params else 1
    E_p = E if opts.record_params else 1
    return History(steps=np.zeros((E, H), np.int64), loss=np.zeros((E, H)), log_loss=np.zeros((E, H)),
                   margin=np.zeros((E, H)), norm_sq=np.zeros((E, H)), length=np.zeros(E, np.int64),
                   W=np.zeros((E_p, P) + (shape if opts.record_params else (1, 1)), dt),
                   b=np.zeros((E_p, P, m if opts.record_params else 1), dt),
                   u=np.zeros((E_p, P, m if opts.record_params else 1), dt),
                   c=np.zeros((E_p, P), dt), a=np.zeros((E_p, P)))


def run(problem):
    r"""Train every member of ``problem`` (a :class:`ortho_lib.training._Problem`) with the compiled kernels.

    Set-up (on the host, with torch): the features ($F = X$ or $XQ_P$) or the Gram matrix $\tilde K$ and
    $Z(0) = \tilde W(0)\tilde X^\top$.  Rebuilding: in subspace coordinates
    $W = a_T W(0) + (W_P - a_T W_P(0)) Q_P^\top$ (the frozen part $a_T\Pi_\perp W(0)$ without forming it);
    in span coordinates $W = a_T W(0) + A_T X$, $b = a_T b(0) + A_T\mathbf 1$ — one product per member,
    written into the result (no further stack of the weights).
    """
    import torch

    from .network import _unchecked
    from .training import TrainHistory, _Outcome

    t_start = time.perf_counter()
    cfg = problem.config
    p0 = problem.initial
    E, m, d = p0.W.shape
    home = p0.W.device
    dtype = problem.dtype or p0.W.dtype
    to = dict(device="cpu", dtype=dtype)
    X = problem.X.to(**to)
    yy = problem.y.to(**to).reshape(-1, problem.y.shape[-1]).contiguous()
    n = yy.shape[1]
    train_b, train_u, train_c = ("b" in cfg.trained), ("u" in cfg.trained), ("c" in cfg.trained)
    sub = problem.sub
    coords = choose_coordinates(problem.coordinates, m, d, n, None if sub is None else sub.dim, train_b)
    np_dt = np.float64 if dtype == torch.float64 else np.float32

    def per_member(name: str, kind=np_dt) -> np.ndarray:
        return np.array([0.0 if v is None else v for v in problem.per_member(name)], dtype=kind)

    hyper = Hyper(lr=per_member("lr", np.float64), weight_decay=per_member("weight_decay", np.float64),
                  momentum=per_member("momentum", np.float64), norm_penalty=per_member("norm_penalty", np.float64),
                  target_margin=per_member("target_margin", np.float64),
                  max_steps=per_member("max_steps", np.int64))
    record_every = 0 if cfg.record_every is None else cfg.record_every
    opts = Options(heavy_ball=cfg.optimizer == "momentum", train_b=train_b, train_u=train_u, train_c=train_c,
                   has_target=cfg.target_margin is not None, record_every=record_every,
                   record_params=bool(cfg.record_params), norm_penalty=bool((hyper.norm_penalty > 0).any()))
    H = (int(hyper.max_steps.max()) // record_every + 2) if record_every else 1
    out = Outputs(steps=np.zeros(E, np.int64), yf=np.zeros((E, n), np_dt), loss=np.zeros(E),
                  perp_factor=np.ones(E), diverged=np.zeros(E, np.bool_))
    W0 = p0.W.to(**to)
    b0 = p0.b.to(**to)
    u = p0.u.to(**to).clone().contiguous()
    c = p0.c.to(**to).clone().reshape(E).contiguous()
    Xt = X.transpose(-1, -2)
    train_features, train_span = kernels()
    macs_per_step = 0
    if coords == "span":
        # Z(0) = W(0) X^T (+ b(0) 1^T when b is trained: then b is a column of W~ and 1 a column of X~)
        if X.ndim == 2:
            Z = torch.matmul(W0, Xt)
            K = (X @ Xt).unsqueeze(0)
        else:
            Z = torch.bmm(W0, Xt)
            K = torch.bmm(X, Xt)
        if train_b:
            Z.add_(b0.unsqueeze(-1))
            K.add_(1.0)
            zfix = torch.zeros(E, m, **to)
        else:
            zfix = b0.contiguous()
        keep_z0 = opts.heavy_ball or opts.norm_penalty or record_every > 0  # Z(0) and the norms: only if needed
        Z0 = Z.clone() if keep_z0 else torch.zeros(1, 1, 1, **to)
        if opts.norm_penalty or record_every > 0:
            w0_sq = torch.linalg.vector_norm(W0, dim=(1, 2)).to(torch.float64) ** 2
            b_sq = torch.linalg.vector_norm(b0, dim=1).to(torch.float64) ** 2
        else:
            w0_sq = b_sq = torch.zeros(E, dtype=torch.float64)
        state = SpanState(
            Z=Z.numpy(), A=np.zeros((E, m, n), np_dt),
            B=np.zeros((E, m, n) if opts.heavy_ball else (1, 1, 1), np_dt), Z0=Z0.numpy(), zfix=zfix.numpy(),
            u=u.numpy(), c=c.numpy(), w0_sq=(w0_sq + b_sq if train_b else w0_sq).numpy(),
            fixed_sq=(torch.zeros(E, dtype=torch.float64) if train_b else b_sq).numpy())
        data = Gram(K=K.contiguous().numpy(), y=yy.numpy())
        hist = _history(E, H, (m, n), m, opts, np_dt)
        args = (data, hyper, opts, state, out, hist, ROW_BLOCK)
        train = train_span
        macs_per_step = m * n * n
    else:
        if coords == "subspace":
            Qp = sub.basis.to(**to)
            F = X @ Qp
            Wc0 = torch.matmul(W0, Qp)  # (E, m, p)
            perp = torch.stack([(W0[e] - Wc0[e] @ Qp.T).square().sum() for e in range(E)]).to(torch.float64)
        else:
            F, Wc0 = X, W0
            perp = torch.zeros(E, dtype=torch.float64)
        Wt = Wc0.transpose(1, 2).contiguous()  # (E, k, m): the working copy, neurons innermost
        state = FeatureState(W=Wt.numpy(), b=b0.clone().contiguous().numpy(), u=u.numpy(), c=c.numpy(),
                             perp_sq=perp.numpy())
        data = Features(F=F.reshape(-1, n, F.shape[-1]).contiguous().numpy(), y=yy.numpy())
        hist = _history(E, H, tuple(Wt.shape[1:]), m, opts, np_dt)
        args = (data, hyper, opts, state, out, hist)
        train = train_features
        macs_per_step = 2 * m * n * F.shape[-1]
    workers = max(1, min(workers_default(), E))
    chunks = _schedule(hyper.max_steps, workers)
    t_kernel, cpu_kernel = time.perf_counter(), time.process_time()
    if train is train_span:
        with _OneBlasThread():
            _run_threads(train, chunks, workers, args)
    else:
        _run_threads(train, chunks, workers, args)
    t_finish, cpu_kernel = time.perf_counter(), time.process_time() - cpu_kernel
    if bool(out.diverged.any()):
        e = int(np.flatnonzero(out.diverged)[0])
        raise FloatingPointError(f"training diverged: member {e} has a non-finite loss; lower lr")

    a = torch.from_numpy(out.perp_factor)  # tracked by the kernel: includes the norm penalty's shrinking
    a_dt = a.to(dtype)
    back = dict(device=home, dtype=dtype)  # the training precision, as the batched backend returns
    W = torch.empty(E, m, d, **to)
    if coords == "span":
        A = torch.from_numpy(state.A)
        for e in range(E):  # W = a W(0) + A X, one product per member into the result
            torch.addmm(W0[e], A[e], X if X.ndim == 2 else X[e], beta=float(a_dt[e]), out=W[e])
        b = a_dt.unsqueeze(-1) * b0 + A.sum(-1) if train_b else b0
    elif coords == "subspace":
        Wc = torch.from_numpy(state.W).transpose(1, 2)
        QpT = Qp.T
        for e in range(E):  # W = a W(0) + (W_P - a W_P(0)) Q_P^T
            torch.addmm(W0[e], Wc[e] - a_dt[e] * Wc0[e], QpT, beta=float(a_dt[e]), out=W[e])
        b = torch.from_numpy(state.b)
    else:
        W.copy_(torch.from_numpy(state.W).transpose(1, 2))
        b = torch.from_numpy(state.b)
    steps = torch.from_numpy(out.steps)
    margin = torch.from_numpy(out.yf).to(torch.float64).amin(dim=1)
    reached = margin >= torch.from_numpy(hyper.target_margin) if opts.has_target else torch.zeros(E, dtype=torch.bool)
    history = None
    if record_every:
        def cut(arr: np.ndarray, e: int) -> "torch.Tensor":
            return torch.from_numpy(arr[e, : hist.length[e]].copy())

        def recorded(e: int) -> Optional[tuple]:
            """The parameters at each record of member e, rebuilt in full coordinates as at the end."""
            if not opts.record_params:
                return None
            nets = []
            for h in range(int(hist.length[e])):
                a_h = float(hist.a[e, h])
                Wk = torch.from_numpy(hist.W[e, h])
                if coords == "span":
                    W_h = torch.addmm(W0[e], Wk, X if X.ndim == 2 else X[e], beta=a_h)
                    b_h = a_h * b0[e] + Wk.sum(-1) if train_b else b0[e].clone()
                elif coords == "subspace":
                    W_h = torch.addmm(W0[e], Wk.T - a_h * Wc0[e], Qp.T, beta=a_h)
                    b_h = torch.from_numpy(hist.b[e, h].copy())
                else:
                    W_h = Wk.T.contiguous()
                    b_h = torch.from_numpy(hist.b[e, h].copy())
                nets.append(_unchecked(W_h.to(**back), b_h.to(**back), torch.from_numpy(hist.u[e, h].copy()).to(**back),
                                       torch.from_numpy(hist.c[e, h: h + 1].copy()).reshape(()).to(**back)))
            return tuple(nets)

        history = tuple(TrainHistory(steps=cut(hist.steps, e), loss=cut(hist.loss, e), log_loss=cut(hist.log_loss, e),
                                     margin=cut(hist.margin, e), norm_sq=cut(hist.norm_sq, e), params=recorded(e))
                        for e in range(E))
    if problem.stats is not None:
        problem.stats.update(
            backend="fused", coordinates=coords, workers=workers, iterations=int(out.steps.max()) + 1,
            macs=int(out.steps.sum()) * macs_per_step, time_setup=t_kernel - t_start,
            time_kernel=t_finish - t_kernel, cpu_kernel=cpu_kernel, time_finish=time.perf_counter() - t_finish)
    return _Outcome(
        params=_unchecked(W.to(**back), b.to(**back), torch.from_numpy(state.u).to(**back),  # made here: no re-check
                          torch.from_numpy(state.c).to(**back)),
        steps=steps, reached=reached, final_margin=margin, final_loss=torch.from_numpy(out.loss),
        perp_factor=a, history=history, coordinates=coords)
