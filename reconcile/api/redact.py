"""Keep secrets out of messages: redact what a server echoes, and name the secrets a request carries."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

import httpx


def redact(text: str, secrets: Sequence[str]) -> str:
    """Return ``text`` with every secret (raw or JSON-escaped) replaced by ``[redacted]``.

    A server may echo a request in its error text; that text ends up in messages and logs. An
    echoed JSON body inside a JSON answer escapes a secret twice, hence the three forms.
    """
    for secret in sorted(secrets, key=len, reverse=True):
        for form in _escaped_forms(secret):
            text = text.replace(form, "[redacted]")
    return text


@functools.lru_cache(maxsize=64)
def _escaped_forms(secret: str) -> tuple[str, ...]:
    """The forms of ``secret`` worth replacing, longest first (cached: a run has a few secrets)."""
    once = json.dumps(secret)[1:-1]
    forms = {secret, once, json.dumps(once)[1:-1]}
    return tuple(form for form in sorted(forms, key=len, reverse=True) if len(form) >= 4)


def request_secrets(request: httpx.Request) -> list[str]:
    """The secrets a request carries: its bearer token and any password in its JSON body."""
    found = []
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        found.append(token)
    if b"password" in request.content:
        try:
            body = json.loads(request.content)
        except ValueError:
            body = None
        users = body.get("users") if isinstance(body, dict) else None
        for item in [body, *(users if isinstance(users, list) else [])]:
            if isinstance(item, dict) and isinstance(item.get("password"), str):
                found.append(item["password"])
    return found
