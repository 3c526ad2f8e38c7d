r"""Benchmark: the training engine (``ortho_lib.train``, backend ``"auto"``) against the strongest references
a competent researcher would write, measured in one process (``make bench``; a few minutes).

Workloads
---------
* **fig2** — the book's heaviest sweep, Figure 2 of ``book/figures.md`` exactly as the chapter runs it:
  8 networks of width 100 on the 7 points of the paper's line in $\mathbb R^2$, $W, b, u, c$ trained by
  full-batch GD (``lr = 0.02``) until the train margin reaches 0.3 or 40 000 steps; four initial scales
  $\kappa$ and four weight decays (172 270 network-steps).
* **paper** — a Theorem A sweep at the paper's scale: ``d = m = 1000``, ``n = 100`` points in a subspace of
  dimension 500, GD (``lr = 0.004``) with $u$ fixed for a fixed budget (so float32 and float64 make the
  same number of steps).  Only the span part of the weights moves, so the work that must be done is one
  $m\times n\times n$ product per network-step: ``needed FLOPs = 2 m n^2`` per network-step.
* **switch** — the cost per network-step as ``d`` crosses the old backend switch (``m = 200, n = 20``: the
  old engine switched from the compiled kernel to the batched program at ``d = 51``) and the compiled
  backend's own switch between feature and span coordinates; a step up in cost there would show here.
* **contention** — the paper workload on two threads, alone and with one other CPU-bound process on the
  machine, for the engine and the best two-thread reference.

References (each checked for equal results: equal step counts, and final weights equal to a relative
$10^{-9}$ in float64; float32 rows report their agreement with float64)
* ``numpy`` — a hand-batched numpy step: all members in ``(E, m, d)`` arrays, hand-written forward and
  backward, full space, per-member stopping (stopped members are dropped from the batch).
* ``torch`` — the same step in eager PyTorch (batched matmuls, hand-written backward).
* ``torch.compile`` — the torch step compiled by inductor (``--compile``: its compilation takes about a
  minute here, and the issue measured it slower than the numpy step on fig2).
* ``torch-loop`` — per network, ``nn.Linear`` + ReLU + ``nn.Linear`` with ``torch.optim.SGD`` and autograd
  (fig2 only, timed on one member for 2 000 steps and scaled per network-step; for information).

What is reported, per workload, dtype and thread count (1 and 2): the engine's wall time (median of
``--repeats``, at least 3 runs), split into set-up (moving data, Gram matrix, rebuilding $W$) and the
steady state (the compiled loop); every reference's time; ``speedup_vs_best_reference`` = the fastest
reference at the same dtype and at most the same number of threads, divided by the engine; and
``fraction_of_limit`` = needed FLOPs / (steady-state time x the best GEMM rate measured in this run at the
same thread count and dtype), which cannot exceed 1.  The best GEMM rate is the largest of ``torch.mm``
and numpy ``dot`` on a 1024-cube, on the step's product ``(m, n) x (n, n)`` and on its row blocks
``(64, n) x (n, n)``, and, on two threads, of two concurrent single-thread streams of those blocks.

The machine: the load average before and after, the CPU time other processes took during the run, and a
warning when the machine was busy (timings then are not reliable; rerun on a quiet machine).  CPU time
of this process over wall time is printed with every engine row (it falls below 1 per thread when another
job takes the cores).  This is a benchmark, not a test: nothing asserts a time.  The exit status is 1 only
if a reference and the engine disagree.  ``--quick`` is a seconds-long smoke run at small shapes.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import math
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

import ortho_lib as ol
from ortho_lib import _fused

print = functools.partial(print, flush=True)  # noqa: A001 (progress visible when piped)

BUSY_FRACTION = 0.10   # warn when other processes took more than this share of the machine's CPU time
BUSY_LOAD = 1.5        # ... or, where /proc/stat cannot say, when the 1-minute load average was above this at
                       # the start (the load average also counts jobs that ended in the last minutes)
REL_TOL = 1e-9         # float64 agreement of final weights (observed 1e-15 to 1e-12)
F32_TOL = 1e-3         # float32 against float64, relative


# ----------------------------------------------------------------------------------- the machine

def _proc_stat() -> Optional[tuple[float, float]]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat") as fh:
            parts = fh.readline().split()[1:]
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    vals = [float(v) / ticks for v in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)
    return sum(vals) - idle, sum(vals)


class Machine:
    """Load average and the CPU time other processes take, from the start of the run."""

    def __init__(self) -> None:
        self.load_start = os.getloadavg()
        self.stat0 = _proc_stat()
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()
        self.excluded = 0.0  # CPU seconds of deliberate competitors (the contention section)

    def others(self) -> float:
        """Share of the machine's CPU capacity used by other processes since the start."""
        s = _proc_stat()
        if s is None or self.stat0 is None:
            return float("nan")
        busy = s[0] - self.stat0[0]
        ours = time.process_time() - self.cpu0 + self.excluded
        cap = (s[1] - self.stat0[1])
        return max(0.0, busy - ours) / max(cap, 1e-9)


@contextlib.contextmanager
def threads(k: int):
    """Run with ``k`` threads everywhere: torch, the BLAS numpy uses, and the engine's compiled kernels."""
    from threadpoolctl import threadpool_limits

    before_t, before_w = torch.get_num_threads(), _fused.WORKERS
    torch.set_num_threads(k)
    _fused.WORKERS = k
    try:
        with threadpool_limits(limits=k, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before_t)
        _fused.WORKERS = before_w


@dataclass
class Timing:
    """Wall and CPU seconds of repeated runs; the median run is reported."""

    wall: list = field(default_factory=list)
    cpu: list = field(default_factory=list)
    extra: list = field(default_factory=list)

    def add(self, wall: float, cpu: float, extra: Optional[dict] = None) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)
        self.extra.append(extra or {})

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    def median_extra(self, key: str) -> float:
        return statistics.median(e[key] for e in self.extra)

    @property
    def cpu_ratio(self) -> float:
        return statistics.median(c / max(w, 1e-12) for c, w in zip(self.cpu, self.wall))


def timed(fn: Callable[[], object], repeats: int, warm: bool = True) -> tuple[Timing, object]:
    """Run ``fn`` (once to warm up, then ``repeats`` times); return the timings and the last result."""
    if warm:
        fn()
    t = Timing()
    out = None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        extra = out[1] if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict) else None
        t.add(time.perf_counter() - w0, time.process_time() - c0, extra)
    return t, out


# ---------------------------------------------------------------------------------- GEMM rates

def _rate(fn: Callable[[], None], flops: float, min_time: float) -> float:
    """Best of 3 GFLOP/s of ``fn`` (repeated to last ``min_time`` seconds)."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, int(math.ceil(min_time / once)))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return flops / best / 1e9


def gemm_rates(dtype: torch.dtype, k: int, shapes: list, min_time: float) -> tuple[float, str]:
    """The best GEMM rate (GFLOP/s) over libraries and shapes at ``k`` threads, and where it was reached."""
    g = torch.Generator().manual_seed(0)
    best, where = 0.0, ""
    with threads(k):
        for (M, K, N) in shapes:
            a = torch.randn(M, K, generator=g, dtype=dtype)
            b = torch.randn(K, N, generator=g, dtype=dtype)
            c = torch.empty(M, N, dtype=dtype)
            an, bn, cn = a.numpy(), b.numpy(), c.numpy()
            flops = 2.0 * M * K * N
            for lib, fn in (("torch.mm", lambda: torch.mm(a, b, out=c)), ("numpy.dot", lambda: np.dot(an, bn, out=cn))):
                r = _rate(fn, flops, min_time)
                if r > best:
                    best, where = r, f"{lib} {M}x{K}x{N}"
        if k > 1:  # k concurrent single-thread streams of the smallest shape (how the engine uses k cores)
            from threadpoolctl import threadpool_limits

            M, K, N = shapes[-1]
            ops = [(np.asarray(torch.randn(M, K, generator=g, dtype=dtype)), np.asarray(torch.randn(K, N, generator=g, dtype=dtype)),
                    np.empty((M, N), dtype=np.float64 if dtype == torch.float64 else np.float32)) for _ in range(k)]
            reps = max(1, int(min_time * 1e9 * 10 / (2.0 * M * K * N)))

            def stream(i: int) -> None:
                a, b, c = ops[i]
                for _ in range(reps):
                    np.dot(a, b, out=c)

            with threadpool_limits(limits=1, user_api="blas"):
                for _ in range(3):
                    ths = [threading.Thread(target=stream, args=(i,)) for i in range(k)]
                    t0 = time.perf_counter()
                    for th in ths:
                        th.start()
                    for th in ths:
                        th.join()
                    r = k * reps * 2.0 * M * K * N / (time.perf_counter() - t0) / 1e9
                    if r > best:
                        best, where = r, f"{k} streams of numpy.dot {M}x{K}x{N}"
    return best, where


# ----------------------------------------------------------------------------------- workloads

@dataclass
class Workload:
    name: str
    members: ol.TwoLayerParams  # a stack
    X: torch.Tensor
    y: torch.Tensor
    configs: list
    sub: Optional[ol.Subspace]
    flops_per_step: float       # needed FLOPs per network-step
    describe: str


def fig2(max_steps: int = 40_000) -> Workload:
    """Figure 2 of book/figures.md, as the chapter calls it."""
    from ortho_lib.data import line_data_2d

    X, y = line_data_2d()
    fig = ol.TrainConfig(lr=0.02, max_steps=max_steps, target_margin=0.3, trained="Wbuc")

    def init2(kappa: float = 1.0) -> ol.TwoLayerParams:
        return ol.init_network(2, 100, seed=0, beta=ol.default_beta(2) / kappa, u_scale=1 / kappa,
                               second_layer="gaussian", bias="uniform")

    kappas, lams = [1, 2, 3, 5], [2e-3, 5e-3, 7e-3, 1e-2]
    members = [init2(k) for k in kappas] + [init2() for _ in lams]
    configs = [fig] * len(kappas) + [fig.replace(weight_decay=lam) for lam in lams]
    m, d, n = 100, 2, 7
    # the cheapest exact step: Z = W X^T + b, f = u^T relu(Z), grad W = G X, grad u = relu(Z) g
    flops = 2.0 * m * n * (2 * d + 2)
    return Workload("fig2", ol.TwoLayerParams.stack(members), X, y, configs, None, flops,
                    f"Figure 2 sweep: E = 8, m = 100, d = 2, n = 7, W b u c trained, GD to margin 0.3 or {max_steps} steps")


def paper(E: int, d: int, ell: int, m: int, n: int, steps: int) -> Workload:
    """A Theorem A sweep at the paper's scale, for a fixed budget."""
    sub = ol.random_subspace(d, ell, seed=11)
    X = ol.sample_on_subspace(sub, n, seed=12)
    y = ol.random_labels(n, seed=13)
    members = ol.TwoLayerParams.stack([ol.init_network(d, m, seed=1000 + e) for e in range(E)])
    cfg = ol.TrainConfig(lr=0.004, max_steps=steps)
    return Workload("paper", members, X, y, [cfg] * E, sub, 2.0 * m * n * n,
                    f"paper scale: E = {E}, d = {d}, dim P = {d - ell}, m = {m}, n = {n}, GD (u fixed), {steps} steps")


def _subset(w: Workload, idx: list, steps: Optional[int] = None) -> Workload:
    cfgs = [w.configs[i] if steps is None else w.configs[i].replace(max_steps=steps) for i in idx]
    return Workload(w.name, ol.TwoLayerParams.stack([w.members.member(i) for i in idx]), w.X, w.y, cfgs, w.sub,
                    w.flops_per_step, w.describe)


# --------------------------------------------------------------------------------------- engine

def engine(w: Workload, dtype: torch.dtype, k: int) -> tuple[ol.TrainResult, dict]:
    """One engine run (backend "auto") with ``k`` threads; returns the result and its stats."""
    st: dict = {}
    with threads(k):
        res = ol.train(w.members, w.X, w.y, w.configs, sub=w.sub, dtype=dtype, stats=st)
    st["setup"] = st["time_setup"] + st["time_finish"]
    return res, st


# ----------------------------------------------------------------------------------- references

def _unpack(w: Workload):
    cfg = w.configs[0]
    lr = np.array([c.lr for c in w.configs])
    wd = np.array([c.weight_decay for c in w.configs])
    budget = np.array([c.max_steps for c in w.configs])
    return cfg, lr, wd, budget


def ref_numpy(w: Workload, dtype: torch.dtype) -> dict:
    """Hand-batched numpy: all members at once in the full space, per-member stopping (stopped members
    leave the batch).  Returns the final W, b, u, c and steps per member."""
    cfg, lr, wd, budget = _unpack(w)
    nd = np.float64 if dtype == torch.float64 else np.float32
    W = w.members.W.numpy().astype(nd)
    b = w.members.b.numpy().astype(nd)
    u = w.members.u.numpy().astype(nd)
    c = w.members.c.numpy().astype(nd).reshape(-1)
    X = w.X.numpy().astype(nd)
    XT = np.ascontiguousarray(X.T)
    y = w.y.numpy().astype(nd)
    n = X.shape[0]
    E = W.shape[0]
    out = {"W": np.empty_like(W), "b": np.empty_like(b), "u": np.empty_like(u), "c": np.empty_like(c),
           "steps": np.zeros(E, np.int64)}
    idx = np.arange(E)
    lr_, wd_, bud = lr.astype(nd), wd.astype(nd), budget
    tb, tu, tc = "b" in cfg.trained, "u" in cfg.trained, "c" in cfg.trained
    target = cfg.target_margin
    t = 0
    stamps = out["stamps"] = []  # the time at the top of every iteration (steady state = their differences)
    with np.errstate(over="ignore"):
        while idx.size:
            stamps.append(time.perf_counter())
            Z = np.matmul(W, XT)
            Z += b[:, :, None]
            H = np.maximum(Z, 0)
            f = np.matmul(u[:, None, :], H)[:, 0, :] + c[:, None]
            yf = y * f
            stop = bud[idx] <= t
            if target is not None:
                stop |= yf.min(axis=1) >= target
            if stop.any():
                for key, arr in (("W", W), ("b", b), ("u", u), ("c", c)):
                    out[key][idx[stop]] = arr[stop]
                out["steps"][idx[stop]] = t
                keep = ~stop
                idx, W, b, u, c, Z, H, yf = idx[keep], W[keep], b[keep], u[keep], c[keep], Z[keep], H[keep], yf[keep]
                lr_, wd_ = lr_[keep], wd_[keep]
                if not idx.size:
                    break
            g = -y / (1 + np.exp(yf)) / n
            GZ = (Z > 0) * (u[:, :, None] * g[:, None, :])
            gW = np.matmul(GZ, X)
            gW += wd_[:, None, None] * W
            W -= lr_[:, None, None] * gW
            if tb:
                b -= lr_[:, None] * (GZ.sum(axis=2) + wd_[:, None] * b)
            if tu:
                u = u - lr_[:, None] * (np.matmul(H, g[:, :, None])[:, :, 0] + wd_[:, None] * u)
            if tc:
                c = c - lr_ * (g.sum(axis=1) + wd_ * c)
            t += 1
    return out


def _torch_step_fn(trained: str):
    tb, tu, tc = "b" in trained, "u" in trained, "c" in trained

    def step(W, b, u, c, X, XT, y, lr, wd):
        Z = torch.baddbmm(b.unsqueeze(-1), W, XT.expand(W.shape[0], -1, -1))
        H = torch.relu(Z)
        f = torch.bmm(u.unsqueeze(1), H).squeeze(1) + c.unsqueeze(-1)
        yf = y * f
        g = -y * torch.sigmoid(-yf) / y.shape[-1]
        GZ = (Z > 0).to(W.dtype) * (u.unsqueeze(-1) * g.unsqueeze(1))
        W = W - lr.view(-1, 1, 1) * (torch.bmm(GZ, X.expand(W.shape[0], -1, -1)) + wd.view(-1, 1, 1) * W)
        if tb:
            b = b - lr.unsqueeze(-1) * (GZ.sum(-1) + wd.unsqueeze(-1) * b)
        if tu:
            u = u - lr.unsqueeze(-1) * (torch.bmm(H, g.unsqueeze(-1)).squeeze(-1) + wd.unsqueeze(-1) * u)
        if tc:
            c = c - lr * (g.sum(-1) + wd * c)
        return W, b, u, c, yf

    return step


def _torch_forward_yf(W, b, u, c, XT, y):
    Z = torch.baddbmm(b.unsqueeze(-1), W, XT.expand(W.shape[0], -1, -1))
    return y * (torch.bmm(u.unsqueeze(1), torch.relu(Z)).squeeze(1) + c.unsqueeze(-1))


_COMPILED: dict = {}


def ref_torch(w: Workload, dtype: torch.dtype, compiled: bool = False) -> dict:
    """The same hand-batched step in eager (or compiled) PyTorch."""
    cfg, lr, wd, budget = _unpack(w)
    W, b, u = (getattr(w.members, k).to(dtype).clone() for k in "Wbu")
    c = w.members.c.to(dtype).reshape(-1).clone()
    X = w.X.to(dtype)
    XT = X.T.contiguous()
    y = w.y.to(dtype)
    E = W.shape[0]
    lr_t, wd_t = torch.tensor(lr, dtype=dtype), torch.tensor(wd, dtype=dtype)
    step = _torch_step_fn(cfg.trained)
    if compiled:
        key = (cfg.trained, dtype)
        if key not in _COMPILED:
            _COMPILED[key] = torch.compile(step, dynamic=True)
        step = _COMPILED[key]
    out = {"W": torch.empty_like(W), "b": torch.empty_like(b), "u": torch.empty_like(u), "c": torch.empty_like(c),
           "steps": torch.zeros(E, dtype=torch.long)}
    idx = torch.arange(E)
    bud = torch.tensor(budget)
    target = cfg.target_margin
    t = 0
    stamps = []
    yf = _torch_forward_yf(W, b, u, c, XT, y)
    while idx.numel():
        stamps.append(time.perf_counter())
        stop = bud[idx] <= t
        if target is not None:
            stop |= yf.amin(dim=1) >= target
        if bool(stop.any()):
            for key, arr in (("W", W), ("b", b), ("u", u), ("c", c)):
                out[key][idx[stop]] = arr[stop]
            out["steps"][idx[stop]] = t
            keep = ~stop
            idx, W, b, u, c, lr_t, wd_t = idx[keep], W[keep], b[keep], u[keep], c[keep], lr_t[keep], wd_t[keep]
            if not idx.numel():
                break
            yf = _torch_forward_yf(W, b, u, c, XT, y)
        W, b, u, c, _ = step(W, b, u, c, X, XT, y, lr_t, wd_t)
        yf = _torch_forward_yf(W, b, u, c, XT, y)
        t += 1
    return dict({k: v.numpy() for k, v in out.items()}, stamps=stamps)


def ref_torch_loop_per_step(w: Workload, steps: int) -> float:
    """Seconds per network-step of the per-network nn.Module + autograd + torch.optim.SGD loop (member 0)."""
    from torch import nn

    p = w.members.member(0)
    cfg = w.configs[0]
    m, d = p.W.shape
    hidden, out = nn.Linear(d, m, dtype=p.W.dtype), nn.Linear(m, 1, dtype=p.W.dtype)
    with torch.no_grad():
        hidden.weight.copy_(p.W)
        hidden.bias.copy_(p.b)
        out.weight.copy_(p.u.unsqueeze(0))
        out.bias.copy_(p.c.reshape(1))
    params = [hidden.weight] + [q for k, q in (("b", hidden.bias), ("u", out.weight), ("c", out.bias)) if k in cfg.trained]
    opt = torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    t01 = (w.y + 1) / 2
    t0 = time.perf_counter()
    for _ in range(steps):
        o = out(torch.relu(hidden(w.X))).squeeze(-1)
        (w.y * o).min().item()  # the margin check before each update
        loss = loss_fn(o, t01)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def as_ref(res: ol.TrainResult) -> dict:
    """A result in the form the references return (for comparing two engine runs)."""
    out = {k: getattr(res.params, k).numpy() for k in "Wbuc"}
    out["steps"] = res.steps.numpy()
    return out


def agreement(res: ol.TrainResult, ref: dict, idx: Optional[list] = None) -> tuple[bool, float]:
    """Equal step counts, and the largest relative difference of the final W, b, u, c."""
    idx = list(range(len(res))) if idx is None else idx
    steps_ok = [int(res.steps[i]) for i in idx] == [int(v) for v in ref["steps"]]
    worst = 0.0
    for key in "Wbuc":
        a = getattr(res.params, key)[idx].to(torch.float64).reshape(len(idx), -1)
        b = torch.as_tensor(np.asarray(ref[key]), dtype=torch.float64).reshape(len(idx), -1)
        worst = max(worst, float((a - b).abs().max() / max(float(b.abs().max()), 1e-300)))
    return steps_ok, worst


# --------------------------------------------------------------------------------- the sections

@dataclass
class Row:
    workload: str
    dtype: str
    threads: int
    engine: float           # seconds, median
    steady: float           # seconds of the compiled loop, median
    setup: float
    cpu_ratio: float
    netsteps: int
    flops: float            # needed FLOPs of the whole run
    limit: float            # best GEMM GFLOP/s at this dtype and thread count
    refs: dict              # name -> seconds (scaled to the whole run)

    @property
    def best_ref(self) -> tuple[str, float]:
        name = min(self.refs, key=self.refs.get)
        return name, self.refs[name]

    @property
    def speedup(self) -> float:
        return self.best_ref[1] / self.engine

    @property
    def fraction(self) -> float:
        return self.flops / (self.steady * self.limit * 1e9)


def dname(dt: torch.dtype) -> str:
    return "float64" if dt == torch.float64 else "float32"


def report_row(r: Row) -> None:
    per = r.engine / r.netsteps * 1e6
    print(f"  {r.dtype}, {r.threads} thread{'s' if r.threads > 1 else ''}: engine {r.engine:.3f} s "
          f"({per:.2f} us per network-step; set-up {r.setup:.3f} s, steady state {r.steady:.3f} s = "
          f"{r.steady / r.netsteps * 1e6:.2f} us per network-step; CPU/wall {r.cpu_ratio:.2f})")
    refs = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(r.refs.items(), key=lambda kv: kv[1]))
    print(f"    references: {refs}")
    print(f"    speedup_vs_best_reference: {r.speedup:.1f}   ({r.best_ref[0]})")
    print(f"    fraction_of_limit: {r.fraction:.3f}   (needed {r.flops / 1e9:.2f} GFLOP at {r.limit:.1f} GFLOP/s)")


def section_fig2(args, limits, ok) -> list:
    w = fig2(4_000 if args.quick else 40_000)
    print(f"\n[fig2] {w.describe}")
    rows = []
    results64 = None
    for dt in (torch.float64, torch.float32):
        # references: one thread (at these shapes a second one only adds wake-ups; the best reference at
        # two threads is therefore its one-thread time)
        refs, outs, ratios = {}, {}, {}
        with threads(1):
            tn, outs["numpy"] = timed(lambda: ref_numpy(w, dt), args.repeats, warm=False)
            refs["numpy"], ratios["numpy"] = tn.median, tn.cpu_ratio
            if args.all_references:
                tt, outs["torch"] = timed(lambda: ref_torch(w, dt), args.repeats, warm=False)
                refs["torch"], ratios["torch"] = tt.median, tt.cpu_ratio
            if args.compile:
                tc, outs["torch.compile"] = timed(lambda: ref_torch(w, dt, compiled=True), args.repeats)
                refs["torch.compile"], ratios["torch.compile"] = tc.median, tc.cpu_ratio
        print(f"  {dname(dt)} references, 1 thread (at these shapes a second thread only adds wake-ups): "
              + ", ".join(f"{k} {v:.2f} s (CPU/wall {ratios[k]:.2f})" for k, v in refs.items()))
        for k in (1, 2):
            te, (res, _) = timed(lambda: engine(w, dt, k), args.repeats)
            netsteps = int(res.steps.sum())
            if dt == torch.float64 and k == 1:
                results64 = res
                with threads(1):
                    per = ref_torch_loop_per_step(w, 300 if args.quick else 2000)
                refs_loop = per * netsteps
            r = Row("fig2", dname(dt), k, te.median, te.median_extra("time_kernel"), te.median_extra("setup"),
                    te.cpu_ratio, netsteps, w.flops_per_step * netsteps, limits[(dt, k)][0],
                    dict(refs, **({"torch-loop (estimated)": refs_loop} if dt == torch.float64 else {})))
            rows.append(r)
            report_row(r)
        for name, out in outs.items():
            same, worst = agreement(res, out)
            if dt == torch.float64:
                good = same and worst <= REL_TOL
                ok.append(good)
                print(f"    {name} reference agrees with the engine: equal steps {same}, max rel. diff {worst:.1e}: {good}")
            else:
                print(f"    float32 {name} reference vs float32 engine: equal steps {same}, max rel. diff {worst:.1e}")
        if dt == torch.float32:
            same64, worst64 = agreement(res, as_ref(results64))
            print(f"    float32 engine vs float64 engine: equal steps {same64}, max rel. diff {worst64:.1e} (the "
                  f"stopping step moves when a margin crosses 0.3 within float32 rounding)")
    return rows


def section_paper(args, limits, ok) -> tuple[list, dict]:
    if args.quick:
        w = paper(E=4, d=300, ell=150, m=300, n=50, steps=20)
        n_ref, s_ref = 2, 4
    else:
        w = paper(E=16, d=1000, ell=500, m=1000, n=100, steps=100)
        n_ref, s_ref = 4, 4
    print(f"\n[paper] {w.describe}")
    print(f"  references: {n_ref} members x {s_ref} steps; their steady state (steps 2 to {s_ref}, timed inside the "
          f"loop) is scaled per network-step to the whole run")
    rows = []
    profiles = {}
    sub_ref = _subset(w, list(range(n_ref)), steps=s_ref)
    res64 = None
    for dt in (torch.float64, torch.float32):
        engine_check, _ = engine(sub_ref, dt, 1)
        per_ref = {}  # (name, threads) -> seconds per network-step
        for name, fn in (("numpy", ref_numpy), ("torch", ref_torch)):
            for kr in (1, 2):
                pers = []
                with threads(kr):
                    fn(sub_ref, dt)  # warm-up
                    for _ in range(args.repeats):
                        out = fn(sub_ref, dt)
                        st_ = out["stamps"]
                        pers.append((st_[-1] - st_[1]) / (n_ref * (len(st_) - 2)))
                per_ref[name, kr] = statistics.median(pers)
                same, worst = agreement(engine_check, out)
                good = same and worst <= (REL_TOL if dt == torch.float64 else F32_TOL)
                if dt == torch.float64:
                    ok.append(good)
                print(f"    [{dname(dt)}, {kr} thr.] {name} reference: {per_ref[name, kr] * 1e3:.2f} ms per network-step; "
                      f"agrees with the engine ({n_ref} members x {s_ref} steps): equal steps {same}, "
                      f"max rel. diff {worst:.1e}: {good}")
        for k in (1, 2):
            te, (res, st) = timed(lambda: engine(w, dt, k), args.repeats)
            netsteps = int(res.steps.sum())
            if dt == torch.float64 and k == 1:
                res64 = res
            refs = {f"{name} ({kr} thr.)": per * netsteps for (name, kr), per in per_ref.items() if kr <= k}
            r = Row("paper", dname(dt), k, te.median, te.median_extra("time_kernel"), te.median_extra("setup"),
                    te.cpu_ratio, netsteps, w.flops_per_step * netsteps, limits[(dt, k)][0], refs)
            rows.append(r)
            report_row(r)
            if k == 1:
                profiles[dt] = (w, r)
        if dt == torch.float32 and res64 is not None:
            rel = float((res.params.W.double() - res64.params.W).abs().max() / res64.params.W.abs().max())
            print(f"    engine float32 vs float64: equal steps {torch.equal(res.steps, res64.steps)}, "
                  f"max rel. diff of W {rel:.1e}")
    return rows, profiles


def profile_span(w: Workload, dtype: torch.dtype, row: Row) -> str:
    """Where a span-coordinate step's time goes: the BLAS products alone (the same calls on the same row
    blocks, timed by themselves) against the whole step."""
    import numba

    m, n = w.members.W.shape[1], w.X.shape[0]
    blk = _fused.ROW_BLOCK
    nd = np.float64 if dtype == torch.float64 else np.float32

    @numba.njit(nogil=True)
    def products(D, K, T, steps):
        r = D.shape[0]
        for _ in range(steps):
            for i0 in range(0, m, r):
                q = min(m, i0 + r) - i0
                np.dot(D[:q], K, T[:q])

    D = np.random.default_rng(0).standard_normal((blk, n)).astype(nd)
    K = np.random.default_rng(1).standard_normal((n, n)).astype(nd)
    T = np.empty_like(D)
    from threadpoolctl import threadpool_limits

    steps = 200
    with threadpool_limits(limits=1, user_api="blas"):
        products(D, K, T, 2)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            products(D, K, T, steps)
            best = min(best, (time.perf_counter() - t0) / steps)
    step = row.steady / row.netsteps
    rate = 2.0 * m * n * n / best / 1e9
    floor, nbytes = memory_floor(m, n, nd)
    l2 = cache_size(2)
    return (f"  {dname(dtype)}, 1 thread, per network-step: {step * 1e6:.0f} us in all; its BLAS products alone "
            f"({-(-m // blk)} blocks of {blk}x{n} by {n}x{n}) {best * 1e6:.0f} us = {best / step:.0%} "
            f"({rate:.1f} GFLOP/s, {rate / row.limit:.0%} of the best GEMM rate); elementwise work, outputs and "
            f"bookkeeping {max(step - best, 0) * 1e6:.0f} us = {max(step - best, 0) / step:.0%}\n"
            f"    the step's passes over memory alone (read Z, update A, write Z; no products): "
            f"{floor * 1e6:.0f} us; Z and A of one network hold {nbytes / 2**20:.2f} MiB against "
            f"{l2 / 2**20 if l2 else float('nan'):.2f} MiB of L2 per core"
            + (" (they do not fit in it)" if l2 and nbytes > l2 else
               " (they fit)" if l2 else ""))


def cache_size(level: int) -> int:
    """Bytes of the data (or unified) cache of the given level of CPU 0 (0 when Linux does not say)."""
    import glob

    for path in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(f"{path}/level") as f_level, open(f"{path}/type") as f_type, open(f"{path}/size") as f_size:
                if int(f_level.read()) == level and f_type.read().strip() in ("Data", "Unified"):
                    text = f_size.read().strip()
                    return int(text[:-1]) * {"K": 2**10, "M": 2**20}[text[-1]] if text[-1] in "KM" else int(text)
        except (OSError, ValueError):
            continue
    return 0


def memory_floor(m: int, n: int, nd) -> tuple:
    """Seconds per step of the span step's passes over memory without its products or ReLUs: for each row,
    read Z, update A in place, write Z (the traffic of one GD step on one network), median of 3 runs of 50
    steps; and the bytes of Z and A."""
    import numba

    @numba.njit(nogil=True, fastmath=True)
    def passes(Z, A, steps, fac):
        for _ in range(steps):
            for i in range(Z.shape[0]):
                for j in range(Z.shape[1]):
                    a = fac * A[i, j] + Z[i, j]
                    A[i, j] = a
                    Z[i, j] = fac * Z[i, j] + a

    Z = np.random.default_rng(2).standard_normal((m, n)).astype(nd) * 1e-3
    A = np.zeros((m, n), nd)
    fac = nd(0.5)
    passes(Z, A, 2, fac)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        passes(Z, A, 50, fac)
        times.append((time.perf_counter() - t0) / 50)
    return float(np.median(times)), Z.nbytes + A.nbytes


def section_switch(args) -> float:
    m, n, E = 200, 20, 8
    if args.quick:
        ds, both = [5, 6, 7, 8, 9, 50, 51], {6, 7, 8}
    else:
        ds, both = [4, 5, 6, 7, 8, 9, 10, 11, 12, 48, 49, 50, 51, 52, 53, 100, 200], set(range(4, 13)) | {50, 51}
    steps = 60 if args.quick else 3000       # about 0.2 s a run: long enough that scheduling noise stays small
    cut = next((d for d in range(1, 1000) if _fused.choose_coordinates("auto", m, d, n, None, True) == "span"), None)
    print(f"\n[switch] steady-state cost per network-step across d (m = {m}, n = {n}, E = {E}, {steps} GD steps, "
          f"float64, 1 thread).  The compiled backend moves from feature to span coordinates at d = {cut}; the old "
          f"engine switched to the batched program between d = 50 and 51.  At some d both coordinate systems are "
          f"timed too (auto / best: what the automatic choice loses).")
    cost, line = {}, []
    for d in ds:
        g = torch.Generator().manual_seed(d)
        X = torch.randn(n, d, generator=g, dtype=torch.float64)
        X = X / X.norm(dim=1, keepdim=True) * math.sqrt(d)
        y = ol.random_labels(n, seed=d)
        members = ol.TwoLayerParams.stack([ol.init_network(d, m, seed=e) for e in range(E)])
        cfg = [ol.TrainConfig(lr=0.05, max_steps=steps)] * E

        def per_step(coordinates: str) -> tuple[float, str]:
            def go():
                st: dict = {}
                with threads(1):
                    res = ol.train(members, X, y, cfg, coordinates=coordinates, stats=st)
                return res, st
            t, (res, st) = timed(go, args.repeats)
            return t.median_extra("time_kernel") / int(res.steps.sum()) * 1e6, st["coordinates"]

        cost[d], chosen = per_step("auto")
        text = f"d={d}: {cost[d]:.2f} us ({chosen})"
        if d in both:
            best = min(per_step("full")[0], per_step("span")[0])
            text += f" auto/best {cost[d] / best:.2f}"
        line.append(text)
    for i in range(0, len(line), 5):
        print("  " + "; ".join(line[i:i + 5]))
    steps_up = [cost[d + 1] / cost[d] for d in ds if d + 1 in cost]
    worst = max(steps_up)
    print(f"  largest ratio t(d+1)/t(d) over neighbouring d: {worst:.2f} (feature coordinates grow by about "
          f"1/d per unit of d; a step at a switch would show as a ratio well above that)")
    return worst


def _spin(stop_at: float) -> None:  # pragma: no cover - another process
    x = 0
    while time.time() < stop_at:
        x += 1


def section_contention(args, machine: Machine) -> dict:
    if args.quick:
        w = paper(E=4, d=300, ell=150, m=300, n=50, steps=20)
    else:
        w = paper(E=8, d=1000, ell=500, m=1000, n=100, steps=60)
    one = _subset(w, [0, 1], steps=2)
    print(f"\n[contention] {w.describe}; float64, 2 threads; alone, then with one other CPU-bound process")
    out = {}
    for label in ("alone", "with another job"):
        proc = None
        if label != "alone":
            ctx = multiprocessing.get_context("fork")
            proc = ctx.Process(target=_spin, args=(time.time() + 600,), daemon=True)
            proc.start()
            time.sleep(0.2)
        try:
            te, _ = timed(lambda: engine(w, torch.float64, 2), args.repeats)
            with threads(2):
                tr, _ = timed(lambda: ref_numpy(one, torch.float64), args.repeats)
        finally:
            if proc is not None:
                proc.terminate()
                proc.join()
        out[label] = (te.median, tr.median)
        print(f"  {label}: engine {te.median:.2f} s; numpy reference (2 members x 2 steps) {tr.median:.2f} s")
    (e0, r0), (e1, r1) = out["alone"], out["with another job"]
    print(f"  slowdown with another job: engine {e1 / e0:.2f}x, reference {r1 / r0:.2f}x "
          f"(a fair share of two cores among three busy threads is 1.5x)")
    return {"engine": e1 / e0, "reference": r1 / r0}


# -------------------------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small smoke run (seconds), not a measurement")
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is reported (>= 3)")
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile'd reference step")
    ap.add_argument("--all-references", action="store_true",
                    help="also time the eager torch step on fig2 (about 5x slower than numpy there: never the best)")
    ap.add_argument("--only", default="", help="comma-separated sections: fig2, paper, switch, contention")
    args = ap.parse_args()
    if not args.quick and args.repeats < 3:
        ap.error("--repeats must be at least 3 (the median of three runs)")
    only = set(filter(None, args.only.split(",")))
    machine = Machine()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    l1, l5, l15 = machine.load_start
    print(f"bench_engine: ortho_lib engine vs references; torch {torch.__version__}, numpy {np.__version__}, "
          f"{cpu}, {cores} cores; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset (OpenMP default)')}")
    print(f"load average at start: {l1:.2f} {l5:.2f} {l15:.2f}")
    if l1 > BUSY_LOAD:
        print(f"note: load average {l1:.2f} > {BUSY_LOAD} at the start; the CPU share other processes take during "
              f"the run (measured below) decides whether the timings are reliable")
    torch.manual_seed(0)
    # warm-up: load or compile the engine's kernels (their first call is set-up, not a measurement)
    t0 = time.perf_counter()
    warm = paper(E=2, d=40, ell=20, m=30, n=10, steps=3)
    for dt in (torch.float64, torch.float32):
        for coords in ("full", "span"):
            ol.train(warm.members, warm.X, warm.y, warm.configs, dtype=dt, coordinates=coords)
    print(f"engine kernels loaded (or compiled) in {time.perf_counter() - t0:.1f} s: once per process, not counted below")

    min_time = 0.03 if args.quick else 0.15
    if args.quick:
        shapes = [(256, 256, 256), (300, 50, 50), (64, 50, 50)]
    else:
        shapes = [(1024, 1024, 1024), (1000, 100, 100), (_fused.ROW_BLOCK, 100, 100)]
    limits = {}
    print("\nbest GEMM rate measured (the limit): " + ", ".join(f"{M}x{K}x{N}" for M, K, N in shapes))
    for dt in (torch.float64, torch.float32):
        for k in (1, 2):
            limits[(dt, k)] = gemm_rates(dt, k, shapes, min_time)
            print(f"  {dname(dt)}, {k} thread{'s' if k > 1 else ''}: {limits[(dt, k)][0]:.1f} GFLOP/s ({limits[(dt, k)][1]})")

    ok: list = []
    rows: list = []
    profiles: dict = {}
    worst_switch = float("nan")
    contention = None
    if not only or "fig2" in only:
        rows += section_fig2(args, limits, ok)
    if not only or "paper" in only:
        r, profiles = section_paper(args, limits, ok)
        rows += r
    if not only or "switch" in only:
        worst_switch = section_switch(args)
    others = machine.others()
    load_end = os.getloadavg()
    if not only or "contention" in only:
        contention = section_contention(args, machine)
    if profiles:
        print("\nprofile of the paper-scale step (span coordinates; steady state, 1 thread):")
        for dt, (w, r) in profiles.items():
            print(profile_span(w, dt, r))
    # limits measured again at the end: the larger of the two measurements counts
    again = {key: gemm_rates(key[0], key[1], shapes, min_time)[0] for key in limits}
    for r in rows:
        dt = torch.float64 if r.dtype == "float64" else torch.float32
        r.limit = max(r.limit, again[(dt, r.threads)])

    busy = others > BUSY_FRACTION if math.isfinite(others) else l1 > BUSY_LOAD
    print("\nSummary (fraction_of_limit uses the larger of the GEMM rates measured at the start and at the end)")
    print(f"  {'workload':<8} {'dtype':<8} {'thr':>3} {'engine s':>9} {'set-up s':>9} {'us/step':>9} {'CPU/wall':>8} "
          f"{'best reference':<26} {'speedup':>8} {'limit GF/s':>10} {'fraction':>8}")
    for r in rows:
        name, t = r.best_ref
        print(f"  {r.workload:<8} {r.dtype:<8} {r.threads:>3} {r.engine:>9.3f} {r.setup:>9.3f} "
              f"{r.steady / r.netsteps * 1e6:>9.2f} {r.cpu_ratio:>8.2f} {name + f' {t:.2f} s':<26} {r.speedup:>8.1f} "
              f"{r.limit:>10.1f} {r.fraction:>8.3f}")
    if any(r.fraction > 1 for r in rows):
        print("  (a fraction above 1 means the GEMM rate was measured under more load than the engine: rerun on a quiet machine)")
    print(f"  load average at start {l1:.2f}, at the end {load_end[0]:.2f}; other processes took {others:.0%} of the "
          f"machine's CPU time during the measurements")
    if busy:
        print("WARNING: the machine was busy during this run: the timings are not reliable; rerun `make bench` on a "
              "quiet machine")
    print("\nmachine-readable:")
    print(f"load_average_start: {l1:.2f}")
    print(f"load_average_end: {load_end[0]:.2f}")
    print(f"others_cpu_fraction: {others:.3f}")
    print(f"machine_busy: {str(busy).lower()}")
    for r in rows:
        key = f"{r.workload}.{r.dtype}.threads{r.threads}"
        print(f"{key}.engine_seconds: {r.engine:.4f}")
        print(f"{key}.setup_seconds: {r.setup:.4f}")
        print(f"{key}.steady_us_per_network_step: {r.steady / r.netsteps * 1e6:.3f}")
        print(f"{key}.best_reference: {r.best_ref[0]} {r.best_ref[1]:.3f}")
        print(f"{key}.speedup_vs_best_reference: {r.speedup:.2f}")
        print(f"{key}.fraction_of_limit: {r.fraction:.4f}")
    if worst_switch == worst_switch:
        print(f"switch.largest_neighbour_ratio: {worst_switch:.3f}")
    if contention:
        print(f"contention.engine_slowdown: {contention['engine']:.2f}")
        print(f"contention.reference_slowdown: {contention['reference']:.2f}")
    all_ok = all(ok)
    print(f"results_agree: {str(all_ok).lower()}")
    fig = [r for r in rows if r.workload == "fig2" and r.dtype == "float64"]
    pap = [r for r in rows if r.workload == "paper"]
    if fig:
        print(f"speedup_vs_best_reference: {min(r.speedup for r in fig):.2f}")
    if pap:
        print(f"fraction_of_limit: {min(r.fraction for r in pap):.3f}")
    if not all_ok:
        print("ERROR: a reference and the engine disagree", file=sys.stderr)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
