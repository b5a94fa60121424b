"""The JSON renderer: the documented plan form (docs/plan-format.md), the same text as a plan file."""

from __future__ import annotations

from reconcile.planning.plan import Plan, dumps_plan
from reconcile.render.options import RenderOptions


def render_json(plan: Plan, options: RenderOptions) -> str:
    """Return ``Plan.to_json_dict()`` as indented JSON with sorted keys (never masked: for machines)."""
    return dumps_plan(plan)
