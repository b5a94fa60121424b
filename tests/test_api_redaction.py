"""Secrets a server echoes are replaced by [redacted] in every form, before anything reads the answer."""

from __future__ import annotations

import httpx
import pytest
from api_support import BASE, SECRET_PASSWORD, SECRET_SEC, SECRET_TOKEN, Script, make_client

from reconcile.api.redact import redact, request_secrets
from reconcile.errors import ApiError, TransportError


def test_a_secret_is_redacted_raw_and_json_escaped_once_and_twice() -> None:
    secret = 'pa"ss\\word'  # p a " s s \ w o r d
    once = 'pa\\"ss\\\\word'  # inside a JSON string
    twice = 'pa\\\\\\"ss\\\\\\\\word'  # inside a JSON string inside a JSON string
    text = f"raw {secret} once {once} twice {twice} end"
    assert redact(text, [secret]) == "raw [redacted] once [redacted] twice [redacted] end"


def test_longer_forms_and_secrets_go_first_so_no_part_of_one_is_left() -> None:
    # '\cdef' escaped twice is '\\\\cdef': replacing the raw form first would leave three backslashes.
    assert redact("<\\\\\\\\cdef>", ["\\cdef"]) == "<[redacted]>"
    # One secret inside another: the longer goes first, whatever their alphabetical order.
    assert redact("<aazzzzaa>", ["zzzz", "aazzzzaa"]) == "<[redacted]>"


def test_secrets_shorter_than_four_characters_are_left_alone() -> None:
    # Redacting "abc" would garble ordinary words; real secrets are longer.
    assert redact("pin 1234, code abc", ["1234", "abc"]) == "pin [redacted], code abc"


def request(content: bytes = b"", authorization: str | None = None) -> httpx.Request:
    headers = {"Authorization": authorization} if authorization else {}
    return httpx.Request("POST", f"{BASE}/user/x", headers=headers, content=content)


@pytest.mark.parametrize(
    ("sent", "secrets"),
    [
        (request(authorization="Bearer tok-123"), ["tok-123"]),
        (request(authorization="bearer tok-123"), ["tok-123"]),
        (request(authorization="Bearer tok 123"), ["tok 123"]),  # all that follows the scheme
        (request(authorization="Basic dXNlcjpwYXNz"), []),
        (request(), []),
        (request(b'{"users": [{"password": "Pw-One-1"}, {"name": "x"}, {"password": "Pw-Two-2"}]}'),
         ["Pw-One-1", "Pw-Two-2"]),
        (request(b'{"name": "partner-admin", "password": "Top-Level-1"}'), ["Top-Level-1"]),
        (request(b'["password"]'), []),
        (request(b"password=not-json"), []),
    ],
)  # fmt: skip
def test_the_secrets_of_a_request_are_its_bearer_token_and_passwords(
    sent: httpx.Request, secrets: list[str]
) -> None:
    assert request_secrets(sent) == secrets


def test_an_echoed_account_password_and_api_secret_never_reach_the_error() -> None:
    """The account's own secrets are not in the request, but a server may still quote them."""
    echo = f"login {SECRET_PASSWORD} with {SECRET_SEC} and token {SECRET_TOKEN} refused"
    client, _ = make_client(Script({"/user/list": [httpx.Response(400, json={"errorText": echo})]}))
    with pytest.raises(ApiError) as caught:
        client.list_users()
    assert "login [redacted] with [redacted] and token [redacted] refused" in str(caught.value)


def test_a_redacted_answer_keeps_its_headers_and_a_true_length() -> None:
    client, _ = make_client(Script())
    sent = request(authorization="Bearer tok-123")
    answer = httpx.Response(
        400, headers={"Content-Type": "application/json"}, content=b'{"errorText": "tok-123 is bad"}'
    )
    redacted = client._redacted(answer, sent)
    assert redacted.content == b'{"errorText": "[redacted] is bad"}'
    assert redacted.headers["Content-Type"] == "application/json"
    assert redacted.headers["Content-Length"] == str(len(redacted.content))
    assert redacted.request is sent


def test_an_answer_that_is_not_utf8_is_still_reported() -> None:
    client, _ = make_client(Script({"/user/list": [httpx.Response(502, content=b"\xff\xfe bad gateway")]}))
    with pytest.raises(TransportError, match="HTTP 502"):
        client.list_users()


def test_a_client_without_login_still_reports_what_the_server_said() -> None:
    from reconcile.api.client import PartnerClient

    script = Script({"/user/list": [httpx.Response(400, json={"errorText": "closed for maintenance"})]})
    client = PartnerClient(BASE, transport=httpx.MockTransport(script), sleep=lambda _: None)
    with pytest.raises(ApiError, match="closed for maintenance"):
        client.list_users()
