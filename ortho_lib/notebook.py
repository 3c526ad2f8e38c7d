r"""Helpers for the book's chapters as notebooks: numbers glued into the prose, and progress bars.

**Glue.** Every measured number the book quotes in its prose is computed by the chapter and *glued* into
the text (myst-nb's ``glue``): the prose refers to it as ``{glue:text}`name:.2f``` and the value shown is
the one the chapter computed.  :func:`glue` stores a value under a name the same way, and does nothing
visible where myst-nb is not installed (in Colab or a plain Jupyter, where the readable notebooks already
carry the values).

**Progress bars** for long sweeps (:func:`progress`): shown to a person running a chapter, kept out of
stored outputs.

A bar is drawn only when someone is watching.  ``ORTHO_PROGRESS`` decides first: ``0`` (what the
Makefile sets for ``make book``, ``make notebooks``, ``make chapter`` and ``make test``) switches bars
off, ``1`` forces them on.  Unset, a bar is drawn in an interactive session — an IPython/Jupyter kernel
(Jupyter, Colab) or a terminal — and not when output goes to a file or a pipe, or when ``CI`` is set.
So the built book, the executed ``.ipynb`` files that nbval compares and the readable notebooks never
store bar refreshes, while a reader who runs a chapter still sees its sweeps advance.
"""
from __future__ import annotations

import numbers
import os
import re
import sys
from typing import Iterable, Optional, TypeVar

from tqdm import tqdm

from ._checks import check_int

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ENV = "ORTHO_PROGRESS"


def _in_ipython_kernel() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:  # pragma: no cover - IPython without a running shell
        return False
    return ip is not None and type(ip).__name__ in ("ZMQInteractiveShell", "Shell", "TerminalInteractiveShell")


def progress_enabled() -> bool:
    """Whether :func:`progress` draws a bar: ``ORTHO_PROGRESS`` if set, else only when interactive."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    if os.environ.get("CI"):
        return False
    if _in_ipython_kernel():
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress(iterable: Iterable[T], desc: Optional[str] = None, total: Optional[int] = None) -> Iterable[T]:
    """Wrap ``iterable`` in a plain-text tqdm bar on stderr when :func:`progress_enabled`.

    When disabled the bar is a silent pass-through (same tqdm object, nothing written).
    """
    if desc is not None and not isinstance(desc, str):
        raise TypeError(f"desc must be a string or None, got {desc!r}")
    if total is not None:
        total = check_int("total", total, low=0)
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, ascii=True, mininterval=1.0,
                leave=True, disable=not progress_enabled())


SIGNIFICANT = 6


def glue(name: str, value: object, sig: int = SIGNIFICANT) -> object:
    """Store ``value`` under ``name`` for the prose (myst-nb ``glue(..., display=False)``); returns ``value``.

    Numbers are stored as plain Python ``int``/``float`` (tensors and NumPy scalars are converted), so the
    prose's format spec (``:.2f``, ``:.0%``) applies to them.  A float is stored rounded to ``sig``
    significant digits (6 by default, more than any prose shows): its last digits change with the
    processor's arithmetic, and nbval compares the stored text exactly.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name must be an identifier (letters, digits, underscores), got {name!r}")
    sig = check_int("sig", sig, low=1)
    if sig > 17:
        raise ValueError(f"sig must be at most 17 (a float64 holds 17 significant digits), got {sig}")
    v = value
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0 and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (numbers.Real, str)):
        raise TypeError(f"value must be a real number or a string, got {type(value).__name__}")
    if isinstance(v, numbers.Integral):
        v = int(v)
    elif isinstance(v, numbers.Real):
        v = float(f"{float(v):.{sig}g}")
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - Colab / plain Jupyter
        return value
    _glue(name, v, display=False)
    return value


def show_plotly(fig: object, *, div_id: str) -> None:
    """Display a plotly figure so that it can be rotated in the HTML book, in Jupyter and in Colab.

    For a person running the chapter (Jupyter, JupyterLab, VS Code, Colab: see
    :func:`progress_enabled`) this is ``fig.show()``, plotly's own renderer for that
    frontend.  When a chapter is executed for the book or the stored notebooks (``ORTHO_PROGRESS=0``, as
    every ``make`` target sets it) it displays HTML whose script draws the figure only where ``plotly.js`` is
    already loaded: the HTML book loads its own copy (``book/_ext/plotly_offline.py``), so the page needs no
    network, and the stored output holds no plotly.js (hundreds of KB instead of several MB) and a fixed
    element id ``div_id``.  Where no plotly.js is loaded (a stored output opened in Colab) it reads as a
    one-line note asking to run the cell.
    """
    if not isinstance(div_id, str) or not _NAME.match(div_id.replace("-", "_")):
        raise ValueError(f"div_id must be letters, digits, '-' and '_', got {div_id!r}")
    if not hasattr(fig, "to_plotly_json") or not hasattr(fig, "to_json"):
        raise TypeError(f"fig must be a plotly Figure, got {type(fig).__name__}")
    if progress_enabled():  # a person is watching: plotly's renderer for this frontend
        fig.show()
        return
    from IPython.display import display

    note = "Interactive 3-D view: run this cell in Jupyter or Colab to rotate it."
    html = (f'<div id="{div_id}" class="plotly-graph-div" style="height:{fig.layout.height or 450}px; '
            f'width:100%;"><p style="font-style:italic">{note}</p></div>\n'
            '<script type="text/javascript">\n'
            f'(function () {{ var el = document.getElementById("{div_id}");\n'
            '  if (window.Plotly && el) { var f = ' + fig.to_json() + ';\n'
            '    el.innerHTML = ""; window.Plotly.newPlot(el, f.data, f.layout, {responsive: true}); }\n'
            '})();\n</script>')
    display({"text/html": html, "text/plain": f"<plotly figure {div_id}>\n{note}"}, raw=True)


def glue_range(name: str, values: object, digits: int = 0) -> None:
    """Glue the median, the minimum and the maximum of ``values`` as ``<name>_med``, ``<name>_lo``, ``<name>_hi``.

    For prose such as "median {glue:text}`steps_med` (range {glue:text}`steps_lo` to {glue:text}`steps_hi`)".
    The values are rounded to ``digits`` decimals (``int`` for ``digits=0``) before they are stored, so the
    stored text does not depend on the last bits of a computation.  NumPy's median (the mean of the two
    middle values for an even count).
    """
    import numpy as np

    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name must be an identifier (letters, digits, underscores), got {name!r}")
    digits = check_int("digits", digits, low=0)
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    try:
        a = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as err:
        raise TypeError(f"values must be numbers (a tensor, an array or a sequence), got {type(values).__name__}: "
                        f"{err}") from None
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"values must be a non-empty set of finite numbers, got {a.size} value(s)")
    for key, val in (("med", np.median(a)), ("lo", a.min()), ("hi", a.max())):
        glue(f"{name}_{key}", int(round(float(val))) if digits == 0 else round(float(val), int(digits)))
