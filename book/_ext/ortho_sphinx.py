"""Sphinx extension of ortho-book (loaded from ``_config.yml`` as a local extension).

It does three things the stock tool chain cannot be configured to do:

1. **Author-year citations with round brackets, and a bibliography that matches them.**  It registers
   the sphinxcontrib-bibtex referencing style ``author_year_round`` (``{cite:t}`` gives
   "Melamed et al. (2023)", ``{cite:p}`` gives "(Melamed et al., 2023)") and the pybtex formatting
   style ``authoryear``: pybtex's ``plain`` entries, sorted by author, year and title, each labelled
   with the same "Melamed et al., 2023" text the citations show.  :func:`author_year_label` is the one
   place that text is made; ``book/_ext/readable_notebooks.py`` uses it too.
2. **Colab opens the readable notebook.**  sphinx-book-theme's launch button can only point at the
   page's own source (``book/<chapter>.ipynb``, a MyST-paired notebook that Colab shows with raw
   directives), so ``_config.yml`` turns it off and this extension adds, on every chapter that has a
   readable notebook ``book/colab/<chapter>.ipynb``, a rocket button and an "Open in Colab" badge under
   the title, both to :func:`colab_url` of that notebook on the configured branch; the page's
   ``.ipynb`` download button serves the same readable notebook.
3. Nothing else: the Proof Index link in the sidebar is a template (``book/_templates/proof-index-link.html``).
"""
from __future__ import annotations

import re
import pathlib
import shutil
from typing import Any, Dict

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle

COLAB = "https://colab.research.google.com/github"
NOTEBOOK_DIR = "book/colab"


# --- citations --------------------------------------------------------------------------------------

def _last_names(person) -> str:
    """'von Neumann' for prelast + last names, braces and LaTeX accents removed (as sphinxcontrib-bibtex)."""
    from pybtex.richtext import Text

    parts = [Text.from_latex(p).render_as("text") for p in person.prelast_names + person.last_names]
    return " ".join(parts)


def author_names(entry) -> str:
    """The author part of an author-year citation: 'A', 'A and B', or 'A et al.' for three or more."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_names(p) for p in persons]
    if not names:
        from pybtex.richtext import Text

        return Text.from_latex(entry.fields.get("title", "?")).render_as("text")
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return f"{names[0]} et al."


def author_year_label(entry) -> str:
    """'Melamed et al., 2023': the parenthetical citation text, used as the bibliography label."""
    return f"{author_names(entry)}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """Bibliography labels identical to the in-text parenthetical citation."""

    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            yield author_year_label(entry)


class AuthorYearStyle(PlainStyle):
    """pybtex's plain entries, sorted by author-year-title, labelled 'Author et al., Year'."""

    default_label_style = "author_year"
    default_sorting_style = "author_year_title"


def register_pybtex_styles() -> None:
    """Make ``authoryear`` (formatting) and ``author_year`` (labels) known to pybtex."""
    register_plugin("pybtex.style.labels", "author_year", AuthorYearLabelStyle, force=True)
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle, force=True)


def _register_bibtex_styles() -> None:
    from dataclasses import dataclass, field

    from sphinxcontrib.bibtex.style.referencing import BracketStyle
    from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle

    def round_brackets() -> BracketStyle:
        return BracketStyle(left="(", right=")", sep="; ")

    @dataclass
    class AuthorYearRoundReferenceStyle(AuthorYearReferenceStyle):
        bracket_parenthetical: BracketStyle = field(default_factory=round_brackets)
        bracket_textual: BracketStyle = field(default_factory=round_brackets)
        bracket_author: BracketStyle = field(default_factory=round_brackets)
        bracket_label: BracketStyle = field(default_factory=round_brackets)
        bracket_year: BracketStyle = field(default_factory=round_brackets)

    import sphinxcontrib.bibtex.plugin as bibtex_plugin

    register_pybtex_styles()
    # force: a second Sphinx app in the same process registers again
    bibtex_plugin.register_plugin("sphinxcontrib.bibtex.style.referencing", "author_year_round",
                                  AuthorYearRoundReferenceStyle, force=True)


# --- Colab ------------------------------------------------------------------------------------------

def colab_url(repository_url: str, branch: str, chapter: str) -> str:
    """Colab URL of the readable notebook ``book/colab/<chapter>.ipynb`` of a GitHub repository."""
    slug = repository_url.rstrip("/").split("github.com/")[-1]
    return f"{COLAB}/{slug}/blob/{branch}/{NOTEBOOK_DIR}/{chapter}.ipynb"


def _repo(app) -> tuple[str, str]:
    opts = app.config.html_theme_options or {}
    return opts.get("repository_url", ""), opts.get("repository_branch", "main") or "main"


def _readable_notebook(app, docname: str) -> pathlib.Path | None:
    path = pathlib.Path(app.srcdir) / NOTEBOOK_DIR / f"{pathlib.PurePosixPath(docname).name}.ipynb"
    return path if path.exists() else None


def _add_badge(app, doctree) -> None:
    """An 'Open in Colab' badge right under the chapter title."""
    from docutils import nodes

    docname = app.env.docname
    if _readable_notebook(app, docname) is None:
        return
    repo, branch = _repo(app)
    if "github.com/" not in repo:
        return
    url = colab_url(repo, branch, pathlib.PurePosixPath(docname).name)
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None or not section.children or not isinstance(section[0], nodes.title):
        return
    # The theme's own Colab logo, so the badge needs no network (the book is read offline too).
    up = "../" * docname.count("/")
    html = (f'<p class="colab-badge"><a class="colab-badge" href="{url}" title="Open the readable '
            f'notebook of this chapter in Colab"><img src="{up}_static/images/logo_colab.png" alt="" '
            f'height="16"> Open in Colab</a></p>')
    section.insert(1, nodes.raw("", html, format="html"))


def _add_header_button(app, pagename, templatename, context, doctree) -> None:
    notebook = _readable_notebook(app, pagename)
    repo, branch = _repo(app)
    if notebook is None or "github.com/" not in repo or "header_buttons" not in context:
        return
    url = colab_url(repo, branch, pathlib.PurePosixPath(pagename).name)
    context["header_buttons"].insert(0, {
        "type": "group",
        "tooltip": "Launch interactive content",
        "icon": "fas fa-rocket",
        "buttons": [{
            "type": "link", "text": "Colab", "tooltip": "Open the readable notebook in Colab",
            "icon": "_static/images/logo_colab.png", "url": url, "label": "colab-button",
        }],
        "label": "launch-buttons",
    })
    # The download button's .ipynb: the readable notebook, not the MyST-paired one.
    target = pathlib.Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(notebook, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


_PROOF_OF = re.compile(r"<p>Proof\. Proof of ")


def _proof_titles(app, pagename, templatename, context, doctree) -> None:
    """A proof whose text begins "Proof of <result>." reads "Proof of <result>." instead of sphinx-proof's
    "Proof. Proof of <result>." (each proof names the result it proves)."""
    body = context.get("body")
    if isinstance(body, str) and "Proof of" in body:
        context["body"] = _PROOF_OF.sub("<p>Proof of ", body)


def setup(app) -> Dict[str, Any]:
    _register_bibtex_styles()
    app.connect("html-page-context", _proof_titles)
    app.connect("doctree-read", _add_badge)
    # After sphinx-book-theme creates the header button list (priority 500, registered earlier) and
    # before it adds the download button (501), which reads ``ipynb_source``.
    app.connect("html-page-context", _add_header_button, priority=500)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
