"""The httpx auth flow: add the bearer token, renew it before expiry, log in when needed, retry on 401.

The real API allows 5 logins an hour and 2 sessions per user (a third login closes the oldest),
so a token is cached between runs (:mod:`reconcile.api.token_cache`) and renewed before
``expirationTime``; a login happens only when there is no usable token or renewal fails. A run
that waits for hours (paced creates) renews during its waits (:meth:`TokenAuth.renew_if_due`).

Expiry is kept on this machine's clock: the token's lifetime is ``expirationTime`` minus the
server's ``Date``, so a server whose clock differs from ours (a simulator running ``time_scale``
times faster, or a skewed host) is read right.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import threading
import time
from collections.abc import Callable, Generator
from datetime import datetime

import httpx
from pydantic import ValidationError

from reconcile.api.credentials import Credentials
from reconcile.api.events import ClientEvent, EventKind, OnEvent
from reconcile.api.models import AccessTokenResponse
from reconcile.api.pacing import Pacer
from reconcile.api.penalties import Exchange, drive, resend_while_penalised, retry_after_seconds
from reconcile.api.redact import redact
from reconcile.api.token_cache import UNSENDABLE, CachedToken, TokenCache
from reconcile.errors import AuthError, LoginUnavailable, sentences

log = logging.getLogger(__name__)

LOGIN_PATH = "/auth/accesstokenrequest"
RENEW_PATH = "/auth/renewaccesstoken"


class LoginDeferred(AuthError):
    """Login or renewal met a rate limit, 423 or server error: retry later (nothing else was sent)."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, call="login")
        self.status = status
        self.retry_after = retry_after


def _duration(seconds: float) -> str:
    """``45 s`` or ``about 60 minutes``: how long a person is asked to wait."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"about {-(-seconds // 60):.0f} minutes"


def _epoch(expiration: str | None) -> float | None:
    if not expiration:
        return None
    try:
        return datetime.fromisoformat(expiration).timestamp()
    except ValueError:
        return None


def _server_date(response: httpx.Response | None) -> float | None:
    """The server's clock when it answered (its ``Date`` header), epoch seconds; None without one."""
    value = response.headers.get("Date") if response is not None else None
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


class _ThisThread(threading.local):
    authenticating: bool = False


class TokenAuth(httpx.Auth):
    """Add ``Authorization: Bearer``; renew before expiry, log in only when needed, retry once on 401.

    ``endpoint`` (the endpoint label) keys the cache; ``renew_margin`` is how long before
    ``expirationTime`` the token is renewed, in the server's time, which runs ``time_scale``
    times faster than ours. Thread-safe: one login or renewal at a time.
    """

    requires_response_body = True

    def __init__(
        self,
        credentials: Credentials,
        *,
        endpoint: str,
        cache: TokenCache | None = None,
        wallclock: Callable[[], float] = time.time,
        renew_margin: float = 15 * 60,
        time_scale: float = 1.0,
    ) -> None:
        self.credentials = credentials
        self.endpoint = endpoint
        self.cache = cache
        self.wallclock = wallclock
        self.time_scale = time_scale
        self.renew_margin = renew_margin / time_scale
        # A token about to expire within the (server's) minute is not worth renewing: the
        # renewal may land late.
        self.expiry_guard = 60.0 / time_scale
        self.base_url = ""
        self.sleep: Callable[[float], None] = time.sleep
        self.pacer: Pacer | None = None
        self.on_event: OnEvent | None = None
        self.max_wait = 600.0
        """The longest ``Retry-After`` a login waits for (the client's); past it, no login now."""
        self.unavailable: LoginUnavailable | None = None
        """Set once no login can succeed in this run: no later call tries (and burns) another."""
        self.logins = 0
        self.renewals = 0
        self._token: CachedToken | None = None
        self._loaded = False
        self._lock = threading.Lock()
        self._local = _ThisThread()

    def attach(
        self,
        base_url: str,
        *,
        sleep: Callable[[float], None],
        pacer: Pacer | None,
        on_event: OnEvent | None,
        max_wait: float = 600.0,
    ) -> None:
        """Tell the auth where and how to log in (called by :class:`PartnerClient`)."""
        self.base_url = base_url.rstrip("/")
        self.sleep = sleep
        self.pacer = pacer
        self.on_event = on_event
        self.max_wait = max_wait

    @property
    def authenticating(self) -> bool:
        """True while this thread's login or renewal request is in flight (the real one is not sent)."""
        return self._local.authenticating

    def reset_authenticating(self) -> None:
        self._local.authenticating = False

    # -- the flow ----------------------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        with self._lock:
            token = yield from self._usable_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        with self._lock:
            # Another thread may have logged in already since this request was sent.
            if self._token is None or self._token.token == token:
                self._drop()
                token = yield from self._login()
            else:
                token = self._token.token
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def _usable_token(self) -> Generator[httpx.Request, httpx.Response, str]:
        if not self._loaded and self.cache is not None:
            self._token = self.cache.load(self.endpoint, self.credentials)
        self._loaded = True
        now = self.wallclock()
        current = self._token
        if current is not None and now < current.expires - self.expiry_guard:
            if now < current.expires - self.renew_margin:
                return current.token
            renewed = yield from self._renew(current)
            if renewed is not None:
                return renewed
        return (yield from self._login())

    def renewal_due_in(self) -> float | None:
        """Seconds until the token this run holds should be renewed (None: it holds none)."""
        current = self._token
        if current is None:
            return None
        return current.expires - self.renew_margin - self.wallclock()

    def renew_if_due(self, send: Callable[[httpx.Request], httpx.Response]) -> None:
        """Renew the token now if it is due, sending with ``send`` (a long wait renews this way).

        A renewal that fails changes nothing: the next call logs in if it must.
        """
        with self._lock:
            current = self._token
            now = self.wallclock()
            if current is None or not (
                current.expires - self.renew_margin <= now < current.expires - self.expiry_guard
            ):
                return
            drive(self._renew(current), send)

    def _renew(self, current: CachedToken) -> Generator[httpx.Request, httpx.Response, str | None]:
        request = httpx.Request(
            "GET", self.base_url + RENEW_PATH, headers={"Authorization": f"Bearer {current.token}"}
        )
        with self.pacer.paced(RENEW_PATH) if self.pacer is not None else contextlib.nullcontext(0.0):
            try:
                response = yield from self._exchange(request, "renewaccesstoken")
            except LoginDeferred:
                return None
        answer = _token_answer(response)
        if answer is None or answer.accessToken is None or not _sendable(answer):
            log.info("token renewal at %s refused (HTTP %s); logging in", self.endpoint, response.status_code)
            return None
        self.renewals += 1
        self._emit("renew", "renewaccesstoken", "renewed the access token")
        return self._keep(answer, fallback=current, response=response)

    def _login(self) -> Generator[httpx.Request, httpx.Response, str]:
        if self.unavailable is not None:
            # Asked again by another call or thread of the same run: say the same, send nothing.
            raise LoginUnavailable(str(self.unavailable), call="accesstokenrequest")
        who = f"{self.credentials.username} at {self.endpoint}"
        request = httpx.Request("POST", self.base_url + LOGIN_PATH, json=self.credentials.login_body())
        with self.pacer.paced(LOGIN_PATH) if self.pacer is not None else contextlib.nullcontext(0.0):
            response = yield from self._exchange(request, "accesstokenrequest")
        answer = _token_answer(response)
        refused = response.status_code == 401 and answer is not None and answer.errorText is not None
        if (response.status_code != 200 and not refused) or answer is None:
            raise AuthError(
                f"login as {who} failed: HTTP {response.status_code}, not an access-token answer",
                call="accesstokenrequest",
            )
        if answer.accessToken is None:
            reason = redact(answer.errorText or "the answer has no accessToken", self.secrets())
            raise AuthError(
                sentences(
                    f"login as {who} failed: {reason}",
                    "Check TRADOVATE_USERNAME, TRADOVATE_PASSWORD and the app credentials "
                    "(TRADOVATE_APP_ID, TRADOVATE_CID, TRADOVATE_SEC)",
                ),
                call="accesstokenrequest",
            )
        if not _sendable(answer):
            # Kept, it would fail every call until it expired, in this run and the next ones.
            raise AuthError(
                f"login as {who} failed: the API answered an access token with a space, line break or "
                "control character, which no HTTP header can carry; nothing was sent with it",
                call="accesstokenrequest",
            )
        self.logins += 1
        self._emit("login", "accesstokenrequest", f"logged in as {who}")
        return self._keep(answer, fallback=None, response=response)

    def _exchange(self, request: httpx.Request, call: str) -> Exchange:
        """Send a login/renew request, surviving penalty tickets; defer on 429/423/5xx."""
        return (
            yield from resend_while_penalised(
                request,
                call,
                (),
                sleep=self.sleep,
                wallclock=self.wallclock,
                on_event=self.on_event,
                error=AuthError,
                send=lambda r: self._send(r, call),
            )
        )

    def _send(self, request: httpx.Request, call: str) -> Exchange:
        """Send one login/renew request, marked as in flight; defer on 429/423/5xx."""
        self._local.authenticating = True
        response = yield request
        self._local.authenticating = False
        status = response.status_code
        if status in (423, 429) or status >= 500:
            deferred = LoginDeferred(
                f"{call} for {self.credentials.username} at {self.endpoint} was refused with "
                f"HTTP {status}; retry later (logins are limited to 5 per hour)",
                status=status,
                retry_after=retry_after_seconds(response, self.wallclock()),
            )
            if call == "accesstokenrequest" and (deferred.retry_after or 0) > self.max_wait:
                # Decided here, under the lock: no other thread sends a login that cannot succeed.
                raise self.give_up(deferred)
            raise deferred
        return response

    def give_up(self, deferred: LoginDeferred, *, attempts: int | None = None) -> LoginUnavailable:
        """Return (and remember for this run) the one error saying no login can succeed now.

        ``attempts`` is how often the login was tried when the run gave up after its retries;
        None when the API asked to wait longer than the run waits.
        """
        who = f"{self.credentials.username} at {self.endpoint}"
        status, wait = deferred.status, deferred.retry_after
        if status == 429:
            what = f"login as {who} refused: the API's login limit is reached (HTTP 429; 5 logins an hour)"
        elif status == 423:
            what = f"login as {who} refused for now: the API locked it for a while (HTTP 423)"
        else:
            what = f"login as {who} failed: the API answered HTTP {status}"
        if attempts is not None:
            what += f", {attempts} times in a row"
        elif wait is not None:
            what += f"; it asks to wait {_duration(wait)}"
        until = "the login limit resets" if status in (423, 429) else "the API answers again"
        self.unavailable = LoginUnavailable(
            sentences(
                what,
                "Nothing can be sent without a login, so nothing more is tried",
                f"Wait until {until}, then run the command again; reconcile caches the access token "
                "it gets, so later runs reuse it instead of logging in",
            ),
            call="accesstokenrequest",
        )
        return self.unavailable

    def _keep(
        self, answer: AccessTokenResponse, *, fallback: CachedToken | None, response: httpx.Response
    ) -> str:
        assert answer.accessToken is not None
        now = self.wallclock()
        expires = _epoch(answer.expirationTime)
        if expires is None:
            # No usable expiry: assume the documented lower bound (80 minutes) rather than forever.
            expires = fallback.expires if fallback is not None else now + 80 * 60 / self.time_scale
        else:
            # The lifetime on the server's clock (its Date, else ours), as seconds on ours.
            expires = now + (expires - (_server_date(response) or now)) / self.time_scale
        self._token = CachedToken(token=answer.accessToken.get_secret_value(), expires=expires)
        if self.cache is not None:
            self.cache.save(self.endpoint, self.credentials, self._token)
        return self._token.token

    def secrets(self) -> list[str]:
        """Return what must never be shown: the password, the API secret and the current token."""
        values = [self.credentials.password, self.credentials.sec]
        if self._token is not None:
            values.append(self._token.token)
        return [v for v in values if v]

    def _drop(self) -> None:
        self._token = None
        if self.cache is not None:
            self.cache.forget(self.endpoint, self.credentials)

    def _emit(self, kind: EventKind, call: str, message: str) -> None:
        log.info("%s", message)
        if self.on_event is not None:
            self.on_event(ClientEvent(kind=kind, call=call, message=message))


def _sendable(answer: AccessTokenResponse) -> bool:
    """Whether the answer's token can go in an ``Authorization`` header as it is."""
    return answer.accessToken is not None and not UNSENDABLE.search(answer.accessToken.get_secret_value())


def _token_answer(response: httpx.Response) -> AccessTokenResponse | None:
    try:
        return AccessTokenResponse.model_validate_json(response.content)
    except ValidationError:
        return None
