"""The client's cheap per-call pipeline: retries as tenacity ran them."""

from __future__ import annotations

import httpx
import pytest
from api_support import BASE, Script, make_client

from reconcile.errors import TransportError


def test_a_call_that_succeeds_at_once_neither_waits_nor_reports_a_retry() -> None:
    events: list[str] = []
    script = Script({"/user/list": [httpx.Response(200, json=[])]})
    client, sleeps = make_client(script, on_event=lambda e: events.append(e.kind))
    assert client.list_users() == []
    assert sleeps == [] and "retry" not in events and len(script.calls("/user/list")) == 1


def test_a_first_failure_is_tenacitys_first_attempt() -> None:
    """Attempt numbers, waits and the bound count the first (untracked) attempt, as before."""
    messages: list[str] = []
    script = Script({"/user/list": [httpx.Response(500, headers={"Retry-After": "3"})]})
    client, sleeps = make_client(
        script, max_attempts=4, on_event=lambda e: messages.append(e.message) if e.kind == "retry" else None
    )
    with pytest.raises(TransportError, match="HTTP 500"):
        client.list_users()
    assert len(script.calls("/user/list")) == 4 and sleeps == [3.0, 3.0, 3.0]
    assert messages == [
        f"user/list: retrying in 3.0 s (attempt {n}): user/list: the API answered HTTP 500 (no body)"
        for n in (2, 3, 4)
    ]


def test_one_attempt_allowed_means_no_retry_after_the_first_failure() -> None:
    script = Script({"/user/list": [httpx.Response(503), httpx.Response(200, json=[])]})
    client, sleeps = make_client(script, max_attempts=1)
    with pytest.raises(TransportError, match="HTTP 503"):
        client.list_users()
    assert len(script.calls("/user/list")) == 1 and sleeps == []


def test_a_first_wait_longer_than_the_run_waits_is_not_retried() -> None:
    script = Script({"/user/list": [httpx.Response(429, headers={"Retry-After": "900"})]})
    client, sleeps = make_client(script, max_retry_after=600)
    with pytest.raises(Exception, match="longer than this run waits"):
        client.list_users()
    assert len(script.calls("/user/list")) == 1 and sleeps == []


def test_the_endpoint_base_is_kept_in_the_url() -> None:
    script = Script({"/user/list": [httpx.Response(200, json=[])]})
    client, _ = make_client(script)
    client.list_users()
    assert str(script.calls("/user/list")[0].url) == f"{BASE}/user/list"
