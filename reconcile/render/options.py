"""How to draw a plan: the options every renderer takes."""

from __future__ import annotations

from dataclasses import dataclass

MARKDOWN_LIMIT = 60_000
"""Characters a Markdown plan may take: under GitHub's 65,536 and GitLab's 1,000,000 comment limits."""


@dataclass(frozen=True)
class RenderOptions:
    """How to draw a plan."""

    colour: bool = False
    show_pii: bool = False
    """Show emails, phones and street addresses in review output (Markdown) instead of masking."""
    max_chars: int = MARKDOWN_LIMIT
