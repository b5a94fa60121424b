"""The client's cheap per-call pipeline: requests byte-identical to httpx's, retries as tenacity ran them."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from api_support import BASE, Script, make_client
from hypothesis import given
from hypothesis import strategies as st

from reconcile.api.client import _HEADERS, PartnerClient
from reconcile.errors import TransportError

_TEXT = st.text(alphabet='az "\\/\n\u00e9\u20ac\U0001f600')  # JSON escapes and non-ASCII (sent as UTF-8)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


def _as_httpx_builds(method: str, url: str, body: Any, request_id: str) -> httpx.Request:
    """The request as httpx assembles it from the client's headers and JSON body (the old way)."""
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    headers = {**_HEADERS, "X-Request-Id": request_id, "Content-Type": "application/json"}
    return httpx.Request(method, url, headers=headers, content=content, extensions={"timeout": {}})


@given(body=st.dictionaries(_TEXT, _JSON, max_size=5), path=st.sampled_from(["/a/b", "/contactInfo/x"]))
def test_a_json_request_is_byte_identical_to_the_one_httpx_assembles(body: dict[str, Any], path: str) -> None:
    client = PartnerClient(
        "http://127.0.0.1:8/v1", transport=httpx.MockTransport(lambda r: httpx.Response(200))
    )
    for _ in range(2):  # the first builds the path's headers, the second reuses them
        built = client._request("POST", path, body, None, "0123abcd")
        expected = _as_httpx_builds("POST", f"http://127.0.0.1:8/v1{path}", body, "0123abcd")
        assert (built.method, built.url, built.headers.raw) == (
            expected.method,
            expected.url,
            expected.headers.raw,
        )
        assert built.content == expected.content and list(built.stream) == list(expected.stream)
        assert isinstance(built.stream, httpx.ByteStream) and built.extensions["timeout"]
    client.close()


def test_a_call_with_both_a_query_and_a_body_is_built_by_httpx_with_both() -> None:
    client = PartnerClient(
        "http://127.0.0.1:8/v1", transport=httpx.MockTransport(lambda r: httpx.Response(200))
    )
    built = client._request("POST", "/a/b", {"x": 1}, {"q": "1"}, "ab")
    expected = httpx.Request(
        "POST",
        "http://127.0.0.1:8/v1/a/b",
        params={"q": "1"},
        headers={**_HEADERS, "X-Request-Id": "ab", "Content-Type": "application/json"},
        content=b'{"x":1}',
    )
    assert (built.url, built.headers.raw, built.content) == (expected.url, expected.headers.raw, b'{"x":1}')


def test_a_read_with_a_query_is_still_built_by_httpx() -> None:
    client = PartnerClient(
        "http://127.0.0.1:8/v1", transport=httpx.MockTransport(lambda r: httpx.Response(200))
    )
    built = client._request("GET", "/user/items", None, {"ids": "1,2"}, "ab")
    expected = httpx.Request(
        "GET",
        "http://127.0.0.1:8/v1/user/items",
        params={"ids": "1,2"},
        headers={**_HEADERS, "X-Request-Id": "ab"},
    )
    assert (built.url, built.headers.raw, built.content) == (expected.url, expected.headers.raw, b"")


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
