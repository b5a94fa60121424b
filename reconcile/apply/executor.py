"""Execute a plan through the partner API: batches, journal, state saves after every group, audit.

Order (DESIGN §5): creates in batches, then email and contact updates (a few at a time), then
grants (Sim+ after one read of the agreement signals), then cancellations in batches. Every group
ends with ``store.save``, so a run that dies keeps all it did; every non-idempotent call is
announced in the journal first, so the next run can settle what the dead one left open.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from reconcile.apply import wire
from reconcile.apply.ports import ApplyClient, CancelClient
from reconcile.audit import AuditLog
from reconcile.errors import ApiError, AuthError, CaptchaRequired, OutcomeUnknown, ReconcileError
from reconcile.journal import Intent, Journal
from reconcile.plan import (
    Action,
    CancelEverything,
    CreateUser,
    GrantEntitlement,
    Plan,
    UpdateContact,
    UpdateEmail,
)
from reconcile.state import ContactRecord, GrantRecord, State, StateStore, UserRecord

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
    ) -> None:
        self.store = store
        self.state = state
        self.client = client
        self.companion = companion
        """The other host of the pair (DESIGN §7): it only ever receives cancel-everything."""
        self.journal = journal
        self.audit = audit
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

    def record_created(self, action: CreateUser, user_id: int, origin: str = "created") -> None:
        now = self.clock()
        self.state.users[action.user] = UserRecord(
            userId=user_id,
            origin="created",
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

    def adopt_or_report(self, action: CreateUser, why: str) -> bool:
        """Look ``action.user`` up by name; adopt it when it is the same person. True if adopted."""
        try:
            found = self.client.find_user(action.user)
        except ApiError as exc:
            self._fail(action.user, "create", f"{why}; looking the user up failed: {exc}")
            return False
        if found is None:
            return False
        if found.email.lower() != action.email.lower():
            self._fail(
                action.user,
                "create",
                f"{why}: a user named {action.user} already exists (id {found.id}) with another email "
                f"({found.email}, manifest says {action.email}); not adopted. Rename the user in the "
                "manifest, or fix the email if it is the same person",
            )
            return False
        self.record_created(action, found.id, origin="adopted")
        return True

    # -- creates ----------------------------------------------------------------------------------

    def creates(self, actions: Sequence[CreateUser], passwords: dict[str, str], batch_size: int) -> None:
        if not actions:
            return
        self.progress.phase("create", len(actions))
        done = 0
        for batch in _chunks(actions, batch_size):
            intent = self.journal.begin("create", batch)
            checkpoint("before_create_call")
            names = [a.user for a in batch]
            try:
                results = list(
                    self.client.create_evaluation_users(
                        [wire.evaluation_user(a, passwords[a.user]) for a in batch]
                    )
                )
            except (AuthError, CaptchaRequired):
                # Nothing was applied (the call was refused before it ran) or we cannot look it
                # up now; the intent stays open and the next run settles it.
                self.audit.record("create", users=names, outcome="refused", request_id=self._request_id())
                raise
            except OutcomeUnknown as exc:
                # Sent, but no usable answer: the users may exist now. Look them up, adopt.
                self.audit.record(
                    "create",
                    users=names,
                    outcome="unknown",
                    request_id=self._request_id(),
                    detail={"error": str(exc)},
                )
                self._settle_creates(batch, _lost("createevaluationusers", exc))
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
                done += len(batch)
                self._end_create_batch(intent, names, done)
                continue
            checkpoint("after_create_call")
            created = failed = 0
            if len(results) != len(batch):
                self._settle_creates(batch, f"the API answered {len(results)} results for {len(batch)} users")
            else:
                for action, res in zip(batch, results, strict=True):
                    if res.userId is not None and not res.errorText:
                        self.record_created(action, res.userId)
                        created += 1
                    elif res.errorText and _already_exists(res.errorText):
                        if not self.adopt_or_report(action, f"the API said: {res.errorText}"):
                            if not any(f.user == action.user for f in self.result.failures):
                                self._fail(action.user, "create", res.errorText)
                            failed += 1
                    else:
                        self._fail(action.user, "create", res.errorText or "the API gave no user id")
                        failed += 1
            self.audit.record(
                "create",
                users=names,
                outcome=f"created {created}, failed {failed}",
                request_id=self._request_id(),
            )
            done += len(batch)
            self._end_create_batch(intent, names, done)

    def _end_create_batch(self, intent: Intent, names: list[str], done: int) -> None:
        self.save(names)
        checkpoint("after_create_save")
        self.journal.settle(intent)
        self.progress.advance(done)

    def _settle_creates(self, batch: Sequence[CreateUser], why: str) -> None:
        for action in batch:
            if action.user in self.state.users:
                continue
            if not self.adopt_or_report(action, why) and not any(
                f.user == action.user for f in self.result.failures
            ):
                self._fail(
                    action.user, "create", f"{why}; the user does not exist, the next apply creates it"
                )

    # -- email and contact updates (idempotent: no journal) ---------------------------------------

    def updates(self, actions: Sequence[UpdateEmail | UpdateContact]) -> None:
        if not actions:
            return
        self.progress.phase("update", len(actions))
        done = 0
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="apply") as pool:
            for group in _chunks(actions, GROUP):
                # Ids are looked up here, on the one thread that changes state.
                futures = [pool.submit(self._update_one, a, self.user_id(a.user, a.userId)) for a in group]
                changed: list[str] = []
                for action, future in zip(group, futures, strict=True):
                    outcome = future.result()
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
                names = [a.user for a in batch]
                # One intent covers every host: a dead run's cancel is finished on all of them.
                intent = self.journal.begin("cancel", batch)
                checkpoint("before_cancel_call")
                self._cancel_on_hosts(batch)
                self.save(names)
                self.journal.settle(intent)
                done += len(batch)
                self.progress.advance(done)

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
        except (AuthError, CaptchaRequired):
            self.audit.record("cancel_everything", users=names, outcome="refused", detail=where)
            raise
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
            users = {}
            why = f"{why or 'settling an interrupted cancel'}; looking the users up failed: {exc}"
        for action in batch:
            found = users.get(action.userId)
            if found is not None and (found.status or "").lower() == "closed":
                self._record_cancelled_on(action.user, host)
            elif why:
                self._fail(
                    action.user, "cancel_everything", f"{self._on(host)}{why}; the next apply cancels it"
                )

    # -- settling what a dead run left open -------------------------------------------------------

    def settle(self, intents: Sequence[Intent]) -> None:
        """Settle unsettled intents by looking their users up; adopt what exists."""
        for intent in intents:
            changed = [a.user for a in intent.actions]
            if intent.call == "create":
                for action in intent.actions:
                    if isinstance(action, CreateUser) and action.user not in self.state.users:
                        self.adopt_or_report(action, "an interrupted apply may have created it")
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
) -> ApplyResult:
    """Run every action of ``plan`` in the documented order; return what happened."""
    batch_size = max(1, min(batch_size, MAX_BATCH))
    started = time.monotonic()
    by_kind: dict[type[Any], list[Action]] = {}
    for action in plan.actions:
        by_kind.setdefault(type(action), []).append(action)
    run.creates(by_kind.get(CreateUser, []), passwords, batch_size)  # type: ignore[arg-type]
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
        run.settle(intents)
    return run.result


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
