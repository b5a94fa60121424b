"""Intents: the applier's journal records, typed with the plan actions they announce.

The journal kept with the state (:class:`reconcile.state.journal.Journal`) stores opaque
records; :class:`IntentJournal` turns each :class:`Intent` into one and back. An intent line
holds its actions and, for grants, the agreement alert id; these are the payload's keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from reconcile.errors import StateError, first_invalid
from reconcile.planning.plan import AccountAction, Action, Diagnostic, Plan
from reconcile.state.journal import Journal, JournalEntry
from reconcile.state.model import State

IntentCall = Literal["create", "grant", "cancel", "create_account", "reset"]

_ACTIONS: TypeAdapter[list[Action]] = TypeAdapter(list[Action])


class Intent(BaseModel):
    """One non-idempotent call about to be made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    call: IntentCall
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    actions: tuple[Action, ...]
    agreement_alert_id: int | None = None
    """For grants: where the agreement signals to complete are filed."""
    passwords: str | None = None
    """For creates with generated passwords: the pending file holding the candidates (a path only)."""

    @property
    def users(self) -> list[str]:
        return [a.user for a in self.actions]

    @property
    def accounts(self) -> list[str]:
        """The accounts the intent's actions are about (none for user actions)."""
        return [a.account for a in self.actions if isinstance(a, AccountAction)]

    def to_entry(self) -> JournalEntry:
        """The journal record of this intent."""
        payload = {
            "actions": _ACTIONS.dump_python(list(self.actions), mode="json"),
            "agreement_alert_id": self.agreement_alert_id,
        }
        return JournalEntry(
            id=self.id, call=self.call, time=self.time, passwords=self.passwords, payload=payload
        )

    @classmethod
    def from_entry(cls, entry: JournalEntry) -> Intent:
        """Read a journal record back (raises :class:`ValidationError` when it is no intent)."""
        return cls.model_validate(
            {
                **entry.payload,
                "id": entry.id,
                "call": entry.call,
                "time": entry.time,
                "passwords": entry.passwords,
            }
        )


class IntentJournal:
    """A :class:`~reconcile.state.journal.Journal` seen as intents."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def begin(
        self,
        call: IntentCall,
        actions: Iterable[Action],
        *,
        agreement_alert_id: int | None = None,
        passwords: str | None = None,
    ) -> Intent:
        """Record that ``call`` is about to be made for ``actions``; return the intent."""
        intent = Intent(
            call=call, actions=tuple(actions), agreement_alert_id=agreement_alert_id, passwords=passwords
        )
        self.journal.append(intent.to_entry())
        return intent

    def settle(self, intent: Intent) -> None:
        """Record that the outcome of ``intent`` is in state."""
        self.journal.settle(intent.id)

    def clear(self) -> None:
        """Forget every intent."""
        self.journal.clear()

    def unsettled(self) -> list[Intent]:
        """Return the intents not settled yet, oldest first."""
        intents = []
        for entry in self.journal.unsettled():
            try:
                intents.append(Intent.from_entry(entry))
            except ValidationError as exc:
                raise StateError(
                    f"journal intent {entry.id} is not a valid entry ({first_invalid(exc)}); "
                    "it is written only by reconcile: inspect it, then remove it if no run is in progress"
                ) from None
        return intents


def note_unconfirmed_resets(plan: Plan, state: State) -> Plan:
    """Warn, in every plan, of each reset whose answer was lost (recorded as done, never resent)."""
    notes = [
        Diagnostic(
            severity="warning",
            user=record.user,
            message=f"account {name}: a reset to {record.resetUnsettled} was sent and its answer lost; "
            "it is recorded as done and never sent again (a second reset would undo the trading done "
            "since). Check the account (its balance is back at the initial balance if it happened); "
            "a new resetTo resets it again, and if it did not happen, `reconcile state forget-reset "
            f"{name}` lets the next apply send it",
        )
        for name, record in sorted(state.accounts.items())
        if record.resetUnsettled is not None
    ]
    if not notes:
        return plan
    return plan.model_copy(update={"diagnostics": (*plan.diagnostics, *notes)})


def hold_unsettled(plan: Plan, intents: Sequence[Intent], *, lock_holder: str | None = None) -> Plan:
    """Leave every user an unsettled intent names out of ``plan``, with one warning per intent.

    Their outcome is unknown until an apply (which has credentials) looks them up: planning them
    now would show creates that may already have happened. ``lock_holder`` describes who holds
    the state lock (a plan made without it): that apply may be the one still waiting for the answer.
    """
    if not intents:
        return plan
    held = {name for intent in intents for name in intent.users}
    notes = []
    for intent in intents:
        names = intent.users
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        sent = (
            f"may still be in flight: the apply holding the state lock ({lock_holder}) may still be "
            "waiting for its answer, and then settles it itself; if that apply died, the next apply "
            "settles it"
            if lock_holder
            else "was sent by an apply that did not finish"
        )
        notes.append(
            Diagnostic(
                severity="warning",
                message=f"waiting to be settled: the {intent.call} of {shown} (intent {intent.id}) {sent}; "
                "whether it happened is unknown until an apply looks these users up, so they are left "
                "out of this plan. The next apply settles them first, then plans them",
            )
        )
    return plan.model_copy(
        update={
            "actions": tuple(a for a in plan.actions if a.user not in held),
            "diagnostics": (*plan.diagnostics, *notes),
            "unsettled": tuple(sorted(held)),
        }
    )
