"""Apply: make the partner API match the manifest, or do exactly what a saved plan says.

One run: hold the state lock; open the journal, the audit log and the clients (the endpoint's
and its companion's); settle what an interrupted apply left open; plan under the lock (or take
the saved plan); judge it by the policy; ask; then :func:`reconcile.apply.apply_plan`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconcile.apply import ApplyResult, PasswordLedger, apply_plan, check_plan_current, settle
from reconcile.apply.stop import Stop
from reconcile.errors import ReconcileError, counted
from reconcile.manifest.passwords import refuse_unreadable_password_files
from reconcile.operations.clients import open_client
from reconcile.operations.inputs import PlanInputs, Reporter
from reconcile.operations.opening import Opened, open_inputs, utc_today
from reconcile.operations.pacing import PacedProgress, remember_sends
from reconcile.operations.plan import (
    companion_of,
    live_reader,
    prepare_plan,
    refuse_errors,
    whole_cancellations,
)
from reconcile.planning.plan import Plan, load_plan
from reconcile.planning.policy import Irreversible, check_cancellations
from reconcile.planning.snapshot import LiveSnapshot
from reconcile.state.audit import AuditLog
from reconcile.state.journal import Journal
from reconcile.state.model import State
from reconcile.state.store import StateStore

if TYPE_CHECKING:
    from reconcile.api.client import PartnerClient
    from reconcile.manifest.loader import LoadedManifest


@dataclass(frozen=True)
class ApplyRequest:
    """What to apply and how: the plan inputs, a saved plan (or None to plan now), the run's limits."""

    inputs: PlanInputs
    planfile: Path | None = None
    batch_size: int = 100
    generated_passwords: Path | None = None
    lock_timeout: float = 0.0
    allow_cancellations: int | None = None
    refresh: bool = False
    """Plan against the live organization (read under the lock), so drift is repaired too."""
    stop: Stop | None = None
    """The run's stop, for a caller that may end the run from outside (``watch`` on SIGTERM)."""
    opened: Opened | None = None
    """What :func:`open_inputs` returned for ``inputs``, when the caller opened them already."""


@dataclass(frozen=True)
class ApplyOutcome:
    """What the run did (``result``) to carry out ``plan``."""

    result: ApplyResult
    plan: Plan


@dataclass
class _Run:
    """What one apply holds open while it runs."""

    request: ApplyRequest
    reporter: Reporter
    loaded: LoadedManifest
    label: str
    store: StateStore
    ledger: PasswordLedger
    journal: Journal
    audit: AuditLog
    client: PartnerClient
    companion: PartnerClient | None
    companion_label: str | None
    whole: tuple[Irreversible, ...] | None = None
    """The cancellations and revocations of the whole manifest when --target/--exclude narrowed the plan."""
    live: LiveSnapshot | None = None
    """What ``--refresh`` read under this lock: its agreement signals serve the grants too."""


def apply(request: ApplyRequest, reporter: Reporter | None = None) -> ApplyOutcome:
    """Run one apply under the state lock and return what it did.

    Raises :class:`~reconcile.errors.ReconcileError` (a policy refusal, a stale saved plan, a
    plan with errors, a refused confirmation …) before anything is changed.
    """
    reporter = reporter or Reporter()
    if request.stop is None:
        # One stop for the whole run, its clients' waits included (see Stop.sleep).
        request = dataclasses.replace(request, stop=Stop())
    loaded, label, store = request.opened or open_inputs(request.inputs)
    saved = load_plan(request.planfile) if request.planfile is not None else None
    # Before the lock: a password file that cannot be read whole and at once (a FIFO, a device,
    # a huge file) is refused here, not while the state is held.
    refuse_unreadable_password_files(loaded.manifest, loaded.locations)
    ledger = PasswordLedger(
        request.generated_passwords,
        on_new_file=lambda path: reporter.say(
            f"Generated passwords go to {path} (mode 0600) as their users are created."
        ),
    )
    with contextlib.ExitStack() as stack:
        # Whatever ends the run, the files that received generated passwords are named.
        stack.callback(_name_password_files, ledger, reporter)
        run = _open(request, reporter, loaded, label, store, ledger, stack)
        settled = _settle(run)
        plan, state = _plan(run, saved)
        _judge(run, plan, state, ask=saved is None)
        if not plan.empty:
            result = _apply(run, plan, settled, state)
        else:
            if saved is not None:
                _check_current(run, plan, state)
            result = settled
            result.state_serial = state.serial
    return ApplyOutcome(result, plan)


def settle_open(request: ApplyRequest, reporter: Reporter | None = None) -> ApplyResult:
    """Settle, under the state lock, what a stopped run left in the journal (reads only, no plan)."""
    reporter = reporter or Reporter()
    loaded, label, store = request.opened or open_inputs(request.inputs)
    request = dataclasses.replace(request, stop=None)
    with contextlib.ExitStack() as stack:
        ledger = PasswordLedger(request.generated_passwords)
        run = _open(request, reporter, loaded, label, store, ledger, stack)
        return _settle(run)


def _open(
    request: ApplyRequest,
    reporter: Reporter,
    loaded: LoadedManifest,
    label: str,
    store: StateStore,
    ledger: PasswordLedger,
    stack: contextlib.ExitStack,
) -> _Run:
    """Take the lock, then open the journal, the audit log and the clients (closed by ``stack``)."""
    environment = loaded.manifest.environment
    stack.enter_context(store.lock(timeout=request.lock_timeout, purpose="apply", on_wait=reporter.say))
    journal, audit = store.journal(environment), store.audit_log(environment)
    stack.callback(audit.close)

    def client_for(endpoint: str | None) -> PartnerClient:
        client = open_client(
            environment,
            endpoint=endpoint,
            state_dir=store.local_dir(),
            settings=request.inputs.settings,
            on_event=reporter.on_event,
            sleep=request.stop.sleep if request.stop is not None else time.sleep,
        )
        return stack.enter_context(client)

    client = client_for(request.inputs.endpoint)
    # Under the lock: only this run sends for this state now, and the last one's hour counts.
    remember_sends(client, store, environment)
    companion_label = companion_of(request.inputs, label)
    # Same credentials; its own cached token (the cache is keyed by endpoint).
    companion = client_for(companion_label) if companion_label is not None else None
    return _Run(
        request, reporter, loaded, label, store, ledger, journal, audit, client, companion, companion_label
    )


def _settle(run: _Run) -> ApplyResult:
    settled = settle(
        store=run.store,
        environment=run.loaded.manifest.environment,
        client=run.client,
        journal=run.journal,
        audit=run.audit,
        companion=run.companion,
        ledger=run.ledger,
        stop=run.request.stop,
    )
    if settled.settled_intents:
        users = counted(len(set(settled.settled_users)), "user")
        run.reporter.say(f"settled what an interrupted apply left open for {users}")
    return settled


def _plan(run: _Run, saved: Plan | None) -> tuple[Plan, State]:
    """The plan to carry out and the state it starts from; judged by the policy as a whole."""
    if saved is None:
        # Planned only now, under the lock and after settling, so it sees what is really there.
        inputs = run.request.inputs
        reader = live_reader(inputs, run.reporter) if run.request.refresh else None
        prepared = prepare_plan(
            inputs, read_live=reader, reporter=run.reporter, opened=(run.loaded, run.label, run.store)
        )
        plan, state, whole = prepared.plan, prepared.state, prepared.whole
        run.live = prepared.live
        if run.reporter.show_plan is not None:
            run.reporter.show_plan(plan)
    else:
        manifest = run.loaded.manifest
        plan, state = saved, run.store.load(manifest.environment)
        whole = whole_cancellations(plan, manifest, state, today=utc_today())
    run.whole = whole
    return plan, state


def _judge(run: _Run, plan: Plan, state: State, *, ask: bool) -> None:
    """Refuse a plan with errors or over the policy budget; record an override; ask when ``ask``."""
    refuse_errors(plan)
    allowed = run.request.allow_cancellations
    check = check_cancellations(plan, state, run.loaded.manifest.policy, allowed, whole=run.whole)
    if allowed is not None:
        run.audit.record(
            "policy",
            outcome=f"--allow-cancellations {allowed}",
            users=[a.user for a in check.irreversible],
            detail={
                "cancellations": len(check.cancellations),
                "revocations": len(check.revocations),
                "whole": check.judged,
                "budget": check.budget,
            },
        )
        run.audit.sync()
    confirm = run.reporter.confirm
    if ask and plan.has_changes and confirm is not None and not confirm(plan):
        raise ReconcileError("apply cancelled; nothing was changed")


def _check_current(run: _Run, plan: Plan, state: State) -> None:
    check_plan_current(
        plan,
        manifest_digest=run.loaded.digest,
        state=state,
        environment=run.loaded.manifest.environment,
        endpoint=run.label,
        companion=run.companion_label,
    )


def _apply(run: _Run, plan: Plan, settled: ApplyResult, state: State) -> ApplyResult:
    display = run.reporter.progress
    progress = (
        PacedProgress(display, run.client, run.request.batch_size, run.reporter.schedule)
        if display is not None
        else None
    )
    return apply_plan(
        plan,
        loaded=run.loaded,
        store=run.store,
        client=run.client,
        journal=run.journal,
        audit=run.audit,
        endpoint=run.label,
        companion=run.companion,
        batch_size=run.request.batch_size,
        generated_passwords=run.request.generated_passwords,
        environ=run.request.inputs.settings.environ,
        progress=progress,
        settled=settled,
        ledger=run.ledger,
        stop=run.request.stop,
        pending_signals=run.live.pending_signals() if run.live is not None else None,
        state=state,  # read under this lock after settling: not read again
    )


def _name_password_files(ledger: PasswordLedger, reporter: Reporter) -> None:
    """Say which file holds the generated passwords this run made sure of (an earlier run's too)."""
    for path, names in sorted(ledger.written.items()):
        reporter.say(
            f"Generated passwords of {counted(len(set(names)), 'user')} are in {path} (mode 0600), and "
            "nowhere else: hand them to the traders securely, then delete the file."
        )
