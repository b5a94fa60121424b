"""Plan: from the manifest and recorded state (and, with refresh, the live organization).

No API credentials and no network unless the live organization is read. The plan is bound to
the endpoint *label* only (and the companion host that will also receive cancellations).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from reconcile import __version__
from reconcile.api.endpoints import EMBEDDED_SIM, resolve_companion
from reconcile.errors import PlanError, counted
from reconcile.manifest.models import Manifest
from reconcile.operations.inputs import PlanInputs, Reporter
from reconcile.operations.opening import Opened, open_inputs, utc_today
from reconcile.planning.plan import CancelEverything, Diagnostic, Plan, PlanBinding
from reconcile.planning.policy import CancellationCheck, Irreversible, evaluate_cancellations, irreversible_of
from reconcile.planning.snapshot import LiveSnapshot
from reconcile.state.model import State

LiveRead = Callable[[Manifest, State], LiveSnapshot]
"""Reads the live organization for a manifest and its recorded state (``plan --refresh``)."""


@dataclass(frozen=True)
class PreparedPlan:
    """A plan with what it was made from."""

    plan: Plan
    manifest: Manifest
    state: State
    unsettled: int = 0
    """Journal intents an interrupted apply left open (their users are left out of the plan)."""
    whole: tuple[Irreversible, ...] | None = None
    """The cancellations and revocations of the whole manifest when --target/--exclude narrowed the plan."""
    live: LiveSnapshot | None = None
    """The live organization the plan was made against (``--refresh``), else None."""


@dataclass(frozen=True)
class PlanResult:
    """What :func:`plan` made: the plan, what it was made from, and the policy's verdict on it."""

    prepared: PreparedPlan
    check: CancellationCheck

    @property
    def plan(self) -> Plan:
        return self.prepared.plan

    @property
    def reviewed(self) -> Plan:
        """The plan with the policy's refusal among its diagnostics, for formats read elsewhere."""
        diagnostic = self.check.diagnostic()
        if diagnostic is None:
            return self.plan
        return self.plan.model_copy(update={"diagnostics": (diagnostic, *self.plan.diagnostics)})

    @property
    def changed(self) -> bool:
        """True when the plan has changes or drift, or an interrupted apply left intents open."""
        return self.plan.has_changes or self.plan.has_drift or bool(self.prepared.unsettled)


def plan(
    inputs: PlanInputs,
    *,
    lock_timeout: float | None = None,
    refresh: bool = False,
    allow_cancellations: int | None = None,
    reporter: Reporter | None = None,
) -> PlanResult:
    """Plan ``inputs`` and judge its cancellations by the policy (the caller decides on a refusal).

    With ``lock_timeout`` (seconds, negative = forever) the state lock is held while state is
    read and planned; with ``refresh`` the live organization is read through the API first.
    """
    reporter = reporter or Reporter()
    reader = live_reader(inputs, reporter) if refresh else None
    prepared = prepare_plan(inputs, read_live=reader, lock_timeout=lock_timeout, reporter=reporter)
    check = evaluate_cancellations(
        prepared.plan, prepared.state, prepared.manifest.policy, allow_cancellations, whole=prepared.whole
    )
    return PlanResult(prepared, check)


def prepare_plan(
    inputs: PlanInputs,
    *,
    read_live: LiveRead | None = None,
    lock_timeout: float | None = None,
    reporter: Reporter | None = None,
    opened: Opened | None = None,
    today: date | None = None,
) -> PreparedPlan:
    """Load the manifest and the recorded state, and plan; no network unless ``read_live`` is given.

    The loader's warnings reach ``reporter.warn`` once the plan is made. With ``lock_timeout``
    the read lock is held while planning; None plans without it (apply plans under the lock it
    already holds). ``opened`` is what :func:`open_inputs` returned for ``inputs`` when the
    caller has it already (apply: the same manifest and the store whose lock it holds).
    ``today`` judges ``expiresOn`` (default: today in UTC).
    """
    from reconcile.apply.intents import IntentJournal, hold_unsettled, note_unconfirmed_resets
    from reconcile.planning.planner import plan_all

    reporter = reporter or Reporter()
    today = today or utc_today()
    loaded, label, store = opened if opened is not None else open_inputs(inputs)
    manifest = loaded.manifest
    environment = manifest.environment
    locked = (
        contextlib.nullcontext()
        if lock_timeout is None
        else store.read_lock(timeout=lock_timeout, on_wait=reporter.say)
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
            companion=companion_of(inputs, label),
        )
        live = read_live(manifest, state) if read_live is not None else None
        selection = {"targets": inputs.targets, "excludes": inputs.excludes}
        planned = plan_all(manifest, state, live=live, today=today)
        made = planned.select(binding=binding, **selection)
        # The whole manifest's plan, from the same pass: the policy judges cancellations on it.
        whole_plan = planned.select(binding=binding) if made.targeted or made.excluded else None
        intents = IntentJournal(store.journal(environment)).unsettled()
        # Planned without the lock (--no-lock) while an apply holds it: that apply may be the one
        # whose call is still in flight. (A plan holding the lock itself is the holder: not asked.)
        holder = store.lock_holder() if intents and lock_timeout is None else None
        whole = irreversible_of(whole_plan) if whole_plan is not None else None
    for warning in loaded.warnings:
        reporter.warn(str(warning))
    applying = holder.describe() if holder is not None and holder.purpose == "apply" else None
    held = note_unconfirmed_resets(hold_unsettled(made, intents, lock_holder=applying), state)
    return PreparedPlan(with_companion_note(held), manifest, state, len(intents), whole, live)


def whole_cancellations(
    plan: Plan, manifest: Manifest, state: State, live: LiveSnapshot | None = None, *, today: date
) -> tuple[Irreversible, ...] | None:
    """The cancellations and revocations of ``manifest`` planned whole when ``plan`` was narrowed, else None.

    The policy judges these (reconcile/planning/policy.py): --target must not slice an empty
    manifest into budget-sized cancellations.
    """
    from reconcile.planning.planner import make_plan

    if not plan.targeted and not plan.excluded:
        return None
    return irreversible_of(make_plan(manifest, state, binding=plan.binding, live=live, today=today))


def companion_of(inputs: PlanInputs, label: str) -> str | None:
    """The host that also receives cancellations for the endpoint ``label`` (None: no companion)."""
    return resolve_companion(label, inputs.companion_endpoint or inputs.settings.companion_endpoint)


def with_companion_note(plan: Plan) -> Plan:
    """Say once, when cancellations reach one host only because --endpoint has no companion."""
    binding = plan.binding
    if binding.companion is not None or binding.endpoint == EMBEDDED_SIM:
        return plan
    if not any(isinstance(a, CancelEverything) for a in plan.actions):
        return plan
    note = Diagnostic(
        severity="info",
        message=f"cancellations go to {binding.endpoint} only: an --endpoint override has no companion "
        "host; pass --companion-endpoint URL to cancel on the other host (live/demo) too",
    )
    return plan.model_copy(update={"diagnostics": (*plan.diagnostics, note)})


def refuse_errors(plan: Plan) -> None:
    """Raise PlanError when ``plan`` has error diagnostics: apply refuses such a plan."""
    if not plan.has_errors:
        return
    count = sum(1 for d in plan.diagnostics if d.severity == "error")
    raise PlanError(
        f"the plan has {counted(count, 'error')} (listed above); fix the manifest, then plan again"
    )


def live_reader(inputs: PlanInputs, reporter: Reporter) -> LiveRead:
    """A reader of the live organization through the environment's API (says what it read)."""

    def read(manifest: Manifest, state: State) -> LiveSnapshot:
        from reconcile.operations.adopt import has_accounts
        from reconcile.operations.clients import open_client
        from reconcile.operations.read_live import read_live

        state_dir = inputs.state_path.parent if inputs.state_path is not None else Path("state")
        with open_client(
            manifest.environment, endpoint=inputs.endpoint, state_dir=state_dir, settings=inputs.settings
        ) as client:
            live = read_live(
                client,
                agreement_alert_id=manifest.agreement_alert_id,
                contacts_of=[r.userId for r in state.users.values() if r.lifecycle == "active"],
                read_at=datetime.now(UTC),
                accounts=has_accounts(manifest, state),
            )
            where = client.endpoint_label
        accounts = "" if live.accounts is None else f" and {len(live.accounts)} accounts"
        reporter.say(
            f"Read {len(live.users)} users{accounts} of the organization at {where} "
            f"({live.requests} requests)."
        )
        return live

    return read
