"""``reconcile check``: a one-line CI gate that fails when the plan is not empty."""

from __future__ import annotations

from pathlib import Path

import click

from reconcile.cli.output import echo_warning
from reconcile.cli.plan import (
    error_summary,
    format_options,
    lock_options,
    plan_inputs,
    prepare_plan,
    print_plan,
)
from reconcile.errors import ReconcileError


@click.command("check")
@plan_inputs
@format_options
@lock_options
def command(
    paths: tuple[Path, ...],
    state_path: Path | None,
    backend: str | None,
    endpoint: str | None,
    targets: tuple[str, ...],
    excludes: tuple[str, ...],
    fmt: str,
    show_pii: bool,
    lock: bool,
    lock_timeout: float,
) -> None:
    """Exit 1 (and print the plan) when apply would change something; 0 when in sync.

    Users waiting for the Market Data Agreement do not count: nothing can change for them until
    they sign.
    """
    prepared = prepare_plan(
        paths,
        state_path=state_path,
        endpoint=endpoint,
        targets=targets,
        excludes=excludes,
        backend_url=backend,
        lock_timeout=lock_timeout if lock else None,
    )
    for warning in prepared.warnings:
        echo_warning(warning)
    plan = prepared.plan
    print_plan(plan, fmt, show_pii)
    if plan.has_errors:
        raise error_summary(plan)
    if plan.has_changes:
        count = len(plan.changes)
        changes = "change" if count == 1 else "changes"
        raise ReconcileError(
            f"not in sync: the plan has {count} {changes}; run `reconcile apply` to make them"
        )
