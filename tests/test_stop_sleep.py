"""A stop ends the waits of a run's clients at once (pacing slots, retries), and nothing waits past it."""

from __future__ import annotations

import threading
import time

import pytest

from reconcile.api.pacing import Pacer
from reconcile.apply.stop import RunStopped, Stop


def test_a_sleep_ends_when_the_run_stops_and_raises_the_runs_error() -> None:
    stop = Stop()
    threading.Timer(0.05, stop.trip, args=("SIGTERM",)).start()
    started = time.monotonic()
    with pytest.raises(RunStopped, match="SIGTERM"):
        stop.sleep(30)
    assert time.monotonic() - started < 5


def test_a_sleep_without_a_stop_waits_its_time() -> None:
    stop = Stop()
    started = time.monotonic()
    stop.sleep(0.05)
    assert time.monotonic() - started >= 0.04
    assert stop.reason is None


def test_a_stopped_run_does_not_sleep_at_all() -> None:
    stop = Stop()
    stop.trip("captcha")
    with pytest.raises(RunStopped):
        stop.sleep(0)


def test_a_paced_call_waiting_for_its_slot_is_never_sent_after_the_stop() -> None:
    """The pacer waits through the run's stop: a call queued behind the hour is dropped, not sent."""
    stop = Stop()
    sent: list[str] = []
    path = "/user/createevaluationusers"
    pacer = Pacer(sleep=stop.sleep, limits={path: 3})
    for _ in range(3):
        with pacer.paced(path):
            sent.append("early")
    threading.Timer(0.05, stop.trip, args=("SIGTERM",)).start()
    started = time.monotonic()
    with pytest.raises(RunStopped), pacer.paced(path):
        sent.append("late")
    assert "late" not in sent
    assert time.monotonic() - started < 5


def test_a_wait_longer_than_the_platform_allows_is_a_wait_not_a_crash() -> None:
    stop = Stop()
    threading.Timer(0.05, stop.trip, args=("SIGTERM",)).start()
    with pytest.raises(RunStopped):
        stop.sleep(1e300)  # RECONCILE_TIME_SCALE=1e-7 makes an hour about 1e10 s
