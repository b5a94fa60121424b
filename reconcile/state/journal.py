"""The intent journal: what a run was about to do, so a crash never loses or doubles a trader.

Before each non-idempotent call (a create batch, a cancel batch, a grant) the applier appends an
*intent* naming the call to ``state/<environment>.journal.jsonl`` and fsyncs it; after the
outcome is recorded in state it appends a *settled* line for that intent. An intent without a
settled line is unsettled: the next run settles it (:mod:`reconcile.apply.recovery`) before
planning or applying anything. The file is truncated when no intent is left open, so it stays
small.

The journal keeps :class:`JournalEntry` records and never reads their payload: what a call
carries (plan actions, which hold password *sources* only, never passwords) is the applier's
business (:mod:`reconcile.apply.intents`). :class:`FileJournal` and
:class:`~reconcile.state.postgres.PostgresJournal` both implement :class:`Journal`.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reconcile.errors import StateError, first_invalid
from reconcile.fsutil import append_whole

_OWN_KEYS = frozenset({"kind", "id", "call", "time", "passwords"})
"""The keys of an intent line the journal owns; every other key is the payload's."""


class JournalEntry(BaseModel):
    """One non-idempotent call about to be made, with the caller's payload kept as it was given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    call: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    passwords: str | None = None
    """For creates with generated passwords: the pending file holding the candidates (a path only)."""
    payload: dict[str, Any] = Field(default_factory=dict)
    """JSON values only; written beside the journal's own keys, as intent lines always were."""

    @field_validator("payload")
    @classmethod
    def _no_own_keys(cls, payload: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(_OWN_KEYS & payload.keys())
        if clash:
            raise ValueError(f"payload keys {clash} are the journal's own")
        return payload

    def to_json_dict(self) -> dict[str, Any]:
        """The intent line: ``kind``, ``id``, ``call``, ``time``, the payload's keys, ``passwords``."""
        own = self.model_dump(mode="json", exclude={"payload", "passwords"})
        return {"kind": "intent", **own, **self.payload, "passwords": self.passwords}

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> JournalEntry:
        """Read an intent line (raises :class:`ValidationError` when it is not one)."""
        own = {k: v for k, v in data.items() if k in _OWN_KEYS and k != "kind"}
        if data.get("kind", "intent") != "intent":
            raise ValueError(f"kind {data.get('kind')!r} is not 'intent'")
        payload = {k: v for k, v in data.items() if k not in _OWN_KEYS}
        return cls.model_validate({**own, "payload": payload})


class Journal(Protocol):
    """Durable intents: appended before the call they announce, settled once its outcome is saved."""

    def append(self, entry: JournalEntry) -> None:
        """Make ``entry`` durable (it is, when this returns)."""

    def settle(self, entry_id: str) -> None:
        """Record that the outcome of the entry ``entry_id`` is in state."""

    def clear(self) -> None:
        """Forget every entry (every intent is settled)."""

    def unsettled(self) -> list[JournalEntry]:
        """Return the entries not settled yet, oldest first."""


class _Settled(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["settled"] = "settled"
    id: str


def journal_path_for(state_path: Path, environment: str) -> Path:
    """``<state folder>/<environment>.journal.jsonl``."""
    return state_path.parent / f"{environment}.journal.jsonl"


class FileJournal:
    """Append-only intent lines with fsync; only one run writes it (it runs under the state lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open: set[str] = set()
        """The intents this object appended and has not settled: while one is left, a settle
        needs no read to know the journal cannot be emptied yet."""
        self._emptied = False
        """This object emptied the file: every line in it since is one it wrote, so once
        :attr:`_open` is empty nothing is, and a settle needs no read to know it."""

    def _append(self, line: dict[str, Any]) -> None:
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode("utf-8")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            append_whole(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, entry: JournalEntry) -> None:
        """Append ``entry`` and fsync it."""
        self._append(entry.to_json_dict())
        self._open.add(entry.id)

    def settle(self, entry_id: str) -> None:
        """Append the settled line of ``entry_id``; empty the file when nothing is left open.

        Whether anything is left is read from the file (what was written is the truth), except
        while an intent this object appended is still open: then the file cannot be emptied, and
        reading it is skipped. An apply that keeps the next group's intent open while it settles
        this one read the whole, growing file on every settle: quadratic in the run's length.
        Once this object has emptied the file, it wrote every line in it, and no read is needed
        either (an apply read and parsed its last create's 100-user intent at every batch).
        """
        self._append(_Settled(id=entry_id).model_dump())
        self._open.discard(entry_id)
        if not self._open and (self._emptied or not self.unsettled()):
            self.clear()

    def clear(self) -> None:
        """Empty the journal file."""
        self._open.clear()
        fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._emptied = True

    def unsettled(self) -> list[JournalEntry]:
        """Return the intents without a settled line, oldest first."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        open_entries: dict[str, JournalEntry] = {}
        lines = text.splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            data = self._parse(line, number, last=number == len(lines))
            if data is None:
                continue
            try:
                if data.get("kind") == "settled":
                    open_entries.pop(_Settled.model_validate(data).id, None)
                else:
                    entry = JournalEntry.from_json_dict(data)
                    open_entries[entry.id] = entry
            except ValidationError as exc:
                raise StateError(
                    f"journal {self.path} line {number} is not a valid entry ({first_invalid(exc)}); it is "
                    "written only by reconcile: inspect it, then remove it if no run is in progress"
                ) from None
            except ValueError as exc:
                raise StateError(
                    f"journal {self.path} line {number} is not a valid entry ({exc}); it is written only "
                    "by reconcile: inspect it, then remove it if no run is in progress"
                ) from None
        # An intent this object did not write (another run's, between two of this one's locks):
        # what is in the file is no longer only this object's.
        self._emptied = self._emptied and open_entries.keys() <= self._open
        return list(open_entries.values())

    def _parse(self, line: str, number: int, *, last: bool) -> dict[str, Any] | None:
        """The JSON object on ``line``; None for a torn last line."""
        try:
            data = json.loads(line)
        except ValueError:
            if last:
                # A torn last line: the process died while appending, before the call it
                # announced was made (the call always follows a completed fsync).
                return None
            raise StateError(
                f"journal {self.path} line {number} is not JSON; it is written only by reconcile: "
                "inspect it, then remove it if no run is in progress"
            ) from None
        if not isinstance(data, dict):
            raise StateError(f"journal {self.path} line {number} is not a valid entry: not a JSON object")
        return data
