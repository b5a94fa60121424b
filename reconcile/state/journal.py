"""The intent journal: what a run was about to do, so a crash never loses or doubles a trader.

Before each non-idempotent call (a create batch, a cancel batch, a grant) the applier appends an
*intent* naming the call and its actions to ``state/<environment>.journal.jsonl`` and fsyncs it;
after the outcome is recorded in state it appends a *settled* line for that intent. An intent
without a settled line is unsettled: the next run looks its users up and adopts what exists
(see :meth:`reconcile.apply.executor.Run.settle`) before planning or applying anything. The file is truncated
when no intent is left open, so it stays small. Intents carry plan actions, which hold password
*sources* only, never passwords.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from reconcile.errors import StateError, first_invalid
from reconcile.planning.plan import Action, Diagnostic, Plan

IntentCall = Literal["create", "grant", "cancel"]

_ACTIONS: TypeAdapter[list[Action]] = TypeAdapter(list[Action])


class Intent(BaseModel):
    """One non-idempotent call about to be made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["intent"] = "intent"
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


class _Settled(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["settled"] = "settled"
    id: str


def journal_path_for(state_path: Path, environment: str) -> Path:
    """``<state folder>/<environment>.journal.jsonl``."""
    return state_path.parent / f"{environment}.journal.jsonl"


class Journal:
    """Append-only intents with fsync; only one run writes it (it runs under the state lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _append(self, line: BaseModel) -> None:
        data = (line.model_dump_json() + "\n").encode("utf-8")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

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
        self._append(intent)
        return intent

    def settle(self, intent: Intent) -> None:
        """Record that the outcome of ``intent`` is in state; compact when nothing is left open."""
        self._append(_Settled(id=intent.id))
        if not self.unsettled():
            self.clear()

    def clear(self) -> None:
        """Empty the journal (every intent is settled)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def unsettled(self) -> list[Intent]:
        """Return the intents without a settled line, oldest first."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        open_intents: dict[str, Intent] = {}
        lines = text.splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError:
                if number == len(lines):
                    # A torn last line: the process died while appending, before the call it
                    # announced was made (the call always follows a completed fsync).
                    continue
                raise StateError(
                    f"journal {self.path} line {number} is not JSON; it is written only by reconcile: "
                    "inspect it, then remove it if no run is in progress"
                ) from None
            try:
                if data.get("kind") == "settled":
                    open_intents.pop(_Settled.model_validate(data).id, None)
                else:
                    intent = Intent.model_validate(data)
                    open_intents[intent.id] = intent
            except ValidationError as exc:
                raise StateError(
                    f"journal {self.path} line {number} is not a valid entry ({first_invalid(exc)}); it is "
                    "written only by reconcile: inspect it, then remove it if no run is in progress"
                ) from None
        return list(open_intents.values())


def hold_unsettled(plan: Plan, intents: Sequence[Intent]) -> Plan:
    """Leave every user an unsettled intent names out of ``plan``, with one warning per intent.

    Their outcome is unknown until an apply (which has credentials) looks them up: planning them
    now would show creates that may already have happened.
    """
    if not intents:
        return plan
    held = {name for intent in intents for name in intent.users}
    notes = []
    for intent in intents:
        names = intent.users
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        notes.append(
            Diagnostic(
                severity="warning",
                message=f"waiting to be settled: the {intent.call} of {shown} (intent {intent.id}) was "
                "sent by an apply that did not finish; whether it happened is unknown until an apply "
                "looks these users up, so they are left out of this plan. The next apply settles them "
                "first, then plans them",
            )
        )
    return plan.model_copy(
        update={
            "actions": tuple(a for a in plan.actions if a.user not in held),
            "diagnostics": (*plan.diagnostics, *notes),
        }
    )
