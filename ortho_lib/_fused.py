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
the margin $\min_j y_jf_j$ checked before every update; optionally the norm penalty
$\mu\|(W,b)\|_F$, a recorded history and a budget per member.  One call trains its members one after
the other (the engine runs disjoint sets of members in parallel threads; the result does not depend on
the split).  The inner loops over a row are written in "axpy" order, so that the compiler can vectorise
them without reassociating sums.  The kernel is compiled on first use and cached on disk.
"""
from __future__ import annotations

import functools
import importlib.util
import math

import numpy as np

_KERNEL = None  # the compiled train_members, made by kernel() on first use


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether the fused backend can run (Numba is installed; it is imported only by :func:`kernel`)."""
    return importlib.util.find_spec("numba") is not None


def kernel():
    """The compiled :func:`_train_members` (Numba is imported and the kernel loaded from its cache or
    compiled here, on first use, not when :mod:`ortho_lib` is imported)."""
    global _KERNEL, _softplus
    if _KERNEL is None:
        if not available():
            raise ModuleNotFoundError("the fused backend needs numba (pip install numba)")
        import numba

        jit = numba.njit(cache=True, nogil=True)
        _softplus = jit(_softplus)  # a global the kernel calls: compiled first
        _KERNEL = jit(_train_members)
    return _KERNEL


def _softplus(x):  # pragma: no cover - compiled
    """PyTorch's softplus (beta 1, threshold 20): x above 20, else log(1 + e^x)."""
    return x if x > 20.0 else math.log1p(math.exp(x))


def _train_members(order, W, b, u, c, FT, y, eta, lam, mu, pen, perp_sq, tgt, has_tgt, budget, momentum,
                   train_b, train_u, train_c, record_every, steps, yf_out, loss_out, a_out, bad,
                   hist_t, hist_loss, hist_margin, hist_len):  # pragma: no cover - compiled
    r"""Train the members listed in ``order`` in place, one after the other.

    Shapes: order ``(r,)`` int64 member indices; W ``(E, m, k)``; b, u ``(E, m)``; c ``(E,)``; FT
    ``(E_F, k, n)`` (``E_F`` is 1 for shared features, else E); y ``(E_y, n)``; eta, lam, mu, pen (the
    norm-penalty weight), perp_sq ($\|\Pi_\perp W(0)\|_F^2$ when W holds coordinates in P, else 0), tgt
    ``(E,)`` float; budget ``(E,)`` int64; has_tgt (bool); record_every (0: no history).  Outputs: steps,
    bad ``(E,)``; yf_out ``(E, n)`` ($y_jN(x_j)$ at the final iterate); loss_out ``(E,)``; a_out ``(E,)``
    the factor with $\Pi_\perp W(T) = a_T\,\Pi_\perp W(0)$; hist_t, hist_loss, hist_margin ``(E, H)`` and
    hist_len ``(E,)``, recorded as :func:`ortho_lib.train.train` does (every ``record_every`` steps and at
    the last).  Members touch disjoint slices, so disjoint ``order`` lists may run in parallel threads.
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
        et, la, mo, pe = eta[e], lam[e], mu[e], pen[e]
        vW[:, :] = 0.0
        vb[:] = 0.0
        vu[:] = 0.0
        vc = 0.0
        a = 1.0  # Pi_perp W(t) = a Pi_perp W(0), and its momentum-buffer coefficient ca
        ca = 0.0
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
                    if not z <= 0.0:  # z > 0, or nan (relu propagates nan, as torch.relu does)
                        f[j] += ui * z
            margin = math.inf
            loss = 0.0
            for j in range(n):
                v = ye[j] * (f[j] + ce)
                yf_out[e, j] = v
                if v < margin:
                    margin = v
                loss += _softplus(-v)
            loss = loss / n
            loss_out[e] = loss
            if not math.isfinite(loss):
                bad[e] = True
                break
            done = (has_tgt and margin >= tgt[e]) or t >= budget[e]
            if record_every > 0 and (t % record_every == 0 or done):
                h = hist_len[e]
                hist_t[e, h] = t
                hist_loss[e, h] = loss
                hist_margin[e, h] = margin
                hist_len[e] = h + 1
            if done:
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
            # the norm penalty pen ||(W, b)||_F: gradient pen (W, b) / ||(W, b)|| (on b only if b is trained)
            pn = 0.0
            if pe > 0.0:
                sq = a * a * perp_sq[e]
                for i in range(m):
                    for l in range(k):
                        sq += We[i, l] * We[i, l]
                    sq += be[i] * be[i]
                nrm = math.sqrt(sq)
                if nrm > 0.0:
                    pn = pe / nrm
                    for i in range(m):
                        for l in range(k):
                            gW[i, l] += pe * We[i, l] / nrm
                        if train_b:
                            gb[i] += pe * be[i] / nrm
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
                ca = mo * ca + (la + pn) * a
                a = a - et * ca
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
                a = a * (1.0 - et * (la + pn))
            t += 1
        c[e] = ce
        steps[e] = t
        a_out[e] = a

