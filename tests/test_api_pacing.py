"""Client-side pacing within the published hourly limits, on an injected clock."""

from __future__ import annotations

import json
import logging
import threading

import httpx
import pytest
from api_support import NOW, SECRET_TOKEN, Script, make_client, token_answer

from reconcile.api.events import ClientEvent
from reconcile.api.models import EvaluationUser
from reconcile.api.pacing import Pacer
from reconcile.errors import OutcomeUnknown


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


class Log:
    """An in-memory SendLog: what ``remember`` reads, and what the pacer records."""

    def __init__(self, history: list[tuple[str, float]]) -> None:
        self.history = history
        self.events: list[tuple[str, ...]] = []

    def load(self, now: float) -> list[tuple[str, float]]:
        return list(self.history)

    def sent(self, key: str, path: str, at: float) -> None:
        self.events.append(("sent", key, path))

    def answered(self, key: str, at: float) -> None:
        self.events.append(("answered", key))


def test_a_slot_counts_from_the_answer_so_a_slow_call_never_shortens_the_servers_hour() -> None:
    clock = Clock()
    pacer = Pacer({"/x": 1}, clock=clock, sleep=clock.sleep)
    with pacer.paced("/x"):
        clock.now += 30  # the answer took 30 s: the server may have counted it at any time in them
    pacer.acquire("/x")
    assert clock.slept == [3600.0]


def test_the_hour_of_an_earlier_run_counts_and_every_call_is_recorded_before_it_is_sent() -> None:
    clock = Clock()
    wall = 1_800_000_000.0
    # 100 creates of a killed run, the oldest 20 minutes ago; one of another path; one unknown path.
    history = [("/user/createevaluationusers", wall - 1200 + i) for i in range(100)]
    log = Log([*history, ("/auth/accesstokenrequest", wall - 10), ("/not/limited", wall)])
    pacer = Pacer(clock=clock, sleep=clock.sleep, wallclock=lambda: wall + (clock.now - 1000.0))
    pacer.remember(log)
    with pacer.paced("/user/createevaluationusers"):
        assert log.events == [("sent", log.events[0][1], "/user/createevaluationusers")]
    assert clock.slept == [3600.0 - 1200]
    assert log.events[-1] == ("answered", log.events[0][1])
    assert pacer.acquire("/user/list") == 0 and len(log.events) == 2  # unlimited calls are not recorded


def test_the_forecast_says_when_the_next_and_the_last_create_may_go() -> None:
    clock = Clock()
    pacer = Pacer({"/x": 100}, time_scale=60, clock=clock, sleep=clock.sleep, wallclock=lambda: clock.now + 5)
    for _ in range(100):
        pacer.acquire("/x")
    clock.now += 10  # the hour is 60 s at this scale
    first, last = pacer.forecast("/x", 150) or (0.0, 0.0)
    assert first == 1060.0 + 5 and last == 1120.0 + 5  # 100 at the next hour, 50 at the one after
    assert pacer.forecast("/x", 0) is None and pacer.forecast("/unlimited", 10) is None


def test_an_idle_wait_renews_the_token_it_would_outlive() -> None:
    clock = Clock()
    clock.now = NOW
    script = Script(
        {
            "/user/createevaluationusers": [httpx.Response(200, json={"results": [{"userId": 1}]})],
            "/auth/accesstokenrequest": [token_answer(expires=NOW + 45 * 60)],
            "/auth/renewaccesstoken": [token_answer("tok-renewed", NOW + 2 * 3600)],
        }
    )
    pacer = Pacer({"/user/createevaluationusers": 1}, clock=clock, sleep=clock.sleep, wallclock=clock)
    client, _ = make_client(script, pacer=pacer, now=clock)
    user = EvaluationUser(
        name="alice", email="a@example.com", password="Pw-123456!", firstName="A", lastName="B"
    )
    client.create_evaluation_users([user])
    client.create_evaluation_users([user])  # waits an hour; the token lives 45 minutes
    assert client.auth is not None and (client.auth.logins, client.auth.renewals) == (1, 1)
    assert clock.slept == [30 * 60, 30 * 60]  # renewed 15 minutes before it expired
    last = script.calls("/user/createevaluationusers")[-1]
    assert last.headers["Authorization"] == "Bearer tok-renewed"


def test_waiting_until_a_slot_is_free_does_not_take_it() -> None:
    clock = Clock()
    pacer = Pacer({"/x": 1}, clock=clock, sleep=clock.sleep)
    pacer.acquire("/x")
    assert pacer.ready("/x") == 3600.0
    assert pacer.acquire("/x") == 0  # the slot waited for is still there to take
    assert pacer.ready("/unlimited") == 0


def test_asking_whether_a_slot_is_free_neither_waits_nor_takes_it() -> None:
    clock = Clock()
    pacer = Pacer({"/x": 2}, clock=clock, sleep=clock.sleep)
    assert pacer.free("/x") and pacer.free("/unlimited")
    pacer.acquire("/x")
    assert pacer.free("/x")
    pacer.acquire("/x")
    assert not pacer.free("/x") and clock.slept == []
    clock.now += 3600.0
    assert pacer.free("/x") and pacer.acquire("/x") == 0


def test_a_send_time_the_clock_has_not_reached_counts_from_now_not_from_the_future(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from reconcile.state.sends import FileSendLog

    wall = 1_800_000_000.0
    path = tmp_path / "sim.pacing.jsonl"
    # The clock ran a year ahead while these were answered, then was set right; and garbage.
    lines = [
        {"call": f"c{i}", "path": "/user/createevaluationusers", "sent": wall + 3e7, "answered": wall + 3e7}
        for i in range(100)
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    text += '{"call": "inf", "path": "/user/createevaluationusers", "sent": 1, "answered": Infinity}\n'
    text += '{"call": "nan", "path": "/user/createevaluationusers", "sent": NaN, "answered": NaN}\n'
    text += '{"call": "str", "path": "/user/createevaluationusers", "sent": "soon"}\n[1, 2]\n{"call'
    path.write_text(text)
    kept = FileSendLog(path).load(wall)
    assert all(at <= wall for _path, at in kept)
    clock = Clock()
    pacer = Pacer(clock=clock, sleep=clock.sleep, wallclock=lambda: wall + (clock.now - 1000.0))
    pacer.remember(FileSendLog(path))
    pacer.acquire("/user/createevaluationusers")
    assert clock.slept == [3600.0]  # an hour at most, never a year


def test_a_send_log_damaged_past_reading_as_text_counts_what_it_still_holds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from reconcile.state.sends import FileSendLog

    now = 1_800_000_000.0
    path = tmp_path / "sim.pacing.jsonl"
    good = {"call": "a", "path": "/user/createevaluationusers", "sent": now - 9, "answered": now - 9}
    path.write_bytes(b"\xff\xfe not text\n" + json.dumps(good).encode() + b"\n")
    assert FileSendLog(path).load(now) == [("/user/createevaluationusers", now - 9)]


def test_the_client_paces_only_limited_paths_and_matches_them_regardless_of_case() -> None:
    """An unlimited call skips the pacer (its block would only yield 0); a limited one takes a slot."""
    clock = Clock()
    pacer = Pacer({"/User/CreateEvaluationUsers": 1}, clock=clock, sleep=clock.sleep)
    assert pacer.limits_path("/user/createevaluationusers") and not pacer.limits_path("/user/list")
    paced: list[str] = []
    real = pacer.paced
    pacer.paced = lambda path, **kw: (paced.append(path), real(path, **kw))[1]  # type: ignore[method-assign]
    created = httpx.Response(200, json={"results": [{"userId": 1}]})
    script = Script({"/user/list": [httpx.Response(200, json=[])], "/user/createevaluationusers": [created]})
    client, _ = make_client(script, pacer=pacer)
    client.list_users()
    client.create_evaluation_users(
        [EvaluationUser(name="a", email="a@example.com", password="Pa55word!x", firstName="A", lastName="B")]
    )
    # The login is paced too, by the auth.
    assert paced == ["/auth/accesstokenrequest", "/user/createevaluationusers"]


def test_a_renewal_that_failed_during_a_wait_does_not_make_the_next_create_resendable() -> None:
    """A create whose connection drops once sent is not resent, though this thread's renewal failed."""
    clock = Clock()
    clock.now = NOW
    script = Script(
        {
            "/user/createevaluationusers": [
                httpx.Response(200, json={"results": [{"userId": 1}]}),
                httpx.RemoteProtocolError("dropped after the server applied it"),
                httpx.Response(200, json={"results": [{"userId": 2}]}),
            ],
            "/auth/accesstokenrequest": [
                token_answer(expires=NOW + 45 * 60),
                token_answer("second", NOW + 3 * 3600),
            ],
            "/auth/renewaccesstoken": [httpx.ConnectError("the endpoint was down during the wait")],
            "/user/list": [httpx.Response(200, json=[])],
        }
    )
    pacer = Pacer({"/user/createevaluationusers": 1}, clock=clock, sleep=clock.sleep, wallclock=clock)
    client, _ = make_client(script, pacer=pacer, now=clock)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.slept) == 2:  # after this thread's renewal failed, another thread logs in
            other = threading.Thread(target=client.list_users)
            other.start()
            other.join()

    pacer.sleep = sleep
    user = EvaluationUser(
        name="alice", email="a@example.com", password="Pw-123456!", firstName="A", lastName="B"
    )
    client.create_evaluation_users([user])
    with pytest.raises(OutcomeUnknown):
        client.create_evaluation_users([user])  # waits an hour with the renewal failing on the way
    assert len(script.calls("/auth/renewaccesstoken")) == 1
    assert len(script.calls("/auth/accesstokenrequest")) == 2
    assert script.calls("/user/createevaluationusers")[-1].headers["Authorization"] == "Bearer second"
    assert len(script.calls("/user/createevaluationusers")) == 2  # resent, it would be a duplicate trader


def test_a_renewal_that_failed_during_a_wait_logs_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    # h11 (httpx's transport, used behind a proxy) quotes the header value it refuses to write.
    clock = Clock()
    clock.now = NOW
    refused = httpx.LocalProtocolError(f"Illegal header value b'Bearer {SECRET_TOKEN}\\r\\n'")
    script = Script(
        {
            "/user/createevaluationusers": [httpx.Response(200, json={"results": [{"userId": 1}]})],
            "/auth/accesstokenrequest": [token_answer(expires=NOW + 45 * 60), token_answer("second")],
            "/auth/renewaccesstoken": [refused],
        }
    )
    pacer = Pacer({"/user/createevaluationusers": 1}, clock=clock, sleep=clock.sleep, wallclock=clock)
    client, _ = make_client(script, pacer=pacer, now=clock)
    user = EvaluationUser(
        name="alice", email="a@example.com", password="Pw-123456!", firstName="A", lastName="B"
    )
    with caplog.at_level(logging.INFO):
        client.create_evaluation_users([user])
        client.create_evaluation_users([user])
    assert "renewing the access token during a wait failed: Illegal header value" in caplog.text
    assert SECRET_TOKEN not in caplog.text
