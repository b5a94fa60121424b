"""The API's ways of saying "wait": penalty tickets (``p-ticket``, ``p-time``, ``p-captcha``) and Retry-After.

An HTTP 200 answer may be a penalty ticket instead of the result: the request was not applied,
and is sent again after ``p-time`` seconds with the ticket in its body. Login, renewal and every
other call go through the one loop here, :func:`resend_while_penalised`.
"""

from __future__ import annotations

import email.utils
import json
import logging
from collections.abc import Callable, Generator, Sequence
from typing import TypeVar

import httpx
from pydantic import ValidationError

from reconcile.api.events import OnEvent, emit_wait
from reconcile.api.models import PenaltyTicket
from reconcile.errors import ApiError, CaptchaRequired

log = logging.getLogger(__name__)

MAX_PENALTIES = 5
"""How many penalty tickets one request waits out before the call gives up."""

Exchange = Generator[httpx.Request, httpx.Response, httpx.Response]
"""Yields requests to send, is sent their responses, and returns the final response."""

R = TypeVar("R")


def _send(request: httpx.Request) -> Exchange:
    return (yield request)


def resend_while_penalised(
    request: httpx.Request,
    call: str,
    users: tuple[str, ...],
    *,
    sleep: Callable[[float], None],
    wallclock: Callable[[], float],
    on_event: OnEvent | None,
    error: type[ApiError],
    send: Callable[[httpx.Request], Exchange] = _send,
) -> Exchange:
    """Send ``request``; while the answer is a penalty ticket, wait and resend it with the ticket.

    Raises :class:`CaptchaRequired` when a ticket demands a captcha, and ``error`` after
    :data:`MAX_PENALTIES` waits. A penalty ticket means the request was not applied: resending is safe.
    """
    for waits in range(MAX_PENALTIES + 1):
        response = yield from send(request)
        ticket = _penalty_ticket(response)
        if ticket is None:
            return response
        if ticket.captcha:
            raise _captcha_required(call, users)
        if waits == MAX_PENALTIES:
            break  # a wait now would be followed by no resend
        log.info("%s: penalty ticket, waiting %.1f s", call, ticket.time)
        emit_wait(on_event, "penalty_wait", call, f"{call}: penalty ticket, waiting", ticket.time, wallclock)
        sleep(ticket.time)
        request = _with_ticket(request, ticket.ticket)
    raise error(
        f"{call}{for_users(users)}: still penalised after {MAX_PENALTIES} waits; try again later",
        call=call,
        users=users,
    )


def drive(
    exchange: Generator[httpx.Request, httpx.Response, R], send: Callable[[httpx.Request], httpx.Response]
) -> R:
    """Run ``exchange`` to its end, sending each request it yields with ``send``; return what it returns."""
    try:
        request = next(exchange)
    except StopIteration as done:
        result: R = done.value
        return result
    while True:
        try:
            request = exchange.send(send(request))
        except StopIteration as done:
            result = done.value
            return result


def _penalty_ticket(response: httpx.Response) -> PenaltyTicket | None:
    """Return the penalty ticket an HTTP 200 answer carries, if it is one."""
    if response.status_code != 200 or b"p-ticket" not in response.content:
        return None
    try:
        data = json.loads(response.content)
    except (ValueError, RecursionError):  # RecursionError: arrays nested past Python's limit
        return None
    if not isinstance(data, dict) or "p-ticket" not in data:
        return None
    try:
        return PenaltyTicket.model_validate(data)
    except ValidationError:
        return None


def _with_ticket(request: httpx.Request, ticket: str) -> httpx.Request:
    """Return ``request`` again, its JSON body plus ``"p-ticket"`` (a GET is resent as it was)."""
    if request.method != "POST":
        return httpx.Request(request.method, request.url, headers=request.headers)
    body = json.loads(request.content or b"{}")
    body["p-ticket"] = ticket
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length",)}
    return httpx.Request("POST", request.url, headers=headers, json=body)


def for_users(users: Sequence[str]) -> str:
    """Return " for alice, bob" (at most five names) for error messages, or "" without users."""
    if not users:
        return ""
    shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
    return f" for {shown}"


def _captcha_required(call: str, users: tuple[str, ...]) -> CaptchaRequired:
    return CaptchaRequired(
        f"{call}{for_users(users)}: the partner API demands a captcha (penalty ticket with p-captcha). "
        "A person must log in to the Tradovate web trader with the partner account and solve it; "
        "this can take about an hour. Nothing more was sent; run the command again afterwards",
        call=call,
        users=users,
    )


def retry_after_seconds(response: httpx.Response, now: float) -> float | None:
    """Return the seconds ``Retry-After`` asks for (a number or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None
