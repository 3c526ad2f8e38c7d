"""How long each chapter of the book takes to execute (``make chapter-times``): the book's budget.

Executes every paired chapter (``book/*.md`` with ``format_name: myst``) from its Markdown source in a fresh
kernel, one after the other, as ``make book`` does (one torch thread: ``OMP_NUM_THREADS=1`` comes from the
Makefile), and prints the seconds of each chapter and of its three slowest cells, the total against the
budget (the whole book in under 8 minutes on the 2-core machine), the load average, and machine-readable
lines (``chapter.<name>.seconds: X``, ``book.total_seconds: Y``).  Nothing is written back to the
notebooks.  A chapter that fails is reported with its failing cell; the exit status is then 1.

``--book DIR`` times the chapters of another checkout (with this checkout's ``ortho_lib``);
``--only a,b`` times some chapters.  Timings depend on the machine's load: run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import functools
import glob
import os
import sys
import time

print = functools.partial(print, flush=True)  # noqa: A001

BUDGET_SECONDS = 8 * 60


def chapters(book: str) -> list:
    out = []
    for path in sorted(glob.glob(os.path.join(book, "*.md"))):
        with open(path) as fh:
            if "format_name: myst" in fh.read(2000):
                out.append(path)
    return out


def run_chapter(path: str, timeout: int) -> tuple[float, list, str]:
    """Execute one chapter; returns (seconds, [(cell seconds, cell index)], error or '')."""
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = jupytext.read(path)
    cell_times: list = []
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    error = ""
    t0 = time.perf_counter()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            c0 = time.perf_counter()
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as exc:
                lines = [ln for ln in str(exc).splitlines() if ln.strip()]
                error = f"cell {index}: " + (lines[-1] if lines else type(exc).__name__)
                cell_times.append((time.perf_counter() - c0, index))
                break
            cell_times.append((time.perf_counter() - c0, index))
    return time.perf_counter() - t0, sorted(cell_times, reverse=True), error


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--book", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "book"))
    ap.add_argument("--only", default="", help="comma-separated chapter names (file names without .md)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = ap.parse_args()
    paths = chapters(args.book)
    if args.only:
        keep = set(args.only.split(","))
        paths = [p for p in paths if os.path.splitext(os.path.basename(p))[0] in keep]
    load0 = os.getloadavg()
    print(f"chapter_times: {len(paths)} chapters of {args.book}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"load average at start {load0[0]:.2f}")
    if load0[0] > 0.5:
        print(f"WARNING: the machine is busy (load average {load0[0]:.2f}): the times are not reliable")
    total, failed, rows = 0.0, [], []
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        secs, cells, error = run_chapter(path, args.timeout)
        total += secs
        slow = ", ".join(f"cell {i} {t:.1f} s" for t, i in cells[:3])
        print(f"  {name:<24} {secs:7.1f} s   (slowest: {slow})" + (f"   FAILED at {error}" if error else ""))
        rows.append((name, secs))
        if error:
            failed.append(name)
    print(f"  {'total':<24} {total:7.1f} s of the {BUDGET_SECONDS} s budget (8 minutes)"
          + ("" if not failed else f"; {len(failed)} chapter(s) failed, their time is up to the failure"))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print("\nmachine-readable:")
    for name, secs in rows:
        print(f"chapter.{name}.seconds: {secs:.1f}")
    print(f"book.total_seconds: {total:.1f}")
    print(f"book.within_budget: {str(total < BUDGET_SECONDS and not failed).lower()}")
    print(f"book.failed_chapters: {','.join(failed) if failed else 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
