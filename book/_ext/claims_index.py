"""The book's claims index: every claim, its kind, the cell that measures it and the tests that check it.

A *claim* is a labelled ``prf`` block of kind theorem, lemma, proposition, corollary (proved in the book;
``:class: reconstruction`` marks the book's reconstruction of a cited result), conjecture or observation
(empirical: measured, not proved).  A chapter's code cell that measures claim ``L`` carries the tag
``measures-L``; a test that checks it carries ``@pytest.mark.claim("L")``.  ``make test`` writes each
claim's last test results to ``_build/claims/test-results.json`` (see ``tests/conftest.py``); the
``{claims-index}`` directive reads all of this at build time and renders the table, saying so where a
claim has no test or where the tests were not run.

The scanning functions are plain Python (no Sphinx) so that the tests can use them too.
"""
from __future__ import annotations

import ast
import json
import pathlib
import re
from dataclasses import dataclass, field

CLAIM_KINDS = ("theorem", "lemma", "proposition", "corollary", "conjecture", "observation")
EMPIRICAL = ("conjecture", "observation")
RESULTS = pathlib.Path("_build") / "claims" / "test-results.json"

_OPEN = re.compile(r"^(?P<fence>`{3,}|:{3,})\{prf:(?P<kind>[a-z]+)\}\s*(?P<title>.*)$")
_OPTION = re.compile(r"^:(?P<key>[a-z]+):\s*(?P<value>.*)$")
_TAGS = re.compile(r"^:tags:\s*\[(?P<tags>.*)\]\s*$")


@dataclass
class Claim:
    label: str
    kind: str                 # the prf directive
    title: str
    chapter: str              # the chapter's file stem
    reconstruction: bool = False
    cells: list = field(default_factory=list)   # indices (1-based, among the chapter's code cells)
    tests: list = field(default_factory=list)   # pytest node ids

    @property
    def category(self) -> str:
        if self.kind in EMPIRICAL:
            return "empirical"
        return "reconstruction of a cited result" if self.reconstruction else "theorem proved here"


def scan_chapters(book: pathlib.Path) -> dict[str, Claim]:
    """Every claim of the chapters in ``book`` (``*.md``), with the code cells tagged ``measures-<label>``."""
    claims: dict[str, Claim] = {}
    measured: list[tuple[str, str, int]] = []
    for md in sorted(book.glob("*.md")):
        lines = md.read_text().splitlines()
        code_cells = 0
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("```{code-cell}"):
                code_cells += 1
                j = i + 1
                while j < len(lines) and lines[j].startswith(":"):
                    m = _TAGS.match(lines[j])
                    if m:
                        for tag in (t.strip().strip("'\"") for t in m["tags"].split(",")):
                            if tag.startswith("measures-"):
                                measured.append((tag[len("measures-"):], md.stem, code_cells))
                    j += 1
            m = _OPEN.match(line)
            if m and m["kind"] in CLAIM_KINDS:
                opts = {}
                j = i + 1
                while j < len(lines) and _OPTION.match(lines[j]):
                    o = _OPTION.match(lines[j])
                    opts[o["key"]] = o["value"].strip()
                    j += 1
                label = opts.get("label")
                if label:
                    if label in claims:
                        raise ValueError(f"claim label {label!r} appears twice ({claims[label].chapter}, {md.stem})")
                    claims[label] = Claim(label, m["kind"], m["title"].strip(), md.stem,
                                          reconstruction="reconstruction" in opts.get("class", "").split())
            i += 1
    for label, chapter, cell in measured:
        if label not in claims:
            raise ValueError(f"{chapter}.md: a code cell is tagged measures-{label}, but no claim has that label")
        claims[label].cells.append(cell)
    return claims


def scan_tests(tests: pathlib.Path) -> dict[str, list[str]]:
    """For each claim label, the tests marked ``@pytest.mark.claim(label)`` (as ``file::[Class::]name``)."""
    out: dict[str, list[str]] = {}

    def labels(decorators) -> list[str]:
        found = []
        for dec in decorators:
            if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) and dec.func.attr == "claim"
                    and dec.args and isinstance(dec.args[0], ast.Constant)):
                found.append(dec.args[0].value)
        return found

    for py in sorted(tests.glob("test_*.py")):
        tree = ast.parse(py.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                for lab in labels(node.decorator_list):
                    out.setdefault(lab, []).append(f"{py.name}::{node.name}")
            elif isinstance(node, ast.ClassDef):
                for lab in labels(node.decorator_list):
                    out.setdefault(lab, []).append(f"{py.name}::{node.name}")
                for sub in node.body:
                    if isinstance(sub, ast.FunctionDef) and sub.name.startswith("test"):
                        for lab in labels(sub.decorator_list):
                            out.setdefault(lab, []).append(f"{py.name}::{node.name}::{sub.name}")
    return out


def collect(root: pathlib.Path) -> tuple[dict[str, Claim], dict[str, list[str]], dict]:
    """Claims, the tests per label (including labels with no claim: an error the test suite reports), results."""
    claims = scan_chapters(root / "book")
    tests = scan_tests(root / "tests")
    for label, ids in tests.items():
        if label in claims:
            claims[label].tests = ids
    results_file = root / RESULTS
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    return claims, tests, results


def _outcome(claim: Claim, results: dict) -> str:
    if not claim.tests:
        return "**no test**"
    res = results.get("claims", {}).get(claim.label)
    if not res:
        return "not run in this build"
    counts = {k: res.count(k) for k in ("passed", "failed", "skipped")}
    parts = [f"{v} {k}" for k, v in counts.items() if v]
    return ", ".join(parts) or "not run"


def markdown_table(root: pathlib.Path) -> list[str]:
    """The index as MyST Markdown lines (a summary, then one table per chapter)."""
    claims, _, results = collect(root)
    n = len(claims)
    tested = sum(1 for c in claims.values() if c.tests)
    by_kind = {}
    for c in claims.values():
        by_kind[c.category] = by_kind.get(c.category, 0) + 1
    when = results.get("finished", None)
    lines = [
        f"The book makes **{n} claims**: "
        + ", ".join(f"{v} {k}" for k, v in sorted(by_kind.items())) + ". "
        + f"**{tested}** are checked by tests on fresh seeds, **{n - tested}** by no test.",
        "",
        ("Test results are those of the last `make test` run in this build tree"
         + (f" ({results.get('summary', '')})." if when else ": none was found, so results read *not run*.")),
        "",
    ]
    toc = (root / "_toc.yml").read_text() if (root / "_toc.yml").exists() else ""
    order = re.findall(r"file:\s*book/([A-Za-z0-9_]+)", toc)
    chapters = sorted({c.chapter for c in claims.values()}, key=lambda ch: (order.index(ch) if ch in order else 999, ch))
    for ch in chapters:
        lines += [f"**Chapter {{doc}}`{ch}`**", "", "| claim | statement | kind | measured in (code cells) | tests (how many) | last result |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for c in (c for c in claims.values() if c.chapter == ch):
            cells = ("cell " if len(c.cells) == 1 else "cells ") + ", ".join(map(str, c.cells)) if c.cells else "—"
            per_file: dict[str, int] = {}
            for t in c.tests:
                per_file[t.split("::")[0]] = per_file.get(t.split("::")[0], 0) + 1
            tests = "<br>".join(f"`{f}` ({k})" for f, k in per_file.items()) or "—"
            title = c.title.replace("|", "\\|") or "—"
            lines.append(f"| {{prf:ref}}`{c.label}` | {title} | {c.category} | {cells} | {tests} | "
                         f"{_outcome(c, results)} |")
        lines.append("")
    return lines


def setup(app):  # pragma: no cover - Sphinx
    from docutils.parsers.rst import Directive
    from docutils.statemachine import StringList
    from docutils import nodes

    class ClaimsIndex(Directive):
        has_content = False

        def run(self):
            root = pathlib.Path(app.srcdir)
            container = nodes.container()
            self.state.nested_parse(StringList(markdown_table(root)), self.content_offset, container)
            return container.children

    app.add_directive("claims-index", ClaimsIndex)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
