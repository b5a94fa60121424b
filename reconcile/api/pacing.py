"""Client-side pacing: stay within the partner API's published hourly limits instead of hitting them.

A sliding one-hour window per path (DESIGN §7). Kept small rather than taken from a rate-limit
library because the caller needs what those hide: the exact time a wait ends (for the
"rate limit, waiting" event and its ``until``), an injected clock and sleep for tests, a time
scale for the simulator, and thread safety for the applier's concurrent updates.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Mapping

from reconcile.api.events import OnEvent, emit_wait

PUBLISHED_LIMITS: Mapping[str, int] = {
    "/user/createevaluationusers": 100,
    "/auth/accesstokenrequest": 5,
    "/auth/renewaccesstoken": 15,
    "/accountRiskStatus/switchriskcategory": 5000,
}
"""Requests per hour per path (lower-case contract paths), from the partner documentation."""

HOUR = 3600.0


class Pacer:
    """Make each call to a limited path wait until the path has a free slot in the last hour.

    ``time_scale`` shortens the hour (the simulator's ``time_scale``); ``clock`` is monotonic,
    ``wallclock`` (epoch seconds) only dates the events.
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
        self.window = HOUR / time_scale
        self.clock = clock
        self.wallclock = wallclock
        self.sleep = sleep
        self.on_event = on_event
        self._sent: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def acquire(self, path: str) -> float:
        """Wait for a slot on ``path`` and take it; return the seconds waited."""
        key = path.lower()
        limit = self.limits.get(key)
        if limit is None:
            return 0.0
        with self._lock:
            now = self.clock()
            sent = self._sent.setdefault(key, [])
            del sent[: bisect.bisect_right(sent, now - self.window)]
            # Slots are reserved under the lock and waited for outside it, so concurrent callers
            # queue in order without blocking other paths.
            start = now if len(sent) < limit else sent[-limit] + self.window
            bisect.insort(sent, start)
        wait = start - now
        if wait <= 0:
            return 0.0
        emit_wait(
            self.on_event,
            "rate_limit_wait",
            key,
            f"{key}: rate limit of {limit} per hour, waiting",
            wait,
            self.wallclock,
        )
        self.sleep(wait)
        return wait
