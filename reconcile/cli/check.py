"""``reconcile check``: a one-line CI gate that fails when the plan is not empty."""

from __future__ import annotations

import click

from reconcile.cli.options import format_options, lock_options, plan_inputs
from reconcile.cli.output import keep_until_exit, print_plan, stderr_reporter
from reconcile.errors import ReconcileError, counted
from reconcile.operations.inputs import PlanInputs
from reconcile.operations.plan import plan as make_plan
from reconcile.operations.plan import refuse_errors


@click.command("check")
@plan_inputs
@format_options
@lock_options
def command(inputs: PlanInputs, fmt: str, show_pii: bool, lock_timeout: float | None) -> None:
    """Exit 1 (and print the plan) when apply would change or settle something; 0 when in sync.

    Users waiting for the Market Data Agreement do not count: nothing can change for them until
    they sign.
    """
    made = make_plan(inputs, lock_timeout=lock_timeout, reporter=stderr_reporter())
    keep_until_exit(made)
    plan = made.plan
    print_plan(plan, fmt, show_pii)
    refuse_errors(plan)
    reasons = []
    if plan.has_changes:
        reasons.append(f"the plan has {counted(len(plan.changes), 'change')}")
    if plan.unsettled:
        # Left out of the plan, not in sync: an apply's call for them has no known answer yet.
        reasons.append(f"the outcome for {counted(len(plan.unsettled), 'user')} waits to be settled")
    if reasons:
        todo = ": it settles that first, then plans them" if plan.unsettled else " to make them"
        raise ReconcileError(f"not in sync: {' and '.join(reasons)}; run `reconcile apply`{todo}")
