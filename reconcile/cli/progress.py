"""Progress of a long apply on stderr: a line per phase, with the paced ETA of the creates.

On a terminal the lines are redrawn in place (rich's live display); without one (a pipeline's
log) each change is printed as a plain line, at most one a second per phase, so a ten-hour run
leaves a readable log::

    creates 3,400/20,000 · next slot 14:05 UTC · done ≈ 19:40 UTC
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from reconcile.api.events import ClientEvent
from reconcile.cli.output import echo_err

_LABELS = {"create": "creates", "update": "updates", "grant": "grants", "cancel": "cancellations"}


def clock_time(epoch: float) -> str:
    """``14:05 UTC``: when something happens, to the minute."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M UTC")


@dataclass
class _Phase:
    name: str
    total: int
    started: float
    done: int = 0
    next_slot: float | None = None
    finish: float | None = None
    printed: float = 0.0

    def line(self, now: float) -> str:
        """``creates 3,400/20,000 · next slot 14:05 UTC · done ≈ 19:40 UTC``."""
        text = f"{_LABELS.get(self.name, self.name)} {self.done:,}/{self.total:,}"
        finish = self.finish
        if finish is None and 0 < self.done < self.total:
            rate = self.done / max(now - self.started, 1e-6)
            finish = now + (self.total - self.done) / rate
        if self.done < self.total and self.next_slot is not None and self.next_slot > now + 1:
            text += f" · next slot {clock_time(self.next_slot)}"
        if self.done < self.total and finish is not None:
            text += f" · done ≈ {clock_time(finish)}"
        return text


class ApplyProgress:
    """Implements the applier's progress, the paced schedule and the client's events (see module)."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        live: bool | None = None,
        clock: Callable[[], float] = time.time,
        interval: float = 1.0,
    ) -> None:
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)()) if live is None else live
        self.clock = clock
        self.interval = interval
        self.phases: dict[str, _Phase] = {}
        self._current: _Phase | None = None
        self._display: _Live | None = None

    def phase(self, name: str, total: int) -> None:
        """Start (or go back to) the line of phase ``name``."""
        if name not in self.phases:
            self.phases[name] = _Phase(name, total, self.clock())
        self._current = self.phases[name]
        self._current.total = total
        self._show(self._current, force=True)

    def advance(self, done: int) -> None:
        if self._current is not None:
            self._current.done = done
            self._show(self._current, force=done >= self._current.total)

    def schedule(self, name: str, next_slot: float, finish: float) -> None:
        """When the phase's next limited call may go and when its last may (epoch seconds)."""
        phase = self.phases.get(name)
        if phase is not None:
            phase.next_slot, phase.finish = next_slot, finish
            self._show(phase)

    def client_event(self, event: ClientEvent) -> None:
        """Say what the client is waiting for (a penalty, a retry, a login's slot) and until when."""
        if event.kind not in ("rate_limit_wait", "penalty_wait", "retry"):
            return
        creates = self.phases.get("create")
        if event.kind == "rate_limit_wait" and creates is not None and "createevaluationusers" in event.call:
            # The create line says it: "next slot 14:05 UTC" (a wait of a moment is no news).
            creates.next_slot = event.until
            self._show(creates, force=event.seconds >= self.interval)
            return
        until = ""
        # A retry says "retrying in 1.0 s" itself; a wait's message leaves the time to us.
        if event.until is not None and event.kind != "retry":
            until = " until " + datetime.fromtimestamp(event.until, UTC).strftime("%H:%M:%S UTC")
        self._say(f"{event.message}{until}")

    def close(self) -> None:
        """Leave the last lines on the terminal."""
        if self._display is not None:
            self._display.stop()
            self._display = None

    def _show(self, phase: _Phase, *, force: bool = False) -> None:
        now = self.clock()
        if self.live:
            self._live().update([p.line(now) for p in self.phases.values()])
            return
        if force or now - phase.printed >= self.interval:
            phase.printed = now
            self._say(phase.line(now))

    def _say(self, text: str) -> None:
        if self._display is not None:
            self._display.say(text)
        else:
            echo_err(text)

    def _live(self) -> _Live:
        if self._display is None:
            self._display = _Live(self.stream)
        return self._display


class _Live:
    """The lines redrawn in place, one per phase (rich: it handles terminal width, resizes and cursor)."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream, highlight=False)
        self._live = Live(console=self.console, refresh_per_second=4, transient=False)
        self._live.start()

    def update(self, lines: list[str]) -> None:
        from rich.text import Text

        self._live.update(Text("\n".join(lines)))

    def say(self, text: str) -> None:
        """A line above the live display (a penalty, a retry)."""
        from rich.text import Text

        self.console.print(Text(text))

    def stop(self) -> None:
        self._live.stop()
