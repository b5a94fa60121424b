"""Change emails and contact details, a few users at a time (idempotent calls: no journal)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from concurrent.futures import Future

from reconcile.apply.crashpoints import checkpoint
from reconcile.apply.ports import ApplyClient
from reconcile.apply.run import GROUP, NOT_SENT, ExecuteOptions, Run, chunks, overlapped
from reconcile.apply.stop import RunStopped
from reconcile.apply.wire import contact_request
from reconcile.errors import ReconcileError
from reconcile.planning.plan import UpdateContact, UpdateEmail
from reconcile.state.model import ContactRecord

Update = UpdateEmail | UpdateContact


def run_updates(run: Run, actions: Sequence[Update], options: ExecuteOptions) -> None:
    """Send ``actions`` on ``run.concurrency`` threads; save state after each group."""
    if not actions:
        return
    run.progress.phase("update", len(actions))
    done = 0
    returned = False  # a group recorded after this step (carried) is counted by it already

    def record(group: Sequence[Update], futures: list[Future[str | None]]) -> None:
        nonlocal done
        changed: list[str] = []
        for action, future in zip(group, futures, strict=True):
            outcome = future.result()
            if outcome is NOT_SENT:
                continue
            if outcome is None:
                _record(action, run)
                changed.append(action.user)
            else:
                run.result.fail(action.user, action.action.value, outcome)
            run.audit.record(
                action.action.value,
                users=[action.user],
                outcome=(outcome and "failed") or "ok",
                detail={"error": outcome} if outcome else None,
            )
        checkpoint("after_updates_call")
        run.save_later(changed)
        run.stop.check()
        done += len(group)
        if not returned:
            run.progress.advance(done)

    with run.workers() as send:
        # Ids are looked up when a group is sent, on the one thread that changes state.
        overlapped(
            run,
            list(chunks(actions, GROUP)),
            lambda group: send(_update_one, [(run, a, run.user_id(a.user, a.userId)) for a in group]),
            record,
            # A create batch's follow-ups, the next batch's create in flight beside them: that
            # batch's follow-ups are sent before their last group is recorded.
            carry_last=lambda: run.saving_later and run.next_create_sent,
        )
    returned = True


def _update_one(run: Run, action: Update, user_id: int | None) -> str | None:
    """Make one update call; return None on success or the reason it failed."""
    if user_id is None:
        return "skipped: the user was not created"
    try:
        _send(action, run.client, user_id)
    except RunStopped:
        return NOT_SENT
    except ReconcileError as exc:
        return str(exc)
    return None


@functools.singledispatch
def _send(action: Update, client: ApplyClient, user_id: int) -> None:
    raise TypeError(f"no update call for {type(action).__name__}")


@_send.register
def _(action: UpdateEmail, client: ApplyClient, user_id: int) -> None:
    client.modify_email_address(user_id, action.email, user=action.user)


@_send.register
def _(action: UpdateContact, client: ApplyClient, user_id: int) -> None:
    client.update_contact_info(contact_request(user_id, action.contact), user=action.user)


@functools.singledispatch
def _record(action: Update, run: Run) -> None:
    raise TypeError(f"no record of {type(action).__name__}")


@_record.register
def _(action: UpdateEmail, run: Run) -> None:
    record = run.state.users[action.user]
    run.state.users[action.user] = record.model_copy(update={"email": action.email, "updatedAt": run.clock()})
    run.result.emails_changed.append(action.user)


@_record.register
def _(action: UpdateContact, run: Run) -> None:
    record = run.state.users[action.user]
    payload = action.contact.model_dump()
    first, last = payload.pop("firstName"), payload.pop("lastName")
    run.state.users[action.user] = record.model_copy(
        update={
            "firstName": first,
            "lastName": last,
            "contact": ContactRecord(**payload),
            "updatedAt": run.clock(),
        }
    )
    run.result.contacts_updated.append(action.user)
