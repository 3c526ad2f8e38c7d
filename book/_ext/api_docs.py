"""The API reference page: autodoc over ``ortho_lib`` with the library's docstring conventions.

The docstrings write inline math as ``$...$`` (as the chapters do) and display math as ``.. math::``;
autodoc reads reStructuredText, where ``$`` means nothing, so inline math is rewritten to ``:math:`...```
before the docstring is parsed.  Google-style sections (``Args:``, ``Returns:``) are read by napoleon.
"""
from __future__ import annotations

import re

_INLINE = re.compile(r"(?<![\\$])\$(?!\$)((?:[^$\n]|\n(?!\s*\n))+?)(?<!\\)\$(?!\$)")


def dollars_to_math(lines: list[str]) -> None:
    """Rewrite ``$x$`` as ``:math:`x``` in place (display ``$$`` and escaped ``\\$`` are left alone).

    Inline math may run over a line break (not over a blank line); the lines it spans are joined.
    """
    text = "\n".join(lines)
    if "$" not in text:
        return

    def to_role(m: "re.Match") -> str:
        tex = " ".join(part.strip() for part in m.group(1).split("\n"))
        return ":math:`" + tex.replace("`", r"\`") + "`"

    lines[:] = _INLINE.sub(to_role, text).split("\n")


def _process(app, what, name, obj, options, lines):  # pragma: no cover - Sphinx
    dollars_to_math(lines)


# the modules whose names the top level re-exports (``ortho_lib.train`` is ``ortho_lib.training.train``)
_CORE = ("subspaces", "data", "network", "training", "perturbations", "notebook")


def _resolve_short_names(app, env, node, contnode):  # pragma: no cover - Sphinx
    """A docstring may name a library object by a short name (``:func:`obtuse_data``` in ``maxmargin``,
    ``:meth:`TwoLayerParams.stack```): resolve it to the one documented ``ortho_lib`` object it ends."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    domain = env.get_domain("py")
    full = f"ortho_lib.{target}"
    if full in domain.objects:
        candidates = [full]
    else:
        # ``ortho_lib.train`` names the top-level re-export of ``ortho_lib.training.train``
        tail = target[len("ortho_lib."):] if target.startswith("ortho_lib.") else target
        candidates = [name for name in domain.objects if name.startswith("ortho_lib.") and name.endswith("." + tail)
                      and not any(part.startswith("_") for part in name.split("."))]
        core = [name for name in candidates if name.split(".")[1] in _CORE]
        if target.startswith("ortho_lib.") and len(core) == 1:
            candidates = core
    if len(candidates) != 1:
        return None
    found = domain.resolve_any_xref(env, node["refdoc"], app.builder, candidates[0], node, contnode)
    return found[0][1] if found else None


def setup(app):  # pragma: no cover - Sphinx
    app.setup_extension("sphinx.ext.autodoc")
    app.setup_extension("sphinx.ext.napoleon")
    app.connect("autodoc-process-docstring", _process)
    app.connect("missing-reference", _resolve_short_names)
    # what the API page may name without documenting: torch's types, the private backends and helpers
    app.config.nitpick_ignore_regex = list(app.config.nitpick_ignore_regex or []) + [
        (r"py:.*", r"torch(\..*)?|numpy(\..*)?|np\..*|Tensor|nn\.Module|ortho_lib\._.*|_.*|.*\._[a-z_]+")]
    app.config.napoleon_google_docstring = True
    app.config.napoleon_numpy_docstring = False
    app.config.autodoc_member_order = "bysource"
    app.config.autodoc_typehints = "none"          # the docstrings say the types and shapes
    app.config.napoleon_use_ivar = True            # "Attributes:" as one compact field list
    app.config.autoclass_content = "class"
    return {"parallel_read_safe": True, "parallel_write_safe": True}
