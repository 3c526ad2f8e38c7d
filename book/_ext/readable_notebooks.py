"""Readable notebooks for Colab and Jupyter, made from the book's MyST chapters.

A chapter's paired ``book/<chapter>.ipynb`` is MyST markdown in notebook form: opened in Colab or
Jupyter it shows ``{prf:theorem}`` blocks as raw code, roles (``{cite:t}``, ``{prf:ref}``,
``{glue:text}`` ...) as literal text and the book's MathJax macros (``\\R``, ``\\norm{x}``) as
undefined.  This module writes ``book/colab/<chapter>.ipynb`` from

* ``book/<chapter>.md`` — the Markdown cells, converted to plain Jupyter Markdown, and
* ``book/<chapter>.ipynb`` — the code cells, copied with their stored outputs (execution counts kept),

using ``_toc.yml`` (chapter order and numbers), ``_config.yml`` (macros, repository) and
``references.bib``.  The conversion mirrors what the HTML book shows:

* headings carry the HTML section numbers ("1.2. The lemma");
* ``prf`` blocks become a bold heading with the HTML number and title ("**Theorem 4.1** (Title)")
  followed by the body as a block quote; ``{prf:proof}`` becomes "**Proof.** ... ∎";
* ``{cite:t}`` gives "Melamed et al. (2023)", ``{cite:p}`` "(Melamed et al., 2023)"; a References
  cell at the end lists what the chapter cites, labelled and formatted as the book's bibliography;
* ``{doc}`` gives the chapter title, ``{prf:ref}`` "Lemma 1.1", ``{numref}`` "Fig. 2.1",
  ``{eq}`` "(2.1)", ``{ref}`` the section title or caption, numbered as Sphinx numbers them
  (per chapter, per kind, in document order);
* ``{glue:text}`` / ``{glue}`` / ``{glue:md}`` and the glue directives insert the value stored in the
  executed notebook (format specs such as ``name:.2f`` as myst-nb applies them); glued images become
  cell attachments;
* book macros are expanded in the LaTeX text (no ``\\newcommand`` needed by any renderer);
  display math is written on one line (so it survives block quotes), labelled equations get ``\\tag``;
  ``|`` inside math in a table row becomes ``\\vert``;
* admonitions, figures, tables, ``{math}`` and code-block directives become Markdown;
* code cells tagged ``remove-cell``/``remove-input`` keep their code (a notebook must run) but
  hide it, except the Colab install cell, which stays visible; Markdown cells tagged ``remove-cell``
  are dropped; outputs of ``remove-output`` cells are hidden; glue-only outputs (no renderer exists
  for them) and progress-bar refreshes are dropped.

Whatever it cannot resolve is listed in :attr:`Converted.problems`; :func:`markup_problems` lists
MyST syntax left in a converted notebook.  ``tests/test_readable_notebooks.py`` requires both to be
empty and every committed notebook to equal a fresh conversion.

Usage::

    python book/_ext/readable_notebooks.py              # every paired chapter
    python book/_ext/readable_notebooks.py setting      # one chapter
    python book/_ext/readable_notebooks.py --check      # exit 1 if a notebook is stale or has problems
"""
from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import pathlib
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import jupytext
import nbformat
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT_DIR = "book/colab"
GLUE_PREFIX = "application/papermill.record/"
INSTALL_MARK = '"google.colab" in sys.modules'

# sphinx-proof's directives (proof is unnumbered; the rest are numbered per kind)
PRF_TYPES = ("axiom", "theorem", "lemma", "algorithm", "definition", "remark", "conjecture",
             "corollary", "criterion", "example", "property", "observation", "proposition",
             "assumption", "notation")
ADMONITIONS = {"note": "Note", "warning": "Warning", "tip": "Tip", "important": "Important",
               "hint": "Hint", "caution": "Caution", "attention": "Attention", "danger": "Danger",
               "error": "Error", "seealso": "See also", "admonition": None, "dropdown": None,
               "margin": None, "sidebar": None, "topic": None, "epigraph": None, "card": None,
               "tab-item": None}
CONTAINERS = ("div", "container", "tab-set", "grid", "grid-item", "grid-item-card", "card-carousel")
NUMFIG = {"figure": "Fig. %s", "table": "Table %s", "code-block": "Listing %s", "section": "Section %s"}


# --- the book: chapters, labels, macros, bibliography --------------------------------------------

@dataclass
class Chapter:
    name: str                  # file stem: "setting"
    docname: str               # "book/setting"
    path: pathlib.Path         # book/setting.md
    title: str
    number: Optional[int]      # None: unnumbered (intro, back matter)
    paired: bool               # has a jupytext-paired, executed .ipynb

    @property
    def notebook(self) -> pathlib.Path:
        return self.path.with_suffix(".ipynb")


@dataclass
class Target:
    kind: str                  # prf | figure | table | code-block | displaymath | section
    chapter: str
    number: str                # "3.1" ("" when unnumbered)
    title: str = ""            # prf title, caption, section title
    typ: str = ""              # prf kind: theorem, lemma, ...


@dataclass
class Book:
    root: pathlib.Path
    chapters: List[Chapter]
    macros: Dict[str, Tuple[int, str, Optional[str]]]
    repo_url: str
    branch: str
    bib: Any
    labels: Dict[str, Target] = field(default_factory=dict)
    # every prf block of a chapter, labelled or not, in document order: (chapter, kind) -> targets
    results: Dict[Tuple[str, str], List[Target]] = field(default_factory=dict)

    def chapter(self, name: str) -> Chapter:
        for ch in self.chapters:
            if ch.name == name or ch.docname == name:
                return ch
        raise KeyError(f"chapter {name!r} is not in _toc.yml")

    @property
    def paired(self) -> List[Chapter]:
        return [c for c in self.chapters if c.paired]


def _toc_entries(toc: dict) -> List[Tuple[str, bool]]:
    """(docname, numbered) for the root and every file in ``_toc.yml``, in reading order."""
    out = [(toc["root"], False)]

    def walk(items, numbered):
        for item in items or []:
            if "file" in item:
                out.append((item["file"], numbered))
            walk(item.get("sections"), numbered)

    if "parts" in toc:
        for part in toc["parts"]:
            walk(part.get("chapters"), bool(part.get("numbered", False)))
    else:
        numbered = bool((toc.get("options") or {}).get("numbered") or (toc.get("defaults") or {}).get("numbered"))
        walk(toc.get("chapters"), numbered)
    return out


def _first_heading(text: str) -> str:
    for block in iter_blocks(_strip_front_matter(text).split("\n")):
        if block.kind == "heading":
            return block.text
    return ""


def _strip_front_matter(text: str) -> str:
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            return text[text.index("\n", end + 1) + 1:] if "\n" in text[end + 1:] else ""
    return text


def load_book(root: pathlib.Path = ROOT) -> Book:
    """Read ``_toc.yml``, ``_config.yml``, ``references.bib`` and every chapter's labels."""
    from pybtex.database import parse_file

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    config = yaml.safe_load((root / "_config.yml").read_text())
    chapters: List[Chapter] = []
    number = 0
    for docname, numbered in _toc_entries(toc):
        docname = re.sub(r"\.(md|ipynb)$", "", docname)
        path = root / f"{docname}.md"
        text = path.read_text()
        if numbered:
            number += 1
        paired = "format_name: myst" in text[:600] and path.with_suffix(".ipynb").exists()
        chapters.append(Chapter(pathlib.PurePosixPath(docname).name, docname, path,
                                _first_heading(text), number if numbered else None, paired))
    raw = (((config.get("sphinx") or {}).get("config") or {}).get("mathjax3_config") or {})
    macros = {}
    for name, body in ((raw.get("tex") or {}).get("macros") or {}).items():
        if isinstance(body, str):
            macros[name] = (0, body, None)
        else:
            macros[name] = (int(body[1]), body[0], body[2] if len(body) > 2 else None)
    repo = config.get("repository") or {}
    bibfiles = config.get("bibtex_bibfiles") or ["references.bib"]
    bib = parse_file(str(root / bibfiles[0]), bib_format="bibtex")
    for extra in bibfiles[1:]:
        for key, entry in parse_file(str(root / extra), bib_format="bibtex").entries.items():
            bib.entries[key] = entry
    book = Book(root, chapters, macros, repo.get("url", ""), repo.get("branch", "main"), bib)
    _collect_labels(book)
    return book


# --- block structure of MyST markdown -------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>.*)$")
DIRECTIVE_INFO = re.compile(r"^\{(?P<name>[\w:+-]+)\}\s*(?P<arg>.*)$")
HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<text>.*?)\s*#*\s*$")
LABEL = re.compile(r"^\s*\((?P<label>[^()\s]+)\)=\s*$")
COMMENT = re.compile(r"^\s*%")


@dataclass
class Block:
    kind: str                  # fence | directive | math | label | heading | comment | text | blank
    lines: List[str]
    name: str = ""             # directive name
    arg: str = ""              # directive argument / fence info
    body: List[str] = field(default_factory=list)
    level: int = 0
    text: str = ""
    label: str = ""
    fence: str = ""


def _closing(fence: str) -> re.Pattern:
    char = re.escape(fence[0])
    return re.compile(rf"^[ \t]*{char}{{{len(fence)},}}\s*$")


def _math_block_end(lines: List[str], i: int) -> Tuple[int, str, str]:
    """A ``$$`` block starting at line i: (index of its last line, content, label)."""
    first = lines[i].strip()[2:]
    tail = re.compile(r"^(?P<body>.*?)\$\$\s*(\((?P<label>[^()]+)\))?\s*$")
    m = tail.match(first)
    if m and first.rstrip() != "":
        return i, m.group("body"), m.group("label") or ""
    content = [first]
    for j in range(i + 1, len(lines)):
        m = tail.match(lines[j].strip())
        if m:
            content.append(m.group("body"))
            return j, "\n".join(content), m.group("label") or ""
        content.append(lines[j])
    return len(lines) - 1, "\n".join(content), ""


def iter_blocks(lines: List[str]) -> Iterator[Block]:
    """Split MyST markdown lines into blocks (fences and directives with their bodies, math, ...)."""
    i = 0
    text: List[str] = []

    def flush():
        if text:
            yield Block("text", list(text))
            text.clear()

    while i < len(lines):
        line = lines[i]
        m = FENCE.match(line)
        if m and not (m.group("fence")[0] == "`" and "`" in m.group("info")):
            fence, info = m.group("fence"), m.group("info").strip()
            close = _closing(fence)
            j = i + 1
            while j < len(lines) and not close.match(lines[j]):
                j += 1
            yield from flush()
            body = lines[i + 1:j]
            d = DIRECTIVE_INFO.match(info)
            if d:
                yield Block("directive", lines[i:j + 1], name=d.group("name"), arg=d.group("arg").strip(),
                            body=body, fence=fence)
            else:
                yield Block("fence", lines[i:j + 1], arg=info, body=body, fence=fence)
            i = j + 1
            continue
        if line.strip().startswith("$$"):
            yield from flush()
            j, content, label = _math_block_end(lines, i)
            yield Block("math", lines[i:j + 1], text=content, label=label)
            i = j + 1
            continue
        if LABEL.match(line):
            yield from flush()
            yield Block("label", [line], label=LABEL.match(line).group("label"))
            i += 1
            continue
        if COMMENT.match(line):
            yield from flush()
            yield Block("comment", [line])
            i += 1
            continue
        h = HEADING.match(line)
        if h:
            yield from flush()
            yield Block("heading", [line], level=len(h.group("hashes")), text=h.group("text"))
            i += 1
            continue
        text.append(line)
        i += 1
    yield from flush()


def split_directive(body: List[str]) -> Tuple[Dict[str, Any], List[str]]:
    """Options (``:key: value`` lines or a ``---`` YAML block) and the content of a directive."""
    options: Dict[str, Any] = {}
    if body and body[0].strip() == "---":
        for j in range(1, len(body)):
            if body[j].strip() == "---":
                options = yaml.safe_load("\n".join(body[1:j])) or {}
                return options, body[j + 1:]
        return options, body
    j = 0
    while j < len(body):
        m = re.match(r"^\s*:([\w-]+):\s*(.*)$", body[j])
        if not m:
            break
        options[m.group(1)] = m.group(2).strip()
        j += 1
    return options, body[j:]


# --- labels and numbers (as Sphinx numbers them) --------------------------------------------------

def _collect_labels(book: Book) -> None:
    counters: Dict[Tuple[str, Tuple[int, ...]], int] = {}

    def next_number(kind: str, chapter: Chapter) -> str:
        sec = (chapter.number,) if chapter.number is not None else ()
        counters[(kind, sec)] = counters.get((kind, sec), 0) + 1
        return ".".join(map(str, sec + (counters[(kind, sec)],)))

    def add(label: str, target: Target):
        if label:
            book.labels[label] = target

    for ch in book.chapters:
        lines = _strip_front_matter(ch.path.read_text()).split("\n")
        pending = [""]
        section_numbers = _section_numberer(ch)

        def walk(blocks: Iterator[Block]):
            for b in blocks:
                if b.kind == "label":
                    pending[0] = b.label
                    continue
                if b.kind in ("comment",) or (b.kind == "text" and not "".join(b.lines).strip()):
                    continue                      # a target applies to the next real block
                if b.kind == "heading":
                    number = section_numbers(b.level)
                    add(pending[0], Target("section", ch.name, number, _plain(b.text)))
                elif b.kind == "math" and b.label:
                    add(b.label, Target("displaymath", ch.name, next_number("displaymath", ch)))
                elif b.kind == "directive":
                    opts, content = split_directive(b.body)
                    name = b.name
                    if name.startswith("prf:") and name[4:] in PRF_TYPES:
                        typ = name[4:]
                        number = "" if "nonumber" in opts else next_number(typ, ch)
                        target = Target("prf", ch.name, number, _plain(b.arg), typ)
                        book.results.setdefault((ch.name, typ), []).append(target)
                        add(opts.get("label", ""), target)
                    elif name in ("figure", "glue:figure"):
                        if opts.get("name"):
                            add(opts["name"], Target("figure", ch.name, next_number("figure", ch),
                                                     _plain(" ".join(content).strip())))
                    elif name in ("table", "list-table", "csv-table"):
                        if opts.get("name"):
                            add(opts["name"], Target("table", ch.name, next_number("table", ch), _plain(b.arg)))
                    elif name in ("code-block", "code", "sourcecode", "literalinclude"):
                        if opts.get("name") and opts.get("caption"):
                            add(opts["name"], Target("code-block", ch.name, next_number("code-block", ch),
                                                     opts["caption"]))
                    elif name == "math":
                        if opts.get("label"):
                            add(opts["label"], Target("displaymath", ch.name, next_number("displaymath", ch)))
                    elif name == "code-cell":
                        fig = ((opts.get("mystnb") or {}).get("figure") or {}) if isinstance(opts, dict) else {}
                        if fig.get("name"):
                            add(fig["name"], Target("figure", ch.name, next_number("figure", ch),
                                                    _plain(str(fig.get("caption", "")))))
                    if name != "code-cell":
                        walk(iter_blocks(content))
                pending[0] = ""

        walk(iter_blocks(lines))


def _section_numberer(ch: Chapter) -> Callable[[int], str]:
    """Numbers of a chapter's successive headings as Sphinx shows them ("1" for the title, "1.2" for
    its second section); a heading nests under the closest earlier heading of a smaller level."""
    stack: List[Tuple[int, Tuple[int, ...]]] = []
    counts: Dict[Tuple[int, ...], int] = {}

    def number(level: int) -> str:
        if ch.number is None:
            return ""
        if not stack:
            stack.append((level, (ch.number,)))
            return str(ch.number)
        while len(stack) > 1 and stack[-1][0] >= level:
            stack.pop()
        parent = stack[-1][1]
        counts[parent] = counts.get(parent, 0) + 1
        num = parent + (counts[parent],)
        stack.append((level, num))
        return ".".join(map(str, num))

    return number


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# --- macros ---------------------------------------------------------------------------------------

def _read_arg(s: str, i: int) -> Tuple[str, int]:
    """One TeX argument of ``s`` starting at ``i`` (spaces skipped): a brace group, a control sequence
    or one character.  Returns (argument text without outer braces, index after it)."""
    n = len(s)
    while i < n and s[i] in " \t\n":
        i += 1
    if i >= n:
        return "", i
    if s[i] == "{":
        depth, j = 0, i
        while j < n:
            c = s[j]
            if c == "\\":
                j += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return s[i + 1:j], j + 1
            j += 1
        return s[i + 1:], n
    if s[i] == "\\":
        j = i + 1
        if j < n and s[j].isalpha():
            while j < n and s[j].isalpha():
                j += 1
            return s[i:j], j
        return s[i:j + 1], j + 1
    return s[i], i + 1


def expand_macros(tex: str, macros: Dict[str, Tuple[int, str, Optional[str]]], max_passes: int = 20) -> str:
    """Expand the book's MathJax macros textually (``\\norm{x}`` -> ``\\left\\lVert x \\right\\rVert``).

    Control words are read as TeX reads them (``\\Rightarrow`` is not ``\\R``; ``\\\\R`` is a line
    break then ``R``); arguments are brace groups or single tokens; nested macros are expanded too.
    """
    if not macros:
        return tex
    for _ in range(max_passes):
        out, i, n, changed = [], 0, len(tex), False
        while i < n:
            c = tex[i]
            if c != "\\":
                out.append(c)
                i += 1
                continue
            j = i + 1
            if j < n and tex[j].isalpha():
                while j < n and tex[j].isalpha():
                    j += 1
                name = tex[i + 1:j]
                if name in macros:
                    nargs, body, default = macros[name]
                    args = []
                    k = j
                    if default is not None:
                        m = re.match(r"\s*\[([^\]]*)\]", tex[k:])
                        if m:
                            args.append(m.group(1))
                            k += m.end()
                        else:
                            args.append(default)
                    while len(args) < nargs:
                        a, k = _read_arg(tex, k)
                        args.append(a)
                    text = body
                    for idx in range(nargs, 0, -1):
                        text = text.replace(f"#{idx}", args[idx - 1])
                    if nargs == 0:
                        # a group, so that neither a preceding control word (``\\in\\Pperp``) nor a following
                        # letter or script (``\\Pperp^2``) merges with the expansion
                        text = "{" + text + "}"
                    elif k < n and tex[k].isalpha() and re.search(r"\\[A-Za-z]+$", text):
                        text += " "  # keep a following letter from merging into the last control word
                    out.append(text)
                    i = k
                    changed = True
                    continue
                out.append(tex[i:j])
                i = j
                continue
            out.append(tex[i:j + 1])
            i = j + 1
        tex = "".join(out)
        if not changed:
            return tex
    return tex


# --- bibliography ---------------------------------------------------------------------------------

def _bib_helpers():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import ortho_sphinx  # noqa: E402  (same directory: the one source of the citation text)

    ortho_sphinx.register_pybtex_styles()
    return ortho_sphinx


def cite_text(book: Book, role: str, keys: List[str], problems: List[str]) -> str:
    """'Melamed et al. (2023)' for ``cite:t``, '(Melamed et al., 2023)' for ``cite:p``, as the HTML."""
    helpers = _bib_helpers()
    parts = []
    for key in keys:
        entry = book.bib.entries.get(key)
        if entry is None:
            problems.append(f"unknown citation key {key!r}")
            parts.append(f"[{key}]")
            continue
        names = helpers.author_names(entry)
        year = entry.fields.get("year", "n.d.")
        if role in ("cite:t", "cite:ts", "cite:ct", "cite:cts"):
            parts.append(f"{names} ({year})")
        elif role in ("cite:author", "cite:authors", "cite:cauthor"):
            parts.append(names)
        elif role in ("cite:year", "cite:yearpar"):
            parts.append(year if role == "cite:year" else f"({year})")
        else:
            parts.append(f"{names}, {year}")
    if role in ("cite:p", "cite:ps", "cite:cp", "cite", "cite:alp"):
        return "(" + "; ".join(parts) + ")"
    return "; ".join(parts)


def references_markdown(book: Book, keys: List[str]) -> str:
    """A References cell: the cited entries, sorted and formatted as the book's bibliography."""
    helpers = _bib_helpers()
    style = helpers.AuthorYearStyle()
    entries = [book.bib.entries[k] for k in dict.fromkeys(keys) if k in book.bib.entries]
    lines = ["## References", ""]
    for formatted in style.format_entries(entries):
        text = " ".join(formatted.text.render_as("markdown").split())
        text = re.sub(r"\\([.\-:()])", r"\1", text)        # pybtex escapes these; harmless mid-line
        lines.append(f"- \\[{formatted.label}\\] {text}")
    return "\n".join(lines)


# --- glue -----------------------------------------------------------------------------------------

def glue_data(notebook: nbformat.NotebookNode) -> Dict[str, Dict[str, Any]]:
    """Glued values of an executed notebook, as myst-nb reads them: name -> mime bundle."""
    data: Dict[str, Dict[str, Any]] = {}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get("scrapbook")
            if not meta:
                continue
            prefix = len(meta.get("mime_prefix", ""))
            data[meta["name"]] = {k[prefix:]: v for k, v in output.get("data", {}).items()}
    return data


def format_plain_text(text: str, fmt_spec: str) -> str:
    """myst-nb's ``{glue:text}`` formatting of a ``text/plain`` value with a format spec."""
    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if fmt_spec == "":
        return str(value)
    type_char = fmt_spec[-1]
    if type_char == "s":
        value = str(value)
    elif type_char in ("b", "c", "d", "o", "x", "X"):
        value = int(value)
    elif type_char in ("e", "E", "f", "F", "g", "G", "n", "%"):
        value = float(value)
    return format(value, fmt_spec)


def _joined(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


# --- the conversion -------------------------------------------------------------------------------

ROLE = re.compile(r"(?<![`\\])\{(?P<name>[A-Za-z][\w:+-]*)\}(?P<ticks>`+)(?P<content>.+?)(?P=ticks)(?!`)", re.S)
CODE_SPAN = re.compile(r"(?P<ticks>`+)(?P<content>.+?)(?P=ticks)(?!`)", re.S)
INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)(?P<math>(?:\\.|[^$\\])+?)\$(?!\$)", re.S)
TOKEN = re.compile(ROLE.pattern + r"|(?P<t2>`+)(?P<c2>.+?)(?P=t2)(?!`)", re.S)
EXPLICIT = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", re.S)


@dataclass
class Context:
    book: Book
    chapter: Chapter
    glue: Dict[str, Dict[str, Any]]
    problems: List[str] = field(default_factory=list)
    cited: List[str] = field(default_factory=list)
    attachments: Dict[str, Dict[str, str]] = field(default_factory=dict)
    glue_cache: Dict[str, Dict[str, Dict[str, Any]]] = field(default_factory=dict)


class MarkdownConverter:
    """MyST markdown of one chapter -> Jupyter markdown (see the module docstring)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.section_number = _section_numberer(ctx.chapter)
        self.numbers: Dict[str, int] = {}

    # ---- blocks
    def convert(self, text: str) -> str:
        return "\n".join(self.blocks(text.split("\n"))).strip("\n")

    def blocks(self, lines: List[str]) -> List[str]:
        out: List[str] = []
        for b in iter_blocks(lines):
            if b.kind in ("label", "comment"):
                continue
            if b.kind == "heading":
                number = self.section_number(b.level)
                title = self.inline(b.text)
                out.append("#" * b.level + " " + (f"{number}. " if number else "") + title)
            elif b.kind == "math":
                out.extend(self.display_math(b.text, b.label))
            elif b.kind == "fence":
                out.extend(b.lines)
            elif b.kind == "directive":
                out.extend(self.directive(b))
            else:
                out.extend(_fix_table_math(self.inline("\n".join(b.lines)).split("\n")))
        return out

    def display_math(self, tex: str, label: str = "") -> List[str]:
        tex = expand_macros(tex, self.ctx.book.macros)
        tex = re.sub(r"(?<!\\)%.*", "", tex)                      # TeX comments, before joining lines
        tex = _plain(tex)
        env = re.match(r"^\\begin\{(align|gather|equation|multline)(\*?)\}(.*)\\end\{\1\2\}$", tex, re.S)
        if env:
            inner = {"align": "aligned", "gather": "gathered"}.get(env.group(1))
            tex = f"\\begin{{{inner}}}{env.group(3)}\\end{{{inner}}}" if inner else env.group(3).strip()
        if label:
            target = self.ctx.book.labels.get(label)
            if target is not None and target.number:
                tex += f" \\tag{{{target.number}}}"
        return ["", f"$$ {tex} $$", ""]

    def directive(self, b: Block) -> List[str]:
        name, arg = b.name, b.arg
        opts, content = split_directive(b.body)
        if name.startswith("prf:"):
            return self.prf(name[4:], arg, opts, content)
        if name in ADMONITIONS:
            title = ADMONITIONS[name] or (self.inline(arg) if arg else "")
            body = self.blocks(content)
            return self.quoted(f"**{title}**" if title else "", body)
        if name in CONTAINERS:
            return self.blocks(content)
        if name == "math":
            label = opts.get("label", "")
            return self.display_math("\n".join(content), label)
        if name in ("figure", "image"):
            return self.figure(name, arg, opts, content)
        if name in ("code-block", "code", "sourcecode"):
            return ["```" + (arg.split()[0] if arg else ""), *content, "```"]
        if name in ("glue", "glue:", "glue:any", "glue:figure", "glue:md", "glue:math"):
            return self.glue_block(name, arg, opts, content)
        if name in ("table",):
            label = opts.get("name", "")
            number = self._label_number(label, "table")
            head = f"**Table {number}:** {self.inline(arg)}" if number else f"**{self.inline(arg)}**"
            return ["", head, "", *self.blocks(content)]
        if name == "list-table":
            return self.list_table(arg, opts, content)
        if name in ("bibliography", "tableofcontents", "toctree"):
            return []
        if name == "raw":
            return content if arg.strip() == "html" else []
        if name == "only":
            return self.blocks(content) if "html" in arg else []
        self.ctx.problems.append(f"directive {{{name}}} is not converted")
        return b.lines

    def prf(self, typ: str, arg: str, opts: Dict[str, Any], content: List[str]) -> List[str]:
        body = self.blocks(content)
        if typ == "proof":
            head = "**Proof" + (f"** ({self.inline(arg)})." if arg else ".**")
            body = _strip_blank(body)
            m = re.match(r"Proof of (.+?)\.(?:\s+|$)", body[0]) if (not arg and body) else None
            if m:  # the proof names its result ("Proof of Lemma 1.1."): that sentence is the heading
                head, body[0] = f"**Proof of {m.group(1)}.**", body[0][m.end():]
            if body:
                body[-1] = body[-1] + " ∎"
            return self.quoted(head, body, inline_head=True)
        if typ not in PRF_TYPES:
            self.ctx.problems.append(f"unknown proof directive prf:{typ}")
            return self.quoted(f"**{typ.title()}**", body)
        # the n-th block of this kind in the chapter is the n-th one _collect_labels numbered
        seen = self.numbers.get(typ, 0)
        self.numbers[typ] = seen + 1
        targets = self.ctx.book.results.get((self.ctx.chapter.name, typ), [])
        number = targets[seen].number if seen < len(targets) else ""
        head = f"**{typ.title()}{(' ' + number) if number else ''}**"
        if arg:
            head += f" ({self.inline(arg)})"
        return self.quoted(head, body)

    def quoted(self, head: str, body: List[str], inline_head: bool = False) -> List[str]:
        body = _strip_blank(body)
        if inline_head and body and body[0].strip():
            body = [f"{head} {body[0].lstrip()}"] + body[1:]
            lines = body
        else:
            lines = ([head, ""] if head else []) + body
        return [""] + [("> " + ln) if ln.strip() else ">" for ln in lines] + [""]

    def figure(self, name: str, arg: str, opts: Dict[str, Any], content: List[str]) -> List[str]:
        url = arg.strip()
        if not re.match(r"^[a-z]+://", url):
            base = pathlib.PurePosixPath(self.ctx.chapter.docname).parent
            slug = self.ctx.book.repo_url.rstrip("/").split("github.com/")[-1]
            url = f"https://raw.githubusercontent.com/{slug}/{self.ctx.book.branch}/{base / url}"
        alt = opts.get("alt", "")
        width = opts.get("width", "")
        img = f'<img src="{url}" alt="{alt}" width="{width}">' if width else f"![{alt}]({url})"
        out = ["", img, ""]
        if name == "figure" and content:
            caption = self.inline(" ".join(c.strip() for c in content if c.strip()))
            number = self._label_number(opts.get("name", ""), "figure")
            out += [f"*Fig. {number}: {caption}*" if number else f"*{caption}*", ""]
        return out

    def _label_number(self, label: str, kind: str) -> str:
        if not label:
            return ""
        target = self.ctx.book.labels.get(label)
        if target is None:
            self.ctx.problems.append(f"{kind} label {label!r} not found")
            return ""
        return target.number

    def list_table(self, arg: str, opts: Dict[str, Any], content: List[str]) -> List[str]:
        rows: List[List[str]] = []
        for line in content:
            m = re.match(r"^\s*\*\s+-\s+(.*)$", line)
            if m:
                rows.append([m.group(1)])
                continue
            m = re.match(r"^\s+-\s+(.*)$", line)
            if m and rows:
                rows[-1].append(m.group(1))
            elif line.strip() and rows:
                rows[-1][-1] += " " + line.strip()
        if not rows:
            return []
        width = max(len(r) for r in rows)
        rows = [r + [""] * (width - len(r)) for r in rows]
        header_rows = int(opts.get("header-rows", 0) or 0)
        head = rows[0] if header_rows else [""] * width
        body = rows[1:] if header_rows else rows
        out = ["", f"**{self.inline(arg)}**", ""] if arg else [""]
        out.append("| " + " | ".join(self.inline(c) for c in head) + " |")
        out.append("|" + " --- |" * width)
        out += ["| " + " | ".join(self.inline(c) for c in r) + " |" for r in body]
        return _fix_table_math(out) + [""]

    # ---- glue
    def _glue_lookup(self, key: str) -> Optional[Dict[str, Any]]:
        if "::" in key:
            doc, key = key.split("::", 1)
            name = pathlib.PurePosixPath(doc).stem
            if name not in self.ctx.glue_cache:
                try:
                    ch = self.ctx.book.chapter(name)
                    self.ctx.glue_cache[name] = glue_data(jupytext.read(ch.notebook))
                except (KeyError, FileNotFoundError):
                    self.ctx.glue_cache[name] = {}
            data = self.ctx.glue_cache[name].get(key)
        else:
            data = self.ctx.glue.get(key)
        if data is None:
            self.ctx.problems.append(f"glue key {key!r} not found in the executed notebook")
        return data

    def _attach(self, mime: str, payload: str, key: str) -> str:
        ext = {"image/png": "png", "image/jpeg": "jpg", "image/svg+xml": "svg"}[mime]
        name = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.{ext}"
        self.ctx.attachments[name] = {mime: payload if isinstance(payload, str) else _joined(payload)}
        return f"attachment:{name}"

    def glue_value(self, key: str, inline: bool) -> Optional[str]:
        data = self._glue_lookup(key)
        if data is None:
            return None
        for mime in ("text/markdown", "text/latex", "text/html", "image/png", "image/jpeg", "image/svg+xml",
                     "text/plain"):
            if mime not in data:
                continue
            value = _joined(data[mime])
            if mime == "text/markdown":
                return self.inline(value) if inline else self.convert(value)
            if mime == "text/latex":
                tex = value.strip().strip("$")
                return f"${expand_macros(tex, self.ctx.book.macros)}$" if inline else "\n".join(self.display_math(tex))
            if mime == "text/html":
                return _plain(value) if inline else value
            if mime.startswith("image/"):
                return f"![{key}]({self._attach(mime, data[mime], key)})"
            return value if inline else f"```\n{value}\n```"
        self.ctx.problems.append(f"glue key {key!r} has no output a notebook can show")
        return None

    def glue_block(self, name: str, arg: str, opts: Dict[str, Any], content: List[str]) -> List[str]:
        value = self.glue_value(arg.strip(), inline=False)
        out = ["", value if value is not None else f"⟨glue {arg.strip()}⟩", ""]
        if name == "glue:figure" and content:
            caption = self.inline(" ".join(c.strip() for c in content if c.strip()))
            number = self._label_number(opts.get("name", ""), "figure")
            out += [f"*Fig. {number}: {caption}*" if number else f"*{caption}*", ""]
        return out

    # ---- inline
    def inline(self, text: str) -> str:
        """Roles, code spans and math of a run of text."""
        out, pos = [], 0
        for m in TOKEN.finditer(text):
            out.append(self.text(text[pos:m.start()]))
            if m.group("name"):
                out.append(self.role(m.group("name"), m.group("content")))
            else:
                out.append(m.group(0))
            pos = m.end()
        out.append(self.text(text[pos:]))
        return "".join(out)

    def text(self, text: str) -> str:
        """Plain text: book macros expanded, math put on one line, ``|`` in table math escaped."""
        text = expand_macros(text, self.ctx.book.macros)
        text = INLINE_MATH.sub(lambda m: "$" + re.sub(r"\s*\n\s*", " ", m.group("math")) + "$", text)
        text = re.sub(r"\$\$(.+?)\$\$", lambda m: "$$" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "$$", text, flags=re.S)
        return text

    def role(self, name: str, content: str) -> str:
        ctx, book = self.ctx, self.ctx.book
        explicit = EXPLICIT.match(content)
        text, target = (explicit.group("text"), explicit.group("target")) if explicit else ("", content)
        if name.startswith("cite"):
            keys = [k.strip() for k in content.split(",") if k.strip()]
            ctx.cited.extend(keys)
            return cite_text(book, name, keys, ctx.problems)
        if name == "doc":
            doc = target.strip()
            base = pathlib.PurePosixPath(ctx.chapter.docname).parent
            docname = doc.lstrip("/") if doc.startswith("/") else str(base / doc)
            docname = re.sub(r"\.(md|ipynb)$", "", _normpath(docname))
            try:
                title = book.chapter(docname).title
            except KeyError:
                ctx.problems.append(f"{{doc}} target {doc!r} is not a chapter")
                return text or doc
            return self.inline(text) if text else f"*{self.text(title)}*"
        if name in ("prf:ref", "numref", "ref", "eq"):
            label = target.strip()
            t = book.labels.get(label)
            if t is None:
                ctx.problems.append(f"{{{name}}} target {label!r} not found")
                return text or label
            if name == "prf:ref":
                if text:
                    return self.inline(text)
                return f"{t.typ.title()} {t.number}".strip() if t.kind == "prf" else (t.title or label)
            if name == "eq":
                return f"({t.number})"
            if name == "numref":
                fmt = text or NUMFIG.get(t.kind, "%s")
                return self.inline(fmt.replace("%s", t.number).replace("{number}", t.number)
                                   .replace("{name}", t.title))
            return self.inline(text) if text else self.inline(t.title)
        if name == "math":
            return "$" + expand_macros(content, book.macros) + "$"
        if name in ("glue", "glue:", "glue:any", "glue:md"):
            value = self.glue_value(content.strip(), inline=True)
            return value if value is not None else f"⟨glue {content}⟩"
        if name == "glue:text":
            parts = content.rsplit(":", 1)
            key, fmt = (parts[0], parts[1]) if len(parts) == 2 and not parts[0].endswith(":") else (content, "s")
            data = self._glue_lookup(key.strip())
            if data is None:
                return f"⟨glue {content}⟩"
            if "text/plain" not in data:
                ctx.problems.append(f"glue key {key!r} has no text/plain")
                return f"⟨glue {content}⟩"
            try:
                return format_plain_text(_joined(data["text/plain"]), fmt)
            except (ValueError, TypeError) as exc:
                ctx.problems.append(f"glue key {key!r}: format {fmt!r} failed ({exc})")
                return f"⟨glue {content}⟩"
        if name in ("sub", "sup", "kbd"):
            return f"<{name}>{content}</{name}>"
        if name == "abbr":
            m = re.match(r"^(.*?)\s*\((.*)\)$", content)
            return m.group(1) if m else content
        if name in ("code", "samp", "file", "command"):
            return f"`{content}`"
        if name in ("term", "any", "download", "program"):
            return text or content
        ctx.problems.append(f"role {{{name}}} is not converted")
        return "{" + name + "}`" + content + "`"


def _normpath(path: str) -> str:
    parts: List[str] = []
    for p in path.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if parts:
                parts.pop()
            continue
        parts.append(p)
    return "/".join(parts)


def _strip_blank(lines: List[str]) -> List[str]:
    lines = list(lines)
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    # collapse runs of blank lines
    out: List[str] = []
    for ln in lines:
        if not ln.strip() and out and not out[-1].strip():
            continue
        out.append(ln)
    return out


def _fix_table_math(lines: List[str]) -> List[str]:
    """In a Markdown table row, ``|`` inside ``$...$`` would end the cell: use ``\\vert``/``\\Vert``."""
    out = []
    for line in lines:
        if line.lstrip().startswith("|"):
            line = INLINE_MATH.sub(lambda m: "$" + m.group("math").replace("\\|", "\\Vert ")
                                   .replace("|", "\\vert ") + "$", line)
        out.append(line)
    return out


# --- notebooks ------------------------------------------------------------------------------------

PROGRESS_LINE = re.compile(r"^[^\n]*\d+%\|[^|]*\|[^\n]*$")


def _is_progress_junk(text: str) -> bool:
    pieces = [p for p in re.split(r"[\r\n]", text) if p.strip()]
    return all(PROGRESS_LINE.match(p) for p in pieces)


def _clean_outputs(cell: nbformat.NotebookNode) -> List[Any]:
    outputs = []
    for output in cell.get("outputs", []):
        output = copy.deepcopy(output)
        data = output.get("data")
        if data is not None and data and all(k.startswith(GLUE_PREFIX) for k in data):
            continue                              # glued with display=False: nothing to show
        if output.get("output_type") == "stream" and output.get("name") == "stderr" \
                and _is_progress_junk(_joined(output.get("text", ""))):
            continue
        outputs.append(output)
    return outputs


def _cell_id(chapter: str, index: int, kind: str) -> str:
    return hashlib.sha1(f"{chapter}:{index}:{kind}".encode()).hexdigest()[:12]


@dataclass
class Converted:
    notebook: nbformat.NotebookNode
    problems: List[str]


def convert_chapter(book: Book, chapter: Chapter) -> Converted:
    """The readable notebook of one paired chapter, and what could not be converted."""
    md = jupytext.read(chapter.path)
    executed = jupytext.read(chapter.notebook)
    ctx = Context(book, chapter, glue_data(executed))
    conv = MarkdownConverter(ctx)
    code_cells = [c for c in executed.cells if c.cell_type == "code"]
    md_code = [c for c in md.cells if c.cell_type == "code"]
    if [c.source.strip() for c in md_code] != [c.source.strip() for c in code_cells]:
        ctx.problems.append(f"{chapter.notebook.name} does not hold the code of {chapter.path.name}: "
                            "run `make chapter NAME=" + chapter.name + "`")
    cells = []
    code_index = 0
    first_md = True
    for index, cell in enumerate(md.cells):
        tags = list(cell.metadata.get("tags", []))
        if cell.cell_type == "markdown" or cell.cell_type == "raw":
            if "remove-cell" in tags or cell.cell_type == "raw":
                continue
            ctx.attachments = {}
            source = conv.convert(cell.source)
            if first_md:
                source = _add_provenance(source, book, chapter)
                first_md = False
            new = nbformat.v4.new_markdown_cell(source)
            if ctx.attachments:
                new["attachments"] = dict(sorted(ctx.attachments.items()))
            new["id"] = _cell_id(chapter.name, index, "markdown")
            cells.append(new)
            continue
        stored = code_cells[code_index] if code_index < len(code_cells) else cell
        code_index += 1
        new = nbformat.v4.new_code_cell(stored.source)
        new["id"] = stored.get("id") or _cell_id(chapter.name, index, "code")
        new["execution_count"] = stored.get("execution_count")
        new["outputs"] = _clean_outputs(stored)
        meta: Dict[str, Any] = {}
        if tags:
            meta["tags"] = tags
        is_install = INSTALL_MARK in stored.source
        if ({"remove-input", "hide-input"} & set(tags)) or ("remove-cell" in tags and not is_install):
            meta["jupyter"] = {"source_hidden": True}
            meta["cellView"] = "form"
        if {"remove-output", "hide-output"} & set(tags):
            meta.setdefault("jupyter", {})["outputs_hidden"] = True
        new["metadata"] = meta
        cells.append(new)
        fig = ((stored.metadata.get("mystnb") or {}).get("figure") or {})
        if fig.get("caption"):
            number = book.labels[fig["name"]].number if fig.get("name") in book.labels else ""
            caption = conv.inline(str(fig["caption"]).strip())   # a YAML block caption ends in a newline: no closing * after it
            cap = nbformat.v4.new_markdown_cell(f"*Fig. {number}: {caption}*" if number else f"*{caption}*")
            cap["id"] = _cell_id(chapter.name, index, "caption")
            cells.append(cap)
    if ctx.cited:
        ref = nbformat.v4.new_markdown_cell(references_markdown(book, ctx.cited))
        ref["id"] = _cell_id(chapter.name, len(md.cells), "references")
        cells.append(ref)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"name": f"{chapter.name}.ipynb", "toc_visible": True},
        "ortho_book": {"generated_from": [f"{chapter.docname}.md", f"{chapter.docname}.ipynb"],
                       "generator": "book/_ext/readable_notebooks.py"},
    }
    nb.nbformat, nb.nbformat_minor = 4, 5
    return Converted(nb, sorted(set(ctx.problems), key=ctx.problems.index))


def _add_provenance(source: str, book: Book, chapter: Chapter) -> str:
    note = (f"*A chapter of the executable book* ortho-book. *This notebook is generated from "
            f"`{chapter.docname}.md` by `book/_ext/readable_notebooks.py`; numbers of sections, results and "
            f"equations are those of the HTML book.*")
    lines = source.split("\n")
    if lines and lines[0].startswith("# "):
        return "\n".join([lines[0], "", note] + lines[1:])
    return note + "\n\n" + source


def dumps(nb: nbformat.NotebookNode) -> str:
    """Deterministic JSON of a notebook (what is committed and what the freshness test compares)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def output_path(book: Book, chapter: Chapter) -> pathlib.Path:
    return book.root / OUT_DIR / f"{chapter.name}.ipynb"


# --- checks ---------------------------------------------------------------------------------------

LEFTOVER_ROLE = re.compile(r"(?<![`\w])\{[A-Za-z][\w:+-]*\}`")
LEFTOVER_DIRECTIVE = re.compile(r"^[ \t>]*(`{3,}|~{3,}|:{3,})\s*\{[\w:+-]+\}", re.M)


def _without_code(source: str, spans: bool = True) -> str:
    """Markdown without fenced code blocks (and, if ``spans``, code spans): they may show MyST on
    purpose.  Directive fences are not code: their lines stay (the directive check reads them)."""
    out: List[str] = []
    stack: List[Tuple[str, bool]] = []        # (fence, is_code)
    for line in source.split("\n"):
        m = re.match(r"^[ \t>]*(`{3,}|~{3,}|:{3,})(.*)$", line)
        if m:
            fence, info = m.group(1), m.group(2).strip()
            if stack and fence[0] == stack[-1][0][0] and len(fence) >= len(stack[-1][0]) and not info:
                stack.pop()
                continue
            if not (stack and stack[-1][1]):
                stack.append((fence, not info.startswith("{")))
                if info.startswith("{"):
                    out.append(line)
                continue
        if stack and stack[-1][1]:
            continue
        out.append(line)
    text = "\n".join(out)
    return CODE_SPAN.sub("", text) if spans else text


def markup_problems(nb: nbformat.NotebookNode, macros: Dict[str, Any]) -> List[str]:
    """MyST syntax or book macros left in the Markdown cells of a converted notebook."""
    problems = []
    names = sorted(macros, key=len, reverse=True)
    macro_re = re.compile(r"\\(" + "|".join(map(re.escape, names)) + r")(?![A-Za-z])") if names else None
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        raw = cell.source
        for m in LEFTOVER_DIRECTIVE.finditer(raw):
            problems.append(f"cell {i}: directive left: {m.group(0).strip()!r}")
        for m in LEFTOVER_ROLE.finditer(_without_code(raw, spans=False)):
            problems.append(f"cell {i}: role left: {m.string[m.start():m.start() + 40]!r}")
        text = _without_code(raw)
        for line in text.split("\n"):
            if LABEL.match(line):
                problems.append(f"cell {i}: MyST label line left: {line.strip()!r}")
            if COMMENT.match(line) and not line.lstrip().startswith("%%"):
                problems.append(f"cell {i}: MyST comment left: {line.strip()!r}")
        if "{{" in text and "}}" in text:
            problems.append(f"cell {i}: substitution left")
        if "⟨glue" in text:
            problems.append(f"cell {i}: unreplaced glue")
        if macro_re is not None:
            # scan TeX tokens so that a line break `\\` followed by a macro-like word is not a macro
            for m in re.finditer(r"\\\\|\\[A-Za-z]+", text):
                if m.group(0) != "\\\\" and macro_re.fullmatch(m.group(0)):
                    problems.append(f"cell {i}: macro {m.group(0)} not expanded")
    return problems


# --- command line ---------------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapter names (default: every paired chapter)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a notebook is stale or has problems")
    args = parser.parse_args(argv)
    book = load_book()
    chapters = [book.chapter(n) for n in args.chapters] if args.chapters else book.paired
    status = 0
    for ch in chapters:
        if not ch.paired:
            print(f"{ch.name}: not a paired chapter, skipped", file=sys.stderr)
            continue
        result = convert_chapter(book, ch)
        problems = result.problems + markup_problems(result.notebook, book.macros)
        path = output_path(book, ch)
        text = dumps(result.notebook)
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"{path.relative_to(book.root)} is stale: run `make colab`", file=sys.stderr)
                status = 1
        else:
            path.parent.mkdir(exist_ok=True)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                print(f"wrote {path.relative_to(book.root)}")
        for p in problems:
            print(f"{ch.name}: {p}", file=sys.stderr)
        if problems and args.check:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
