"""Serve plotly.js from the built book, so the chapters' interactive figures render with no network.

The chapters display plotly figures as HTML that draws only where ``window.Plotly`` exists
(:func:`ortho_lib.notebook.show_plotly`); this extension loads ``_static/plotly.min.js`` on every page and
copies it there from the installed ``plotly`` package (the bundle plotly itself uses offline).
"""
from __future__ import annotations

import pathlib
import shutil


def _bundle() -> pathlib.Path:
    import plotly

    path = pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"{path} not found: reinstall plotly")
    return path


def _copy(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        static = pathlib.Path(app.outdir) / "_static"
        static.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_bundle(), static / "plotly.min.js")


def setup(app):
    _bundle()                        # fail early, not after the whole build
    app.add_js_file("plotly.min.js")
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
