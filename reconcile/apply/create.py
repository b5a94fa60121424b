"""Create users in batches, each announced in the journal; adopt a user who already exists.

A create whose answer is lost, or that the API refuses as "already exists", is settled by looking
the user up by name: the same person (same email) is adopted, anyone else is reported. Generated
passwords wait in the ledger until their create's outcome is known (:mod:`reconcile.apply.generated`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Literal

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


def run_creates(run: Run, actions: Sequence[CreateUser], options: ExecuteOptions) -> None:
    """Create ``actions`` in batches of ``options.batch_size``; save state after each batch."""
    if not actions:
        return
    run.progress.phase("create", len(actions))
    done = 0
    for batch in chunks(actions, options.batch_size):
        run.stop.check()
        intent = _create_batch(run, batch, options.passwords, options.generated)
        run.save(intent.users)
        checkpoint("after_create_save")
        run.settle_unless_stopped(intent)
        done += len(batch)
        run.progress.advance(done)


def _create_batch(
    run: Run, batch: Sequence[CreateUser], passwords: Mapping[str, str], generated: Collection[str]
) -> Intent:
    """Announce, send and record one create call; return its intent (settled by the caller)."""
    candidates = {a.user: passwords[a.user] for a in batch if a.user in generated}
    pending = run.ledger.pending if candidates else None
    # The hour's wait comes before the intent: a run killed while it waits leaves none open.
    if run.client.await_create_slot() > 0:
        run.waited_for_slot = True
    intent = run.journal.begin("create", batch, passwords=str(pending) if pending is not None else None)
    # The candidates are durable before the call, so a kill never loses a password that was set.
    run.ledger.hold(intent.id, candidates)
    checkpoint("before_create_call")
    results = _send(run, intent, batch, passwords)
    if results is not None:
        checkpoint("after_create_call")
        made, failed = _record_results(run, intent, batch, results)
        run.audit.record(
            "create",
            users=intent.users,
            outcome=f"created {len(made)}, failed {failed}",
            request_id=run.client.last_request_id,
        )
    return intent


def _send(
    run: Run, intent: Intent, batch: Sequence[CreateUser], passwords: Mapping[str, str]
) -> list[CreateResultLike] | None:
    """Make the create call; None when it failed as a whole (reported and settled here)."""
    names = intent.users
    try:
        return list(
            run.client.create_evaluation_users([evaluation_user(a, passwords[a.user]) for a in batch])
        )
    except NEEDS_A_PERSON:
        # Refused before it ran; the intent stays open and the next run settles it.
        run.audit.record("create", users=names, outcome="refused", request_id=run.client.last_request_id)
        raise run.stop.error() from None
    except OutcomeUnknown as exc:
        # Sent, but no usable answer: the users may exist now. Look them up, adopt.
        _audit_failed_call(run, names, "unknown", exc)
        settle_creates(run, intent, batch, lost("createevaluationusers", exc))
    except ApiError as exc:
        # The API refused the whole request: nobody in it was created.
        _audit_failed_call(run, names, "refused", exc)
        for action in batch:
            run.result.fail(action.user, "create", str(exc))
        run.ledger.resolve(_pending(intent), intent.id, not_set=names)
    return None


def _audit_failed_call(run: Run, names: list[str], outcome: str, exc: ApiError) -> None:
    run.audit.record(
        "create",
        users=names,
        outcome=outcome,
        request_id=run.client.last_request_id,
        detail={"error": str(exc)},
    )


def _record_results(
    run: Run, intent: Intent, batch: Sequence[CreateUser], results: Sequence[CreateResultLike]
) -> tuple[list[str], int]:
    """Record each user's result; return (users created, number failed)."""
    if len(results) != len(batch):
        settle_creates(run, intent, batch, f"the API answered {len(results)} results for {len(batch)} users")
        return [], 0
    made: list[str] = []
    failed = 0
    for action, res in zip(batch, results, strict=True):
        if res.userId is not None and not res.errorText:
            record_created(run, action, res.userId)
            made.append(action.user)
        elif res.errorText and _already_exists(res.errorText):
            # The API refused this create, so the candidate was never set: it is dropped.
            if adopt_or_report(run, action, f"the API said: {res.errorText}") != "adopted":
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
    run: Run, intent: Intent, batch: Sequence[CreateUser], why: str, *, report: bool = True
) -> None:
    """Look up each user of a create whose answer was lost; adopt, report, or leave it open.

    Without ``report`` a user that does not exist is no failure (the plan that follows creates it).
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
