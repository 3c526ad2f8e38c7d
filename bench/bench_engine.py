r"""Benchmark: the sweep engine against the plain reference a researcher would write (``make bench``).

What runs, in one process on one machine, in float64:

(a) the reference — per network, an ``nn.Module`` (``nn.Linear(d, m)`` + ReLU + ``nn.Linear(m, 1)``, the
    second layer frozen where the experiment keeps it fixed) trained by ``torch.optim.SGD`` (its
    ``weight_decay`` where the experiment has one) with autograd and ``BCEWithLogitsLoss`` in the full space
    $\mathbb R^d$, checking the train margin before every update and stopping at the first iterate that
    reaches the target (the stopping rule of :func:`ortho_lib.train.train`);
(b) :func:`ortho_lib.engine.train_ensemble` on the same networks, data and stopping rule (backend
    ``"auto"``: whatever the book's chapters get).

The workload that the two machine-readable lines measure is the book's heaviest sweep — measured, not
guessed: executing every chapter cell by cell, the longest training cell was the Figure 2 sweep of
``book/figures.md`` (43 s of the book's ~290 s before it moved to the engine; next came Figure 3 at 21 s).
It is

* Part A, the Figure 2 sweep: ``E = 8`` networks on the 7 points of the paper's line in
  $\mathbb R^2$, width ``m = 100``, Gaussian second layer and uniform biases, $W, b, u, c$ all trained
  by full-batch GD with ``lr = 0.02`` until the train margin reaches 0.3 or 40 000 steps: the initialisation
  divided by $\kappa \in \{1, 2, 3, 5\}$, and weight decay $\lambda \in \{2, 5, 7, 10\} \cdot 10^{-3}$.
  Both the reference and the engine run this part with one torch thread, as the chapter does: at these
  shapes a second thread only adds wake-ups (measured here: 1160 against 570 us per reference step).

Two more parts show the engine where the arithmetic, not the dispatch, dominates — sweeps at the paper's
scale that the book does not run (they would take minutes), printed for information:

* Part B, a Theorem A sweep at scale: ``E = 64`` networks (seeds 1000..1063) with ``d = 1000``,
  ``ell = 500``, width ``m = 1000``, ``n = 100`` points on the sphere of radius $\sqrt d$ in $P$ with random
  labels, $u$ fixed, GD with ``lr = 0.004`` until the train margin reaches 1 (about 280-430 steps).
* Part C, an L2 long run at scale: ``E = 8`` networks (4 weight decays x 2 seeds) of the same shape, GD with
  ``lr = 0.05`` for a fixed budget of 1000 steps.

Training every reference network would take several minutes, so the reference is timed on a subset of
members (2 per part: the last member of each half) and its time is scaled per network-step (a reference
step costs the same for every member of a part), so the reference time is estimated as
(measured time / measured steps) x (steps of all members).  The engine trains each part in two batches
(two calls, half of the members each), and each reference member is trained right after a batch, so that
engine and reference share the load fluctuations of a busy machine.  The same subset checks that both give
the same results: equal step counts and stopping status, and final weights equal to a relative
$10^{-9}$ (the two float64 computations round differently, by about $10^{-16}$ per operation; observed
differences are $10^{-15}$ to $10^{-12}$, and an implementation error shows up at $10^{-3}$ or more).

``fraction_of_matmul_peak``: the engine records the matrix products it performs (shape and count; the fused
kernel records the batched products a tensor program would make for the same iterations); right after each
engine batch the benchmark times a plain ``torch.matmul`` at each of those shapes and reports
(time of those plain matmuls) / (engine time) = (engine FLOP rate) / (plain matmul FLOP rate at the same
shapes).  A ``torch.profiler`` table shows where the engine's time goes on Part B.

The last two lines are machine readable (Part A, the book's heaviest sweep)::

    speedup_vs_reference: X
    fraction_of_matmul_peak: Y

Run ``python bench/bench_engine.py --quick`` for a small smoke run (not a measurement).
This is a benchmark, not a test: nothing here asserts a time.  It exits with status 1 only if the
engine and the reference disagree.
"""
from __future__ import annotations

import os

# OpenMP's wait policy is left as the user's environment has it: ``make bench`` unsets the Makefile's
# OMP_WAIT_POLICY=PASSIVE, so both sides run under OpenMP's default, as in a researcher's own session.
# PASSIVE (idle threads sleep) protects a busy shared machine, but on an idle one every parallel region
# then pays a thread wake-up: measured here, one elementwise pass over a (2, 1000, 100) array took 35 us by
# default and 150 us under PASSIVE, which slows the engine's paper-scale steps by about a third.  Export
# OMP_WAIT_POLICY=PASSIVE and run this script directly to measure under it.

import argparse
import functools
import math
import sys
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

import ortho_lib as ol
from ortho_lib.engine import train_ensemble
from ortho_lib.network import TwoLayerParams

DTYPE = torch.float64
REL_TOL = 1e-9
print = functools.partial(print, flush=True)  # noqa: A001 (progress visible when piped)


@dataclass
class Part:
    """One part of the workload: ``E`` networks of equal shape, one shared training set."""

    name: str
    members: list
    X: Tensor
    y: Tensor
    lr: float
    max_steps: int
    target: Optional[float]
    weight_decay: list
    sub: Optional[ol.Subspace]
    ref_idx: list
    train_u: bool = False
    train_c: bool = False
    threads: int = 0  # torch CPU threads for this part (0: leave as set)


def make_part_fig2(n_ref: int, max_steps: int = 40_000) -> Part:
    """The book's heaviest sweep: Figure 2's eight runs (``book/figures.md``, cell "Figure 2 runs")."""
    from ortho_lib.data import line_data_2d

    X, y = line_data_2d()
    init = ol.init_network(2, 100, seed=0, second_layer="gaussian", bias="uniform")
    kappas, lams = [1, 2, 3, 5], [2e-3, 5e-3, 7e-3, 1e-2]
    members = [init.replace(W=init.W / k, u=init.u / k) for k in kappas] + [init] * len(lams)
    E = len(members)
    return Part("A: the book's heaviest sweep, Figure 2 (GD to margin 0.3, W, b, u, c trained)", members, X, y,
                lr=0.02, max_steps=max_steps, target=0.3, weight_decay=[0.0] * len(kappas) + lams, sub=None,
                ref_idx=_spread(E, n_ref), train_u=True, train_c=True, threads=1)


def make_part_a(E: int, d: int, ell: int, m: int, n: int, n_ref: int) -> Part:
    """The Theorem A sweep: E seeds, GD until the train margin reaches 1."""
    sub = ol.random_subspace(d, ell, seed=11)
    X = ol.sample_on_subspace(sub, n, seed=12)
    y = ol.random_labels(n, seed=13)
    members = [ol.init_network(d, m, seed=1000 + e) for e in range(E)]
    return Part("B: a Theorem A sweep at the paper's scale (GD to margin 1; not run by the book)", members, X, y, lr=0.004, max_steps=3000, target=1.0,
                weight_decay=[0.0] * E, sub=sub, ref_idx=_spread(E, n_ref))


def make_part_b(seeds: int, d: int, ell: int, m: int, n: int, steps: int, n_ref: int) -> Part:
    """The L2 long run: 4 weight decays x ``seeds`` seeds, a fixed budget of GD steps, no target."""
    lams = [0.01, 0.03, 0.1, 0.3]
    sub = ol.random_subspace(d, ell, seed=21)
    X = ol.sample_on_subspace(sub, n, seed=22)
    y = ol.random_labels(n, seed=23)
    members, wds = [], []
    for lam in lams:
        for s in range(seeds):
            members.append(ol.init_network(d, m, seed=2000 + s))
            wds.append(lam)
    E = len(members)
    return Part("C: an L2 long run at the paper's scale (GD + weight decay, fixed budget; not run by the book)",
                members, X, y, lr=0.05, max_steps=steps,
                target=None, weight_decay=wds, sub=sub, ref_idx=_spread(E, n_ref))


def _spread(E: int, k: int) -> list:
    """``k`` reference members, one in each of ``k`` equal consecutive groups (its last member)."""
    k = max(1, min(k, E))
    return [round((i + 1) * E / k) - 1 for i in range(k)]


# ------------------------------------------------------------------------------------ reference (a)

class ReferenceNet(nn.Module):
    """The plain two-layer net ``out(relu(hidden(x)))``: ``nn.Linear(d, m)``, ReLU, ``nn.Linear(m, 1)``."""

    def __init__(self, p: TwoLayerParams, train_u: bool, train_c: bool):
        super().__init__()
        m, d = p.W.shape
        self.hidden = nn.Linear(d, m, dtype=p.W.dtype, device=p.W.device)
        self.out = nn.Linear(m, 1, dtype=p.W.dtype, device=p.W.device)
        with torch.no_grad():
            self.hidden.weight.copy_(p.W)
            self.hidden.bias.copy_(p.b)
            self.out.weight.copy_(p.u.unsqueeze(0))
            self.out.bias.copy_(p.c.reshape(1))
        self.out.weight.requires_grad_(train_u)  # a frozen second layer is not trained (nor decayed)
        self.out.bias.requires_grad_(train_c)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.hidden(x))).squeeze(-1)


def train_reference(p: TwoLayerParams, X: Tensor, y: Tensor, *, lr: float, max_steps: int,
                    target: Optional[float], weight_decay: float, train_u: bool,
                    train_c: bool) -> tuple[TwoLayerParams, int, bool]:
    """Full-space SGD (full batch) with autograd, stopping at the first iterate with margin >= target."""
    net = ReferenceNet(p, train_u, train_c)
    opt = torch.optim.SGD([q for q in net.parameters() if q.requires_grad], lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    t01 = (y + 1) / 2
    steps, reached = 0, False
    while True:
        out = net(X)
        margin = (y * out).min().item()
        reached = target is not None and margin >= target
        if reached or steps >= max_steps:
            break
        loss = loss_fn(out, t01)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    final = TwoLayerParams(net.hidden.weight.detach().clone(), net.hidden.bias.detach().clone(),
                           net.out.weight.detach()[0].clone(), net.out.bias.detach()[0].clone())
    return final, steps, reached


# ------------------------------------------------------------------------------------------ helpers

def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _to(p: TwoLayerParams, dev: torch.device) -> TwoLayerParams:
    return TwoLayerParams(p.W.to(dev), p.b.to(dev), p.u.to(dev), p.c.to(dev))


def run_part(part: Part, dev: torch.device) -> dict:
    """Engine on all members, reference on the subset; returns timings, steps and the agreement check.

    The members are trained by the engine in ``len(ref_idx)`` consecutive groups (each one call of
    ``train_ensemble`` on a batch of members), and each reference member is trained right after a group:
    engine and reference alternate, so both see the same fluctuations of a shared machine's load.
    """
    before = torch.get_num_threads()
    if part.threads > 0 and dev.type == "cpu":
        torch.set_num_threads(part.threads)
    try:
        return _run_part(part, dev)
    finally:
        torch.set_num_threads(before)


def _run_part(part: Part, dev: torch.device) -> dict:
    members = [_to(p, dev) for p in part.members]
    X, y = part.X.to(dev), part.y.to(dev)
    E = len(members)
    k = len(part.ref_idx)
    bounds = [round(i * E / k) for i in range(k + 1)]
    stats: dict = {}
    t_eng, t_ref, ref_steps, worst, same = 0.0, 0.0, 0, 0.0, True
    t_mm, flops = 0.0, 0.0
    groups = []
    for gi in range(k):
        lo, hi = bounds[gi], bounds[gi + 1]
        st: dict = {}
        _sync(dev)
        t0 = time.perf_counter()
        res = train_ensemble(members[lo:hi], X, y, lr=part.lr, max_steps=part.max_steps,
                             target_margin=part.target, weight_decay=part.weight_decay[lo:hi], sub=part.sub,
                             train_second_layer=part.train_u, train_output_bias=part.train_c, device=dev,
                             stats=st)
        _sync(dev)
        t_eng += time.perf_counter() - t0
        groups.append(res)
        # plain matmuls at this batch's shapes, timed right after it (same load conditions)
        tm, fl = matmul_time(st["matmuls"], dev)
        t_mm += tm
        flops += fl
        stats.update(mode=st["mode"], chunk_members=st["chunk_members"], backend=st.get("backend", "torch"))

        e = part.ref_idx[gi]
        _sync(dev)
        t0 = time.perf_counter()
        ref, steps, reached = train_reference(members[e], X, y, lr=part.lr, max_steps=part.max_steps,
                                              target=part.target, weight_decay=part.weight_decay[e],
                                              train_u=part.train_u, train_c=part.train_c)
        _sync(dev)
        t_ref += time.perf_counter() - t0
        ref_steps += steps
        g = next(j for j in range(k) if bounds[j] <= e < bounds[j + 1])
        if g > gi:
            raise RuntimeError("reference members must lie in the groups already trained")
        r, i = groups[g], e - bounds[g]
        rel = max(float((getattr(ref, k) - getattr(r, k)[i].to(dev)).abs().max())
                  / max(float(getattr(ref, k).abs().max()), 1e-300) for k in ("W", "b", "u", "c"))
        worst = max(worst, rel)
        same &= steps == int(r.steps[i]) and reached == bool(r.reached[i]) and rel <= REL_TOL
    steps_all = torch.cat([r.steps for r in groups])
    reached_all = torch.cat([r.reached for r in groups])
    all_steps = int(steps_all.sum())
    t_ref_est = t_ref / max(ref_steps, 1) * all_steps
    return dict(threads=torch.get_num_threads(), steps=steps_all, reached=reached_all, stats=stats, t_eng=t_eng, t_mm=t_mm, flops=flops,
                t_ref_sub=t_ref,
                ref_steps=ref_steps, all_steps=all_steps, t_ref_est=t_ref_est, worst=worst, same=same,
                groups=[bounds[j + 1] - bounds[j] for j in range(k)])


def matmul_time(matmuls: dict, dev: torch.device, min_time: float = 0.05) -> tuple[float, float]:
    """Time a plain torch.matmul at each recorded shape; returns (total seconds for all calls, total FLOPs)."""
    total_t, total_f = 0.0, 0.0
    g = torch.Generator(device="cpu").manual_seed(0)
    for (batch, M, K, N), count in sorted(matmuls.items()):
        if batch == 1:
            a = torch.randn(M, K, generator=g, dtype=DTYPE).to(dev)
            b = torch.randn(K, N, generator=g, dtype=DTYPE).to(dev)
            c = torch.empty(M, N, dtype=DTYPE, device=dev)
        else:
            a = torch.randn(batch, M, K, generator=g, dtype=DTYPE).to(dev)
            b = torch.randn(batch, K, N, generator=g, dtype=DTYPE).to(dev)
            c = torch.empty(batch, M, N, dtype=DTYPE, device=dev)
        torch.matmul(a, b, out=c)
        flops = 2.0 * batch * M * K * N
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(5):
            torch.matmul(a, b, out=c)
        _sync(dev)
        once = max((time.perf_counter() - t0) / 5, 1e-7)
        reps = max(1, min(count, int(math.ceil(min_time / once))))
        best = float("inf")
        for _ in range(3):
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.matmul(a, b, out=c)
            _sync(dev)
            best = min(best, (time.perf_counter() - t0) / reps)
        total_t += best * count
        total_f += flops * count
    return total_t, total_f


def engine_profile(part: Part, dev: torch.device, E: int, steps: int) -> str:
    """A short torch.profiler table of a few engine iterations (where the engine's time goes)."""
    from torch.profiler import ProfilerActivity, profile

    members = [_to(p, dev) for p in part.members[:E]]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        train_ensemble(members, part.X.to(dev), part.y.to(dev), lr=part.lr, max_steps=steps, sub=part.sub,
                       weight_decay=part.weight_decay[:E], device=dev)
    key = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    try:
        return prof.key_averages().table(sort_by=key, row_limit=10, max_name_column_width=28)
    except (KeyError, AttributeError, RuntimeError):
        return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=28)


def report(part: Part, r: dict) -> None:
    """Print one part's measurements."""
    st = r["stats"]
    E = len(part.members)
    m, d = part.members[0].W.shape
    ell = "" if part.sub is None else f", ell = {part.sub.ell}"
    print(f"\n{part.name}")
    print(f"  E = {E} networks, d = {d}{ell}, m = {m}, n = {part.X.shape[0]}; "
          f"steps per network {int(r['steps'].min())}-{int(r['steps'].max())} (total {r['all_steps']}); "
          f"reached the target: {int(r['reached'].sum())}/{E}")
    print(f"  torch threads: {r['threads']}")
    print(f"  engine: backend '{st['backend']}', mode '{st['mode']}', batches of {r['groups']} members; "
          f"{r['t_eng']:.2f} s for all {E} networks ({r['t_eng'] / r['all_steps'] * 1e6:.1f} us per network-step)")
    print(f"  reference: members {part.ref_idx} (one after each engine batch) trained in {r['t_ref_sub']:.1f} s "
          f"({r['ref_steps']} steps, {r['t_ref_sub'] / max(r['ref_steps'], 1) * 1e6:.0f} us per step); "
          f"scaled per network-step to all {E} networks: {r['t_ref_est']:.1f} s (estimated)")
    print(f"  same results on the reference members: steps and stopping equal, max relative difference of "
          f"W, b, u, c {r['worst']:.1e} (tolerance {REL_TOL:g}): {r['same']}")
    print(f"  matrix products: {r['flops'] / 1e9:.2f} GFLOP; engine {r['flops'] / r['t_eng'] / 1e9:.2f} GFLOP/s, "
          f"plain torch.matmul at the same shapes {r['flops'] / max(r['t_mm'], 1e-12) / 1e9:.2f} GFLOP/s")
    print(f"  speedup on this part: {r['t_ref_est'] / r['t_eng']:.1f}x; fraction of matmul peak: "
          f"{r['t_mm'] / r['t_eng']:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small smoke run (seconds), not a measurement")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when available)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--no-profile", action="store_true", help="skip the profiler table")
    ap.add_argument("--book-only", action="store_true", help="only Part A (the book's heaviest sweep)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    torch.set_default_dtype(DTYPE)

    if args.quick:
        parts = [make_part_fig2(n_ref=2, max_steps=2000),
                 make_part_a(E=8, d=200, ell=100, m=200, n=40, n_ref=2),
                 make_part_b(seeds=1, d=200, ell=100, m=200, n=40, steps=200, n_ref=2)]
    else:
        parts = [make_part_fig2(n_ref=2),
                 make_part_a(E=64, d=1000, ell=500, m=1000, n=100, n_ref=2),
                 make_part_b(seeds=2, d=1000, ell=500, m=1000, n=100, steps=1000, n_ref=2)]
    if args.book_only:
        parts = parts[:1]

    print(f"bench_engine: torch {torch.__version__}, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else
             f", {torch.get_num_threads()} CPU threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset: the OpenMP default')}), load average {os.getloadavg()[0]:.1f} at start"))
    print("float64; (a) reference = nn.Linear + ReLU + nn.Linear, torch.optim.SGD, autograd, BCEWithLogitsLoss, "
          "full space, one network at a time; (b) ortho_lib.train_ensemble on all members at once.")
    # Warm up both paths (library initialisation, thread pools, compiling the fused kernel) on tiny problems.
    run_part(make_part_fig2(n_ref=1, max_steps=20), dev)
    run_part(make_part_a(E=2, d=50, ell=25, m=40, n=10, n_ref=1), dev)

    results = []
    all_ok = True
    for part in parts:
        r = run_part(part, dev)
        results.append(r)
        report(part, r)
        all_ok &= r["same"]

    book = results[0]
    speedup = book["t_ref_est"] / book["t_eng"]
    fraction = book["t_mm"] / book["t_eng"]
    print("\nSummary")
    print(f"  Part A, the book's heaviest sweep: engine {book['t_eng']:.2f} s against reference {book['t_ref_est']:.1f} s "
          f"(estimated from the timed subset)")
    if len(results) > 1:
        big = results[1:]
        t_eng = sum(r["t_eng"] for r in big)
        t_ref = sum(r["t_ref_est"] for r in big)
        t_mm = sum(r["t_mm"] for r in big)
        print(f"  Parts B and C, the paper's scale: engine {t_eng:.1f} s against reference {t_ref:.1f} s: speedup "
              f"{t_ref / t_eng:.1f}x, fraction of matmul peak {t_mm / t_eng:.2f}")
    print(f"  load average {os.getloadavg()[0]:.1f} at the end")
    if not args.no_profile and len(parts) > 1:
        E = min(4, len(parts[1].members))
        print(f"\nWhere the engine's time goes at the paper's scale (torch.profiler, part B, {E} networks, 60 steps; "
              f"addmm, cat and copy_ of large arrays are the once-per-call set-up and the rebuilding of W):")
        print(engine_profile(parts[1], dev, E, 60))
    if not all_ok:
        print("ERROR: the engine and the reference disagree", file=sys.stderr)
    print(f"results_agree: {all_ok}")
    print(f"speedup_vs_reference: {speedup:.1f}")
    print(f"fraction_of_matmul_peak: {fraction:.2f}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
