"""Client-side pacing: stay within the partner API's published hourly limits instead of hitting them.

A sliding one-hour window per path (DESIGN §7). Kept small rather than taken from a rate-limit
library because the caller needs what those hide: the exact time a wait ends (for the
"rate limit, waiting" event and its ``until``), a forecast of when the next calls may go (the
progress display's ETA), an injected clock and sleep for tests, a time scale for the simulator,
thread safety for the applier's concurrent calls, and a :class:`SendLog` that carries the window
across runs (a run started after a killed one must not spend the hour again).

A slot counts from when its call's answer arrived, not from when it was sent: the server counts
the call somewhere in between, so a window measured from the answer can never be shorter than the
server's. A slot whose answer never came (the run was killed) counts from when the next run
read it.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from reconcile.api.events import OnEvent, emit_wait

PUBLISHED_LIMITS: Mapping[str, int] = {
    "/user/createevaluationusers": 100,
    "/auth/accesstokenrequest": 5,
    "/auth/renewaccesstoken": 15,
    "/accountRiskStatus/switchriskcategory": 5000,
}
"""Requests per hour per path (lower-case contract paths), from the partner documentation."""

HOUR = 3600.0
CREATE_PATH = "/user/createevaluationusers"


class SendLog(Protocol):
    """Where the send times of limited calls outlive the run (kept with the state)."""

    def load(self, now: float) -> list[tuple[str, float]]:
        """(path, epoch seconds) of each call of the last hour; one never answered counts at ``now``."""

    def sent(self, key: str, path: str, at: float) -> None:
        """Record, durably and before it is sent, that call ``key`` to ``path`` goes at ``at``."""

    def answered(self, key: str, at: float) -> None:
        """Record that call ``key`` was answered at ``at`` (its slot counts from then)."""


class Pacer:
    """Make each call to a limited path wait until the path has a free slot in the last hour.

    ``time_scale`` shortens the hour (a simulator's ``--time-scale``); ``clock`` is monotonic,
    ``wallclock`` (epoch seconds) dates events, forecasts and the send log.
    """

    def __init__(
        self,
        limits: Mapping[str, int] = PUBLISHED_LIMITS,
        *,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        on_event: OnEvent | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.limits = {path.lower(): per_hour for path, per_hour in limits.items()}
        self.time_scale = time_scale
        self.window = HOUR / time_scale
        self.clock = clock
        self.wallclock = wallclock
        self.sleep = sleep
        self.on_event = on_event
        self.log: SendLog | None = None
        self._sent: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def remember(self, log: SendLog) -> None:
        """Count the calls ``log`` recorded in the last hour, and record every later one there."""
        now, wall = self.clock(), self.wallclock()
        with self._lock:
            for path, at in log.load(wall):
                key = path.lower()
                if key in self.limits:
                    bisect.insort(self._sent.setdefault(key, []), now - (wall - at))
            self.log = log

    def ready(self, path: str, *, sleep: Callable[[float], None] | None = None) -> float:
        """Wait until ``path`` has a free slot, without taking it; return the seconds waited.

        For a caller that records its intent just before the call: a run killed while it waits
        has nothing to settle. Only right if no other caller takes the slot meanwhile.
        """
        key = path.lower()
        limit = self.limits.get(key)
        if limit is None:
            return 0.0
        start, now = self._free_from(key, limit)
        return self._wait(key, limit, start - now, sleep)

    def free(self, path: str) -> bool:
        """Return whether ``path`` has a free slot now (:meth:`ready` would not wait); take none."""
        key = path.lower()
        limit = self.limits.get(key)
        if limit is None:
            return True
        start, now = self._free_from(key, limit)
        return start <= now

    def _free_from(self, key: str, limit: int) -> tuple[float, float]:
        """When ``key``'s next slot is free, and now (clock seconds)."""
        with self._lock:
            now = self.clock()
            sent = [t for t in self._sent.get(key, []) if t > now - self.window]
            return (now if len(sent) < limit else sent[-limit] + self.window), now

    def limits_path(self, path: str) -> bool:
        """Return whether calls to ``path`` are paced (an unlimited path's :meth:`paced` only yields 0)."""
        return path.lower() in self.limits

    def acquire(self, path: str) -> float:
        """Wait for a slot on ``path`` and take it (counted from now); return the seconds waited."""
        with self.paced(path) as waited:
            return waited

    @contextlib.contextmanager
    def paced(self, path: str, *, sleep: Callable[[float], None] | None = None) -> Iterator[float]:
        """Wait for a slot on ``path``, yield the seconds waited; the slot counts from the block's end."""
        key = path.lower()
        limit = self.limits.get(key)
        if limit is None:
            yield 0.0
            return
        start, now = self._reserve(key, limit)
        wait = self._wait(key, limit, start - now, sleep)
        call = uuid.uuid4().hex
        if self.log is not None:
            self.log.sent(call, key, self.wallclock())
        try:
            yield wait
        finally:
            self._settle(key, start, self.clock())
            if self.log is not None:
                self.log.answered(call, self.wallclock())

    def _wait(self, key: str, limit: int, wait: float, sleep: Callable[[float], None] | None) -> float:
        """Say that a wait of ``wait`` seconds for ``key`` starts, and sleep it; return it (0 if none)."""
        if wait <= 0:
            return 0.0
        message = f"{key}: rate limit of {limit} per hour, waiting"
        emit_wait(self.on_event, "rate_limit_wait", key, message, wait, self.wallclock)
        (sleep or self.sleep)(wait)
        return wait

    def _reserve(self, key: str, limit: int) -> tuple[float, float]:
        """Take the earliest free slot of ``key``; return (its start, now), both on ``clock``."""
        with self._lock:
            now = self.clock()
            sent = self._sent.setdefault(key, [])
            del sent[: bisect.bisect_right(sent, now - self.window)]
            # Slots are reserved under the lock and waited for outside it, so concurrent callers
            # queue in order without blocking other paths.
            start = now if len(sent) < limit else sent[-limit] + self.window
            bisect.insort(sent, start)
        return start, now

    def _settle(self, key: str, start: float, done: float) -> None:
        """Move the slot reserved at ``start`` to ``done``, when the answer arrived."""
        with self._lock:
            sent = self._sent.setdefault(key, [])
            index = bisect.bisect_left(sent, start)
            if index < len(sent) and sent[index] == start:
                del sent[index]
            bisect.insort(sent, max(start, done))

    def forecast(self, path: str, calls: int) -> tuple[float, float] | None:
        """When the next call to ``path`` may go, and when the ``calls``-th may: epoch seconds.

        None when the path is not limited or nothing is left to send.
        """
        key = path.lower()
        limit = self.limits.get(key)
        if limit is None or calls <= 0:
            return None
        with self._lock:
            now = self.clock()
            slots = [t for t in self._sent.get(key, []) if t > now - self.window]
        for _ in range(calls):
            slots.append(now if len(slots) < limit else max(now, slots[-limit] + self.window))
        first, last = slots[-calls], slots[-1]
        wall = self.wallclock()
        return wall + (first - now), wall + (last - now)
