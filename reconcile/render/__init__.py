"""Plan → text / JSON / Markdown: one renderer per format, chosen by name.

:func:`render` dispatches by the format name (``--format``) through a table of the renderer
modules' functions. Renderers are pure: a plan and options in, a string out.
"""

from __future__ import annotations

from collections.abc import Callable

from reconcile.planning.plan import Plan
from reconcile.render.json_plan import render_json
from reconcile.render.markdown import render_markdown
from reconcile.render.options import MARKDOWN_LIMIT, RenderOptions
from reconcile.render.text import render_text

Renderer = Callable[[Plan, RenderOptions], str]
_RENDERERS: dict[str, Renderer] = {"json": render_json, "markdown": render_markdown, "text": render_text}


def formats() -> tuple[str, ...]:
    """The format names, in a stable order."""
    return tuple(sorted(_RENDERERS))


def render(plan: Plan, format: str = "text", options: RenderOptions | None = None) -> str:
    """Draw ``plan`` in ``format``; the result ends with a newline."""
    try:
        function = _RENDERERS[format]
    except KeyError:
        raise ValueError(f"unknown plan format {format!r}; expected one of {', '.join(formats())}") from None
    return function(plan, options or RenderOptions())


__all__ = ["MARKDOWN_LIMIT", "RenderOptions", "Renderer", "formats", "render"]
