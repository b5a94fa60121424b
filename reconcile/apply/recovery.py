"""Settle what a dead run left open in the journal, before anything is planned or sent.

Each unsettled intent is settled by the executor of its call, by looking its users up: creates
that happened are adopted, grants whose plugin exists are recorded, cancels are finished on
every host, accounts that exist are recorded, and resets are recorded as unconfirmed (never sent
again on a guess). An intent whose outcome still cannot be learned stays in the journal and stops the
run (:class:`~reconcile.apply.stop.RunStopped`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from reconcile.apply.account_create import settle_account_create_intent
from reconcile.apply.cancel import settle_cancel_intent
from reconcile.apply.create import settle_create_intent
from reconcile.apply.grant import settle_grant_intent
from reconcile.apply.intents import Intent, IntentCall
from reconcile.apply.reset import settle_reset_intent
from reconcile.apply.result import ApplyResult
from reconcile.apply.run import Run

SETTLERS: Mapping[IntentCall, Callable[[Run, Intent], None]] = {
    "create": settle_create_intent,
    "grant": settle_grant_intent,
    "cancel": settle_cancel_intent,
    "create_account": settle_account_create_intent,
    "reset": settle_reset_intent,
}
"""How an intent of each call is settled."""


def settle_journal(run: Run) -> ApplyResult:
    """Settle whatever a previous run left open in the journal (no-op when it is empty)."""
    intents = run.journal.unsettled()
    if not intents:
        return run.result
    with run.recording_stop():
        for intent in intents:
            run.stop.check()
            SETTLERS[intent.call](run, intent)
            changed = intent.users
            run.audit.record("settle", users=changed, outcome=intent.call, detail={"intent": intent.id})
            run.save(changed, [*intent.accounts, *run.accounts_of(changed)])
            # Still unknown: the intent stays, and nothing is planned or sent until it is settled.
            run.stop.check()
            run.journal.settle(intent)
            run.result.settled_intents += 1
            run.result.settled_users.extend(changed)
    return run.result
