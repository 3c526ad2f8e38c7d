"""pytest plugin: record which book claim each test checks, and write the results for the claims index.

A test marked ``@pytest.mark.claim("thm-universal")`` checks the claim labelled ``thm-universal`` in a
chapter.  At the end of a run the outcomes per claim go to ``_build/claims/test-results.json``, which the
book's claims index (``book/_ext/claims_index.py``) reads when the book is built.
"""
from __future__ import annotations

import datetime
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "_build" / "claims" / "test-results.json"
_outcomes: dict[str, list[str]] = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "claim(label): the labelled claim of the book that this test checks")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("claim"):
        if not mark.args or not isinstance(mark.args[0], str):
            raise ValueError(f"{item.nodeid}: pytest.mark.claim needs the claim's label as a string")
        item.user_properties.append(("claim", mark.args[0]))


def pytest_runtest_logreport(report):
    labels = [v for k, v in getattr(report, "user_properties", []) if k == "claim"]
    if not labels:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        for label in labels:
            _outcomes.setdefault(label, []).append(report.outcome)


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller writes the file
        return
    if not _outcomes:
        return
    total = sum(len(v) for v in _outcomes.values())
    failed = sum(v.count("failed") for v in _outcomes.values())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "summary": f"{total} claim tests, {failed} failed",
        "claims": {k: sorted(v) for k, v in sorted(_outcomes.items())},
    }, indent=1))
