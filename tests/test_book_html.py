"""The built HTML book (``_build/html``, made by ``make book``) agrees with the readable notebooks and
works offline.  Skipped when the book has not been built in this checkout: run ``make book`` then
``make test`` to include these checks.

* every chapter page links Colab to ``book/colab/<chapter>.ipynb`` on main, and no page links Colab to a
  MyST-paired ``book/*.ipynb``;
* results ("Theorem 4.1 (Title)") and section numbers are the same in the HTML and in the notebook;
* bibliography labels are the author-year texts the notebooks' reference lists use;
* MathJax is served from the build (no CDN), and the sidebar links the Proof Index.
"""
from __future__ import annotations

import pathlib
import re
import sys

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import readable_notebooks as rn  # noqa: E402

pytestmark = pytest.mark.skipif(not (HTML / "book").is_dir(), reason="no built book: run `make book`")

BOOK = rn.load_book(ROOT)
PAIRED = [c.name for c in BOOK.paired]
COLAB = "https://colab.research.google.com/github/ortho-book/ortho-book/blob/main/book/colab/{}.ipynb"


def _page(name: str) -> str:
    return (HTML / "book" / f"{name}.html").read_text()


def _article(html: str) -> str:
    start = html.index('<article class="bd-article">')
    return html[start:html.index("</article>", start)]


def _markdown(name: str) -> str:
    nb = nbformat.read(rn.output_path(BOOK, BOOK.chapter(name)), as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("name", PAIRED)
def test_chapter_page_opens_its_readable_notebook_in_colab(name):
    html = _page(name)
    links = set(re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', html))
    assert links == {COLAB.format(name)}


def test_no_page_opens_a_myst_paired_notebook_in_colab():
    for page in HTML.rglob("*.html"):
        links = re.findall(r'colab\.research\.google\.com/github/[^"]*?/blob/[^/"]+/([^"]*\.ipynb)', page.read_text())
        bad = [p for p in links if not p.startswith("book/colab/")]  # the readable notebooks are the only targets
        assert not bad, f"{page.relative_to(HTML)}: {bad}"


@pytest.mark.parametrize("name", PAIRED)
def test_results_have_the_same_numbers_and_titles_in_html_and_notebook(name):
    html = _article(_page(name))
    in_html = [f"{num.strip()}{(' (' + title.strip() + ')') if title.strip() else ''}" for num, title in
               re.findall(r'<span class="caption-number">([^<]*)</span>\s*(?:\((.*?)\))?\s*</p>', html)]
    in_html = [re.sub(r"<[^>]+>", "", t) for t in in_html]
    in_nb = [f"{m.group(1)}{(' (' + m.group(2) + ')') if m.group(2) else ''}" for m in
             re.finditer(r"^> \*\*((?:[A-Z][a-z]+) [\d.]+)\*\*(?: \((.*)\))?$", _markdown(name), re.M)]
    def strip_math(s: str) -> str:        # math renders differently; docutils makes quotes typographic
        return re.sub(r"\$[^$]*\$|\\\(.*?\\\)", "", s).replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')

    assert [strip_math(t) for t in in_html] == [strip_math(t) for t in in_nb]


@pytest.mark.parametrize("name", PAIRED)
def test_section_numbers_are_the_same_in_html_and_notebook(name):
    html = _article(_page(name))
    in_html = re.findall(r'<h[1-6]><span class="section-number">([\d.]+)\s*</span>', html)
    in_nb = re.findall(r"^#{1,6} ([\d.]+) ", _markdown(name), re.M)
    assert [n.rstrip(".") for n in in_html] == [n.rstrip(".") for n in in_nb]


def test_bibliography_labels_are_the_author_year_citations_of_the_notebooks():
    html = (HTML / "book" / "references.html").read_text()
    labels = set(re.findall(r'<span class="fn-bracket">\[</span>(.*?)<span class="fn-bracket">\]</span>', html))
    labels = {re.sub(r"<[^>]+>", "", lbl) for lbl in labels}
    in_notebooks = set()
    for name in PAIRED:
        in_notebooks |= set(re.findall(r"^- \\\[(.*?)\\\]", _markdown(name), re.M))
    assert in_notebooks and in_notebooks <= labels


def test_math_is_served_from_the_build_not_a_cdn():
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").exists()
    for page in (HTML / "book").glob("*.html"):
        html = page.read_text()
        if 'class="math' in html:                     # Sphinx loads MathJax only on pages with math
            assert "_static/mathjax/tex-chtml.js" in html, page.name
        assert not re.search(r'src="https?://[^"]*mathjax', html, re.I), page.name


def test_sidebar_links_the_proof_index():
    assert (HTML / "prf-prf.html").exists()
    assert 'href="../prf-prf.html"' in _page(PAIRED[0])
