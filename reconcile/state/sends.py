"""When this state's limited calls were sent, so the next run's pacing starts where the last one was.

The partner API counts ``createevaluationusers`` (and logins) per hour. A run killed in the
middle of its hour leaves that hour half spent; the next run reads what was sent in the last hour
and waits for the slots that are still taken instead of sending a burst the API refuses (the
pacer, :mod:`reconcile.api.pacing`, is the reader). Each call is recorded *before* it is sent
(fsynced, like a journal intent) and again when its answer arrives; a call recorded as sent but
never answered counts from the moment the next run reads it, since it may have reached the API as
late as that.

:class:`FileSendLog` keeps ``<state folder>/<environment>.pacing.jsonl`` (one JSON object a
line); :class:`reconcile.state.postgres.PostgresSendLog` a table. Both implement
:class:`reconcile.api.pacing.SendLog`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reconcile.api.pacing import SendLog
from reconcile.fsutil import append_whole, atomic_write_text

__all__ = ["KEEP", "FileSendLog", "SendLog", "recent", "sends_path_for"]

KEEP = 3600.0
"""Seconds of history kept: the longest window (an hour of real time, at time scale 1)."""


def sends_path_for(state_path: Path, environment: str) -> Path:
    """``<state folder>/<environment>.pacing.jsonl``."""
    return state_path.parent / f"{environment}.pacing.jsonl"


def recent(calls: Iterable[tuple[str, float, float | None]], now: float) -> list[tuple[str, float]]:
    """(path, time) of each (path, sent, answered) call of the last hour; unanswered counts at ``now``.

    So does one answered after ``now`` (or at no number): the clock was set back since, and a time
    it has not reached would hold its slot for as long as the jump; from now, an hour at most.
    """
    counted = [
        (path, answered if answered is not None and answered <= now else now)
        for path, _sent, answered in calls
    ]
    return [(path, at) for path, at in counted if at > now - KEEP]


class FileSendLog:
    """Send times as JSON lines beside the state file; only the run holding the state lock writes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, now: float) -> list[tuple[str, float]]:
        """The calls of the last hour; rewrites the file with only those (it never grows past an hour)."""
        calls: dict[str, tuple[str, float, float | None]] = {}
        for line in self._lines():
            key, sent, answered = line["call"], line.get("sent"), line.get("answered")
            if isinstance(sent, (int, float)) and isinstance(line.get("path"), str):
                calls[key] = (line["path"], float(sent), None)
            if key in calls and isinstance(answered, (int, float)):
                calls[key] = (calls[key][0], calls[key][1], float(answered))
        kept = recent(calls.values(), now)
        if kept or self.path.exists():
            records = [
                {"call": f"read-{i}", "path": p, "sent": t, "answered": t} for i, (p, t) in enumerate(kept)
            ]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))
        return kept

    def sent(self, key: str, path: str, at: float) -> None:
        """Append and fsync that ``key`` goes to ``path`` (before it is sent)."""
        self._append({"call": key, "path": path, "sent": at}, sync=True)

    def answered(self, key: str, at: float) -> None:
        """Append that ``key`` was answered (unsynced: if lost, the call counts from the next read)."""
        self._append({"call": key, "answered": at}, sync=False)

    def _append(self, line: dict[str, Any], *, sync: bool) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            append_whole(fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _lines(self) -> list[dict[str, Any]]:
        """The file's records; a line that is not one (torn by a kill while appending) is skipped."""
        try:
            # Damaged past reading as text, the lines it still holds count (the rest are skipped).
            text = self.path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        lines: list[dict[str, Any]] = []
        for raw in text.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("call"), str):
                lines.append(line)
        return lines
