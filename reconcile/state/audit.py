"""The audit log: one JSON line per API action, kept with the state.

:class:`AuditLog` is what the applier uses; each store provides one (``StateStore.audit_log``):
:class:`FileAuditLog` next to a state file, ``PostgresAuditLog`` in the database. Lines hold user
*names*, ids, outcomes and request ids; never passwords, tokens or secrets (callers pass only
those fields, and :meth:`AuditLog.record` takes no free-form payload).
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconcile.fsutil import append_whole

Clock = Callable[[], datetime]

_LINE = json.JSONEncoder(sort_keys=True, default=str)
"""What ``json.dumps(line, sort_keys=True, default=str)`` uses, made once: building the encoder
at each line took two thirds of a line's 5 us."""


class AuditLog(abc.ABC):
    """Where a run records what it did, line by line; a store says where the lines go (``_append``)."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock

    def record(
        self,
        action: str,
        *,
        users: Sequence[str] = (),
        outcome: str,
        request_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one line: time, action, users, outcome, request id and a small detail map."""
        line = audit_line(
            self._clock, action, users=users, outcome=outcome, request_id=request_id, detail=detail
        )
        self._append(line)

    @abc.abstractmethod
    def _append(self, line: dict[str, Any]) -> None:
        """Keep ``line`` (one write, or one committed row: a killed process loses no line)."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Make every line recorded so far durable (the applier calls it before each state save)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Sync and release what the log holds open (recording again reopens it)."""

    @abc.abstractmethod
    def read(self) -> list[dict[str, Any]]:
        """Return every line recorded so far, oldest first."""


def audit_line(
    clock: Clock | None,
    action: str,
    *,
    users: Sequence[str],
    outcome: str,
    request_id: str | None,
    detail: dict[str, Any] | None,
) -> dict[str, Any]:
    """Build the line :meth:`AuditLog.record` appends (``clock`` None = the current UTC time)."""
    now = clock() if clock is not None else datetime.now(UTC)
    line: dict[str, Any] = {
        "time": now.isoformat(timespec="milliseconds"),
        "action": action,
        "users": list(users),
        "outcome": outcome,
    }
    if request_id:
        line["request_id"] = request_id
    if detail:
        line["detail"] = detail
    return line


def audit_path_for(state_path: Path, environment: str) -> Path:
    """``<state folder>/<environment>.audit.jsonl``."""
    return state_path.parent / f"{environment}.audit.jsonl"


class FileAuditLog(AuditLog):
    """Audit lines appended to one file (``state/<environment>.audit.jsonl``, mode 0600).

    Each line is written with one ``write`` as it happens (a killed process loses none);
    :meth:`sync` makes them durable.
    """

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        super().__init__(clock=clock)
        self.path = path
        self._fd: int | None = None
        self._unsynced = False

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def _append(self, line: dict[str, Any]) -> None:
        data = (_LINE.encode(line) + "\n").encode("utf-8")
        # Whole lines, in order (O_APPEND); one cut short by a full disk is cut off again.
        append_whole(self._open(), data)
        self._unsynced = True

    def sync(self) -> None:
        """Make every line recorded so far durable (fsync)."""
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
            self._unsynced = False

    def close(self) -> None:
        """Sync and close the file (recording again reopens it)."""
        self.sync()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self) -> list[dict[str, Any]]:
        """Return every line recorded so far (for ``state show`` and tests)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
