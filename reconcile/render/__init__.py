"""Plan → text / JSON / Markdown: one renderer per format, chosen by name.

Each renderer module registers itself with :func:`renderer`; :func:`render` dispatches by the
format name (``--format``). Renderers are pure: a plan and options in, a string out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reconcile.planning.plan import Plan

MARKDOWN_LIMIT = 60_000
"""Characters a Markdown plan may take: under GitHub's 65,536 and GitLab's 1,000,000 comment limits."""


@dataclass(frozen=True)
class RenderOptions:
    """How to draw a plan."""

    colour: bool = False
    show_pii: bool = False
    """Show emails, phones and street addresses in review output (Markdown) instead of masking."""
    max_chars: int = MARKDOWN_LIMIT


Renderer = Callable[[Plan, RenderOptions], str]
_RENDERERS: dict[str, Renderer] = {}


def renderer(name: str) -> Callable[[Renderer], Renderer]:
    """Register a renderer for the format ``name``."""

    def register(function: Renderer) -> Renderer:
        _RENDERERS[name] = function
        return function

    return register


def formats() -> tuple[str, ...]:
    """The registered format names, in a stable order."""
    return tuple(sorted(_RENDERERS))


def render(plan: Plan, format: str = "text", options: RenderOptions | None = None) -> str:
    """Draw ``plan`` in ``format``; the result ends with a newline."""
    try:
        function = _RENDERERS[format]
    except KeyError:
        raise ValueError(f"unknown plan format {format!r}; expected one of {', '.join(formats())}") from None
    return function(plan, options or RenderOptions())


# Importing the renderer modules registers them.
from reconcile.render import json_plan, markdown, text  # noqa: E402

__all__ = [
    "MARKDOWN_LIMIT",
    "RenderOptions",
    "Renderer",
    "formats",
    "json_plan",
    "markdown",
    "render",
    "renderer",
    "text",
]
