"""Forget a reset whose answer was lost, once a person has checked that it did not happen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from reconcile.errors import StateError, did_you_mean
from reconcile.planning.accounts import Recorded
from reconcile.state.store import StateStore


@dataclass(frozen=True)
class Forgotten:
    """The account whose unconfirmed reset was forgotten, and the state serial after it."""

    account: str
    reset_to: date
    serial: int


def forget_reset(
    store: StateStore, environment: str, account: str, *, lock_timeout: float = 0.0
) -> Forgotten:
    """Clear ``account``'s unconfirmed reset under the lock, so the next plan resets it again.

    Only a reset recorded as unconfirmed (sent, answer lost) can be forgotten: a confirmed one is
    refused, since resetting again would undo the trading done since. The choice is a person's,
    after checking the account (its balance is back at the initial balance if the reset happened);
    it is written to the audit log.
    """
    with store.lock(timeout=lock_timeout, purpose="state forget-reset"):
        state = store.load(environment)
        found = Recorded.of(state).by_folded.get(account.casefold())
        if found is None:
            hint = did_you_mean(account, list(state.accounts))
            raise StateError(f"no account {account!r} is recorded in {store.describe()}{hint}")
        name, record = found
        if record.resetUnsettled is None:
            done = (
                f"its last reset (to {record.lastReset}) was confirmed" if record.lastReset else "it has none"
            )
            raise StateError(
                f"account {name} has no unconfirmed reset to forget: {done}; resetting it again takes "
                "a new resetTo in the manifest"
            )
        reset_to = record.resetUnsettled
        state.accounts[name] = record.model_copy(update={"lastReset": None, "resetUnsettled": None})
        saved = store.save(state, (), changed_accounts=[name])
        audit = store.audit_log(environment)
        audit.record(
            "forget_reset",
            users=[record.user],
            outcome=f"account {name}: the unconfirmed reset to {reset_to} is forgotten",
            detail={"account": name, "resetTo": reset_to.isoformat()},
        )
        audit.close()
    return Forgotten(name, reset_to, saved.serial)
