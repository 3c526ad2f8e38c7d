r"""Every measured number in a chapter's prose is computed by the chapter (myst-nb glue), never typed.

The test strips from each chapter what may legitimately hold numbers — code cells and code, math
(``$...$``, ``$$...$$``, ``{math}`` blocks), glue roles (``{glue:text}`name```), other roles' targets and
directive options — and fails on any decimal, percentage, number in scientific notation or "N of M" count
left in the prose, and on inline math that is nothing but a decimal number (``$0.55$``: a measurement in
disguise).  Settings the text states belong in math with their symbol (``$\gamma = 0.3$``), where a reader
sees them as parameters; the few constants quoted otherwise are in ``ALLOWED`` with the reason.
"""
from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.md") if "format_name: myst" in p.read_text()[:600])
PAGES = CHAPTERS + [p for p in (ROOT / "book").glob("*.md") if p not in CHAPTERS]

# chapter stem -> {number as written: why it may appear in prose}
ALLOWED: dict[str, dict[str, str]] = {
    "small_initialisation": {"7.3": "a section number of Vershynin (2018), cited in a proof"},
    "separable_noise": {"3.1": "the paper's theorem number", "3.6": "the paper's theorem number",
                        "3.4.1": "the paper's corollary number", "6.1": "the paper's lemma number"},
    "kkt_nonrobust": {"2.2": "a lemma number of Ball (1997), cited in a proof"},
}
# Chapters whose prose still quotes typed numbers; each is fixed in its chapter pass (then removed here).
PENDING: set[str] = set()

_BARE_MATH = re.compile(r"(?<!\$)\$\s*(?:\\approx\s*|\\sim\s*)?[-+]?\d+\.\d+\s*(?:\\%)?\s*\$(?!\$)")
_PATTERNS = [
    ("scientific", re.compile(r"(?<![\w.])\d+(?:\.\d+)?[eE][-+]?\d+\b")),
    ("percentage", re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?%")),
    ("decimal", re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")),
    ("count", re.compile(r"(?<![\w.])\d+\s+(?:out\s+)?of\s+(?:the\s+)?\d+\b")),
]


_FENCE = re.compile(r"^(`{3,}|:{3,})(.*)$")
_DROPPED = ("code-cell", "math", "glue:figure", "glue:math")


def _strip_blocks(text: str) -> str:
    """The text with code cells, math and glue blocks and plain code fences removed, and the fence lines of
    every other directive (prf blocks, figures, admonitions) blanked while their content is kept.

    Line by line, with a stack of open fences: a fence line with nothing after it closes the innermost
    block opened with the same fence, any other fence line opens one.  (A regex that pairs fences cannot
    tell a directive's closing fence from the opening of a plain code block.)
    """
    out, stack = [], []                    # stack of (fence, dropped)
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if m:
            fence, rest = m.group(1), m.group(2).strip()
            if stack and not rest and fence[0] == stack[-1][0][0] and len(fence) >= len(stack[-1][0]):
                stack.pop()
            else:
                name = re.match(r"\{([^}]*)\}", rest)
                stack.append((fence, name is None or name.group(1) in _DROPPED))
            out.append("")
            continue
        out.append("" if any(dropped for _, dropped in stack) else line)
    return "\n".join(out)


def prose_keep_math(text: str) -> str:
    """The chapter's text with front matter, code cells, code fences and math blocks removed (inline math kept)."""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
    return _strip_blocks(text)


def prose(text: str) -> str:
    """The chapter's prose with code, math, roles, directive options and front matter removed."""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)                      # front matter
    text = _strip_blocks(text)                                  # code cells, math blocks, fences
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)                             # display math
    text = re.sub(r"(?<!\\)\$(?:\\\$|[^$])+?(?<!\\)\$", " ", text)                   # inline math
    text = re.sub(r"\{[a-z:-]+\}`[^`]*`", " ", text)                                 # roles: glue, cite, doc, ...
    text = re.sub(r"`[^`]*`", " ", text)                                             # inline code
    text = re.sub(r"^:[a-z-]+:.*$", " ", text, flags=re.M)                           # directive options
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)                              # comments
    text = re.sub(r"\]\([^)]*\)", "]", text)                                         # link targets
    return text


def typed_numbers(md: pathlib.Path) -> list[tuple[str, str, str]]:
    """``(kind, number, context)`` for every number the prose types instead of gluing."""
    allowed = ALLOWED.get(md.stem, {})
    found = []
    text = md.read_text()
    for m in _BARE_MATH.finditer(prose_keep_math(text)):
        tok = m.group(0)
        if tok not in allowed:
            found.append(("number in math", tok, " ".join(text[max(0, m.start() - 50): m.end() + 30].split())))
    body = prose(text)
    for kind, pat in _PATTERNS:
        for m in pat.finditer(body):
            tok = m.group(0).strip()
            if tok in allowed:
                continue
            ctx = " ".join(body[max(0, m.start() - 50): m.end() + 30].split())
            found.append((kind, tok, ctx))
    return found


def test_the_scanner_finds_typed_numbers_and_skips_math_code_and_glue(tmp_path):
    page = tmp_path / "demo.md"
    page.write_text(
        "---\nx: 1.5\n---\n# T\nThe ratio is 1.37 and 84% of points, 137 of the 200, err 2e-3.\n"
        "Math $0.5 < 1.25$ and $$3.75$$, code `0.25`, glue {glue:text}`r:.2f`, role {doc}`a1.5`, bare $0.55$.\n"
        "```{code-cell} ipython3\nx = 0.125\n```\n:label: thm-1.5\n")
    kinds = sorted(k for k, _, _ in typed_numbers(page))
    assert kinds == ["count", "decimal", "number in math", "percentage", "scientific"]


def test_the_scanner_reads_the_prose_inside_and_after_directive_blocks(tmp_path):
    # the backticks of a directive's fences must not pair with each other and hide the prose between them
    page = tmp_path / "demo.md"
    page.write_text("# T\n```{prf:theorem} A\n:label: thm-a\n\nInside 0.25 here.\n```\n\nAfter `code`, 84% here.\n"
                    "```{prf:proof}\nProof 1.5 here.\n```\n")
    assert sorted(t for _, t, _ in typed_numbers(page)) == ["0.25", "1.5", "84%"]


@pytest.mark.parametrize("md", PAGES, ids=lambda p: p.stem)
def test_prose_quotes_no_typed_measurement(md):
    if md.stem in PENDING:
        pytest.xfail(f"{md.stem}: typed numbers remain until its trust pass")
    found = typed_numbers(md)
    assert not found, f"{md.name}: {len(found)} typed number(s) in prose (glue them or put settings in math):\n" + \
        "\n".join(f"  {k}: {t!r} in '...{c}...'" for k, t, c in found[:25])
