"""The JSON renderer: the documented plan form (docs/plan-format.md), the same text as a plan file."""

from __future__ import annotations

from collections.abc import Iterator

from reconcile.planning.plan import Plan, plan_json_pieces
from reconcile.render.options import RenderOptions


def render_json(plan: Plan, options: RenderOptions) -> Iterator[str]:
    """Yield ``Plan.to_json_dict()`` as indented JSON with sorted keys (never masked: for machines)."""
    return plan_json_pieces(plan)
