"""Crash points: places where a test can kill or hold a run (a test-only hook, inert in production).

The crash tests run ``reconcile apply`` in a subprocess with one of these variables set:

- ``RECONCILE_TEST_CRASH_AT=POINT`` or ``POINT:N``: SIGKILL the process the Nth time (default
  1st) it reaches POINT;
- ``RECONCILE_TEST_PAUSE_AT=POINT:PATH``: on reaching POINT, create ``PATH.reached`` and wait
  until PATH exists (to hold a run at a known place, inside its lock say, without guessing at
  timing).

Both are read once, the first time a run reaches any point; unset (always, in production), a
point does nothing.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

CRASH_ENV = "RECONCILE_TEST_CRASH_AT"
PAUSE_ENV = "RECONCILE_TEST_PAUSE_AT"

CHECKPOINTS = (
    "before_create_call",
    "after_create_call",
    "before_create_save",
    "after_create_save",
    "after_updates_call",
    "before_grant_call",
    "after_grant_call",
    "before_cancel_call",
    "after_cancel_call",
    "before_account_create_call",
    "after_account_create_call",
    "after_account_create_save",
    "after_trading_calls",
    "before_reset_call",
    "after_reset_call",
    "before_revoke_call",
)

_reached: Counter[str] = Counter()


class _Armed(NamedTuple):
    crash_at: str | None
    crash_nth: int
    pause_at: str | None
    pause_path: Path | None


@functools.cache
def _armed() -> _Armed:
    crash, _, nth = os.environ.get(CRASH_ENV, "").partition(":")
    pause, _, path = os.environ.get(PAUSE_ENV, "").partition(":")
    return _Armed(
        crash_at=crash or None,
        crash_nth=int(nth or 1),
        pause_at=pause if pause and path else None,
        pause_path=Path(path) if pause and path else None,
    )


def checkpoint(point: str) -> None:
    """Pause, or die with SIGKILL, here when a test armed this point (inert otherwise)."""
    armed = _armed()
    if armed.pause_at == point and armed.pause_path is not None:
        _hold(armed.pause_path)
    if armed.crash_at == point:
        _reached[point] += 1
        if _reached[point] == armed.crash_nth:
            os.kill(os.getpid(), signal.SIGKILL)


def _hold(path: Path) -> None:
    Path(f"{path}.reached").touch()
    deadline = time.monotonic() + 300  # never hang a forgotten test forever
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
