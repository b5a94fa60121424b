"""Plan → text / JSON / Markdown: one renderer per format, chosen by name.

:func:`render` dispatches by the format name (``--format``) through a table of the renderer
modules' functions. Renderers are pure: a plan and options in, the text out in pieces
(:func:`render_pieces`), so that a plan of 300k actions is written without ever standing in
memory as one string; :func:`render` joins them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from reconcile.planning.plan import Plan
from reconcile.render.json_plan import render_json
from reconcile.render.markdown import render_markdown
from reconcile.render.options import MARKDOWN_LIMIT, RenderOptions
from reconcile.render.text import render_text

Renderer = Callable[[Plan, RenderOptions], Iterator[str]]
_RENDERERS: dict[str, Renderer] = {"json": render_json, "markdown": render_markdown, "text": render_text}


def formats() -> tuple[str, ...]:
    """The format names, in a stable order."""
    return tuple(sorted(_RENDERERS))


def render(plan: Plan, format: str = "text", options: RenderOptions | None = None) -> str:
    """Draw ``plan`` in ``format``; the result ends with a newline."""
    return "".join(render_pieces(plan, format, options))


def render_pieces(plan: Plan, format: str = "text", options: RenderOptions | None = None) -> Iterator[str]:
    """Draw ``plan`` in ``format`` as pieces of whole lines; joined, they end with one newline."""
    try:
        function = _RENDERERS[format]
    except KeyError:
        raise ValueError(f"unknown plan format {format!r}; expected one of {', '.join(formats())}") from None
    return function(plan, options or RenderOptions())


__all__ = ["MARKDOWN_LIMIT", "RenderOptions", "Renderer", "formats", "render", "render_pieces"]
