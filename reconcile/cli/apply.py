"""``reconcile apply``: make the partner API match the manifest (or a saved plan)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from reconcile.apply import ApplyResult
from reconcile.cli.options import format_option, lock_timeout_option, plan_inputs
from reconcile.cli.output import echo, echo_err, keep_until_exit, print_plan, stderr_reporter, style
from reconcile.cli.progress import ApplyProgress
from reconcile.errors import ReconcileError, counted, plural, printable
from reconcile.operations.apply import ApplyRequest, apply
from reconcile.operations.inputs import PlanInputs
from reconcile.planning.plan import Plan
from reconcile.render.describe import rechecks

# How each count reads: (one, many) for the words that change with the number.
_WORDS = {
    "emails_changed": ("email changed", "emails changed"),
    "contacts_updated": ("contact updated", "contacts updated"),
    "awaiting_agreement": ("awaiting agreement", "awaiting agreement"),
}


def _summary_text(result: ApplyResult, plan: Plan) -> str:
    """``Apply complete: 8 created, …``: the changes made, then what the agreement re-checks found.

    A re-check is not a change (the plan said "No changes."), so its outcome is reported apart:
    a trader who signed since is granted, the others still wait.
    """
    counts = result.counts()
    recheck_left = Counter(a.user for a in rechecks(plan))
    still_waiting = signed_since = 0
    # Only Sim+ waits, so a waiting user of a re-check is that re-check; grants left over are
    # the re-checks whose trader signed (any other grant of that user is a change).
    for user in result.awaiting_agreement:
        if recheck_left[user]:
            recheck_left[user] -= 1
            still_waiting += 1
    for user in result.granted:
        if recheck_left[user]:
            recheck_left[user] -= 1
            signed_since += 1
    counts["awaiting_agreement"] -= still_waiting
    counts["granted"] -= signed_since
    parts = [
        counted(n, *_WORDS[k]) if k in _WORDS else f"{n} {k.replace('_', ' ')}"
        for k, n in counts.items()
        if n
    ]
    head = "Apply complete" if result.ok else "Apply finished with failures"
    rechecked = still_waiting + signed_since
    done = ", ".join(parts) if parts else "no planned changes" if rechecked else "nothing to do"
    text = f"{head}: {done}"
    if rechecked:
        text += (
            f"; agreement re-checked for {counted(rechecked, 'grant')}: "
            f"{signed_since} signed since and granted, {still_waiting} still awaiting"
        )
    return f"{text} (state serial {result.state_serial})."


@click.command("apply")
@click.argument("planfile", required=False, type=click.Path(dir_okay=False, path_type=Path))
@plan_inputs
@click.option("--auto-approve", is_flag=True, help="Apply without asking (needed without a TTY).")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100),
    default=100,
    show_default=True,
    help="Users per create/cancel call.",
)
@click.option(
    "--generated-passwords",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File (mode 0600) that receives the passwords of users with {generate: true}, each once its "
    "user is created; a file an earlier apply started is added to, any other is never overwritten.",
)
@lock_timeout_option()
@click.option(
    "--allow-cancellations",
    type=click.IntRange(min=0),
    metavar="N",
    help="Allow this run to cancel up to N users and trading permissions together, whatever the "
    "policy budget says.",
)
@format_option(help="text for people; json prints the result as one JSON document on stdout.")
def command(
    planfile: Path | None,
    inputs: PlanInputs,
    auto_approve: bool,
    batch_size: int,
    generated_passwords: Path | None,
    lock_timeout: float,
    allow_cancellations: int | None,
    fmt: str,
) -> None:
    """Make the partner API match the manifest, or do exactly what a saved PLANFILE says.

    \b
    Without PLANFILE: plan, show the plan, ask for confirmation (on a TTY; --auto-approve otherwise).
    With PLANFILE: refuse it if the manifest, state, environment, endpoint or reconcile changed.
    -f is needed with PLANFILE too: passwords are read from the manifest the plan is bound to.
    Exit codes: 0 done (users awaiting the agreement included), 1 failure, 3 refused by policy.
    """
    progress = ApplyProgress()
    try:
        outcome = apply(
            ApplyRequest(
                inputs,
                planfile=planfile,
                batch_size=batch_size,
                generated_passwords=generated_passwords,
                lock_timeout=lock_timeout,
                allow_cancellations=allow_cancellations,
            ),
            stderr_reporter(
                on_event=progress.client_event,
                progress=progress,
                schedule=progress.schedule,
                # With --format json, stdout is kept for the result document.
                show_plan=lambda plan: print_plan(plan, "text", show_pii=False, err=fmt == "json"),
                confirm=None if auto_approve else _confirm,
            ),
        )
    finally:
        progress.close()
    keep_until_exit(outcome)
    _report(outcome.result, fmt, outcome.plan)
    if not outcome.result.ok:
        sys.exit(1)


def _confirm(_plan: Plan) -> bool:
    """Ask on the terminal whether to apply the plan just shown; refuse without one."""
    if not sys.stdin.isatty():
        raise ReconcileError(
            "refusing to apply without confirmation: stdin is not a terminal. Review the plan "
            "and pass --auto-approve, or save it with `reconcile plan --out FILE` and apply the file"
        )
    return click.confirm(style("Apply these changes?", bold=True, stream=sys.stderr), err=True)


def _report(result: ApplyResult, fmt: str, plan: Plan) -> None:
    if fmt == "json":
        data: dict[str, Any] = result.to_json_dict()
        data["planned"] = plan.summary
        echo(json.dumps(data, indent=2, sort_keys=True))
        return
    for failure in sorted(result.failures, key=lambda f: (f.user, f.action)):
        # A failure quotes the API's answer and manifest names: untrusted text.
        echo_err(style("failed: ", fg="red", bold=True, stream=sys.stderr) + printable(str(failure)))
    if result.awaiting_agreement:
        names = [printable(n) for n in sorted(set(result.awaiting_agreement))]
        echo(
            f"{counted(len(names), 'user')} {plural(len(names), 'awaits', 'await')} the Market Data "
            "Agreement; Sim+ is granted by a later apply once they sign: "
            f"{', '.join(names[:10])}{' …' if len(names) > 10 else ''}"
        )
    echo(_summary_text(result, plan))
