"""Helpers for the API client tests: a scripted MockTransport that checks requests against the contract."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from reconcile.api.auth import TokenAuth
from reconcile.api.client import PartnerClient
from reconcile.api.credentials import Credentials
from reconcile.api.token_cache import TokenCache
from reconcile.contract import validate_request

BASE = "https://partner.test/v1"
SECRET_PASSWORD = "S3cret-Pa55word-XYZ"
SECRET_SEC = "sec-0123456789abcdef-SECRET"
SECRET_TOKEN = "tok-SECRET-ACCESS-TOKEN"
NOW = 1_800_000_000.0

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def credentials() -> Credentials:
    return Credentials(
        username="partner-admin", password=SECRET_PASSWORD, app_id="app", cid="42", sec=SECRET_SEC
    )


def token_answer(token: str = SECRET_TOKEN, expires: float = NOW + 85 * 60) -> httpx.Response:
    return httpx.Response(200, json={"accessToken": token, "expirationTime": iso(expires), "userId": 1})


class Script:
    """Answer requests from a list per path (the last answer repeats); record what was sent.

    Every request is checked against the contract, so a test also proves what we send is valid.
    """

    def __init__(self, answers: dict[str, list[Answer]] | None = None) -> None:
        self.answers = {k.lower(): list(v) for k, v in (answers or {}).items()}
        self.answers.setdefault("/auth/accesstokenrequest", [token_answer()])
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        # A snapshot: the auth flow changes headers of the very object when it resends.
        self.sent.append(
            httpx.Request(
                request.method, request.url, headers=request.headers.copy(), content=request.content
            )
        )
        path = request.url.path.removeprefix("/v1").lower()
        body = json.loads(request.content) if request.content else None
        if request.method == "POST":
            bare = {k: v for k, v in body.items() if k != "p-ticket"} if isinstance(body, dict) else body
            validate_request("POST", path, bare)
        queue = self.answers.get(path)
        if not queue:
            return httpx.Response(404, json={"errorText": f"no scripted answer for {path}"})
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    def calls(self, path: str) -> list[httpx.Request]:
        return [r for r in self.sent if r.url.path.removeprefix("/v1").lower() == path.lower()]

    def bodies(self, path: str) -> list[Any]:
        return [json.loads(r.content) for r in self.calls(path)]


class Sleeps(list[float]):
    """An injected sleep that only records."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(
    script: Script,
    *,
    cache: TokenCache | None = None,
    now: Callable[[], float] = lambda: NOW,
    sleep: Sleeps | None = None,
    creds: Credentials | None = None,
    **kwargs: Any,
) -> tuple[PartnerClient, Sleeps]:
    sleeps = sleep if sleep is not None else Sleeps()
    auth = TokenAuth(creds or credentials(), endpoint=BASE, cache=cache, wallclock=now)
    client = PartnerClient(
        BASE, transport=httpx.MockTransport(script), auth=auth, sleep=sleeps, wallclock=now, **kwargs
    )
    return client, sleeps
