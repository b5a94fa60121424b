"""``reconcile apply``: make the partner API match the manifest (or a saved plan)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from reconcile.api.events import ClientEvent
from reconcile.apply import ApplyResult, PasswordLedger, apply_plan, check_plan_current, settle
from reconcile.cli.options import PlanInputs, format_option, lock_timeout_option, plan_inputs
from reconcile.cli.output import echo, echo_err, style
from reconcile.cli.plan import (
    companion_of,
    open_inputs,
    prepare_plan,
    print_plan,
    refuse_errors,
    whole_cancellations,
)
from reconcile.errors import ReconcileError, counted, plural, printable
from reconcile.planning.plan import Plan, load_plan
from reconcile.planning.policy import check_cancellations
from reconcile.render.describe import rechecks


class StderrProgress:
    """Counts, rate and ETA on stderr, at most about once a second per phase (and at its end)."""

    def __init__(self, *, interval: float = 1.0) -> None:
        self.interval = interval
        self._name = ""
        self._total = 0
        self._started = 0.0
        self._last = 0.0

    def phase(self, name: str, total: int) -> None:
        self._name, self._total = name, total
        self._started = self._last = time.monotonic()

    def advance(self, done: int) -> None:
        now = time.monotonic()
        if done < self._total and now - self._last < self.interval:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-6)
        rate = done / elapsed
        eta = (self._total - done) / rate if rate > 0 else 0.0
        echo_err(f"{self._name}: {done}/{self._total} ({rate:.1f}/s, ETA {eta:.0f}s)")

    def client_event(self, event: ClientEvent) -> None:
        """Say what the client is waiting for (rate limit, penalty, retry) and until when."""
        if event.kind not in ("rate_limit_wait", "penalty_wait", "retry"):
            return
        until = ""
        # A retry says "retrying in 1.0 s" itself; a wait's message leaves the time to us.
        if event.until is not None and event.kind != "retry":
            until = " until " + datetime.fromtimestamp(event.until, UTC).strftime("%H:%M:%S UTC")
        echo_err(f"{event.message}{until}")


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
    help="Allow this run to cancel up to N users, whatever the policy budget says.",
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
    from reconcile.api.connect import open_client

    loaded, endpoint_label, store = open_inputs(inputs)
    manifest = loaded.manifest
    environment = manifest.environment
    saved = load_plan(planfile) if planfile is not None else None
    ledger = PasswordLedger(
        generated_passwords,
        on_new_file=lambda path: echo_err(
            f"Generated passwords go to {path} (mode 0600) as their users are created."
        ),
    )
    with contextlib.ExitStack() as stack:
        # Whatever ends the run, the files that received generated passwords are named.
        stack.callback(_name_password_files, ledger)
        stack.enter_context(store.lock(timeout=lock_timeout, purpose="apply", on_wait=echo_err))
        journal, audit = store.journal(environment), store.audit_log(environment)
        stack.callback(audit.close)
        progress = StderrProgress()
        client = open_client(
            environment, endpoint=inputs.endpoint, state_dir=store.local_dir(), on_event=progress.client_event
        )
        stack.enter_context(client)
        companion_label = companion_of(inputs, endpoint_label)
        companion = None
        if companion_label is not None:
            # Same credentials; its own cached token (the cache is keyed by endpoint).
            companion = open_client(
                environment,
                endpoint=companion_label,
                state_dir=store.local_dir(),
                on_event=progress.client_event,
            )
            stack.enter_context(companion)
        settled = settle(
            store=store,
            environment=environment,
            client=client,
            journal=journal,
            audit=audit,
            companion=companion,
            ledger=ledger,
        )
        if settled.settled_intents:
            users = counted(len(set(settled.settled_users)), "user")
            echo_err(f"settled what an interrupted apply left open for {users}")
        if saved is None:
            # Planned only now, under the lock and after settling, so it sees what is really there.
            prepared = prepare_plan(inputs)
            plan, state, whole = prepared.plan, prepared.state, prepared.whole
            # With --format json, stdout is kept for the result document.
            print_plan(plan, "text", show_pii=False, err=fmt == "json")
        else:
            plan, state = saved, store.load(environment)
            whole = whole_cancellations(plan, manifest, state)
        refuse_errors(plan)
        check = check_cancellations(plan, state, manifest.policy, allow_cancellations, whole=whole)
        if allow_cancellations is not None:
            audit.record(
                "policy",
                outcome=f"--allow-cancellations {allow_cancellations}",
                users=[a.user for a in check.cancellations],
                detail={"cancellations": len(check.cancellations), "budget": check.budget},
            )
            audit.sync()
        if saved is None and plan.has_changes and not auto_approve:
            if not sys.stdin.isatty():
                raise ReconcileError(
                    "refusing to apply without confirmation: stdin is not a terminal. Review the plan "
                    "and pass --auto-approve, or save it with `reconcile plan --out FILE` and apply the file"
                )
            if not click.confirm(style("Apply these changes?", bold=True, stream=sys.stderr), err=True):
                raise ReconcileError("apply cancelled; nothing was changed")
        if plan.empty:
            if saved is not None:
                check_plan_current(
                    plan,
                    manifest_digest=loaded.digest,
                    state=state,
                    environment=environment,
                    endpoint=endpoint_label,
                    companion=companion_label,
                )
            result = settled
            result.state_serial = state.serial
        else:
            result = apply_plan(
                plan,
                loaded=loaded,
                store=store,
                client=client,
                journal=journal,
                audit=audit,
                endpoint=endpoint_label,
                companion=companion,
                batch_size=batch_size,
                generated_passwords=generated_passwords,
                progress=progress,
                settled=settled,
                ledger=ledger,
            )
    _report(result, fmt, plan)
    if not result.ok:
        sys.exit(1)


def _name_password_files(ledger: PasswordLedger) -> None:
    """Say which file holds the generated passwords this run made sure of (an earlier run's too)."""
    for path, names in sorted(ledger.written.items()):
        echo_err(
            f"Generated passwords of {counted(len(set(names)), 'user')} are in {path} (mode 0600), and "
            "nowhere else: hand them to the traders securely, then delete the file."
        )


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
