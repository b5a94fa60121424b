"""``reconcile plan``: show what apply would change, from the manifest and recorded state alone.

No API credentials and no network: the plan is bound to the endpoint *label* only. With
``--refresh`` the live organization is read too (credentials needed; for ``sim``, the embedded
simulator), drift is reported and the plan repairs it.
Exit codes: 0 no changes (or changes without --detailed-exitcode); 1 error, including a plan
with error diagnostics; 2 changes or drift present with --detailed-exitcode; 3 the plan cancels
more users than the policy allows (the plan is still printed, with the policy warning, so a
reviewer sees what would be cancelled; apply enforces the same budget).
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from reconcile import __version__
from reconcile.cli.output import echo, echo_err, echo_warning, use_colour
from reconcile.errors import PlanError, PolicyError
from reconcile.live import LiveSnapshot
from reconcile.manifest import Manifest
from reconcile.plan import Plan, PlanBinding, save_plan
from reconcile.policy import CancellationCheck, evaluate_cancellations
from reconcile.render import RenderOptions, formats, render
from reconcile.state import State

F = TypeVar("F", bound=Callable[..., Any])
LiveRead = Callable[[Manifest, State], LiveSnapshot]
"""Reads the live organization for a manifest and its recorded state (``plan --refresh``)."""


@dataclass(frozen=True)
class PreparedPlan:
    """A plan with what it was made from."""

    plan: Plan
    manifest: Manifest
    state: State
    warnings: tuple[str, ...]
    """Manifest warnings from the loader (literal passwords in live, …), for stderr."""


def prepare_plan(
    paths: Sequence[Path],
    *,
    state_path: Path | None = None,
    endpoint: str | None = None,
    targets: Sequence[str] = (),
    excludes: Sequence[str] = (),
    read_live: LiveRead | None = None,
    backend_url: str | None = None,
    lock_timeout: float | None = None,
) -> PreparedPlan:
    """Load the manifest and the recorded state, and plan; no network unless ``read_live`` is given.

    With ``lock_timeout`` (seconds, negative = forever) the state lock is held while state is
    read and planned, so a plan never sees an apply half-way; None plans without it (``apply``
    plans under the lock it already holds).
    """
    from reconcile.api.endpoints import resolve_endpoint
    from reconcile.loader import load_manifest
    from reconcile.planner import make_plan
    from reconcile.stores import open_store

    loaded = load_manifest(list(paths))
    manifest = loaded.manifest
    environment = manifest.environment
    label = resolve_endpoint(environment, endpoint)
    store = open_store(
        environment, state_path=state_path, backend_url=backend_url, manifest_backend=manifest.backend
    )
    locked = (
        contextlib.nullcontext()
        if lock_timeout is None
        else store.lock(timeout=lock_timeout, purpose="plan", on_wait=echo_err)
    )
    with locked:
        state = store.load(environment)
        binding = PlanBinding(
            manifest_digest=loaded.digest,
            state_lineage=state.lineage,
            state_serial=state.serial,
            environment=environment,
            endpoint=label,
            tool_version=__version__,
        )
        live = read_live(manifest, state) if read_live is not None else None
        plan = make_plan(manifest, state, binding=binding, targets=targets, excludes=excludes, live=live)
    return PreparedPlan(plan, manifest, state, tuple(str(w) for w in loaded.warnings))


def plan_inputs(function: F) -> F:
    """The options every planning command takes (-f, --state, --backend, --endpoint, --target, --exclude)."""
    decorators = [
        click.option(
            "-f",
            "--file",
            "paths",
            multiple=True,
            required=True,
            type=click.Path(exists=True, path_type=Path),
            help="Manifest file or folder of *.yaml files (repeatable; merged into one desired set).",
        ),
        click.option(
            "--state",
            "state_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Recorded state file (default: state/<environment>.json).",
        ),
        click.option(
            "--backend",
            metavar="URL",
            help="Keep state in PostgreSQL at this DSN (postgresql://user@host/db) instead of a file; "
            "default $RECONCILE_BACKEND, then the manifest's backend.postgres.dsnEnv.",
        ),
        click.option(
            "--endpoint",
            metavar="URL",
            help="Partner API base URL the plan is bound to (default: the environment's host). "
            "Never contacted by plan.",
        ),
        click.option(
            "--target",
            "targets",
            multiple=True,
            metavar="PATTERN",
            help="Plan only users whose name matches this glob (repeatable).",
        ),
        click.option(
            "--exclude",
            "excludes",
            multiple=True,
            metavar="PATTERN",
            help="Leave out users whose name matches this glob (repeatable).",
        ),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def lock_options(function: F) -> F:
    """--lock and --lock-timeout, for commands that only read state (plan, check)."""
    function = click.option(
        "--lock-timeout",
        type=float,
        default=0.0,
        show_default=True,
        metavar="SECONDS",
        help="How long to wait for a running apply's lock on the state (negative: forever).",
    )(function)
    return click.option(
        "--lock",
        type=click.BOOL,
        default=True,
        show_default=True,
        metavar="BOOL",
        help="Hold the state lock while planning, so a running apply is never seen half-way; "
        "--lock=false reads without it (for read-only checkouts).",
    )(function)


def format_options(function: F) -> F:
    """--format and --show-pii."""
    function = click.option(
        "--show-pii",
        is_flag=True,
        help="Show emails, phones and street addresses in Markdown (masked by default).",
    )(function)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(formats()),
        default="text",
        show_default=True,
        help="text for people, json for machines (docs/plan-format.md), markdown for pull requests.",
    )(function)


def print_plan(plan: Plan, fmt: str, show_pii: bool) -> None:
    """Render ``plan`` to stdout (colour only for text on a terminal without NO_COLOR)."""
    options = RenderOptions(colour=fmt == "text" and use_colour(sys.stdout), show_pii=show_pii)
    echo(render(plan, fmt, options).rstrip("\n"))


def with_policy(plan: Plan, check: CancellationCheck) -> Plan:
    """Add the policy's refusal to the plan's diagnostics, so every format shows it."""
    diagnostic = check.diagnostic()
    if diagnostic is None:
        return plan
    return plan.model_copy(update={"diagnostics": (diagnostic, *plan.diagnostics)})


def error_summary(plan: Plan) -> PlanError:
    """The error for a plan with error diagnostics: apply refuses such a plan."""
    count = sum(1 for d in plan.diagnostics if d.severity == "error")
    errors = "error" if count == 1 else "errors"
    return PlanError(f"the plan has {count} {errors} (listed above); fix the manifest, then plan again")


@click.command("plan")
@plan_inputs
@format_options
@lock_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PLANFILE",
    help="Save the plan for `reconcile apply PLANFILE` (not written when the plan has errors).",
)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 2 when the plan has changes, or drift with --refresh (0 none, 1 error, 3 refused by policy).",
)
@click.option(
    "--refresh",
    is_flag=True,
    help="Read the live organization first (needs API credentials; sim: the embedded simulator): "
    "report drift from recorded state and plan its repair.",
)
@click.option(
    "--allow-cancellations",
    type=click.IntRange(min=0),
    metavar="N",
    help="Accept up to N cancellations in this plan, whatever the policy budget says.",
)
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
    out: Path | None,
    detailed_exitcode: bool,
    allow_cancellations: int | None,
    refresh: bool,
) -> None:
    """Show what apply would change; needs no API credentials (except with --refresh).

    \b
    Exit codes: 0 no changes (or changes, without --detailed-exitcode); 1 error;
    2 changes or drift present (--detailed-exitcode); 3 more cancellations than the policy allows.
    Awaiting-agreement re-checks are not changes.
    """
    reader = live_reader(endpoint, state_path) if refresh else None
    prepared = prepare_plan(
        paths,
        state_path=state_path,
        endpoint=endpoint,
        targets=targets,
        excludes=excludes,
        read_live=reader,
        backend_url=backend,
        lock_timeout=lock_timeout if lock else None,
    )
    for warning in prepared.warnings:
        echo_warning(warning)
    check = evaluate_cancellations(
        prepared.plan, prepared.state, prepared.manifest.policy, allow_cancellations
    )
    plan = with_policy(prepared.plan, check)
    print_plan(plan, fmt, show_pii)
    if plan.has_errors:
        raise error_summary(plan)
    if out is not None:
        save_plan(plan, out)
        files = " ".join(f"-f {shlex.quote(str(p))}" for p in paths)
        echo_err(f"Saved the plan to {out}; apply it with: reconcile apply {shlex.quote(str(out))} {files}")
    if check.refused:
        raise PolicyError(check.message())
    if detailed_exitcode and (plan.has_changes or plan.has_drift):
        click.get_current_context().exit(2)


def live_reader(endpoint: str | None, state_path: Path | None) -> LiveRead:
    """A reader of the live organization through the environment's API (say what it read on stderr)."""

    def read(manifest: Manifest, state: State) -> LiveSnapshot:
        from datetime import UTC, datetime

        from reconcile.api.connect import open_client
        from reconcile.live import read_live

        state_dir = state_path.parent if state_path is not None else Path("state")
        with open_client(manifest.environment, endpoint=endpoint, state_dir=state_dir) as client:
            live = read_live(
                client,
                agreement_alert_id=manifest.agreement_alert_id,
                contacts_of=[r.userId for r in state.users.values() if r.lifecycle == "active"],
                read_at=datetime.now(UTC),
            )
            where = client.endpoint_label
        echo_err(f"Read {len(live.users)} users of the organization at {where} ({live.requests} requests).")
        return live

    return read
