"""Refuse a saved plan whose inputs changed since it was made."""

from __future__ import annotations

from reconcile import __version__
from reconcile.errors import PlanError
from reconcile.planning.plan import Plan
from reconcile.state.model import State


def check_plan_current(
    plan: Plan,
    *,
    manifest_digest: str,
    state: State,
    environment: str,
    endpoint: str | None,
    companion: str | None = None,
    tool_version: str = __version__,
) -> None:
    """Raise :class:`PlanError` listing everything that differs from what ``plan`` was made from.

    ``companion`` (the host that also receives cancellations) is compared whenever ``endpoint`` is.
    """
    made = plan.binding
    changed: list[str] = []
    if made.manifest_digest != manifest_digest:
        changed.append(
            f"the manifest changed (digest {made.manifest_digest[:12]} when planned, "
            f"{manifest_digest[:12]} now)"
        )
    if made.state_serial == 0 and state.serial > 0:
        # A never-saved state has a lineage nobody wrote down; the first save fixed a new one.
        changed.append(f"the state was written since (none when planned, serial {state.serial} now)")
    elif made.state_lineage != state.lineage:
        changed.append(
            f"the state is another one (lineage {made.state_lineage} when planned, {state.lineage} now)"
        )
    elif made.state_serial != state.serial:
        changed.append(
            f"the state was written since (serial {made.state_serial} when planned, {state.serial} now)"
        )
    if made.environment != environment:
        changed.append(f"the environment changed ({made.environment} when planned, {environment} now)")
    if endpoint is not None and made.endpoint != endpoint:
        changed.append(f"the endpoint changed ({made.endpoint} when planned, {endpoint} now)")
    if endpoint is not None and made.companion != companion:
        changed.append(
            f"the companion host changed ({made.companion or 'none'} when planned, {companion or 'none'} now)"
        )
    if made.tool_version != tool_version:
        changed.append(f"reconcile changed (version {made.tool_version} when planned, {tool_version} now)")
    if changed:
        raise PlanError(
            "the saved plan is stale: "
            + "; ".join(changed)
            + ". Make a new plan with `reconcile plan --out PLANFILE` and review it"
        )
