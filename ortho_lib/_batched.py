r"""The batched backend of :func:`ortho_lib.train`: many networks of equal shape in one tensor program.

Contract (kept by every backend): for each member ``e`` the same iterates as the reference loop of
:mod:`ortho_lib.training` run on member ``e`` alone with the same configuration (full batch, GD or
heavy-ball momentum, optional weight decay), each member stopping at its own first iterate whose train
margin reaches its target.  "The same" means equal in exact arithmetic; in float64 the two computations
round differently and agree to about $10^{-13}$ (tested to $10^{-12}$).

Why an exact reduction exists.  With $Z = XW^\top + b$ and $G = (g u^\top)\odot\mathbb 1[Z>0]$, the
first-layer gradient is $\nabla_W L = G^\top X$: every row is a combination of the training inputs.
Write $\tilde X = [X, \mathbf 1]$ and $\tilde W = [W, b]$ when the bias is trained.  Under GD or heavy-ball
momentum with weight decay $\lambda$ every iterate therefore has the form

.. math:: \tilde W(t) = a_t\,\tilde W(0) + A_t\,\tilde X, \qquad A_t \in \mathbb R^{m\times n},

with a scalar $a_t$ ($a_t = \prod_s (1-\eta_s\lambda)$ for GD, a two-term recursion for momentum,
$a_t = 1$ without weight decay).  Three coordinate systems follow (``coordinates``):

* ``"full"`` — train $W$ in $\mathbb R^{m\times d}$ (the plain iteration, batched over members).
* ``"subspace"`` — data in $P$ (``sub`` given): with $Q_P$ the ``(d, d-ell)`` basis of $P$ and
  $X = X_P Q_P^\top$, train $W_P = W Q_P$ in $\mathbb R^{m\times(d-\ell)}$ on $X_P$ (so
  $Z = X_P W_P^\top + b$ exactly) and rebuild $W = W_P Q_P^\top + a_T\,\Pi_\perp W(0)$: the frozen-component
  lemma, $\Pi_\perp W(T) = a_T\,\Pi_\perp W(0)$.
* ``"span"`` — the data-span (Gram) coordinates: with the $n\times n$ Gram matrix
  $\tilde K = \tilde X\tilde X^\top$, $Z^\top = a_t Z(0)^\top + A_t \tilde K$.  GD updates
  $A \leftarrow (1-\eta\lambda)A - \eta G^\top$ and, in place,
  $Z^\top \leftarrow (1-\eta\lambda)Z^\top - \eta\, G^\top \tilde K$ (heavy ball recomputes $Z$ from
  $A$ each step).  One $m\times n\times n$ product per step instead of two $m\times n\times d$
  products; $W(T) = a_T W(0) + A_T X$ at the end.  No data assumption is needed: the frozen part is the
  complement of $\mathrm{span}\{x_j\}$, which contains $P^\perp$ when the data lie in $P$.
* ``"auto"`` — whichever of the available systems needs the fewest multiply-adds per step.

Members are stacked into ``(E, m, k)`` tensors and trained together with batched matrix products and a
hand-written forward/backward pass (no autograd); each member's stopping rule is checked before each of
its updates, exactly as in the reference, and a member that has stopped is frozen (its update is
masked) and dropped from the batch once enough members have stopped.  On the CPU the batch is processed
in chunks of members small enough to stay in cache.  Works on CUDA in float32 or float64.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from .network import _unchecked
from .subspaces import Subspace

# CPU: members per chunk chosen so that one (members, m, n) work array is about this many bytes,
# small enough that the few arrays touched by one step of a chunk stay in the shared L3 cache.
_CHUNK_BYTES = 2 * 2**20
# Drop stopped members from the batch once at most this fraction of the working batch is still training.
_COMPACT_FRACTION = 0.75
# On CUDA, synchronise with the host (to test "all members stopped") every this many iterations.
_CUDA_SYNC_EVERY = 16


def _resolve_device(device: Optional[Union[str, torch.device]], default: torch.device) -> torch.device:
    if device is None:
        return default
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu', 'cuda', 'auto' or a torch.device, got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA was requested but torch.cuda.is_available() is False")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a CPU or CUDA device, got {device!r}")
    return dev


def choose_coordinates(coordinates: str, d: int, n: int, sub: Optional[Subspace]) -> str:
    """The coordinates asked for, or (``"auto"``) the system with the fewest multiply-adds per step."""
    if coordinates != "auto":
        return coordinates
    cost = {"full": 2 * d, "span": n}
    if sub is not None:
        cost["subspace"] = 2 * sub.dim
    return min(cost, key=lambda k: (cost[k], ("span", "subspace", "full").index(k)))


def run(problem) -> "object":
    r"""Train every member of ``problem`` (a :class:`ortho_lib.training._Problem`) with batched tensor programs."""
    from .training import _Outcome

    cfg = problem.config
    W0, b0, u0, c0 = problem.initial.W, problem.initial.b, problem.initial.u, problem.initial.c
    E, m, d = W0.shape
    home = W0.device
    dev = _resolve_device(problem.device, home)
    dtype = problem.dtype or W0.dtype
    X, y, sub, stats = problem.X, problem.y, problem.sub, problem.stats
    shared = X.ndim == 2
    n = X.shape[-2]
    optimizer = cfg.optimizer
    train_bias, train_second_layer, train_output_bias = ("b" in cfg.trained), ("u" in cfg.trained), ("c" in cfg.trained)
    lrs = problem.per_member("lr")
    wds = problem.per_member("weight_decay")
    mus = problem.per_member("momentum")
    budgets = problem.per_member("max_steps")
    max_steps = max(budgets)
    targets = None if cfg.target_margin is None else problem.per_member("target_margin")
    chosen = choose_coordinates(problem.coordinates, d, n, sub)

    # ---------------------------------------------------------------- move everything to (dev, dtype)
    to = dict(device=dev, dtype=dtype)
    W0d, b0d, u0d, c0d = W0.to(**to), b0.to(**to), u0.to(**to), c0.to(**to)
    Xd = X.to(**to)
    yd = y.to(**to)
    if yd.ndim == 1:
        yd = yd.expand(E, n)  # shared labels: a view
    tgt = None if targets is None else torch.tensor(targets, **to)
    any_wd = any(v > 0 for v in wds)
    st = _Stats(stats)

    # Per-member state, one leading axis of size E_work (the members still in the batch).
    S: dict[str, Tensor] = {}
    mats: dict[str, Tensor] = {}  # shared data matrices (no member axis) or per-member with axis
    if chosen == "span":
        XT = Xd.transpose(-1, -2)
        K = Xd @ XT  # (n, n) or (E, n, n): the Gram matrix; + 1 for the bias coordinate when b is trained
        if train_bias:
            K = K + 1.0
        Zw0 = torch.empty(E, m, n, **to)
        _mm_into(Zw0, b0d.unsqueeze(-1) if train_bias else None, W0d, XT, st)  # Z(0)^T = W(0) X^T (+ b(0))
        if not train_bias:
            S["zfix"] = b0d.unsqueeze(-1).clone()
        if optimizer == "gd":
            # GD tracks Z itself: Z <- fac (Z - zfix) + zfix + (G^T diag) K, updated in place each step
            S["Z"] = Zw0 if train_bias else Zw0.add_(S["zfix"])
        else:
            # momentum recomputes Z = a Z_W(0) + zfix + A K each step from the coefficients
            S["Zw0"] = Zw0 if (train_bias or any_wd) else Zw0 + S["zfix"]
        S["A"] = torch.zeros(E, m, n, **to)
        if optimizer == "momentum":
            S["B"] = torch.zeros(E, m, n, **to)
        mats["K"] = K
    else:
        if chosen == "subspace":
            Qp = sub.basis.to(**to)
            F = Xd @ Qp  # (n, k) or (E, n, k): the coordinates X_P of the inputs in P
            Wc = W0d @ Qp
            mats["Wc0"] = Wc.clone()  # W_P(0), to rebuild W = a W(0) + (W_P - a W_P(0)) Q_P^T at the end
            st.mm(1, E * m, d, Qp.shape[1])
            mats["Qp"] = Qp
        else:
            F = Xd
            Wc = W0d.clone()
        mats["F"] = F
        mats["FT"] = F.transpose(-1, -2)
        S["Wc"] = Wc
        S["b"] = b0d.clone()
        if optimizer == "momentum":
            S["bW"] = torch.zeros_like(Wc)
            S["bb"] = torch.zeros_like(S["b"])
    S["u"] = u0d.clone()
    if optimizer == "momentum" and train_second_layer:
        S["bu"] = torch.zeros_like(S["u"])
    S["c"] = c0d.clone()
    if optimizer == "momentum" and train_output_bias:
        S["bc"] = torch.zeros_like(S["c"])
    S["a"] = torch.ones(E, **to)   # coefficient of the initial weights (the exact perp factor)
    S["ca"] = torch.zeros(E, **to)  # its momentum-buffer coefficient
    # per-member hyperparameters, named as in TrainConfig
    S["lr"] = torch.tensor(lrs, **to)
    S["weight_decay"] = torch.tensor(wds, **to)
    S["momentum"] = torch.tensor(mus, **to)
    S["budget"] = torch.tensor(budgets, dtype=torch.long, device=dev)
    if tgt is not None:
        S["tgt"] = tgt
    if not shared:
        S["Xmat"] = mats.pop("K") if chosen == "span" else mats["F"]
        if chosen != "span":
            mats.pop("F")
            S["XmatT"] = mats.pop("FT")
    S["y"] = yd
    S["idx"] = torch.arange(E, device=dev)
    S["active"] = torch.ones(E, dtype=torch.bool, device=dev)
    S["fmargin"] = torch.full((E,), float("nan"), **to)
    S["floss"] = torch.full((E,), float("nan"), **to)
    S["reached"] = torch.zeros(E, dtype=torch.bool, device=dev)
    S["steps"] = torch.zeros(E, dtype=torch.long, device=dev)
    S["bad"] = torch.zeros(E, dtype=torch.bool, device=dev)

    width = n if chosen == "span" else max(n, S["Wc"].shape[-1])
    itemsize = torch.finfo(dtype).bits // 8
    chunk = E if dev.type == "cuda" else max(1, _CHUNK_BYTES // max(1, m * width * itemsize))
    if stats is not None:
        stats["coordinates"] = chosen
        stats["backend"] = "batched"
        stats["chunk_members"] = int(min(chunk, E))

    final: dict[str, Tensor] = {}  # full-size results, filled when members leave the batch (see _store)
    # work buffers for one chunk (GD in span coordinates updates its state Z in place: no Z buffer)
    Zbuf = torch.empty(0 if (chosen == "span" and optimizer == "gd") else min(chunk, E), m, n, **to)
    Hbuf = torch.empty(min(chunk, E), m, n, **to)
    Dbuf = torch.empty(min(chunk, E), m, n, **to)
    Kbuf = torch.empty(min(chunk, E) if (chosen == "span" and optimizer == "gd") else 0, n, n, **to)

    t = 0
    while True:
        Ew = S["idx"].shape[0]
        last = t >= max_steps  # every budget is spent: evaluate, do not update
        YF = torch.empty(Ew, n, **to)  # y_j N(x_j) of every member at its current iterate
        for s0 in range(0, Ew, chunk):
            s1 = min(Ew, s0 + chunk)
            _iteration(S, mats, slice(s0, s1), t, last, chosen, optimizer, train_bias, train_second_layer,
                       train_output_bias, any_wd, shared, YF, Zbuf[: s1 - s0], Hbuf[: s1 - s0], Dbuf[: s1 - s0],
                       Kbuf[: s1 - s0], st)
        _bookkeeping(S, YF, t)
        t += 1
        if stats is not None:
            stats["iterations"] += 1
        if dev.type == "cuda" and t % _CUDA_SYNC_EVERY and t <= max_steps:
            continue
        if bool(S["bad"].any()):
            e = int(S["idx"][S["bad"]][0])
            raise FloatingPointError(f"training diverged: member {e} has a non-finite loss; lower lr")
        n_act = int(S["active"].sum())
        if n_act == 0:
            break
        if n_act <= _COMPACT_FRACTION * Ew:
            _compact(S, final, chosen)
    _store(S, final, chosen)

    # ------------------------------------------------------------------------- rebuild full weights
    # One product per member written into the result, beta = a_T: no further (E, m, d) stack.
    if chosen == "span":
        # W(T) = a_T W(0) + A_T X and b(T) = a_T b(0) + A_T 1 (b(0) when the bias is not trained)
        W = torch.empty(E, m, d, **to)
        for e in range(E):
            torch.addmm(W0d[e], final["A"][e], Xd if shared else Xd[e], beta=float(final["a"][e]), out=W[e])
        st.mm(E, m, n, d)
        b = final["a"].unsqueeze(-1) * b0d + final["A"].sum(-1) if train_bias else b0d
    elif chosen == "subspace":
        # W(T) = W_P(T) Q_P^T + a_T Pi_perp W(0) = a_T W(0) + (W_P(T) - a_T W_P(0)) Q_P^T
        W = torch.empty(E, m, d, **to)
        QpT = mats["Qp"].T
        for e in range(E):
            a_e = final["a"][e]
            torch.addmm(W0d[e], final["Wc"][e] - a_e * mats["Wc0"][e], QpT, beta=float(a_e), out=W[e])
        st.mm(E, m, QpT.shape[0], d)
        b = final["b"]
    else:
        W = final["Wc"]
        b = final["b"]
    return _Outcome(
        params=_unchecked(W.to(home), b.to(home), final["u"].to(home), final["c"].to(home)),  # made here: no re-check
        steps=final["steps"].cpu(),
        reached=final["reached"].cpu(),
        final_margin=final["fmargin"].to(device="cpu", dtype=torch.float64),
        final_loss=final["floss"].to(device="cpu", dtype=torch.float64),
        perp_factor=None, history=None, coordinates=chosen,
    )




# ------------------------------------------------------------------------------------------ helpers

class _Stats:
    """Optional record of the matrix products the engine performs (for FLOP counts)."""

    def __init__(self, target: Optional[dict]):
        self.d = target
        if target is not None:
            target.setdefault("matmuls", {})
            target.setdefault("iterations", 0)

    def mm(self, batch: int, M: int, K: int, N: int) -> None:
        if self.d is not None:
            key = (int(batch), int(M), int(K), int(N))
            self.d["matmuls"][key] = self.d["matmuls"].get(key, 0) + 1


def _mm_into(out: Tensor, base: Optional[Tensor], A: Tensor, B: Tensor, stats: _Stats) -> Tensor:
    r"""``out = base + A @ B`` (``base`` None, ``out`` itself, or broadcastable ``(e, r, n)``/``(e, r, 1)``).

    ``A`` is ``(e, r, k)``; ``B`` is ``(k, n)`` shared by all members (one flat ``(e r) x k x n`` product)
    or ``(e, k, n)`` (a batched product).
    """
    e, r, k = A.shape
    n = B.shape[-1]
    if B.ndim == 2:
        o2 = out.view(e * r, n)
        A2 = A.reshape(e * r, k)
        if base is None:
            torch.mm(A2, B, out=o2)
        elif base is out:
            o2.addmm_(A2, B)
        else:
            torch.addmm(base.reshape(e * r, base.shape[-1]), A2, B, out=o2)
        stats.mm(1, e * r, k, n)
    else:
        if base is None:
            torch.bmm(A, B, out=out)
        elif base is out:
            out.baddbmm_(A, B)
        else:
            torch.baddbmm(base.expand(e, r, n), A, B, out=out)
        stats.mm(e, r, k, n)
    return out



# State kept at the end, per mode, and the book-keeping of the stopping rule.
_OUT_KEYS = {"span": ["A", "a", "u", "c"], "subspace": ["Wc", "b", "u", "c", "a"],
             "full": ["Wc", "b", "u", "c", "a"]}
_BOOK_KEYS = ["fmargin", "floss", "reached", "steps"]


def _store(S: dict[str, Tensor], final: dict[str, Tensor], coordinates: str) -> None:
    """Write the working members' state into the full-size results.  The first time, every member is still
    in the batch and the state tensors themselves become the results (no copy): a compaction then replaces
    them in ``S`` by gathered copies and never writes into them again."""
    idx = S["idx"]
    for key in _OUT_KEYS[coordinates] + _BOOK_KEYS:
        if key not in S:
            continue
        if key not in final:
            final[key] = S[key]
        else:
            final[key][idx] = S[key]


def _compact(S: dict[str, Tensor], final: dict[str, Tensor], coordinates: str) -> None:
    """Store every working member, then keep only the active ones in the batch (exact: a gather)."""
    _store(S, final, coordinates)
    keep = S["active"].nonzero().flatten()
    for key, v in list(S.items()):
        S[key] = v.index_select(0, keep)


def _bookkeeping(S: dict[str, Tensor], YF: Tensor, t: int) -> None:
    """The stopping rule for the whole batch, after an iteration: record the members that stop now.

    A member stops at its first evaluated iterate whose margin reaches its target (or when the budget is
    spent); it was not updated in this iteration (see :func:`_iteration`), so its state is that iterate.
    """
    act_prev = S["active"]
    margin = YF.amin(dim=1)
    loss = torch.nn.functional.softplus(-YF).mean(dim=1)  # the logistic loss, as in train()
    reached = (margin >= S["tgt"]) if "tgt" in S else torch.zeros_like(act_prev)
    done = reached | (S["budget"] <= t)  # this iterate is the member's first reaching its target, or its last
    newly = act_prev & done
    S["fmargin"] = torch.where(newly, margin, S["fmargin"])
    S["floss"] = torch.where(newly, loss, S["floss"])
    S["reached"] = S["reached"] | (newly & reached)
    S["bad"] = S["bad"] | (act_prev & ~torch.isfinite(loss))
    act = act_prev & ~done
    S["active"] = act
    S["steps"] = S["steps"] + act.to(torch.long)


def _iteration(S: dict[str, Tensor], mats: dict[str, Tensor], sl: slice, t: int, last: bool, mode: str,
               optimizer: str, train_bias: bool, train_u: bool, train_c: bool, any_wd: bool, shared: bool,
               YF: Tensor, Z: Tensor, H: Tensor, D: Tensor, Kg: Tensor, st: _Stats) -> None:
    r"""One iteration on a chunk of members: evaluate the margin and, for members still training, update.

    The margin $\min_j y_jN(x_j)$ is evaluated before the update, exactly as in ``train()``: a member whose
    margin reaches its target now gets no update (its step is masked) and stops at this iterate.
    """
    u = S["u"][sl]
    ec, m = u.shape
    # ---------------------------------------------------------------- forward: Z (ec, m, n), H = relu(Z)
    if mode == "span":
        K = mats["K"] if shared else S["Xmat"][sl]
        if optimizer == "gd":
            Z = S["Z"][sl]  # the state itself (updated in place below)
        else:
            if any_wd:
                base = S["Zw0"][sl] * S["a"][sl].view(ec, 1, 1)
                if "zfix" in S:
                    base = base + S["zfix"][sl]
            else:
                base = S["Zw0"][sl]
            _mm_into(Z, base, S["A"][sl], K, st)
    else:
        FT = mats["FT"] if shared else S["XmatT"][sl]
        _mm_into(Z, S["b"][sl].unsqueeze(-1), S["Wc"][sl], FT, st)
    torch.clamp_min(Z, 0.0, out=H)
    f = torch.bmm(u.unsqueeze(1), H).squeeze(1) + S["c"][sl].unsqueeze(-1)  # N(x_j) = u^T relu(z_j) + c
    st.mm(ec, 1, m, H.shape[-1])
    y = S["y"][sl]
    n = y.shape[-1]
    yf = y * f
    YF[sl] = yf
    if last:
        return
    # ---------------------------------------------------------------- the stopping rule (before the update)
    act = S["active"][sl] & (S["budget"][sl] > t)
    if "tgt" in S:
        act = act & ~(yf.amin(dim=1) >= S["tgt"][sl])
    # ---------------------------------------------------------------- backward and update
    g = -y * torch.sigmoid(-yf) / n  # dL/df_j, as in ortho_lib.train.loss_and_grads
    actf = act.to(Z.dtype)
    lr = S["lr"][sl] * actf  # zero for members that have stopped: their update is masked
    weight_decay = S["weight_decay"][sl]
    torch.sign(H, out=D)
    D.mul_(u.unsqueeze(-1))  # D_ij = u_i 1[z_ij > 0]
    grad_u = torch.bmm(H, g.unsqueeze(-1)).squeeze(-1) if train_u else None  # H^T g
    if train_u:
        st.mm(ec, m, n, 1)
    if optimizer == "gd":
        fac = 1.0 - lr * weight_decay
        if mode == "span":
            A = S["A"][sl]
            coef = -lr.unsqueeze(-1) * g  # (ec, n): -lr g_j, zero for stopped members
            if any_wd:
                A.mul_(fac.view(ec, 1, 1))
                if "zfix" in S:
                    Z.sub_(S["zfix"][sl]).mul_(fac.view(ec, 1, 1)).add_(S["zfix"][sl])
                else:
                    Z.mul_(fac.view(ec, 1, 1))
            A.addcmul_(D, coef.unsqueeze(1))  # A <- (1 - lr weight_decay) A - lr G^T
            # Z^T <- (1 - lr weight_decay) Z^T - lr G^T K = ... + D diag(-lr g) K  (one batched product)
            torch.mul(coef.unsqueeze(-1), K, out=Kg)  # (ec, n, n): row j of K scaled by -lr g_j
            _mm_into(Z, Z, D, Kg, st)
        else:
            Wc, b = S["Wc"][sl], S["b"][sl]
            D.mul_((-lr.unsqueeze(-1) * g).unsqueeze(1))  # -lr G^T, shape (ec, m, n)
            if any_wd:
                Wc.mul_(fac.view(ec, 1, 1))
            _mm_into(Wc, Wc, D, mats["F"] if shared else S["Xmat"][sl], st)
            if train_bias:
                if any_wd:
                    b.mul_(fac.unsqueeze(-1))
                b.add_(D.sum(-1))
        if any_wd:
            S["a"][sl] = S["a"][sl] * fac
        if train_u:
            S["u"][sl] = u * fac.unsqueeze(-1) - lr.unsqueeze(-1) * grad_u
        if train_c:
            S["c"][sl] = S["c"][sl] * fac - lr * g.sum(-1)
    else:  # heavy ball: v <- momentum v + grad + weight_decay theta; theta <- theta - lr v
        momentum = S["momentum"][sl]
        if mode == "span":
            A, B = S["A"][sl], S["B"][sl]
            B.mul_(momentum.view(ec, 1, 1)).addcmul_(D, g.unsqueeze(1))
            if any_wd:
                B.addcmul_(A, weight_decay.view(ec, 1, 1))
            A.addcmul_(B, -lr.view(ec, 1, 1))
        else:
            Wc, b, bW, bb = S["Wc"][sl], S["b"][sl], S["bW"][sl], S["bb"][sl]
            D.mul_(g.unsqueeze(1))  # G^T
            bW.mul_(momentum.view(ec, 1, 1))
            _mm_into(bW, bW, D, mats["F"] if shared else S["Xmat"][sl], st)
            if any_wd:
                bW.addcmul_(Wc, weight_decay.view(ec, 1, 1))
            Wc.addcmul_(bW, -lr.view(ec, 1, 1))
            if train_bias:
                bb.mul_(momentum.unsqueeze(-1)).add_(D.sum(-1))
                if any_wd:
                    bb.addcmul_(b, weight_decay.unsqueeze(-1))
                b.addcmul_(bb, -lr.unsqueeze(-1))
        if any_wd:
            ca = momentum * S["ca"][sl] + weight_decay * S["a"][sl]
            S["ca"][sl] = ca
            S["a"][sl] = S["a"][sl] - lr * ca
        if train_u:
            bu = S["bu"][sl]
            bu.mul_(momentum.unsqueeze(-1)).add_(grad_u)
            if any_wd:
                bu.addcmul_(u, weight_decay.unsqueeze(-1))
            S["u"][sl] = u - lr.unsqueeze(-1) * bu
        if train_c:
            cc = S["c"][sl]
            bc = momentum * S["bc"][sl] + g.sum(-1)
            if any_wd:
                bc = bc + weight_decay * cc
            S["bc"][sl] = bc
            S["c"][sl] = cc - lr * bc


