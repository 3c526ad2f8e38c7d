"""The hostile-user audit behind the property tests: run every probe of ``api_cases.probes`` and tally.

    OMP_NUM_THREADS=1 .venv/bin/python tests/audit_bad_inputs.py [name-filter]

Each public callable gets every bad and edge value of the catalogue (about 4,000 calls, ~1 min).  An
outcome is good when a bad value raises TypeError/ValueError naming the caller's argument, or an edge
value gives the valid call's answer; the table counts the other outcomes (an unnamed message, a crash of
another type, a wrong answer, a silent nan, a valid input refused, a hang) per class of the issue.
Not collected by pytest (the property tests draw from the same cases).
"""
from __future__ import annotations

import collections
import math
import signal
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import api_cases as A  # noqa: E402

OUTCOMES = ["named error", "correct result", "unnamed message", "crash", "wrong answer", "silent nan",
            "valid rejected", "hang"]
ISSUES = ["dtype", "nan", "dataclass", "flags", "valid", "other"]


class Hang(Exception):
    pass


def _has_nan(r) -> bool:
    if isinstance(r, torch.Tensor):
        return r.is_floating_point() and bool(torch.isnan(r.detach()).any())
    if isinstance(r, float):
        return math.isnan(r)
    if isinstance(r, (tuple, list)):
        return any(_has_nan(x) for x in r)
    return any(_has_nan(getattr(r, f)) for f in getattr(r, "__dataclass_fields__", ()))


def _call(case, overrides):
    signal.alarm(20)
    try:
        return case.call(**overrides)
    finally:
        signal.alarm(0)


def outcome(case: A.Case, p: A.Probe) -> tuple[str, str]:
    try:
        r = _call(case, p.overrides)
    except Hang:
        return "hang", ""
    except (TypeError, ValueError) as e:
        if p.expect != "error":
            return "valid rejected", f"{type(e).__name__}: {e}"
        return ("named error" if A.names_argument(str(e), p.names) else "unnamed message"), str(e)
    except Exception as e:  # noqa: BLE001 - the audit classifies every failure
        return ("crash" if p.expect == "error" else "valid rejected"), f"{type(e).__name__}: {e}"
    if p.expect == "run":
        return "correct result", ""
    if p.expect == "error":
        if p.equivalent is not None:
            try:
                if A.same(r, _call(case, p.equivalent)):
                    return "correct result", ""
            except Exception:  # noqa: BLE001
                pass
        return ("silent nan" if _has_nan(r) else "wrong answer"), ""
    ref = A.base_result(case) if not p.reference else _call(case, p.reference)
    if A.same(r, ref, rtol=p.rtol, atol=p.rtol, floor=p.floor):
        return "correct result", ""
    return ("silent nan" if _has_nan(r) else "wrong answer"), ""


def main(name_filter: str = "") -> None:
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(Hang()))
    tally: collections.Counter = collections.Counter()
    for case in A.CASES:
        if name_filter not in case.name:
            continue
        A.base_result(case)
        for p in A.probes(case):
            key, msg = outcome(case, p)
            tally[p.issue, key] += 1
            if key not in ("named error", "correct result"):
                print(f"{key}: {case.name}({p.arg}: {p.label}) {msg[:160]}")
    print("issue".ljust(10), *[k.rjust(16) for k in OUTCOMES], "total".rjust(7))
    for i in ISSUES + ["all"]:
        row = [sum(tally[j, k] for j in (ISSUES if i == "all" else [i])) for k in OUTCOMES]
        print(i.ljust(10), *[str(x).rjust(16) for x in row], str(sum(row)).rjust(7))


if __name__ == "__main__":
    main(*sys.argv[1:])
