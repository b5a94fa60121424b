"""Client-side pacing within the published hourly limits, on an injected clock."""

from __future__ import annotations

import threading

import httpx
from api_support import Script, make_client

from reconcile.api.events import ClientEvent
from reconcile.api.models import EvaluationUser
from reconcile.api.pacing import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_sixth_login_in_an_hour_waits_for_the_first_to_age_out() -> None:
    clock = Clock()
    events: list[ClientEvent] = []
    pacer = Pacer(clock=clock, sleep=clock.sleep, wallclock=lambda: 0.0, on_event=events.append)
    for _ in range(5):
        clock.now += 60
        assert pacer.acquire("/auth/accesstokenrequest") == 0
    assert pacer.acquire("/auth/AccessTokenRequest") == 3600 - 4 * 60
    assert clock.slept == [3600 - 4 * 60]
    (event,) = events
    assert event.message == "/auth/accesstokenrequest: rate limit of 5 per hour, waiting"
    assert event.until == 3600 - 4 * 60


def test_unlimited_paths_never_wait() -> None:
    clock = Clock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        pacer.acquire("/user/list")
    assert clock.slept == []


def test_time_scale_shortens_the_hour() -> None:
    clock = Clock()
    pacer = Pacer({"/x": 2}, time_scale=60, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        pacer.acquire("/x")
    assert clock.slept == [60.0]


def test_concurrent_callers_get_distinct_slots() -> None:
    clock = Clock()
    waits: list[float] = []
    lock = threading.Lock()
    pacer = Pacer({"/x": 2}, clock=clock, sleep=lambda s: None)

    def take() -> None:
        waited = pacer.acquire("/x")
        with lock:
            waits.append(waited)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == [0, 0, 3600, 3600, 7200, 7200]


def test_the_client_paces_creates_and_reports_the_wait() -> None:
    clock = Clock()
    events: list[ClientEvent] = []
    pacer = Pacer({"/user/createevaluationusers": 2}, clock=clock, sleep=clock.sleep, on_event=events.append)
    script = Script({"/user/createevaluationusers": [httpx.Response(200, json={"results": [{"userId": 1}]})]})
    client, _ = make_client(script, pacer=pacer, on_event=events.append)
    user = EvaluationUser(
        name="alice", email="a@example.com", password="Pw-123456!", firstName="A", lastName="B"
    )
    for _ in range(3):
        client.create_evaluation_users([user])
    assert clock.slept == [3600.0]
    assert [e.kind for e in events if e.kind == "rate_limit_wait"] == ["rate_limit_wait"]
