"""Execute a plan through the partner API: batches, journal, state saves after every group, audit.

Order (DESIGN §5): creates in batches, then email and contact updates (a few at a time), then
grants (Sim+ after one read of the agreement signals), then cancellations in batches. Every group
ends with ``store.save``, so a run that dies keeps all it did; every non-idempotent call is
announced in the journal first, so the next run can settle what the dead one left open.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from reconcile.apply import wire
from reconcile.apply.generated import PasswordLedger
from reconcile.apply.ports import ApplyClient, CancelClient, UserLike
from reconcile.apply.stop import NEEDS_A_PERSON, GuardedClient, RunStopped, Stop
from reconcile.errors import ApiError, OutcomeUnknown, ReconcileError
from reconcile.planning.plan import (
    Action,
    CancelEverything,
    CreateUser,
    GrantEntitlement,
    Plan,
    UpdateContact,
    UpdateEmail,
)
from reconcile.state.audit import AuditLog
from reconcile.state.journal import Intent, Journal
from reconcile.state.model import ContactRecord, GrantRecord, State, UserRecord
from reconcile.state.store import StateStore

Adoption = Literal["adopted", "absent", "refused", "unknown"]
"""What looking a user up by name found: adopted it, no such user, another person, or no answer."""

MAX_BATCH = 100
GROUP = 100
"""Updates and grants are saved to state every this many users."""

T = TypeVar("T")

# --- the crash hook (tests only) -------------------------------------------------------------------

CRASH_ENV = "RECONCILE_TEST_CRASH_AT"
"""``POINT`` or ``POINT:N``: SIGKILL this process the Nth time (default 1st) it reaches POINT.

Crash tests set it on a subprocess; when unset (always, in production) :func:`checkpoint` only
reads the environment.
"""

CHECKPOINTS = (
    "before_create_call",
    "after_create_call",
    "after_create_save",
    "after_updates_call",
    "before_grant_call",
    "after_grant_call",
    "before_cancel_call",
    "after_cancel_call",
)

_reached: Counter[str] = Counter()


PAUSE_ENV = "RECONCILE_TEST_PAUSE_AT"
"""``POINT:PATH``: on reaching POINT, create ``PATH.reached`` and wait until PATH exists.

Lets a test hold a run at a known place (inside its lock, say) without guessing at timing.
"""


def _pause(point: str) -> None:
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    name, _, path = spec.partition(":")
    if name != point or not path:
        return
    Path(path + ".reached").touch()
    deadline = time.monotonic() + 300  # never hang a forgotten test forever
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def checkpoint(point: str) -> None:
    """Pause or die here with SIGKILL when a test hook names this point (inert otherwise)."""
    _pause(point)
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _reached[point] += 1
    if _reached[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


# --- progress and results ------------------------------------------------------------------------


class Progress(Protocol):
    """Where the applier reports progress (the CLI prints it on stderr)."""

    def phase(self, name: str, total: int) -> None: ...
    def advance(self, done: int) -> None: ...


class _NoProgress:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, done: int) -> None:
        pass


@dataclass(frozen=True)
class Failure:
    """One user's action that did not happen, and why (the API's own words where it gave some)."""

    user: str
    action: str
    message: str

    def __str__(self) -> str:
        return f"{self.user}: {self.action}: {self.message}"


@dataclass
class ApplyResult:
    """What an apply (or a settle) did, per user."""

    created: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    emails_changed: list[str] = field(default_factory=list)
    contacts_updated: list[str] = field(default_factory=list)
    granted: list[str] = field(default_factory=list)
    awaiting_agreement: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    settled_intents: int = 0
    settled_users: list[str] = field(default_factory=list)
    """The users of the settled intents (a user may appear in several)."""
    state_serial: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing failed (users awaiting the agreement are not failures)."""
        return not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def merge(self, other: ApplyResult) -> None:
        for name in (
            "created",
            "adopted",
            "emails_changed",
            "contacts_updated",
            "granted",
            "awaiting_agreement",
            "cancelled",
            "failures",
        ):
            getattr(self, name).extend(getattr(other, name))
        self.settled_intents += other.settled_intents
        self.settled_users.extend(other.settled_users)

    def counts(self) -> dict[str, int]:
        return {
            "created": len(self.created),
            "adopted": len(self.adopted),
            "emails_changed": len(self.emails_changed),
            "contacts_updated": len(self.contacts_updated),
            "granted": len(self.granted),
            "awaiting_agreement": len(self.awaiting_agreement),
            "cancelled": len(self.cancelled),
            "failed": len(self.failures),
        }

    def to_json_dict(self) -> dict[str, Any]:
        """The ``--format json`` result: counts, users per outcome (sorted), failures."""
        return {
            "ok": self.ok,
            "summary": self.counts(),
            "created": sorted(self.created),
            "adopted": sorted(self.adopted),
            "emails_changed": sorted(self.emails_changed),
            "contacts_updated": sorted(self.contacts_updated),
            "granted": sorted(self.granted),
            "awaiting_agreement": sorted(self.awaiting_agreement),
            "cancelled": sorted(self.cancelled),
            "failures": [
                {"user": f.user, "action": f.action, "message": f.message}
                for f in sorted(self.failures, key=lambda f: (f.user, f.action))
            ],
            "settled_intents": self.settled_intents,
            "state_serial": self.state_serial,
        }


_NOT_SENT = "not sent: the run stopped"
"""A worker's answer when the stop was tripped before its call (nothing to record)."""


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _lost(call: str, exc: OutcomeUnknown) -> str:
    """Say, for each user's report, which call lost its answer and how."""
    return f"{exc.call or call}: {exc.reason or 'no usable answer'} after the request was sent"


def _request_id(client: object) -> str | None:
    value = getattr(client, "last_request_id", None)
    return value if isinstance(value, str) else None


def _label(client: object) -> str:
    """The endpoint label a client talks to (what ``cancelledOn`` records)."""
    value = getattr(client, "endpoint_label", None)
    return value if isinstance(value, str) else "endpoint"


def _mismatch(action: CancelEverything, found: UserLike | None, closed_by_us: bool) -> str | None:
    """Why ``action`` must not be sent given what the API shows for its id (None: send it)."""
    if found is None:
        return (
            f"the API has no user with id {action.userId}, which state records for {action.user}; "
            "check the state (reconcile state list) and the organization"
        )
    if found.name.lower() != action.user.lower():
        return (
            f"id {action.userId} belongs to {found.name} at the API, not to {action.user} as state "
            "records; the state is wrong about this user: check it before cancelling anyone"
        )
    if (found.status or "").lower() != "active" and not closed_by_us:
        return (
            f"{action.user} (id {action.userId}) is {found.status or 'of unknown status'} at the API, "
            "not active; `reconcile plan --refresh` shows what changed and `reconcile refresh` records it"
        )
    return None


def _already_exists(error_text: str) -> bool:
    return "already exist" in error_text.lower()


# --- the run -------------------------------------------------------------------------------------


class Run:
    """One apply (or settle) against one state: holds the current state and saves it as it goes."""

    def __init__(
        self,
        *,
        store: StateStore,
        state: State,
        client: ApplyClient,
        journal: Journal,
        audit: AuditLog,
        progress: Progress | None = None,
        concurrency: int = 6,
        clock: Callable[[], datetime] | None = None,
        companion: CancelClient | None = None,
        stop: Stop | None = None,
        ledger: PasswordLedger | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.stop = stop or Stop()
        """Shared by every phase and worker: once tripped, no call of this run is sent."""
        self.client: ApplyClient = GuardedClient(client, self.stop)
        self.companion: CancelClient | None = (
            GuardedClient(companion, self.stop) if companion is not None else None
        )
        """The other host of the pair (DESIGN §7): it only ever receives cancel-everything."""
        self.journal = journal
        self.audit = audit
        self.ledger = ledger or PasswordLedger()
        """Where generated passwords wait for their create's outcome, and where they go then."""
        self.progress: Progress = progress or _NoProgress()
        self.concurrency = max(1, concurrency)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.result = ApplyResult(state_serial=state.serial)

    # -- state ----------------------------------------------------------------------------------

    def save(self, changed: Iterable[str]) -> None:
        names = sorted(set(changed))
        self.audit.sync()  # the log never lags the state it explains
        if not names:
            return
        self.state = self.store.save(self.state, names)
        self.result.state_serial = self.state.serial

    def user_id(self, name: str, planned: int | None) -> int | None:
        if planned is not None:
            return planned
        record = self.state.users.get(name)
        return record.userId if record is not None else None

    def _fail(self, user: str, action: str, message: str) -> None:
        self.result.failures.append(Failure(user, action, message))

    def _request_id(self) -> str | None:
        return _request_id(self.client)

    def record_created(
        self, action: CreateUser, user_id: int, origin: Literal["created", "adopted"] = "created"
    ) -> None:
        now = self.clock()
        self.state.users[action.user] = UserRecord(
            userId=user_id,
            origin=origin,
            email=action.email,
            firstName=action.firstName,
            lastName=action.lastName,
            tradovateSubscriptionPlanId=action.tradovateSubscriptionPlanId,
            entitlements={
                name: GrantRecord(entitlementId=eid, status="granted", updatedAt=now)
                for name, eid in zip(action.entitlements, action.entitlementIds, strict=False)
            },
            createdAt=now,
            updatedAt=now,
        )
        (self.result.created if origin == "created" else self.result.adopted).append(action.user)

    # -- adoption (shared by crash settling, lost answers and "already exists") ------------------

    def adopt_or_report(self, action: CreateUser, why: str) -> Adoption:
        """Look ``action.user`` up by name; adopt it when it is the same person.

        ``unknown`` means the look-up itself failed: whether the user exists is still open, so
        the caller keeps its intent in the journal and stops the run.
        """
        try:
            found = self.client.find_user(action.user)
        except ApiError as exc:
            self.stop.trip(
                f"{action.user}: {why}; looking the user up failed, so whether it exists is unknown: "
                f"{exc}. The intent stays in the journal: the next plan shows it and the next apply "
                "settles it before anything else"
            )
            return "unknown"
        if found is None:
            return "absent"
        if found.email.lower() != action.email.lower():
            self._fail(
                action.user,
                "create",
                f"{why}: a user named {action.user} already exists (id {found.id}) with another email "
                f"({found.email}, manifest says {action.email}); not adopted. Rename the user in the "
                "manifest, or fix the email if it is the same person",
            )
            return "refused"
        self.record_created(action, found.id, origin="adopted")
        return "adopted"

    # -- creates ----------------------------------------------------------------------------------

    def creates(
        self,
        actions: Sequence[CreateUser],
        passwords: dict[str, str],
        batch_size: int,
        generated: Collection[str] = (),
    ) -> None:
        """Create ``actions`` in batches; ``generated`` names the users whose password was generated."""
        if not actions:
            return
        self.progress.phase("create", len(actions))
        done = 0
        for batch in _chunks(actions, batch_size):
            self.stop.check()
            candidates = {a.user: passwords[a.user] for a in batch if a.user in generated}
            pending = self.ledger.pending if candidates else None
            intent = self.journal.begin(
                "create", batch, passwords=str(pending) if pending is not None else None
            )
            # The candidates are durable before the call, so a kill never loses a password that was set.
            self.ledger.hold(intent.id, candidates)
            checkpoint("before_create_call")
            names = [a.user for a in batch]
            try:
                results = list(
                    self.client.create_evaluation_users(
                        [wire.evaluation_user(a, passwords[a.user]) for a in batch]
                    )
                )
            except NEEDS_A_PERSON:
                # Refused before it ran; the intent stays open and the next run settles it.
                self.audit.record("create", users=names, outcome="refused", request_id=self._request_id())
                raise self.stop.error() from None
            except OutcomeUnknown as exc:
                # Sent, but no usable answer: the users may exist now. Look them up, adopt.
                self.audit.record(
                    "create",
                    users=names,
                    outcome="unknown",
                    request_id=self._request_id(),
                    detail={"error": str(exc)},
                )
                self._settle_creates(intent, batch, _lost("createevaluationusers", exc))
                done += len(batch)
                self._end_create_batch(intent, names, done)
                continue
            except ApiError as exc:
                # The API refused the whole request: nobody in it was created.
                self.audit.record(
                    "create",
                    users=names,
                    outcome="refused",
                    request_id=self._request_id(),
                    detail={"error": str(exc)},
                )
                for action in batch:
                    self._fail(action.user, "create", str(exc))
                self.ledger.resolve(pending, intent.id, not_set=names)
                done += len(batch)
                self._end_create_batch(intent, names, done)
                continue
            checkpoint("after_create_call")
            made: list[str] = []
            failed = 0
            if len(results) != len(batch):
                self._settle_creates(
                    intent, batch, f"the API answered {len(results)} results for {len(batch)} users"
                )
            else:
                for action, res in zip(batch, results, strict=True):
                    if res.userId is not None and not res.errorText:
                        self.record_created(action, res.userId)
                        made.append(action.user)
                    elif res.errorText and _already_exists(res.errorText):
                        # The API refused this create, so the candidate was never set: it is dropped.
                        if self.adopt_or_report(action, f"the API said: {res.errorText}") != "adopted":
                            if not any(f.user == action.user for f in self.result.failures):
                                self._fail(action.user, "create", res.errorText)
                            failed += 1
                    else:
                        self._fail(action.user, "create", res.errorText or "the API gave no user id")
                        failed += 1
                self.ledger.resolve(pending, intent.id, set_for=made, not_set=set(names) - set(made))
            self.audit.record(
                "create",
                users=names,
                outcome=f"created {len(made)}, failed {failed}",
                request_id=self._request_id(),
            )
            done += len(batch)
            self._end_create_batch(intent, names, done)

    def _end_create_batch(self, intent: Intent, names: list[str], done: int) -> None:
        self.save(names)
        checkpoint("after_create_save")
        if self.stop.reason is not None:
            # An outcome is still unknown: the intent stays in the journal until a run settles it.
            raise self.stop.error()
        self.journal.settle(intent)
        self.progress.advance(done)

    def _settle_creates(
        self, intent: Intent, batch: Sequence[CreateUser], why: str, *, report: bool = True
    ) -> None:
        """Look up each user of a create whose answer was lost; adopt, report, or leave it open.

        Without ``report`` a user that does not exist is no failure (the plan that follows creates it).
        """
        adopted: list[str] = []
        absent: list[str] = []
        for action in batch:
            if action.user in self.state.users:
                # Recorded before this intent was begun, or by the run that made it before it died:
                # its candidate was decided then (passwords are moved before state is saved).
                absent.append(action.user)
                continue
            outcome = self.adopt_or_report(action, why)
            if outcome == "adopted":
                adopted.append(action.user)
                continue
            if outcome == "unknown":
                continue  # left open with its candidate; the stop is tripped
            absent.append(action.user)
            reported = any(f.user == action.user for f in self.result.failures)
            if report and outcome == "absent" and not reported:
                self._fail(
                    action.user, "create", f"{why}; the user does not exist, the next apply creates it"
                )
        pending = Path(intent.passwords) if intent.passwords else None
        self.ledger.resolve(pending, intent.id, set_for=adopted, not_set=absent)

    # -- email and contact updates (idempotent: no journal) ---------------------------------------

    def updates(self, actions: Sequence[UpdateEmail | UpdateContact]) -> None:
        if not actions:
            return
        self.progress.phase("update", len(actions))
        done = 0
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="apply") as pool:
            for group in _chunks(actions, GROUP):
                self.stop.check()
                # Ids are looked up here, on the one thread that changes state.
                futures = [pool.submit(self._update_one, a, self.user_id(a.user, a.userId)) for a in group]
                changed: list[str] = []
                for action, future in zip(group, futures, strict=True):
                    outcome = future.result()
                    if outcome is _NOT_SENT:
                        continue
                    if outcome is None:
                        self._record_update(action)
                        changed.append(action.user)
                    else:
                        self._fail(action.user, action.action.value, outcome)
                    self.audit.record(
                        action.action.value,
                        users=[action.user],
                        outcome=(outcome and "failed") or "ok",
                        detail={"error": outcome} if outcome else None,
                    )
                checkpoint("after_updates_call")
                self.save(changed)
                self.stop.check()
                done += len(group)
                self.progress.advance(done)

    def _update_one(self, action: UpdateEmail | UpdateContact, user_id: int | None) -> str | None:
        """Make one update call; return None on success or the reason it failed."""
        if user_id is None:
            return "skipped: the user was not created"
        try:
            if isinstance(action, UpdateEmail):
                self.client.modify_email_address(user_id, action.email, user=action.user)
            else:
                self.client.update_contact_info(
                    wire.contact_request(user_id, action.contact), user=action.user
                )
        except RunStopped:
            return _NOT_SENT
        except ReconcileError as exc:
            return str(exc)
        return None

    def _record_update(self, action: UpdateEmail | UpdateContact) -> None:
        record = self.state.users[action.user]
        now = self.clock()
        if isinstance(action, UpdateEmail):
            self.state.users[action.user] = record.model_copy(
                update={"email": action.email, "updatedAt": now}
            )
            self.result.emails_changed.append(action.user)
        else:
            payload = action.contact.model_dump()
            first, last = payload.pop("firstName"), payload.pop("lastName")
            self.state.users[action.user] = record.model_copy(
                update={
                    "firstName": first,
                    "lastName": last,
                    "contact": ContactRecord(**payload),
                    "updatedAt": now,
                }
            )
            self.result.contacts_updated.append(action.user)

    # -- grants ---------------------------------------------------------------------------------

    def grants(self, actions: Sequence[GrantEntitlement], agreement_alert_id: int) -> None:
        if not actions:
            return
        pending: dict[int, list[int]] = {}
        if any(a.agreement_gated for a in actions):
            # One read for the whole apply, not one per user.
            signals = self.client.agreement_signals(agreement_alert_id)
            for sig in signals:
                if sig.completed is None and sig.relatedToUserId is not None:
                    pending.setdefault(sig.relatedToUserId, []).append(sig.id)
            self.audit.record(
                "read_agreement_signals",
                outcome=f"{len(signals)} signals, {len(pending)} users pending",
                detail={"alert_id": agreement_alert_id},
            )
        ready: list[tuple[GrantEntitlement, int]] = []
        waiting: list[str] = []
        for action in actions:
            user_id = self.user_id(action.user, action.userId)
            if user_id is None:
                self._fail(action.user, "grant_entitlement", "skipped: the user was not created")
            elif action.agreement_gated and user_id not in pending:
                self._record_grant(action, "awaiting_agreement")
                waiting.append(action.user)
            else:
                ready.append((action, user_id))
        self.save(waiting)
        # Progress counts the grants sent: one that waits for the agreement is recorded, not granted.
        if ready:
            self.progress.phase("grant", len(ready))
        done = 0
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="grant") as pool:
            for group in _chunks(ready, GROUP):
                self.stop.check()
                intent = self.journal.begin(
                    "grant", [a for a, _ in group], agreement_alert_id=agreement_alert_id
                )
                checkpoint("before_grant_call")
                futures = [
                    pool.submit(self._grant_one, a, uid, pending.get(uid, []) if a.agreement_gated else [])
                    for a, uid in group
                ]
                changed: list[str] = []
                for (action, _), future in zip(group, futures, strict=True):
                    outcome, error = future.result()
                    if outcome == _NOT_SENT:
                        continue
                    self.audit.record(
                        "grant_entitlement",
                        users=[action.user],
                        outcome=outcome,
                        detail={"entitlement": action.entitlement, **({"error": error} if error else {})},
                    )
                    if error is None:
                        self._record_grant(action, "granted")
                        changed.append(action.user)
                    else:
                        self._fail(action.user, "grant_entitlement", error)
                checkpoint("after_grant_call")
                self.save(changed)
                # A stopped group keeps its intent: the next run checks which grants exist.
                self.stop.check()
                self.journal.settle(intent)
                done += len(group)
                self.progress.advance(done)

    def _grant_one(
        self, action: GrantEntitlement, user_id: int, signals: list[int]
    ) -> tuple[str, str | None]:
        """Grant, then complete this user's own pending signals; return (outcome, error or None)."""
        try:
            res = self.client.add_entitlement_subscription(
                action.entitlementId, user_id, action.accountId, user=action.user
            )
            if res.errorCode not in ("Success", "ConflictWithExisting"):
                reason = res.errorText or "no reason given"
                return "failed", f"addentitlementsubscription: {reason} (errorCode {res.errorCode})"
            for signal_id in signals:
                self.client.complete_alert_signal(signal_id, user=action.user)
        except RunStopped:
            return _NOT_SENT, None
        except ReconcileError as exc:
            return "failed", str(exc)
        return ("already_granted" if res.errorCode == "ConflictWithExisting" else "granted"), None

    def _record_grant(
        self, action: GrantEntitlement, status: Literal["granted", "awaiting_agreement"]
    ) -> None:
        record = self.state.users[action.user]
        current = record.entitlements.get(action.entitlement)
        if current is not None and current.status == status and current.entitlementId == action.entitlementId:
            if status == "awaiting_agreement":
                self.result.awaiting_agreement.append(action.user)
            return
        now = self.clock()
        grants = dict(record.entitlements)
        grants[action.entitlement] = GrantRecord(
            entitlementId=action.entitlementId, status=status, updatedAt=now
        )
        self.state.users[action.user] = record.model_copy(update={"entitlements": grants, "updatedAt": now})
        (self.result.granted if status == "granted" else self.result.awaiting_agreement).append(action.user)

    # -- cancellations ----------------------------------------------------------------------------

    def cancels(self, actions: Sequence[CancelEverything], batch_size: int) -> None:
        if not actions:
            return
        self.progress.phase("cancel", len(actions))
        by_flags: dict[tuple[bool, ...], list[CancelEverything]] = {}
        for action in actions:
            by_flags.setdefault(tuple(action.flags.model_dump().values()), []).append(action)
        done = 0
        for same_flags in by_flags.values():
            for batch in _chunks(same_flags, batch_size):
                self.stop.check()
                names = [a.user for a in batch]
                confirmed = self._confirm_cancels(batch)
                if confirmed:
                    # One intent covers every host: a dead run's cancel is finished on all of them.
                    intent = self.journal.begin("cancel", confirmed)
                    checkpoint("before_cancel_call")
                    self._cancel_on_hosts(confirmed)
                    self.save(names)
                    # An outcome still unknown keeps the intent for the next run to settle.
                    self.stop.check()
                    self.journal.settle(intent)
                done += len(batch)
                self.progress.advance(done)

    def _confirm_cancels(self, batch: Sequence[CancelEverything]) -> list[CancelEverything]:
        """Keep the cancels whose id the endpoint still shows under the recorded name, active.

        One read per batch (DESIGN §8.8: nothing irreversible on a guess). A user this run or a
        dead one already closed on the endpoint passes, so the companion host still gets it.
        """
        primary = _label(self.client)
        try:
            found = {u.id: u for u in self.client.user_items([a.userId for a in batch])}
        except ApiError as exc:
            self.stop.trip(
                f"canceleverything for {', '.join(a.user for a in batch[:5])}: not sent, because "
                f"confirming the users' ids first failed: {exc}"
            )
            raise self.stop.error() from None
        confirmed: list[CancelEverything] = []
        for action in batch:
            problem = _mismatch(action, found.get(action.userId), primary in self._cancelled_on(action.user))
            if problem is None:
                confirmed.append(action)
                continue
            self.audit.record(
                "cancel_everything", users=[action.user], outcome="not_sent", detail={"error": problem}
            )
            self._fail(action.user, "cancel_everything", f"not sent: {problem}")
        return confirmed

    def cancel_hosts(self) -> list[tuple[str, CancelClient]]:
        """(label, client) of the endpoint, then of the companion host when there is one."""
        hosts: list[tuple[str, CancelClient]] = [(_label(self.client), self.client)]
        if self.companion is not None:
            hosts.append((_label(self.companion), self.companion))
        return hosts

    def _cancel_on_hosts(self, batch: Sequence[CancelEverything], *, settling: bool = False) -> None:
        """Send ``batch`` to each host that has not cancelled it yet; record users done on all.

        When ``settling``, the endpoint is asked first which users it shows closed, and only
        those are cancelled further (the operator may have changed the manifest since the dead run).
        """
        hosts = self.cancel_hosts()
        for index, (host, client) in enumerate(hosts):
            if self.stop.reason is not None:
                break  # the caller saves what was done, then stops
            todo = [a for a in batch if self._cancel_open_on(a.user, host)]
            if settling and index == 0:
                self.settle_cancels(todo, None, host)
                batch = [a for a in batch if host in self._cancelled_on(a.user)]
            elif todo:
                self._cancel_on(host, client, todo, primary=index == 0)
        labels = {host for host, _ in hosts}
        for action in batch:
            record = self.state.users.get(action.user)
            if record is not None and record.lifecycle == "active" and labels <= set(record.cancelledOn):
                self._record_cancelled(action.user)

    def _cancelled_on(self, name: str) -> list[str]:
        record = self.state.users.get(name)
        return record.cancelledOn if record is not None else []

    def _cancel_open_on(self, name: str, host: str) -> bool:
        record = self.state.users.get(name)
        return record is not None and record.lifecycle == "active" and host not in record.cancelledOn

    def _cancel_on(
        self, host: str, client: CancelClient, batch: Sequence[CancelEverything], *, primary: bool
    ) -> None:
        names = [a.user for a in batch]
        where = {"host": host}
        try:
            client.cancel_everything([a.userId for a in batch], batch[0].flags, users=names)
        except NEEDS_A_PERSON:
            # The stop is tripped: the caller saves what the other hosts did, then stops.
            self.audit.record("cancel_everything", users=names, outcome="refused", detail=where)
            return
        except OutcomeUnknown as exc:
            self.audit.record(
                "cancel_everything", users=names, outcome="unknown", detail={**where, "error": str(exc)}
            )
            if primary:
                self.settle_cancels(batch, _lost("canceleverything", exc), host)
            else:
                # Only cancel calls go to the companion: no look-up, the next apply sends it again.
                for action in batch:
                    self._fail(
                        action.user,
                        "cancel_everything",
                        f"{self._on(host)}{_lost('canceleverything', exc)}; the next apply sends it again",
                    )
        except ApiError as exc:
            self.audit.record(
                "cancel_everything", users=names, outcome="refused", detail={**where, "error": str(exc)}
            )
            for action in batch:
                self._fail(action.user, "cancel_everything", f"{self._on(host)}{exc}")
        else:
            if primary:
                checkpoint("after_cancel_call")
            self.audit.record(
                "cancel_everything",
                users=names,
                outcome="cancelled",
                request_id=_request_id(client),
                detail={**where, "flags": batch[0].flags.model_dump()},
            )
            for action in batch:
                self._record_cancelled_on(action.user, host)

    def _on(self, host: str) -> str:
        """Name the host in a cancel failure when there are two of them."""
        return f"on {host}: " if self.companion is not None else ""

    def _record_cancelled_on(self, name: str, host: str) -> None:
        record = self.state.users[name]
        if host in record.cancelledOn:
            return
        self.state.users[name] = record.model_copy(
            update={"cancelledOn": sorted({*record.cancelledOn, host}), "updatedAt": self.clock()}
        )

    def _record_cancelled(self, name: str) -> None:
        now = self.clock()
        record = self.state.users[name]
        self.state.users[name] = record.model_copy(
            update={"lifecycle": "cancelled", "cancelledAt": now, "updatedAt": now}
        )
        self.result.cancelled.append(name)

    def settle_cancels(self, batch: Sequence[CancelEverything], why: str | None, host: str) -> None:
        """Record as cancelled on ``host`` (the endpoint) the users it shows closed; report the rest.

        The rest are reported only with ``why``.
        """
        if not batch:
            return
        try:
            users = {u.id: u for u in self.client.user_items([a.userId for a in batch])}
        except ApiError as exc:
            # An irreversible call whose outcome stays unknown: a person must look (DESIGN §8.9).
            self.stop.trip(
                f"canceleverything for {', '.join(a.user for a in batch[:5])}: "
                f"{why or 'settling an interrupted cancel'}; looking the users up failed, so whether "
                f"they are cancelled is unknown: {exc}. The intent stays in the journal for the next apply"
            )
            return
        for action in batch:
            found = users.get(action.userId)
            if (
                found is not None
                and found.name.lower() == action.user.lower()
                and (found.status or "").lower() == "closed"
            ):
                self._record_cancelled_on(action.user, host)
            elif why:
                self._fail(
                    action.user, "cancel_everything", f"{self._on(host)}{why}; the next apply cancels it"
                )

    # -- settling what a dead run left open -------------------------------------------------------

    def settle(self, intents: Sequence[Intent]) -> None:
        """Settle unsettled intents by looking their users up; adopt what exists."""
        for intent in intents:
            self.stop.check()
            changed = [a.user for a in intent.actions]
            if intent.call == "create":
                creates = [a for a in intent.actions if isinstance(a, CreateUser)]
                why = "an interrupted apply may have created it"
                self._settle_creates(intent, creates, why, report=False)
            elif intent.call == "cancel":
                open_cancels = [
                    a
                    for a in intent.actions
                    if isinstance(a, CancelEverything)
                    and (r := self.state.users.get(a.user)) is not None
                    and r.lifecycle != "cancelled"
                ]
                if open_cancels:
                    self._cancel_on_hosts(open_cancels, settling=True)
            else:
                self._settle_grants(
                    [a for a in intent.actions if isinstance(a, GrantEntitlement)], intent.agreement_alert_id
                )
            self.audit.record("settle", users=changed, outcome=intent.call, detail={"intent": intent.id})
            self.save(changed)
            # Still unknown: the intent stays, and nothing is planned or sent until it is settled.
            self.stop.check()
            self.journal.settle(intent)
            self.result.settled_intents += 1
            self.result.settled_users.extend(changed)

    def _settle_grants(self, actions: Sequence[GrantEntitlement], alert_id: int | None) -> None:
        """Record grants whose plugin exists; complete the signals a dead run left open for them."""
        present: list[tuple[GrantEntitlement, int]] = []
        for action in actions:
            record = self.state.users.get(action.user)
            if record is None:
                continue
            try:
                plugins = self.client.user_plugins(record.userId)
            except ApiError:
                continue  # left to the next grant: ConflictWithExisting then settles it
            if any(p.entitlementId == action.entitlementId for p in plugins):
                present.append((action, record.userId))
        pending: dict[int, list[int]] = {}
        if alert_id is not None and any(a.agreement_gated for a, _ in present):
            for sig in self.client.agreement_signals(alert_id):
                if sig.completed is None and sig.relatedToUserId is not None:
                    pending.setdefault(sig.relatedToUserId, []).append(sig.id)
        for action, user_id in present:
            try:
                for signal_id in pending.get(user_id, []) if action.agreement_gated else []:
                    self.client.complete_alert_signal(signal_id, user=action.user)
            except ApiError:
                continue
            self._record_grant(action, "granted")


def execute(
    run: Run,
    plan: Plan,
    *,
    passwords: dict[str, str],
    batch_size: int,
    agreement_alert_id: int,
    generated: Collection[str] = (),
) -> ApplyResult:
    """Run every action of ``plan`` in the documented order; return what happened.

    Raises :class:`~reconcile.apply.stop.RunStopped` when a condition that needs a person stopped
    the run; everything done before it is saved, and nothing was sent after it.
    """
    batch_size = max(1, min(batch_size, MAX_BATCH))
    started = time.monotonic()
    by_kind: dict[type[Any], list[Action]] = {}
    for action in plan.actions:
        by_kind.setdefault(type(action), []).append(action)
    with _recording_stop(run):
        run.creates(by_kind.get(CreateUser, []), passwords, batch_size, generated)  # type: ignore[arg-type]
        updates = [*by_kind.get(UpdateEmail, []), *by_kind.get(UpdateContact, [])]
        run.updates(updates)  # type: ignore[arg-type]
        run.grants(by_kind.get(GrantEntitlement, []), agreement_alert_id)  # type: ignore[arg-type]
        run.cancels(by_kind.get(CancelEverything, []), batch_size)  # type: ignore[arg-type]
    run.audit.record(
        "apply",
        outcome="ok" if run.result.ok else "failed",
        detail={**run.result.counts(), "seconds": round(time.monotonic() - started, 3)},
    )
    run.audit.sync()
    return run.result


def settle_journal(run: Run) -> ApplyResult:
    """Settle whatever a previous run left open in the journal (no-op when it is empty)."""
    intents = run.journal.unsettled()
    if intents:
        with _recording_stop(run):
            run.settle(intents)
    return run.result


@contextlib.contextmanager
def _recording_stop(run: Run) -> Iterator[None]:
    """Write the stop to the audit log as its last line, then let it end the run."""
    try:
        yield
    except RunStopped:
        run.audit.record("stop", outcome="stopped", detail={"reason": run.stop.reason})
        run.audit.sync()
        raise


__all__ = [
    "CHECKPOINTS",
    "CRASH_ENV",
    "ApplyResult",
    "Failure",
    "Progress",
    "Run",
    "execute",
    "settle_journal",
]
