"""Reset accounts to the start of a trade date: exactly once per new ``resetTo``, even across crashes.

A reset is not repeatable: a second one undoes the trading done since the first. So each call is
announced in the journal, and a call whose outcome is unknown (its answer lost, or the run killed
before it saved) is never sent again on a guess. The API keeps no record a reset could be
recognised by, so such a reset is settled as *unconfirmed*: state records the date as the
account's last reset and as ``resetUnsettled``, nothing is sent again for it, and it is reported
so a person can look at the account. A later, different ``resetTo`` resets it again as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from reconcile.apply.crashpoints import checkpoint
from reconcile.apply.intents import Intent
from reconcile.apply.revoke import differs_from_state
from reconcile.apply.run import ExecuteOptions, Run, chunks, send_once
from reconcile.planning.plan import ResetAccount


def run_resets(run: Run, actions: Sequence[ResetAccount], options: ExecuteOptions) -> None:
    """Send ``actions`` grouped by trade date, ≤ ``options.batch_size`` accounts per call."""
    if not actions:
        return
    run.progress.phase("reset_account", len(actions))
    by_day: dict[date, list[ResetAccount]] = {}
    for action in actions:
        record = run.state.accounts.get(action.account)
        if record is None or record.accountId != action.accountId:
            # A plan file edited after its review could name one account and carry another's id.
            why = differs_from_state(action.account)
            run.result.fail(action.account, "reset_account", f"not sent: {why}")
        elif _held(run, action):
            run.result.fail(action.account, "reset_account", held_message(action.account, action.resetTo))
        else:
            by_day.setdefault(action.resetTo, []).append(action)
    done = len(actions) - sum(map(len, by_day.values()))
    for day, same in sorted(by_day.items()):
        for batch in chunks(same, options.batch_size):
            run.stop.check()
            intent = run.journal.begin("reset", batch)
            checkpoint("before_reset_call")
            _reset_batch(run, intent, batch, day)
            checkpoint("after_reset_call")
            run.save((), (a.account for a in batch))
            run.journal.settle(intent)
            done += len(batch)
            run.progress.advance(done)


def _held(run: Run, action: ResetAccount) -> bool:
    record = run.state.accounts.get(action.account)
    return record is not None and record.resetUnsettled == action.resetTo


def held_message(account: str, day: date) -> str:
    """Why a reset to ``day`` is not sent (an earlier one to that day may have happened)."""
    return (
        f"not sent: a reset of {account} to {day} was sent before and its answer was lost, so it may "
        "have happened; a second one would undo the trading done since. Check the account (after a "
        "reset its balance is back at the initial balance); to reset it again, give resetTo a new date"
    )


def _reset_batch(run: Run, intent: Intent, batch: Sequence[ResetAccount], day: date) -> None:
    names = [a.account for a in batch]
    sent = send_once(
        run,
        "reset_account",
        names,
        # The call answers nothing (None): True says it was made.
        lambda: (
            run.client.reset_demo_account_state([a.accountId for a in batch], day, accounts=names) or True
        ),
        unknown=lambda why: record_unconfirmed(run, batch, why),
        # Refused before it ran (a stop): nothing was reset, so nothing is left to settle.
        refused=lambda: run.journal.settle(intent),
    )
    if sent is None:
        return
    run.audit.record(
        "reset_account",
        users=names,
        outcome="reset",
        request_id=run.client.last_request_id,
        detail={"resetTo": day.isoformat()},
    )
    for action in batch:
        _record(run, action, confirmed=True)
        run.result.accounts_reset.append(action.account)


def _record(run: Run, action: ResetAccount, *, confirmed: bool) -> None:
    record = run.state.accounts.get(action.account)
    if record is None:
        return
    update = {"lastReset": action.resetTo, "resetUnsettled": None if confirmed else action.resetTo}
    run.state.accounts[action.account] = record.model_copy(update={**update, "updatedAt": run.clock()})


def record_unconfirmed(run: Run, batch: Sequence[ResetAccount], why: str) -> None:
    """Record resets whose outcome is unknown as done-unconfirmed, and report each (never resent)."""
    for action in batch:
        record = run.state.accounts.get(action.account)
        if record is None or (record.lastReset == action.resetTo and record.resetUnsettled is None):
            continue  # recorded as done by the run that sent it
        _record(run, action, confirmed=False)
        run.result.fail(
            action.account,
            "reset_account",
            f"{why}: whether {action.account} was reset to {action.resetTo} is unknown (the API keeps "
            "no record of resets). It is recorded as reset and will not be sent again, since a second "
            "reset would undo the trading done since the first; check the account's balance (back at "
            "its initial balance after a reset), and give resetTo a new date to reset it again",
        )


def settle_reset_intent(run: Run, intent: Intent) -> None:
    """Settle resets a dead run announced and did not record: unconfirmed, reported, never resent."""
    resets = [a for a in intent.actions if isinstance(a, ResetAccount)]
    record_unconfirmed(run, resets, "an interrupted apply sent this reset and did not record its answer")
