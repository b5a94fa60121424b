"""Apply a plan: the library behind ``reconcile apply``.

:func:`apply_plan` is the one entry point: it settles what an interrupted run left open
(:mod:`reconcile.apply.recovery`), refuses a stale plan, resolves passwords (before any create
call), then executes the plan's actions with :mod:`reconcile.apply.executor`, one executor per
kind of action. The caller holds the state lock (:meth:`StateStore.lock`) and passes the journal
and audit log kept with the state (:meth:`StateStore.journal`, :meth:`StateStore.audit_log`):
files next to a state file, or tables in PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from reconcile.apply.binding import check_plan_current
from reconcile.apply.crashpoints import CHECKPOINTS, CRASH_ENV
from reconcile.apply.executor import execute
from reconcile.apply.generated import PasswordLedger
from reconcile.apply.intents import Intent, IntentJournal, hold_unsettled
from reconcile.apply.ports import ApplyClient, CancelClient, LoadedLike
from reconcile.apply.recovery import settle_journal
from reconcile.apply.result import ApplyResult, Failure, Progress
from reconcile.apply.run import ExecuteOptions, Run
from reconcile.apply.stop import RunStopped, Stop
from reconcile.bulk import gc_frozen
from reconcile.manifest.passwords import ResolvedPasswords, declaring_folder, resolve_passwords
from reconcile.planning.plan import CreateUser, Plan
from reconcile.state.audit import AuditLog
from reconcile.state.file import FileStateStore
from reconcile.state.journal import Journal
from reconcile.state.model import State
from reconcile.state.store import StateStore


def side_files(state_path: Path, environment: str) -> tuple[Journal, AuditLog]:
    """The journal and audit log that live next to a state file (see :meth:`StateStore.journal`)."""
    store = FileStateStore(state_path)
    return store.journal(environment), store.audit_log(environment)


def apply_plan(
    plan: Plan,
    *,
    loaded: LoadedLike,
    store: StateStore,
    client: ApplyClient,
    journal: Journal,
    audit: AuditLog,
    endpoint: str | None = None,
    companion: CancelClient | None = None,
    batch_size: int = 100,
    concurrency: int = 6,
    generated_passwords: Path | None = None,
    password_base_dir: Path | Callable[[str], Path | None] | None = None,
    environ: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    clock: Callable[[], datetime] | None = None,
    settled: ApplyResult | None = None,
    ledger: PasswordLedger | None = None,
    stop: Stop | None = None,
    pending_signals: Mapping[int, dict[int, list[int]]] | None = None,
    state: State | None = None,
) -> ApplyResult:
    """Execute exactly ``plan``'s actions and return what happened.

    Unsettled journal intents are settled first (unless ``settled`` says the caller did it
    already); then a plan whose manifest, state, environment, endpoint or tool version changed is
    refused with :class:`~reconcile.errors.PlanError`; then passwords are resolved, so a missing
    variable or file stops the run before any change is sent. Cancellations go to ``client`` and
    then to ``companion`` (the other host of the pair); the plan must have been bound to that host.
    Generated passwords reach ``generated_passwords`` only once their create is known to have
    set them (see :mod:`reconcile.apply.generated`); ``ledger.written`` says which file got which.
    ``stop`` lets the caller end the run from outside (after the calls in flight).
    ``pending_signals`` (agreement alert id → user id → signal ids) is a signals read the caller
    made under the same lock (``plan --refresh``): the grants use it instead of reading again.
    ``state`` is the state the caller read under the same lock after settling (the one it planned
    from), so it is not read again; by default it is loaded from ``store``.
    """
    manifest = loaded.manifest
    state = _state_for(plan, store.load(manifest.environment) if state is None else state)
    store.will_change(state)
    run = Run(
        store=store,
        state=state,
        client=client,
        journal=journal,
        audit=audit,
        progress=progress,
        concurrency=concurrency,
        clock=clock,
        companion=companion,
        ledger=ledger if ledger is not None else PasswordLedger(generated_passwords),
        stop=stop,
    )
    run.pending_signals.update(pending_signals or {})
    if settled is None:
        settle_journal(run)
    else:
        run.result.merge(settled)
    check_plan_current(
        plan,
        manifest_digest=loaded.digest,
        state=run.state,
        environment=manifest.environment,
        endpoint=endpoint,
        companion=companion.endpoint_label if companion is not None else None,
    )
    # After the staleness check: a stale plan is refused for that, not for a password it lacks.
    passwords = _resolve_passwords(plan, loaded, password_base_dir, generated_passwords, environ)
    options = ExecuteOptions(passwords.values, passwords.generated, batch_size, manifest.agreement_alert_id)
    with gc_frozen():
        return execute(run, plan.actions, options)


def _resolve_passwords(
    plan: Plan,
    loaded: LoadedLike,
    base_dir: Path | Callable[[str], Path | None] | None,
    generated_file: Path | None,
    environ: Mapping[str, str] | None,
) -> ResolvedPasswords:
    """The passwords of ``plan``'s creates; relative files start where the manifest declares the user."""
    return resolve_passwords(
        [a.user for a in plan.actions if isinstance(a, CreateUser)],
        loaded.manifest,
        base_dir=declaring_folder(loaded.locations) if base_dir is None else base_dir,
        generated_file=generated_file,
        environ=environ,
        locate=loaded.locations.get,
    )


def _state_for(plan: Plan, state: State) -> State:
    """The state ``plan`` is applied to, ``state`` being the one recorded."""
    if state.serial == 0 and plan.binding.state_serial == 0:
        # Nothing was ever saved: the plan was made from an empty state whose lineage was never
        # written, so this run's first save takes the plan's lineage.
        state = state.model_copy(update={"lineage": plan.binding.state_lineage})
    return state


def settle(
    *,
    store: StateStore,
    environment: str,
    client: ApplyClient,
    journal: Journal,
    audit: AuditLog,
    companion: CancelClient | None = None,
    ledger: PasswordLedger | None = None,
    stop: Stop | None = None,
) -> ApplyResult:
    """Settle unsettled journal intents and save the state (run before planning).

    Raises :class:`RunStopped` when an intent's outcome still cannot be learned: the intent stays
    in the journal and nothing may be planned until it is settled. With nothing open (the
    journal is empty between runs) the state is not read: the plan that follows reads it, and a
    second read of a large desk cost an apply 0.12 s at 10k users.
    """
    if not journal.unsettled():
        return ApplyResult()
    state = store.load(environment)
    store.will_change(state)
    run = Run(
        store=store,
        state=state,
        client=client,
        journal=journal,
        audit=audit,
        companion=companion,
        ledger=ledger,
        stop=stop,
    )
    return settle_journal(run)


__all__ = [
    "CHECKPOINTS",
    "CRASH_ENV",
    "ApplyClient",
    "ApplyResult",
    "CancelClient",
    "Failure",
    "Intent",
    "IntentJournal",
    "LoadedLike",
    "PasswordLedger",
    "Progress",
    "RunStopped",
    "apply_plan",
    "check_plan_current",
    "hold_unsettled",
    "settle",
    "side_files",
]
