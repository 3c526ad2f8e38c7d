"""Each chapter's MyST .md and its paired .ipynb hold the same cells, and the notebook is executed."""
from __future__ import annotations

import pathlib

import jupytext
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.md") if "format_name: myst" in p.read_text()[:600])


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_paired_chapters():
    assert len(CHAPTERS) >= 2


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_md_and_ipynb_have_identical_cells(md):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make notebooks`"
    a, b = _cells(jupytext.read(md)), _cells(jupytext.read(ipynb))
    assert a == b, f"{md.name} and {ipynb.name} differ: run `make notebooks` after editing the .md"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_notebook_code_cells_are_executed(md):
    nb = jupytext.read(md.with_suffix(".ipynb"))
    code = [c for c in nb.cells if c.cell_type == "code"]
    missing = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not missing, f"{md.with_suffix('.ipynb').name}: code cells {missing} have no stored execution"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_first_code_cell_installs_only_in_colab(md):
    code = [c for c in jupytext.read(md).cells if c.cell_type == "code"]
    first = code[0].source
    assert '"google.colab" in sys.modules' in first and "ortho_lib" in first
    assert not code[0].get("outputs"), "the Colab cell must print nothing outside Colab"


def test_every_chapter_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for md in CHAPTERS:
        assert f"book/{md.stem}" in toc, f"{md.name} is not in _toc.yml"
