"""Cancel everything for users, in batches, on the endpoint and then on its companion host.

Nothing irreversible on a guess (DESIGN §8.8): each batch's ids are first confirmed against what
the endpoint shows. A user is recorded cancelled once every host has cancelled it (DESIGN §7);
until then state records the hosts that did (``cancelledOn``).
"""

from __future__ import annotations

from collections.abc import Sequence

from reconcile.apply.crashpoints import checkpoint
from reconcile.apply.intents import Intent
from reconcile.apply.ports import CancelClient, UserLike
from reconcile.apply.revoke import record_revoked
from reconcile.apply.run import ExecuteOptions, Run, chunks, lost
from reconcile.apply.stop import NEEDS_A_PERSON
from reconcile.errors import ApiError, OutcomeUnknown
from reconcile.planning.plan import CancelEverything


def run_cancels(run: Run, actions: Sequence[CancelEverything], options: ExecuteOptions) -> None:
    """Cancel ``actions`` in batches of the same flags; save state after each batch."""
    if not actions:
        return
    run.progress.phase("cancel", len(actions))
    by_flags: dict[tuple[bool, ...], list[CancelEverything]] = {}
    for action in actions:
        by_flags.setdefault(tuple(action.flags.model_dump().values()), []).append(action)
    done = 0
    for same_flags in by_flags.values():
        for batch in chunks(same_flags, options.batch_size):
            run.stop.check()
            confirmed = _confirm(run, batch)
            if confirmed:
                # One intent covers every host: a dead run's cancel is finished on all of them.
                intent = run.journal.begin("cancel", confirmed)
                checkpoint("before_cancel_call")
                cancel_on_hosts(run, confirmed)
                users = [a.user for a in batch]
                run.save(users, run.accounts_of(users))
                # An outcome still unknown keeps the intent for the next run to settle.
                run.stop.check()
                run.journal.settle(intent)
            done += len(batch)
            run.progress.advance(done)


def _confirm(run: Run, batch: Sequence[CancelEverything]) -> list[CancelEverything]:
    """Keep the cancels whose id the endpoint still shows under the recorded name, active.

    One read per batch. A user this run or a dead one already closed on the endpoint passes, so
    the companion host still gets it.
    """
    primary = run.client.endpoint_label
    found = _look_up(run, batch, "not sent, because confirming the users' ids first failed")
    if found is None:
        raise run.stop.error()
    confirmed: list[CancelEverything] = []
    for action in batch:
        problem = _mismatch(action, found.get(action.userId), primary in _cancelled_on(run, action.user))
        if problem is None:
            confirmed.append(action)
            continue
        run.audit.record(
            "cancel_everything", users=[action.user], outcome="not_sent", detail={"error": problem}
        )
        run.result.fail(action.user, "cancel_everything", f"not sent: {problem}")
    return confirmed


def _look_up(
    run: Run, batch: Sequence[CancelEverything], failed: str, *, then: str = ""
) -> dict[int, UserLike] | None:
    """What the endpoint shows for ``batch``'s ids; None (and the run stopped) when it cannot tell."""
    try:
        return {u.id: u for u in run.client.user_items([a.userId for a in batch])}
    except ApiError as exc:
        names = ", ".join(a.user for a in batch[:5])
        run.stop.trip(f"canceleverything for {names}: {failed}: {exc}" + (f". {then}" if then else ""))
        return None


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


def cancel_hosts(run: Run) -> list[tuple[str, CancelClient]]:
    """(label, client) of the endpoint, then of the companion host when there is one."""
    hosts: list[tuple[str, CancelClient]] = [(run.client.endpoint_label, run.client)]
    if run.companion is not None:
        hosts.append((run.companion.endpoint_label, run.companion))
    return hosts


def cancel_on_hosts(run: Run, batch: Sequence[CancelEverything], *, settling: bool = False) -> None:
    """Send ``batch`` to each host that has not cancelled it yet; record users done on all.

    When ``settling``, the endpoint is asked first which users it shows closed, and only
    those are cancelled further (the operator may have changed the manifest since the dead run).
    """
    hosts = cancel_hosts(run)
    for index, (host, client) in enumerate(hosts):
        if run.stop.reason is not None:
            break  # the caller saves what was done, then stops
        todo = [a for a in batch if _cancel_open_on(run, a.user, host)]
        if settling and index == 0:
            settle_cancels(run, todo, None, host)
            batch = [a for a in batch if host in _cancelled_on(run, a.user)]
        elif todo:
            _cancel_on(run, host, client, todo, primary=index == 0)
    labels = {host for host, _ in hosts}
    for action in batch:
        record = run.state.users.get(action.user)
        if record is not None and record.lifecycle == "active" and labels <= set(record.cancelledOn):
            _record_cancelled(run, action.user)
            if action.flags.tradingPermissions:
                # The cancel revoked the user's trading permissions: no revocation is sent for them.
                for account in run.accounts_of([action.user]):
                    record_revoked(run, account)


def _cancelled_on(run: Run, name: str) -> list[str]:
    record = run.state.users.get(name)
    return record.cancelledOn if record is not None else []


def _cancel_open_on(run: Run, name: str, host: str) -> bool:
    record = run.state.users.get(name)
    return record is not None and record.lifecycle == "active" and host not in record.cancelledOn


def _cancel_on(
    run: Run, host: str, client: CancelClient, batch: Sequence[CancelEverything], *, primary: bool
) -> None:
    """Send one cancel call to ``host``; record it, or report (or settle) why it did not happen."""
    names = [a.user for a in batch]
    where = {"host": host}
    try:
        client.cancel_everything([a.userId for a in batch], batch[0].flags, users=names)
    except NEEDS_A_PERSON:
        # The stop is tripped: the caller saves what the other hosts did, then stops.
        run.audit.record("cancel_everything", users=names, outcome="refused", detail=where)
        return
    except OutcomeUnknown as exc:
        run.audit.record(
            "cancel_everything", users=names, outcome="unknown", detail={**where, "error": str(exc)}
        )
        if primary:
            settle_cancels(run, batch, lost("canceleverything", exc), host)
            return
        # Only cancel calls go to the companion: no look-up, the next apply sends it again.
        _fail_all(
            run, batch, f"{_on(run, host)}{lost('canceleverything', exc)}; the next apply sends it again"
        )
        return
    except ApiError as exc:
        run.audit.record(
            "cancel_everything", users=names, outcome="refused", detail={**where, "error": str(exc)}
        )
        _fail_all(run, batch, f"{_on(run, host)}{exc}")
        return
    if primary:
        checkpoint("after_cancel_call")
    run.audit.record(
        "cancel_everything",
        users=names,
        outcome="cancelled",
        request_id=client.last_request_id,
        detail={**where, "flags": batch[0].flags.model_dump()},
    )
    for action in batch:
        _record_cancelled_on(run, action.user, host)


def _fail_all(run: Run, batch: Sequence[CancelEverything], message: str) -> None:
    for action in batch:
        run.result.fail(action.user, "cancel_everything", message)


def _on(run: Run, host: str) -> str:
    """Name the host in a cancel failure when there are two of them."""
    return f"on {host}: " if run.companion is not None else ""


def _record_cancelled_on(run: Run, name: str, host: str) -> None:
    record = run.state.users[name]
    if host in record.cancelledOn:
        return
    run.state.users[name] = record.model_copy(
        update={"cancelledOn": sorted({*record.cancelledOn, host}), "updatedAt": run.clock()}
    )


def _record_cancelled(run: Run, name: str) -> None:
    now = run.clock()
    record = run.state.users[name]
    run.state.users[name] = record.model_copy(
        update={"lifecycle": "cancelled", "cancelledAt": now, "updatedAt": now}
    )
    run.result.cancelled.append(name)


def settle_cancels(run: Run, batch: Sequence[CancelEverything], why: str | None, host: str) -> None:
    """Record as cancelled on ``host`` (the endpoint) the users it shows closed; report the rest.

    The rest are reported only with ``why``.
    """
    if not batch:
        return
    # An irreversible call whose outcome stays unknown: a person must look (DESIGN §8.9).
    users = _look_up(
        run,
        batch,
        f"{why or 'settling an interrupted cancel'}; looking the users up failed, so whether they "
        "are cancelled is unknown",
        then="The intent stays in the journal for the next apply",
    )
    if users is None:
        return
    for action in batch:
        found = users.get(action.userId)
        if (
            found is not None
            and found.name.lower() == action.user.lower()
            and (found.status or "").lower() == "closed"
        ):
            _record_cancelled_on(run, action.user, host)
        elif why:
            run.result.fail(
                action.user, "cancel_everything", f"{_on(run, host)}{why}; the next apply cancels it"
            )


def settle_cancel_intent(run: Run, intent: Intent) -> None:
    """Finish a cancel a dead run announced, on every host, for users not recorded cancelled."""
    open_cancels = [
        a
        for a in intent.actions
        if isinstance(a, CancelEverything)
        and (r := run.state.users.get(a.user)) is not None
        and r.lifecycle != "cancelled"
    ]
    if open_cancels:
        cancel_on_hosts(run, open_cancels, settling=True)
