"""book/_ext/readable_notebooks.py: MyST chapters -> notebooks that read properly in Colab and Jupyter.

Unit tests on a two-chapter book written into a temporary folder, then the book's own chapters: every
committed ``book/colab/<chapter>.ipynb`` equals a fresh conversion, keeps the code and outputs of the
executed paired notebook, and has no MyST syntax, book macro, unresolved reference or glue left.
"""
from __future__ import annotations

import base64
import json
import pathlib
import sys
import textwrap

import jupytext
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import readable_notebooks as rn  # noqa: E402

# Chapters whose Markdown still fails the markup check; their content is fixed in the chapter passes.
# Remove a name here once its chapter converts cleanly.
MARKUP_XFAIL: set[str] = set()

CONFIG = """
title: mini
repository:
  url: https://github.com/ortho-book/ortho-book
  branch: main
bibtex_bibfiles: [references.bib]
sphinx:
  config:
    mathjax3_config:
      tex:
        macros:
          "R": "\\\\mathbb{R}"
          "norm": ["\\\\left\\\\lVert #1 \\\\right\\\\rVert", 1]
          "ip": ["\\\\langle #1, #2 \\\\rangle", 2]
          "Piperp": "\\\\Pi_{\\\\perp}"
"""
TOC = """
format: jb-book
root: book/intro
parts:
  - caption: Chapters
    numbered: true
    chapters:
      - file: book/one
      - file: book/two
"""
BIB = """
@inproceedings{melamed2023adversarial,
  title = {Adversarial Examples Exist in Two-Layer {ReLU} Networks},
  author = {Melamed, Odelia and Yehudai, Gilad and Vardi, Gal},
  booktitle = {Advances in Neural Information Processing Systems},
  year = {2023}
}
@inproceedings{lyu2020gradient,
  title = {Gradient Descent Maximizes the Margin of Homogeneous Neural Networks},
  author = {Lyu, Kaifeng and Li, Jian},
  booktitle = {ICLR},
  year = {2020}
}
@book{vershynin2018high,
  title = {High-Dimensional Probability},
  author = {Vershynin, Roman},
  publisher = {Cambridge University Press},
  year = {2018}
}
"""
HEADER = """---
jupytext:
  formats: ipynb,md:myst
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3 (ipykernel)
  language: python
  name: python3
---
"""
INSTALL = '''```{code-cell} ipython3
:tags: [remove-cell]

# In Colab, install the book's library; elsewhere this cell does nothing.
import sys
if "google.colab" in sys.modules:
    %pip install -q "ortho_lib @ git+https://github.com/ortho-book/ortho-book@main"
```
'''
ONE = HEADER + """
# First chapter

""" + INSTALL + """
Intro text cites {cite:t}`melamed2023adversarial` and {cite:p}`lyu2020gradient,vershynin2018high`.

## Setting

```{prf:definition} Data
:label: def-data

Points in $P \\subset \\R^d$ with $\\norm{x} = 1$.
```

(sec-lemma)=

### A lemma

```{prf:lemma} Frozen part
:label: lem-frozen

For every $t$,

$$
\\Piperp w(t) = \\Piperp w(0)
$$ (eq-frozen)
```

```{prf:proof}
The gradient lies in $P$.
```

```{prf:theorem}
An unlabelled theorem, after {prf:ref}`lem-frozen`.
```

```{code-cell} ipython3
import myst_nb
acc = 0.123456
myst_nb.glue("acc", acc, display=False)
```

+++ {"tags": ["remove-cell"]}

This Markdown cell is only for the book's authors.

+++

% a MyST comment
Accuracy {glue:text}`acc:.2f`, raw {glue}`acc`, equation {eq}`eq-frozen`, section {ref}`sec-lemma`.

| symbol | meaning |
| --- | --- |
| $\\max|x|$ | a bar inside math, and $\\|W\\|$ |

```{note}
A note with {math}`\\ip{a}{b}`.
```

```{code-cell} ipython3
:tags: [remove-input]

print("shown without its code")
```

```python
# a plain code block keeps {cite:t}`literal` and \\R as written
```
"""
TWO = HEADER + """
# Second chapter

""" + INSTALL + """
Back to {doc}`one`, to {prf:ref}`the definition <def-data>`, and {prf:ref}`lem-frozen`.
Not $\\Rightarrow$ but $\\R$; a line break $a \\\\R$ stays.

```{prf:theorem} Main
:label: thm-main

Holds.
```

```{code-cell} ipython3
print("x" * 3)
```
"""
INTRO = "# Intro\n\nSee {doc}`one`.\n"


def _execute_stub(md: pathlib.Path, outputs: dict[int, list]) -> None:
    """Write the paired .ipynb with hand-made outputs (no kernel: the test stays fast)."""
    nb = jupytext.read(md)
    count = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            cell.outputs = [nbformat.from_dict(o) for o in outputs.get(count, [])]
    jupytext.write(nb, md.with_suffix(".ipynb"), fmt="ipynb")


@pytest.fixture
def mini(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "_config.yml").write_text(CONFIG)
    (tmp_path / "_toc.yml").write_text(TOC)
    (tmp_path / "references.bib").write_text(BIB)
    (tmp_path / "book" / "intro.md").write_text(INTRO)
    (tmp_path / "book" / "one.md").write_text(ONE)
    (tmp_path / "book" / "two.md").write_text(TWO)
    glue_out = {"output_type": "display_data", "metadata": {"scrapbook": {"name": "acc", "mime_prefix": rn.GLUE_PREFIX}},
                "data": {rn.GLUE_PREFIX + "text/plain": "0.123456"}}
    bar = {"output_type": "stream", "name": "stderr", "text": "\rsweep:  50%|#####     | 1/2 [00:01<00:01,  1.2it/s]"}
    shown = {"output_type": "stream", "name": "stdout", "text": "shown without its code\n"}
    _execute_stub(tmp_path / "book" / "one.md", {2: [glue_out, bar], 3: [shown]})
    _execute_stub(tmp_path / "book" / "two.md", {2: [{"output_type": "stream", "name": "stdout", "text": "xxx\n"}]})
    book = rn.load_book(tmp_path)
    return book


def _md(nb) -> str:
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_chapters_are_numbered_in_toc_order_and_the_root_is_not(mini):
    assert [(c.name, c.number, c.paired) for c in mini.chapters] == [
        ("intro", None, False), ("one", 1, True), ("two", 2, True)]


def test_prf_blocks_show_the_html_number_and_title_as_a_quoted_block(mini):
    md = _md(rn.convert_chapter(mini, mini.chapter("one")).notebook)
    assert "> **Definition 1.1** (Data)" in md
    assert "> **Lemma 1.1** (Frozen part)" in md
    assert "> **Theorem 1.1**\n>\n> An unlabelled theorem, after Lemma 1.1." in md
    assert "> **Proof.** The gradient lies in $P$. ∎" in md


def test_numbers_count_per_kind_and_per_chapter_and_cross_chapter_refs_resolve(mini):
    md = _md(rn.convert_chapter(mini, mini.chapter("two")).notebook)
    assert "> **Theorem 2.1** (Main)" in md
    assert "Back to *First chapter*, to the definition, and Lemma 1.1." in md


def test_headings_carry_sphinx_section_numbers(mini):
    md = _md(rn.convert_chapter(mini, mini.chapter("one")).notebook)
    assert md.startswith("# 1. First chapter")
    assert "\n## 1.1. Setting" in md and "\n### 1.1.1. A lemma" in md


def test_citations_are_author_year_with_a_reference_list_at_the_end(mini):
    nb = rn.convert_chapter(mini, mini.chapter("one")).notebook
    md = _md(nb)
    assert "cites Melamed et al. (2023) and (Lyu and Li, 2020; Vershynin, 2018)." in md
    refs = nb.cells[-1].source
    assert refs.startswith("## References")
    items = [ln for ln in refs.splitlines() if ln.startswith("- ")]
    assert [i.split("]")[0] for i in items] == ["- \\[Lyu and Li, 2020\\", "- \\[Melamed et al., 2023\\",
                                               "- \\[Vershynin, 2018\\"]
    assert "Adversarial examples exist in two-layer ReLU networks" in refs


def test_glue_roles_take_the_stored_value_with_its_format_spec(mini):
    nb = rn.convert_chapter(mini, mini.chapter("one")).notebook
    assert "Accuracy 0.12, raw 0.123456," in _md(nb)


def test_equation_labels_become_tags_and_eq_refs_their_number(mini):
    md = _md(rn.convert_chapter(mini, mini.chapter("one")).notebook)
    assert "> $$ {\\Pi_{\\perp}} w(t) = {\\Pi_{\\perp}} w(0) \\tag{1.1} $$" in md
    assert "equation (1.1), section A lemma." in md


def test_macros_are_expanded_as_tex_tokens(mini):
    md = _md(rn.convert_chapter(mini, mini.chapter("two")).notebook)
    assert "Not $\\Rightarrow$ but ${\\mathbb{R}}$; a line break $a \\\\R$ stays." in md
    one = _md(rn.convert_chapter(mini, mini.chapter("one")).notebook)
    assert "$\\left\\lVert x \\right\\rVert = 1$" in one
    assert "$\\langle a, b \\rangle$" in one


def test_expand_macros_nested_arguments_and_following_letters():
    macros = {"norm": (1, r"\lVert #1 \rVert", None), "ip": (2, r"\langle #1, #2 \rangle", None),
              "R": (0, r"\mathbb{R}", None), "Piperp": (0, r"\Pi_{\perp}", None)}
    assert rn.expand_macros(r"\norm{\ip{a}{\R}}", macros) == r"\lVert \langle a, {\mathbb{R}} \rangle \rVert"
    assert rn.expand_macros(r"\Piperp x \Piperpx", macros) == r"{\Pi_{\perp}} x \Piperpx"
    # argument-free macros expand as groups: no merging with a control word before or a script after
    assert rn.expand_macros(r"x \in\R^d", macros) == r"x \in{\mathbb{R}}^d"
    assert rn.expand_macros(r"\norm x", macros) == r"\lVert x \rVert"


def test_bars_inside_math_in_table_rows_become_vert(mini):
    md = _md(rn.convert_chapter(mini, mini.chapter("one")).notebook)
    assert "| $\\max\\vert x\\vert $ | a bar inside math, and $\\Vert W\\Vert $ |" in md


def test_admonitions_comments_and_remove_cell_markdown(mini):
    md = _md(rn.convert_chapter(mini, mini.chapter("one")).notebook)
    assert "> **Note**\n>\n> A note with $\\langle a, b \\rangle$." in md
    assert "a MyST comment" not in md
    assert "only for the book's authors" not in md


def test_plain_code_blocks_are_left_as_written(mini):
    md = _md(rn.convert_chapter(mini, mini.chapter("one")).notebook)
    assert "# a plain code block keeps {cite:t}`literal` and \\R as written" in md


def test_code_cells_keep_outputs_but_not_glue_records_or_progress_bars(mini):
    nb = rn.convert_chapter(mini, mini.chapter("one")).notebook
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2, 3]
    assert code[1].outputs == []                      # glue with display=False and a bar refresh
    assert code[2].outputs[0]["text"] == "shown without its code\n"


def test_install_cell_stays_visible_and_remove_input_code_is_hidden(mini):
    nb = rn.convert_chapter(mini, mini.chapter("one")).notebook
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert rn.INSTALL_MARK in code[0].source and "jupyter" not in code[0].metadata
    assert code[2].metadata["jupyter"] == {"source_hidden": True}


def test_a_clean_chapter_has_no_problems_and_no_markup_left(mini):
    for name in ("one", "two"):
        result = rn.convert_chapter(mini, mini.chapter(name))
        assert result.problems == []
        assert rn.markup_problems(result.notebook, mini.macros) == []


def test_unresolved_references_unknown_directives_and_missing_glue_are_reported(mini, tmp_path):
    path = tmp_path / "book" / "two.md"
    path.write_text(TWO.replace("Holds.", "Holds {prf:ref}`nope`, {cite:p}`nobody`, {glue:text}`missing`.\n\n"
                                "```{mystery}\nbody\n```"))
    _execute_stub(path, {})
    book = rn.load_book(tmp_path)
    result = rn.convert_chapter(book, book.chapter("two"))
    joined = "\n".join(result.problems)
    for needle in ("'nope' not found", "unknown citation key 'nobody'", "glue key 'missing'",
                   "directive {mystery} is not converted"):
        assert needle in joined
    left = "\n".join(rn.markup_problems(result.notebook, book.macros))
    assert "directive left" in left and "unreplaced glue" in left


def test_markup_check_flags_leftovers_but_not_code(mini):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "see {doc}`x` and $\\norm{y}$\n\n(my-label)=\n\n```{note}\nhi\n```\n\n"
        "`{cite:t}` in a code span and $a \\\\R$ are fine\n\n```python\n\\R {ref}`z`\n```")])
    found = rn.markup_problems(nb, mini.macros)
    assert any("role left" in p and "{doc}" in p for p in found)
    assert any("macro \\norm" in p for p in found)
    assert any("label line" in p for p in found)
    assert any("directive left" in p for p in found)
    assert len(found) == 4


def test_glued_image_becomes_a_cell_attachment(mini, tmp_path):
    path = tmp_path / "book" / "two.md"
    path.write_text(TWO.replace("Holds.", "Holds.\n") + "\n```{glue:figure} fig\n:name: fig-main\n\nThe caption.\n```\n")
    png = base64.b64encode(b"\x89PNG fake").decode()
    _execute_stub(path, {2: [{"output_type": "display_data", "metadata": {"scrapbook": {"name": "fig", "mime_prefix": ""}},
                              "data": {"image/png": png, "text/plain": "<Figure>"}}]})
    book = rn.load_book(tmp_path)
    nb = rn.convert_chapter(book, book.chapter("two")).notebook
    cell = next(c for c in nb.cells if c.cell_type == "markdown" and "attachment:" in c.source)
    assert "![fig](attachment:fig.png)" in cell.source and "*Fig. 2.1: The caption.*" in cell.source
    assert cell.attachments == {"fig.png": {"image/png": png}}


def test_format_plain_text_follows_myst_nb():
    assert rn.format_plain_text("0.123456", ".2f") == "0.12"
    assert rn.format_plain_text("'abc'", "s") == "abc"
    assert rn.format_plain_text("12.0", "d") == "12"
    assert rn.format_plain_text("0.5", ".0%") == "50%"


def test_conversion_is_deterministic(mini):
    a = rn.dumps(rn.convert_chapter(mini, mini.chapter("one")).notebook)
    b = rn.dumps(rn.convert_chapter(rn.load_book(mini.root), mini.chapter("one")).notebook)
    assert a == b
    assert json.loads(a)["nbformat"] == 4


# --- the book's own chapters ----------------------------------------------------------------------

BOOK = rn.load_book(ROOT)
PAIRED = [c.name for c in BOOK.paired]


def test_every_paired_chapter_has_a_readable_notebook_and_no_other_is_committed():
    committed = sorted(p.stem for p in (ROOT / rn.OUT_DIR).glob("*.ipynb"))
    assert committed == sorted(PAIRED), "run `make colab`"


@pytest.mark.parametrize("name", PAIRED)
def test_readable_notebook_is_up_to_date(name):
    ch = BOOK.chapter(name)
    fresh = rn.dumps(rn.convert_chapter(BOOK, ch).notebook)
    stored = rn.output_path(BOOK, ch).read_text()
    assert stored == fresh, f"book/colab/{name}.ipynb is stale: run `make colab` (or `make chapter NAME={name}`)"


@pytest.mark.parametrize("name", PAIRED)
def test_readable_notebook_keeps_the_executed_code_cells(name):
    ch = BOOK.chapter(name)
    readable = nbformat.read(rn.output_path(BOOK, ch), as_version=4)
    executed = jupytext.read(ch.notebook)
    a = [(c.source, c.execution_count) for c in readable.cells if c.cell_type == "code"]
    b = [(c.source, c.execution_count) for c in executed.cells if c.cell_type == "code"]
    assert a == b
    nbformat.validate(readable)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(
    strict=False, reason="chapter content fixed in the chapter passes")) if n in MARKUP_XFAIL else n
    for n in PAIRED])
def test_readable_notebook_has_no_myst_markup_macros_or_unresolved_references(name):
    result = rn.convert_chapter(BOOK, BOOK.chapter(name))
    problems = result.problems + rn.markup_problems(result.notebook, BOOK.macros)
    assert not problems, f"{name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", PAIRED)
def test_figure_captions_render_as_italics(name):
    """A caption cell is '*Fig. n: text*' with no space or newline before the closing '*' (CommonMark does
    not close emphasis after white space, so Jupyter and Colab would show the asterisks)."""
    readable = nbformat.read(rn.output_path(BOOK, BOOK.chapter(name)), as_version=4)
    captions = [c.source for c in readable.cells if c.cell_type == "markdown" and c.source.startswith("*Fig.")]
    bad = [c[-40:] for c in captions if not (c.endswith("*") and not c[-2].isspace())]
    assert not bad, f"{name}: captions whose closing '*' follows white space: {bad}"
