"""Apply a plan: the library behind ``reconcile apply``.

:func:`apply_plan` is the one entry point: it settles what an interrupted run left open, refuses a
stale plan, resolves passwords (before any create call), then executes the plan's actions with
:mod:`reconcile.apply.executor`. The caller holds the state lock (:meth:`StateStore.lock`) and
passes the journal and audit log kept with the state (:meth:`StateStore.journal`,
:meth:`StateStore.audit_log`): files next to a state file, or tables in PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol

from reconcile.apply.binding import check_plan_current
from reconcile.apply.executor import (
    CHECKPOINTS,
    CRASH_ENV,
    ApplyResult,
    Failure,
    Progress,
    Run,
    execute,
    settle_journal,
)
from reconcile.apply.generated import PasswordLedger
from reconcile.apply.ports import ApplyClient, CancelClient
from reconcile.apply.stop import RunStopped
from reconcile.manifest.models import Manifest
from reconcile.manifest.passwords import declaring_folder, resolve_passwords
from reconcile.planning.plan import CreateUser, Plan
from reconcile.state.audit import AuditLog
from reconcile.state.journal import Journal
from reconcile.state.model import FileStateStore, StateStore


class LoadedLike(Protocol):
    """What apply needs of a loaded manifest (:class:`reconcile.manifest.loader.LoadedManifest`)."""

    @property
    def manifest(self) -> Manifest: ...
    @property
    def digest(self) -> str: ...


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
) -> ApplyResult:
    """Execute exactly ``plan``'s actions and return what happened.

    Unsettled journal intents are settled first (unless ``settled`` says the caller did it
    already); then a plan whose manifest, state, environment, endpoint or tool version changed is
    refused with :class:`~reconcile.errors.PlanError`; then passwords are resolved, so a missing
    variable or file stops the run before any change is sent. Cancellations go to ``client`` and
    then to ``companion`` (the other host of the pair); the plan must have been bound to that host.
    Generated passwords reach ``generated_passwords`` only once their create is known to have
    set them (see :mod:`reconcile.apply.generated`); ``ledger.written`` says which file got which.
    """
    manifest = loaded.manifest
    if password_base_dir is None:
        password_base_dir = _declaring_folder(loaded)
    state = store.load(manifest.environment)
    if state.serial == 0 and plan.binding.state_serial == 0:
        # Nothing was ever saved: the plan was made from an empty state whose lineage was never
        # written, so this run's first save takes the plan's lineage.
        state = state.model_copy(update={"lineage": plan.binding.state_lineage})
    if ledger is None:
        ledger = PasswordLedger(generated_passwords)
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
        ledger=ledger,
    )
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
        companion=getattr(companion, "endpoint_label", None),
    )
    # After the staleness check: a stale plan is refused for that, not for a password it lacks.
    creates = [a.user for a in plan.actions if isinstance(a, CreateUser)]
    passwords = resolve_passwords(
        creates,
        manifest,
        base_dir=password_base_dir,
        generated_file=generated_passwords,
        environ=environ,
        locate=getattr(loaded, "locations", {}).get,
    )
    return execute(
        run,
        plan,
        passwords=passwords.values,
        generated=passwords.generated,
        batch_size=batch_size,
        agreement_alert_id=manifest.agreement_alert_id,
    )


def _declaring_folder(loaded: LoadedLike) -> Callable[[str], Path | None] | None:
    """User name → folder of the manifest file that declares it, when the loader knows."""
    if not hasattr(loaded, "locations"):
        return None
    return declaring_folder(loaded.locations)


def settle(
    *,
    store: StateStore,
    environment: str,
    client: ApplyClient,
    journal: Journal,
    audit: AuditLog,
    companion: CancelClient | None = None,
    ledger: PasswordLedger | None = None,
) -> ApplyResult:
    """Settle unsettled journal intents and save the state (run before planning).

    Raises :class:`RunStopped` when an intent's outcome still cannot be learned: the intent stays
    in the journal and nothing may be planned until it is settled.
    """
    run = Run(
        store=store,
        state=store.load(environment),
        client=client,
        journal=journal,
        audit=audit,
        companion=companion,
        ledger=ledger,
    )
    return settle_journal(run)


__all__ = [
    "CHECKPOINTS",
    "CRASH_ENV",
    "ApplyClient",
    "ApplyResult",
    "CancelClient",
    "Failure",
    "LoadedLike",
    "PasswordLedger",
    "Progress",
    "RunStopped",
    "apply_plan",
    "check_plan_current",
    "settle",
    "side_files",
]
