"""``reconcile check``: a one-line CI gate that fails when the plan is not empty."""

from __future__ import annotations

import click

from reconcile.cli.options import PlanInputs, format_options, lock_options, plan_inputs
from reconcile.cli.plan import prepare_plan, print_plan, refuse_errors
from reconcile.errors import ReconcileError, counted


@click.command("check")
@plan_inputs
@format_options
@lock_options
def command(inputs: PlanInputs, fmt: str, show_pii: bool, lock_timeout: float | None) -> None:
    """Exit 1 (and print the plan) when apply would change something; 0 when in sync.

    Users waiting for the Market Data Agreement do not count: nothing can change for them until
    they sign.
    """
    plan = prepare_plan(inputs, lock_timeout=lock_timeout).plan
    print_plan(plan, fmt, show_pii)
    refuse_errors(plan)
    if plan.has_changes:
        raise ReconcileError(
            f"not in sync: the plan has {counted(len(plan.changes), 'change')}; "
            "run `reconcile apply` to make them"
        )
