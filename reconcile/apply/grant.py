"""Grant entitlements, a few users at a time; a grant gated by the agreement waits for its signal.

The agreement signals are read once per apply, and again after a create that waited for its
hourly slot (a long onboarding grants its early traders as they sign); a user who has not signed
is recorded as awaiting the agreement, not granted. Each group of grants is announced in the
journal: a dead run's grants are settled by reading which plugins the users have.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Literal

from reconcile.apply.crashpoints import checkpoint
from reconcile.apply.intents import Intent
from reconcile.apply.ports import SignalLike
from reconcile.apply.run import GROUP, NOT_SENT, ExecuteOptions, Run, chunks, overlapped
from reconcile.apply.stop import RunStopped
from reconcile.errors import ApiError, ReconcileError
from reconcile.planning.plan import GrantEntitlement
from reconcile.state.model import GrantRecord

Ready = tuple[GrantEntitlement, int]
"""A grant to send, with its user's id."""

Outcome = tuple[str, str | None]
"""A grant's outcome for the audit log, and its error (None when granted)."""


def run_grants(run: Run, actions: Sequence[GrantEntitlement], options: ExecuteOptions) -> None:
    """Record the grants that wait for the agreement; send the others; save after each group."""
    if not actions:
        return
    alert_id = options.agreement_alert_id
    pending = _read_signals(run, alert_id) if any(a.agreement_gated for a in actions) else {}
    ready = _ready(run, actions, pending)
    # Progress counts the grants sent: one that waits for the agreement is recorded, not granted.
    if ready:
        run.progress.phase("grant", len(ready))
    done = 0

    def send(group: Sequence[Ready]) -> tuple[Intent, list[Future[Outcome]]]:
        intent = run.journal.begin("grant", [a for a, _ in group], agreement_alert_id=alert_id)
        checkpoint("before_grant_call")
        futures = send_calls(
            _grant_one, [(run, a, uid, pending.get(uid, []) if a.agreement_gated else []) for a, uid in group]
        )
        return intent, futures

    def record(group: Sequence[Ready], sent: tuple[Intent, list[Future[Outcome]]]) -> None:
        nonlocal done
        intent, futures = sent
        _record_group(run, intent, [(action, f) for (action, _), f in zip(group, futures, strict=True)])
        done += len(group)
        run.progress.advance(done)

    with run.workers() as send_calls:
        overlapped(run, list(chunks(ready, GROUP)), send, record)


def recheck_signatures(run: Run, actions: Sequence[GrantEntitlement], options: ExecuteOptions) -> None:
    """Grant what this run recorded as awaiting the agreement to the traders who signed since.

    Called after a create that waited for its hourly slot: an onboarding at the published limit
    spends hours waiting, and a trader created in its first hour who signs should have Sim+ at
    the next slot, not after the last batch. One signals read per waited slot at most, none on an
    unpaced run (its request count stays the lower bound).
    """
    run.waited_for_slot = False
    waiting = [a for a in actions if a.agreement_gated and _awaits(run, a)]
    if not waiting:
        return
    run.pending_signals.pop(options.agreement_alert_id, None)
    pending = _read_signals(run, options.agreement_alert_id)
    signed = [a for a in waiting if run.user_id(a.user, a.userId) in pending]
    if signed:
        run_grants(run, signed, options)
        granted = set(run.result.granted)
        run.result.awaiting_agreement = [u for u in run.result.awaiting_agreement if u not in granted]


def _awaits(run: Run, action: GrantEntitlement) -> bool:
    record = run.state.users.get(action.user)
    grant = record.entitlements.get(action.entitlement) if record is not None else None
    return grant is not None and grant.status == "awaiting_agreement"


def _read_signals(run: Run, alert_id: int) -> dict[int, list[int]]:
    """One read for the whole apply, not one per user: user id → its pending signal ids."""
    if alert_id in run.pending_signals:
        return run.pending_signals[alert_id]
    signals = run.client.agreement_signals(alert_id)
    pending = pending_signals(signals)
    run.audit.record(
        "read_agreement_signals",
        outcome=f"{len(signals)} signals, {len(pending)} users pending",
        detail={"alert_id": alert_id},
    )
    run.pending_signals[alert_id] = pending
    return pending


def pending_signals(signals: Sequence[SignalLike]) -> dict[int, list[int]]:
    """User id → ids of the agreement signals still to complete for that user."""
    pending: dict[int, list[int]] = {}
    for sig in signals:
        if sig.completed is None and sig.relatedToUserId is not None:
            pending.setdefault(sig.relatedToUserId, []).append(sig.id)
    return pending


def _ready(run: Run, actions: Sequence[GrantEntitlement], pending: dict[int, list[int]]) -> list[Ready]:
    """The grants to send; record (and save) those that wait for the agreement, report the rest."""
    ready: list[Ready] = []
    waiting: list[str] = []
    for action in actions:
        user_id = run.user_id(action.user, action.userId)
        if user_id is None:
            run.result.fail(action.user, "grant_entitlement", "skipped: the user was not created")
        elif action.agreement_gated and user_id not in pending:
            record_grant(run, action, "awaiting_agreement")
            waiting.append(action.user)
        else:
            ready.append((action, user_id))
    run.save_later(waiting)
    return ready


def _record_group(run: Run, intent: Intent, sent: Sequence[tuple[GrantEntitlement, Future[Outcome]]]) -> None:
    """Audit and record each grant's outcome as it comes, save, and settle the group's intent."""
    changed: list[str] = []
    for action, future in sent:
        outcome, error = future.result()
        if outcome == NOT_SENT:
            continue
        run.audit.record(
            "grant_entitlement",
            users=[action.user],
            outcome=outcome,
            detail={"entitlement": action.entitlement, **({"error": error} if error else {})},
        )
        if error is None:
            record_grant(run, action, "granted")
            changed.append(action.user)
        else:
            run.result.fail(action.user, "grant_entitlement", error)
    checkpoint("after_grant_call")
    run.save(changed)
    # A stopped group keeps its intent: the next run checks which grants exist.
    run.stop.check()
    run.journal.settle(intent)


def _grant_one(run: Run, action: GrantEntitlement, user_id: int, signals: list[int]) -> Outcome:
    """Grant, then complete this user's own pending signals; return (outcome, error or None)."""
    try:
        res = run.client.add_entitlement_subscription(
            action.entitlementId, user_id, action.accountId, user=action.user
        )
        if res.errorCode not in ("Success", "ConflictWithExisting"):
            reason = res.errorText or "no reason given"
            return "failed", f"addentitlementsubscription: {reason} (errorCode {res.errorCode})"
        for signal_id in signals:
            run.client.complete_alert_signal(signal_id, user=action.user)
    except RunStopped:
        return NOT_SENT, None
    except ReconcileError as exc:
        return "failed", str(exc)
    return ("already_granted" if res.errorCode == "ConflictWithExisting" else "granted"), None


def record_grant(
    run: Run, action: GrantEntitlement, status: Literal["granted", "awaiting_agreement"]
) -> None:
    """Record ``action``'s entitlement as ``status`` (reported once per run even when unchanged)."""
    record = run.state.users[action.user]
    current = record.entitlements.get(action.entitlement)
    if current is not None and current.status == status and current.entitlementId == action.entitlementId:
        if status == "awaiting_agreement":
            run.result.awaiting_agreement.append(action.user)
        return
    now = run.clock()
    grants = dict(record.entitlements)
    grants[action.entitlement] = GrantRecord(entitlementId=action.entitlementId, status=status, updatedAt=now)
    run.state.users[action.user] = record.model_copy(update={"entitlements": grants, "updatedAt": now})
    (run.result.granted if status == "granted" else run.result.awaiting_agreement).append(action.user)


def settle_grant_intent(run: Run, intent: Intent) -> None:
    """Record a dead run's grants whose plugin exists; complete the signals it left open for them."""
    grants = [
        (action, record.userId)
        for action in intent.actions
        if isinstance(action, GrantEntitlement) and (record := run.state.users.get(action.user)) is not None
    ]
    try:
        plugins = run.client.user_plugins_of([user_id for _, user_id in grants]) if grants else []
    except ApiError:
        plugins = []  # left to the next grant: ConflictWithExisting then settles it
    held = {(p.userId, p.entitlementId) for p in plugins}
    present: list[Ready] = [(a, user_id) for a, user_id in grants if (user_id, a.entitlementId) in held]
    pending: dict[int, list[int]] = {}
    alert_id = intent.agreement_alert_id
    if alert_id is not None and any(a.agreement_gated for a, _ in present):
        pending = pending_signals(run.client.agreement_signals(alert_id))
    for action, user_id in present:
        try:
            for signal_id in pending.get(user_id, []) if action.agreement_gated else []:
                run.client.complete_alert_signal(signal_id, user=action.user)
        except ApiError:
            continue
        record_grant(run, action, "granted")
