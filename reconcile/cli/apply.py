"""``reconcile apply``: make the partner API match the manifest (or a saved plan)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from reconcile.api.events import ClientEvent
from reconcile.apply import ApplyResult, apply_plan, check_plan_current, settle
from reconcile.cli.options import PlanInputs, format_option, lock_timeout_option, plan_inputs
from reconcile.cli.output import echo, echo_err, style
from reconcile.cli.plan import companion_of, open_inputs, prepare_plan, print_plan, refuse_errors
from reconcile.errors import ReconcileError
from reconcile.passwords import refuse_unreadable_password_files
from reconcile.plan import Plan, load_plan
from reconcile.policy import check_cancellations


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
        if event.until is not None:
            until = " until " + datetime.fromtimestamp(event.until, UTC).strftime("%H:%M:%S UTC")
        echo_err(f"{event.message}{until}")


# The counts whose words change with the number ("1 email changed", "2 emails changed").
_SINGULAR = {"emails_changed": "email changed", "contacts_updated": "contact updated"}


def _summary_text(result: ApplyResult) -> str:
    counts = result.counts()
    parts = [
        f"{v} {_SINGULAR[k] if v == 1 and k in _SINGULAR else k.replace('_', ' ')}"
        for k, v in counts.items()
        if v
    ]
    head = "Apply complete" if result.ok else "Apply finished with failures"
    return (
        f"{head}: "
        + (", ".join(parts) if parts else "nothing to do")
        + f" (state serial {result.state_serial})."
    )


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
    help="New file (mode 0600) that receives the passwords of users with {generate: true}.",
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
    # Before the lock: a password file that cannot be read whole and at once (a FIFO, a device,
    # a huge file) is refused here, not while the state is held.
    refuse_unreadable_password_files(loaded.manifest, loaded.locations)
    with contextlib.ExitStack() as stack:
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
        )
        if settled.settled_intents:
            echo_err(f"settled {settled.settled_intents} action(s) an interrupted apply left open")
        if saved is None:
            # Planned only now, under the lock and after settling, so it sees what is really there.
            prepared = prepare_plan(inputs)
            plan, state = prepared.plan, prepared.state
            # With --format json, stdout is kept for the result document.
            print_plan(plan, "text", show_pii=False, err=fmt == "json")
        else:
            plan, state = saved, store.load(environment)
        refuse_errors(plan)
        check = check_cancellations(plan, state, manifest.policy, allow_cancellations)
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
            )
    _report(result, fmt, plan)
    if generated_passwords is not None and generated_passwords.exists():
        echo_err(
            f"Generated passwords of the new users are in {generated_passwords} (mode 0600), and "
            "nowhere else: hand them to the traders securely, then delete the file."
        )
    if not result.ok:
        sys.exit(1)


def _report(result: ApplyResult, fmt: str, plan: Plan) -> None:
    if fmt == "json":
        data: dict[str, Any] = result.to_json_dict()
        data["planned"] = plan.summary
        echo(json.dumps(data, indent=2, sort_keys=True))
        return
    for failure in sorted(result.failures, key=lambda f: (f.user, f.action)):
        echo_err(style("failed: ", fg="red", bold=True, stream=sys.stderr) + str(failure))
    if result.awaiting_agreement:
        names = sorted(set(result.awaiting_agreement))
        echo(
            f"{len(names)} user(s) await the Market Data Agreement; Sim+ is granted by a later apply "
            f"once they sign: {', '.join(names[:10])}{' …' if len(names) > 10 else ''}"
        )
    echo(_summary_text(result))
