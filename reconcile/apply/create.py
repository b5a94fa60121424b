"""Create users in batches, each announced in the journal; adopt a user who already exists.

A create whose answer is lost, or that the API refuses as "already exists", is settled by looking
the user up by name: the same person (same email) is adopted, anyone else is reported. Generated
passwords wait in the ledger until their create's outcome is known (:mod:`reconcile.apply.generated`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from reconcile.apply.crashpoints import checkpoint
from reconcile.apply.intents import Intent
from reconcile.apply.ports import CreateResultLike
from reconcile.apply.run import ExecuteOptions, Run, chunks, lost
from reconcile.apply.stop import NEEDS_A_PERSON
from reconcile.apply.wire import evaluation_user
from reconcile.errors import ApiError, OutcomeUnknown
from reconcile.planning.plan import CreateUser
from reconcile.state.model import GrantRecord, UserRecord

Adoption = Literal["adopted", "absent", "refused", "unknown"]
"""What looking a user up by name found: adopted it, no such user, another person, or no answer."""


def run_creates(
    run: Run,
    actions: Sequence[CreateUser],
    options: ExecuteOptions,
    *,
    started: StartedCreate | None = None,
    idempotent_next: bool = False,
) -> None:
    """Create ``actions`` in batches of ``options.batch_size``; save state after each batch.

    ``started``: ``actions`` is one batch, already announced and sent by :func:`start_create`
    (while the batch before it was followed up); only its answer is left to record, and its
    intent is settled once the workers carry its follow-ups (:meth:`Run.settle_when_busy`).
    ``idempotent_next``: those follow-ups begin with idempotent calls, so its users are saved
    then too, not before they are sent.
    """
    if not actions:
        return
    if started is not None and started.batch is not actions:
        raise ValueError("a started create is recorded only as its own batch")
    run.progress.phase("create", len(actions))
    done = 0
    ahead = started is not None
    batches = [actions] if ahead else chunks(actions, options.batch_size)
    for batch in batches:
        if started is None:
            run.stop.check()
            # The hour's wait comes before the intent: a run killed while it waits leaves none open.
            if run.client.await_create_slot() > 0:
                run.waited_for_slot = True
            started = _send(run, batch, options)
            if started is None:
                raise run.stop.error()
        finish_create(run, started, settle_when_busy=ahead, save_when_busy=ahead and idempotent_next)
        started = None
        done += len(batch)
        run.progress.advance(done)


@dataclass(frozen=True)
class StartedCreate:
    """A create batch announced in the journal and sent; its answer is still to be recorded."""

    batch: Sequence[CreateUser]
    intent: Intent
    answer: Future[_Answer]


_Answer = tuple[list[CreateResultLike] | BaseException, str | None]
"""The call's results, or what it raised; and its request id (kept by the thread that sent it)."""


def start_create(run: Run, batch: Sequence[CreateUser], options: ExecuteOptions) -> StartedCreate | None:
    """Send ``batch``'s create now if its hourly slot is free now and the run goes on; else None.

    The executor's look-ahead: a create that has to wait for its slot waits at its own step, after
    the follow-ups of the batch before it (they must not wait an hour behind it).
    """
    if run.stop.reason is not None or not run.client.create_slot_free():
        return None
    return _send(run, batch, options)


def _send(run: Run, batch: Sequence[CreateUser], options: ExecuteOptions) -> StartedCreate | None:
    """Announce ``batch``'s create in the journal, then send it on a thread of its own.

    None when the run stopped while it was announced: it is not sent, and nothing of it is left
    open (a worker beside the look-ahead meets a captcha while the intent is fsynced).
    """
    candidates = {a.user: options.passwords[a.user] for a in batch if a.user in options.generated}
    pending = run.ledger.pending if candidates else None
    intent = run.journal.begin("create", batch, passwords=str(pending) if pending is not None else None)
    # The candidates are durable before the call, so a kill never loses a password that was set.
    run.ledger.hold(intent.id, candidates)
    checkpoint("before_create_call")
    if run.stop.reason is not None:
        run.ledger.resolve(_pending(intent), intent.id, not_set=intent.users)
        run.journal.settle(intent)
        return None
    users = [evaluation_user(a, options.passwords[a.user]) for a in batch]
    return StartedCreate(batch, intent, run.submit(_call, run, users))


def _call(run: Run, users: list[Any]) -> _Answer:
    try:
        results = list(run.client.create_evaluation_users(users))
    except BaseException as exc:  # handed to finish_create, on the one thread that records
        return exc, run.client.last_request_id
    return results, run.client.last_request_id


def finish_create(
    run: Run,
    started: StartedCreate,
    *,
    stopped_before: bool = False,
    settle_when_busy: bool = False,
    save_when_busy: bool = False,
) -> None:
    """Record a started create's answer, save its users, then settle its intent.

    ``settle_when_busy``: settle it once the workers carry the next calls (its follow-ups).
    ``save_when_busy``: save its users then too, just before (the follow-ups are idempotent:
    :meth:`Run.settle_when_busy`).

    ``stopped_before``: the run was stopped by something else while this create was in flight.

    A recording that gets to the end with no look-up failed knows every outcome of the batch (a
    look-up refused by a stop raises): its intent is settled even when something else stopped the
    run meanwhile (a captcha in the follow-ups beside it), so the next plan need not hold its
    traders out until an apply settles them. A failed look-up leaves it open for the next run.
    """
    intent, batch = started.intent, started.batch
    answer, request_id = started.answer.result()
    unknown: set[str] = set()
    results = _answered(run, intent, batch, answer, request_id, unknown)
    if results is not None:
        checkpoint("after_create_call")
        made, failed = _record_results(run, intent, batch, results, unknown)
        run.audit.record(
            "create",
            users=intent.users,
            outcome=f"created {len(made)}, failed {failed}",
            request_id=request_id,
        )
    if not unknown and settle_when_busy and save_when_busy and not stopped_before:
        run.settle_when_busy(intent, unsaved=True)
        return
    checkpoint("before_create_save")
    run.save(intent.users)
    checkpoint("after_create_save")
    if unknown:
        raise run.stop.error()  # the look-up that failed tripped it
    if stopped_before:
        run.journal.settle(intent)
    elif settle_when_busy:
        run.settle_when_busy(intent)
    else:
        run.settle_unless_stopped(intent)


def _answered(
    run: Run,
    intent: Intent,
    batch: Sequence[CreateUser],
    answer: list[CreateResultLike] | BaseException,
    request_id: str | None,
    unknown: set[str],
) -> list[CreateResultLike] | None:
    """The call's results; None when it failed as a whole (reported and settled here).

    ``unknown`` receives the users whose look-up failed (whether they exist is still open).
    """
    names = intent.users
    if not isinstance(answer, BaseException):
        return answer
    if isinstance(answer, NEEDS_A_PERSON):
        # Refused before it ran; the intent stays open and the next run settles it.
        run.audit.record("create", users=names, outcome="refused", request_id=request_id)
        raise run.stop.error() from None
    if isinstance(answer, OutcomeUnknown):
        # Sent, but no usable answer: the users may exist now. Look them up, adopt.
        _audit_failed_call(run, names, "unknown", answer, request_id)
        settle_creates(run, intent, batch, lost("createevaluationusers", answer), unknown=unknown)
    elif isinstance(answer, ApiError):
        # The API refused the whole request: nobody in it was created.
        _audit_failed_call(run, names, "refused", answer, request_id)
        for action in batch:
            run.result.fail(action.user, "create", str(answer))
        run.ledger.resolve(_pending(intent), intent.id, not_set=names)
    else:
        # Not sent (the run stopped first), or no error of the API: the intent stays open.
        raise answer
    return None


def _audit_failed_call(
    run: Run, names: list[str], outcome: str, exc: ApiError, request_id: str | None
) -> None:
    run.audit.record(
        "create", users=names, outcome=outcome, request_id=request_id, detail={"error": str(exc)}
    )


def _record_results(
    run: Run,
    intent: Intent,
    batch: Sequence[CreateUser],
    results: Sequence[CreateResultLike],
    unknown: set[str],
) -> tuple[list[str], int]:
    """Record each user's result; return (users created, number failed); see :func:`_answered`."""
    if len(results) != len(batch):
        why = f"the API answered {len(results)} results for {len(batch)} users"
        settle_creates(run, intent, batch, why, unknown=unknown)
        return [], 0
    made: list[str] = []
    failed = 0
    for action, res in zip(batch, results, strict=True):
        if res.userId is not None and not res.errorText:
            record_created(run, action, res.userId)
            made.append(action.user)
        elif res.errorText and _already_exists(res.errorText):
            # The API refused this create, so the candidate was never set: it is dropped.
            adoption = adopt_or_report(run, action, f"the API said: {res.errorText}")
            if adoption == "unknown":
                unknown.add(action.user)
            if adoption != "adopted":
                if not run.result.failed(action.user):
                    run.result.fail(action.user, "create", res.errorText)
                failed += 1
        else:
            run.result.fail(action.user, "create", res.errorText or "the API gave no user id")
            failed += 1
    run.ledger.resolve(_pending(intent), intent.id, set_for=made, not_set=set(intent.users) - set(made))
    return made, failed


def _already_exists(error_text: str) -> bool:
    return "already exist" in error_text.lower()


def _pending(intent: Intent) -> Path | None:
    """The pending file holding the intent's password candidates, if it has any."""
    return Path(intent.passwords) if intent.passwords else None


def record_created(
    run: Run, action: CreateUser, user_id: int, origin: Literal["created", "adopted"] = "created"
) -> None:
    """Record ``action.user`` in state as ``origin`` (created by this tool, or adopted)."""
    now = run.clock()
    run.state.users[action.user] = UserRecord(
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
    (run.result.created if origin == "created" else run.result.adopted).append(action.user)


def adopt_or_report(run: Run, action: CreateUser, why: str) -> Adoption:
    """Look ``action.user`` up by name; adopt it when it is the same person.

    ``unknown`` means the look-up itself failed: whether the user exists is still open, so
    the caller keeps its intent in the journal and stops the run.
    """
    try:
        found = run.client.find_user(action.user)
    except ApiError as exc:
        run.stop.trip(
            f"{action.user}: {why}; looking the user up failed, so whether it exists is unknown: "
            f"{exc}. The intent stays in the journal: the next plan shows it and the next apply "
            "settles it before anything else"
        )
        return "unknown"
    if found is None:
        return "absent"
    if found.email.lower() != action.email.lower():
        run.result.fail(
            action.user,
            "create",
            f"{why}: a user named {action.user} already exists (id {found.id}) with another email "
            f"({found.email}, manifest says {action.email}); not adopted. Rename the user in the "
            "manifest, or fix the email if it is the same person",
        )
        return "refused"
    record_created(run, action, found.id, origin="adopted")
    return "adopted"


def settle_creates(
    run: Run,
    intent: Intent,
    batch: Sequence[CreateUser],
    why: str,
    *,
    report: bool = True,
    unknown: set[str] | None = None,
) -> None:
    """Look up each user of a create whose answer was lost; adopt, report, or leave it open.

    Without ``report`` a user that does not exist is no failure (the plan that follows creates it).
    ``unknown`` receives the users left open (their look-up failed).
    """
    adopted: list[str] = []
    absent: list[str] = []
    for action in batch:
        if action.user in run.state.users:
            # Recorded before this intent was begun, or by the run that made it before it died:
            # its candidate was decided then (passwords are moved before state is saved).
            absent.append(action.user)
            continue
        outcome = adopt_or_report(run, action, why)
        if outcome == "adopted":
            adopted.append(action.user)
            continue
        if outcome == "unknown":
            if unknown is not None:
                unknown.add(action.user)
            continue  # left open with its candidate; the stop is tripped
        absent.append(action.user)
        if report and outcome == "absent" and not run.result.failed(action.user):
            run.result.fail(
                action.user, "create", f"{why}; the user does not exist, the next apply creates it"
            )
    run.ledger.resolve(_pending(intent), intent.id, set_for=adopted, not_set=absent)


def settle_create_intent(run: Run, intent: Intent) -> None:
    """Settle a create a dead run announced: adopt whoever exists (nobody absent is a failure)."""
    creates = [a for a in intent.actions if isinstance(a, CreateUser)]
    settle_creates(run, intent, creates, "an interrupted apply may have created it", report=False)
