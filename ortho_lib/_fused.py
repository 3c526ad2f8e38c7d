r"""The fused CPU kernel of :func:`ortho_lib.engine.train_ensemble` (backend ``"fused"``).

For small networks a step of training is a few thousand floating-point operations, and a PyTorch
implementation spends almost all its time dispatching some thirty tiny tensor operations per step.  This
module compiles (with Numba) one loop that runs every step of every member's training, so a step costs
what its arithmetic costs.  It implements exactly the iteration of :func:`ortho_lib.train.train` in a
coordinate system where the first-layer weights act on features ``F`` (the inputs themselves, or their
coordinates in $P$; see :mod:`ortho_lib.engine`):

.. math:: Z = W F^\top + b\mathbf 1^\top,\quad f = u^\top\mathrm{relu}(Z) + c,\quad
          g_j = -y_j\,\mathrm{sigmoid}(-y_jf_j)/n,\quad G_{ij} = g_j u_i\,\mathbb 1[Z_{ij} > 0],

.. math:: \nabla_W = G F,\quad \nabla_b = G\mathbf 1,\quad \nabla_u = \mathrm{relu}(Z)\, g,\quad
          \nabla_c = \mathbf 1^\top g,

with GD $\theta \leftarrow \theta - \eta(\nabla + \lambda\theta)$ or heavy ball
$v \leftarrow \mu v + \nabla + \lambda\theta,\ \theta \leftarrow \theta - \eta v$ on the trained parameters,
the margin $\min_j y_jf_j$ checked before every update.  Members run one after the other on one core
(deterministic); every loop is written in "axpy" order (no reductions in the innermost loop) so that the
compiler vectorises it without reassociating sums.  The kernel is compiled on first use and cached on disk.
"""
from __future__ import annotations

import math

import numpy as np

try:  # numba is a dependency of ortho_lib; a missing install only disables this backend
    import numba

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None
    _HAVE_NUMBA = False


def available() -> bool:
    """Whether the fused backend can run (Numba is importable)."""
    return _HAVE_NUMBA


def _train_members(order, W, b, u, c, FT, y, eta, lam, mu, tgt, has_tgt, max_steps, momentum,
                   train_b, train_u, train_c, steps, yf_out, bad):  # pragma: no cover - compiled
    """Train the members listed in ``order`` in place, one after the other.

    Shapes: order ``(r,)`` int64 member indices; W ``(E, m, k)``; b, u ``(E, m)``; c ``(E,)``; FT
    ``(E_F, k, n)`` (``E_F`` is 1 for shared features, else E); y ``(E_y, n)``; eta, lam, mu, tgt ``(E,)``;
    has_tgt (bool); steps, bad ``(E,)`` outputs; yf_out ``(E, n)`` receives $y_jN(x_j)$ at each member's
    final iterate.  Members touch disjoint slices, so disjoint ``order`` lists may run in parallel threads.
    """
    E, m, k = W.shape
    n = FT.shape[2]
    Z = np.empty((m, n))
    G = np.empty((m, n))
    f = np.empty(n)
    g = np.empty(n)
    gW = np.empty((m, k))
    gb = np.empty(m)
    gu = np.empty(m)
    vW = np.empty((m, k))
    vb = np.empty(m)
    vu = np.empty(m)
    for e in order:
        F = FT[e if FT.shape[0] > 1 else 0]
        ye = y[e if y.shape[0] > 1 else 0]
        We, be, ue = W[e], b[e], u[e]
        ce = c[e]
        et, la, mo = eta[e], lam[e], mu[e]
        vW[:, :] = 0.0
        vb[:] = 0.0
        vu[:] = 0.0
        vc = 0.0
        t = 0
        while True:
            # forward: Z = W F^T + b, f = u^T relu(Z) + c
            for i in range(m):
                for j in range(n):
                    Z[i, j] = be[i]
                for l in range(k):
                    w = We[i, l]
                    for j in range(n):
                        Z[i, j] += w * F[l, j]
            for j in range(n):
                f[j] = 0.0
            for i in range(m):
                ui = ue[i]
                for j in range(n):
                    z = Z[i, j]
                    if z > 0.0:
                        f[j] += ui * z
            margin = math.inf
            finite = True
            for j in range(n):
                v = ye[j] * (f[j] + ce)
                yf_out[e, j] = v
                if v < margin:
                    margin = v
                if not math.isfinite(v):
                    finite = False
            if not finite:
                bad[e] = True
                break
            if (has_tgt and margin >= tgt[e]) or t >= max_steps:
                break
            # backward
            for j in range(n):
                v = yf_out[e, j]
                g[j] = -ye[j] * (1.0 / (1.0 + math.exp(v))) / n
            gc = 0.0
            for j in range(n):
                gc += g[j]
            for i in range(m):
                ui = ue[i]
                acc_b = 0.0
                acc_u = 0.0
                for j in range(n):
                    z = Z[i, j]
                    if z > 0.0:
                        G[i, j] = g[j] * ui
                        acc_u += z * g[j]
                    else:
                        G[i, j] = 0.0
                    acc_b += G[i, j]
                gb[i] = acc_b
                gu[i] = acc_u
                for l in range(k):
                    gW[i, l] = 0.0
                for j in range(n):
                    gij = G[i, j]
                    if gij != 0.0:
                        for l in range(k):
                            gW[i, l] += gij * F[l, j]
            # update (gradients above were all taken at the current iterate)
            if momentum:
                for i in range(m):
                    for l in range(k):
                        vW[i, l] = mo * vW[i, l] + (gW[i, l] + la * We[i, l])
                        We[i, l] -= et * vW[i, l]
                    if train_b:
                        vb[i] = mo * vb[i] + (gb[i] + la * be[i])
                        be[i] -= et * vb[i]
                    if train_u:
                        vu[i] = mo * vu[i] + (gu[i] + la * ue[i])
                        ue[i] -= et * vu[i]
                if train_c:
                    vc = mo * vc + (gc + la * ce)
                    ce -= et * vc
            else:
                for i in range(m):
                    for l in range(k):
                        We[i, l] -= et * (gW[i, l] + la * We[i, l])
                    if train_b:
                        be[i] -= et * (gb[i] + la * be[i])
                    if train_u:
                        ue[i] -= et * (gu[i] + la * ue[i])
                if train_c:
                    ce -= et * (gc + la * ce)
            t += 1
        c[e] = ce
        steps[e] = t


if _HAVE_NUMBA:
    train_members = numba.njit(cache=True, nogil=True)(_train_members)
else:  # pragma: no cover
    train_members = None
