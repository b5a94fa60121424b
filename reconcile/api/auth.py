"""Credentials, the access-token cache and the httpx auth flow (login, renew, retry on 401).

The real API allows 5 logins an hour and 2 sessions per user (a third login closes the oldest),
so a token is cached between runs and renewed before ``expirationTime``; a login happens only
when there is no usable token or renewal fails.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import platformdirs
import yaml
from pydantic import ValidationError

from reconcile import __version__
from reconcile.api.events import ClientEvent, OnEvent
from reconcile.api.models import AccessTokenResponse, PenaltyTicket
from reconcile.api.pacing import Pacer
from reconcile.errors import AuthError, CaptchaRequired, plural, sentences

log = logging.getLogger(__name__)

LOGIN_PATH = "/auth/accesstokenrequest"
RENEW_PATH = "/auth/renewaccesstoken"

ENV_VARS: Mapping[str, str] = {
    "username": "TRADOVATE_USERNAME",
    "password": "TRADOVATE_PASSWORD",
    "app_id": "TRADOVATE_APP_ID",
    "app_version": "TRADOVATE_APP_VERSION",
    "cid": "TRADOVATE_CID",
    "sec": "TRADOVATE_SEC",
    "device_id": "TRADOVATE_DEVICE_ID",
}
"""Credential field → environment variable."""

_FILE_KEYS: Mapping[str, str] = {
    "username": "username",
    "name": "username",
    "password": "password",
    "appId": "app_id",
    "appVersion": "app_version",
    "cid": "cid",
    "sec": "sec",
    "deviceId": "device_id",
    **{var: name for name, var in ENV_VARS.items()},
}
"""Keys a credentials file may use (the API's names or the environment variables' names)."""

_REQUIRED = ("username", "password", "app_id", "cid", "sec")
_MAX_PENALTIES = 5


@dataclass(frozen=True)
class Credentials:
    """What POST /auth/accesstokenrequest needs; ``repr`` never shows the password or the secret."""

    username: str
    password: str = field(repr=False)
    app_id: str = "reconcile"
    app_version: str = __version__
    cid: str | None = None
    sec: str | None = field(default=None, repr=False)
    device_id: str | None = None

    def login_body(self) -> dict[str, Any]:
        """Return the accesstokenrequest body (contract names; unset fields left out)."""
        body = {
            "name": self.username,
            "password": self.password,
            "appId": self.app_id,
            "appVersion": self.app_version,
            "cid": self.cid,
            "sec": self.sec,
            # A stable device id: the API tracks devices, and a new one per run looks like a new device.
            "deviceId": self.device_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"reconcile:{self.username}")),
        }
        return {k: v for k, v in body.items() if v is not None}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        """Read the TRADOVATE_* variables; the error lists every missing one."""
        env = os.environ if environ is None else environ
        values = {name: env[var] for name, var in ENV_VARS.items() if env.get(var)}
        missing = [ENV_VARS[name] for name in _REQUIRED if name not in values]
        if missing:
            raise AuthError(
                f"partner-API credentials are missing: set {', '.join(missing)} in the environment "
                "(or use a credentials file, mode 0600)",
                call="login",
            )
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> Credentials:
        """Read a YAML or JSON credentials file; refused unless only its owner can read it."""
        file = Path(path)
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                raise AuthError(
                    f"{file}: credentials file is accessible by other users (mode {mode:04o}); "
                    f"run `chmod 600 {file}` and try again",
                    call="login",
                )
            document = yaml.safe_load(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise AuthError(
                f"{file}: cannot read the credentials file: {exc.strerror}", call="login"
            ) from None
        except yaml.YAMLError:
            # The parser's message would quote the offending line, which may hold a secret.
            raise AuthError(f"{file}: the credentials file is not valid YAML or JSON", call="login") from None
        if not isinstance(document, dict):
            raise AuthError(f"{file}: expected a mapping of credential names to values", call="login")
        unknown = sorted(str(k) for k in document if k not in _FILE_KEYS)
        if unknown:
            raise AuthError(
                f"{file}: unknown {plural(len(unknown), 'key')} {', '.join(unknown)}; expected some of "
                "username, password, appId, appVersion, cid, sec, deviceId",
                call="login",
            )
        values = {_FILE_KEYS[k]: str(v) for k, v in document.items() if v is not None}
        missing = [name for name in _REQUIRED if name not in values]
        if missing:
            names = {"username": "username", "password": "password", "app_id": "appId", "cid": "cid"}
            raise AuthError(f"{file}: missing {', '.join(names.get(m, m) for m in missing)}", call="login")
        return cls(**values)


# --- the token cache -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedToken:
    """An access token and when it expires (epoch seconds)."""

    token: str = field(repr=False)
    expires: float


def default_cache_dir() -> Path:
    """Return ``RECONCILE_CACHE_DIR`` or the user cache directory of reconcile."""
    override = os.environ.get("RECONCILE_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("reconcile"))


class TokenCache:
    """Access tokens between runs: one file per endpoint and user, mode 0600 in a 0700 folder.

    Files are named by a hash of endpoint and user, so the folder says nothing about either.
    The password is never stored.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir() / "tokens"

    def path(self, endpoint: str, username: str) -> Path:
        digest = hashlib.sha256(f"{endpoint}\0{username.lower()}".encode()).hexdigest()[:32]
        return self.directory / f"{digest}.json"

    def load(self, endpoint: str, username: str) -> CachedToken | None:
        """Return the cached token, or None (missing, unreadable, or not private)."""
        file = self.path(endpoint, username)
        try:
            if stat.S_IMODE(file.stat().st_mode) & 0o077:
                log.warning("ignoring token cache %s: readable by other users", file)
                return None
            data = json.loads(file.read_text(encoding="utf-8"))
            return CachedToken(token=str(data["token"]), expires=float(data["expires"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable token cache %s", file)
            return None

    def save(self, endpoint: str, username: str, token: CachedToken) -> None:
        """Store ``token`` (atomically); a cache that cannot be written only costs a login later."""
        from reconcile.state.model import atomic_write_text

        try:
            # The cache's own folder too: whoever may write there could swap the tokens folder.
            self.directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            atomic_write_text(
                self.path(endpoint, username),
                json.dumps({"token": token.token, "expires": token.expires}),
                mode=0o600,
            )
        except OSError as exc:
            log.warning("cannot write the token cache in %s: %s", self.directory, exc.strerror)

    def forget(self, endpoint: str, username: str) -> None:
        """Drop the cached token (it was refused)."""
        try:
            self.path(endpoint, username).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove a stale token from %s: %s", self.directory, exc.strerror)


# --- the auth flow ---------------------------------------------------------------------------------


class LoginDeferred(AuthError):
    """Login or renewal met a rate limit, 423 or server error: retry later (nothing else was sent)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, call="login")
        self.retry_after = retry_after


def _epoch(expiration: str | None) -> float | None:
    if not expiration:
        return None
    try:
        return datetime.fromisoformat(expiration).timestamp()
    except ValueError:
        return None


class TokenAuth(httpx.Auth):
    """Add ``Authorization: Bearer``; renew before expiry, log in only when needed, retry once on 401.

    ``endpoint`` (the endpoint label) keys the cache; ``renew_margin`` is how long before
    ``expirationTime`` the token is renewed. Thread-safe: one login or renewal at a time.
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
    ) -> None:
        self.credentials = credentials
        self.endpoint = endpoint
        self.cache = cache
        self.wallclock = wallclock
        self.renew_margin = renew_margin
        self.base_url = ""
        self.sleep: Callable[[float], None] = time.sleep
        self.pacer: Pacer | None = None
        self.on_event: OnEvent | None = None
        self.logins = 0
        self.renewals = 0
        self._token: CachedToken | None = None
        self._loaded = False
        self._lock = threading.Lock()
        self._local = threading.local()

    def attach(
        self,
        base_url: str,
        *,
        sleep: Callable[[float], None],
        pacer: Pacer | None,
        on_event: OnEvent | None,
    ) -> None:
        """Tell the auth where and how to log in (called by :class:`PartnerClient`)."""
        self.base_url = base_url.rstrip("/")
        self.sleep = sleep
        self.pacer = pacer
        self.on_event = on_event

    @property
    def authenticating(self) -> bool:
        """True while this thread's login or renewal request is in flight (the real one is not sent)."""
        return bool(getattr(self._local, "authenticating", False))

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
            self._token = self.cache.load(self.endpoint, self.credentials.username)
        self._loaded = True
        now = self.wallclock()
        current = self._token
        # A token about to expire within the minute is not worth renewing: the renewal may land late.
        if current is not None and now < current.expires - 60:
            if now < current.expires - self.renew_margin:
                return current.token
            renewed = yield from self._renew(current)
            if renewed is not None:
                return renewed
        return (yield from self._login())

    def _renew(self, current: CachedToken) -> Generator[httpx.Request, httpx.Response, str | None]:
        if self.pacer is not None:
            self.pacer.acquire(RENEW_PATH)
        request = httpx.Request(
            "GET", self.base_url + RENEW_PATH, headers={"Authorization": f"Bearer {current.token}"}
        )
        try:
            response = yield from self._exchange(request, "renewaccesstoken")
        except LoginDeferred:
            return None
        answer = _token_answer(response)
        if answer is None or answer.accessToken is None:
            log.info("token renewal at %s refused (HTTP %s); logging in", self.endpoint, response.status_code)
            return None
        self.renewals += 1
        self._emit("renew", "renewaccesstoken", "renewed the access token")
        return self._keep(answer, fallback=current)

    def _login(self) -> Generator[httpx.Request, httpx.Response, str]:
        if self.pacer is not None:
            self.pacer.acquire(LOGIN_PATH)
        who = f"{self.credentials.username} at {self.endpoint}"
        request = httpx.Request("POST", self.base_url + LOGIN_PATH, json=self.credentials.login_body())
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
        self.logins += 1
        self._emit("login", "accesstokenrequest", f"logged in as {who}")
        return self._keep(answer, fallback=None)

    def _exchange(
        self, request: httpx.Request, call: str
    ) -> Generator[httpx.Request, httpx.Response, httpx.Response]:
        """Send a login/renew request, surviving penalty tickets; defer on 429/423/5xx."""
        for _ in range(_MAX_PENALTIES + 1):
            self._local.authenticating = True
            response = yield request
            self._local.authenticating = False
            if response.status_code in (423, 429) or response.status_code >= 500:
                retry_after = retry_after_seconds(response, self.wallclock())
                raise LoginDeferred(
                    f"{call} for {self.credentials.username} at {self.endpoint} was refused with "
                    f"HTTP {response.status_code}; retry later (logins are limited to 5 per hour)",
                    retry_after=retry_after,
                )
            ticket = penalty_ticket(response)
            if ticket is None:
                return response
            if ticket.captcha:
                raise captcha_required(call, ())
            self._emit_wait(call, ticket.time)
            self.sleep(ticket.time)
            request = with_ticket(request, ticket.ticket)
        raise AuthError(f"{call}: still penalised after {_MAX_PENALTIES} waits; try again later", call=call)

    def _keep(self, answer: AccessTokenResponse, *, fallback: CachedToken | None) -> str:
        assert answer.accessToken is not None
        expires = _epoch(answer.expirationTime)
        if expires is None:
            # No usable expiry: assume the documented lower bound (80 minutes) rather than forever.
            expires = fallback.expires if fallback is not None else self.wallclock() + 80 * 60
        self._token = CachedToken(token=answer.accessToken.get_secret_value(), expires=expires)
        if self.cache is not None:
            self.cache.save(self.endpoint, self.credentials.username, self._token)
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
            self.cache.forget(self.endpoint, self.credentials.username)

    def _emit(self, kind: Any, call: str, message: str) -> None:
        log.info("%s", message)
        if self.on_event is not None:
            self.on_event(ClientEvent(kind=kind, call=call, message=message))

    def _emit_wait(self, call: str, seconds: float) -> None:
        emit_penalty_wait(self.on_event, call, seconds, self.wallclock())


# --- helpers shared with the client ----------------------------------------------------------------


def _token_answer(response: httpx.Response) -> AccessTokenResponse | None:
    try:
        return AccessTokenResponse.model_validate_json(response.content)
    except ValidationError:
        return None


def penalty_ticket(response: httpx.Response) -> PenaltyTicket | None:
    """Return the penalty ticket an HTTP 200 answer carries, if it is one."""
    if response.status_code != 200 or b"p-ticket" not in response.content:
        return None
    try:
        data = json.loads(response.content)
    except ValueError:
        return None
    if not isinstance(data, dict) or "p-ticket" not in data:
        return None
    try:
        return PenaltyTicket.model_validate(data)
    except ValidationError:
        return None


def with_ticket(request: httpx.Request, ticket: str) -> httpx.Request:
    """Return ``request`` again, its JSON body plus ``"p-ticket"`` (a GET is resent as it was)."""
    if request.method != "POST":
        return httpx.Request(request.method, request.url, headers=request.headers)
    body = json.loads(request.content or b"{}")
    body["p-ticket"] = ticket
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length",)}
    return httpx.Request("POST", request.url, headers=headers, json=body)


def redact(text: str, secrets: Sequence[str]) -> str:
    """Return ``text`` with every secret (raw or JSON-escaped) replaced by ``[redacted]``.

    A server may echo a request in its error text; that text ends up in messages and logs. An
    echoed JSON body inside a JSON answer escapes a secret twice, hence the three forms.
    """
    for secret in sorted(secrets, key=len, reverse=True):
        for form in sorted(_escaped_forms(secret), key=len, reverse=True):
            if len(form) >= 4:
                text = text.replace(form, "[redacted]")
    return text


def _escaped_forms(secret: str) -> set[str]:
    once = json.dumps(secret)[1:-1]
    return {secret, once, json.dumps(once)[1:-1]}


def for_users(users: Sequence[str]) -> str:
    """Return " for alice, bob" (at most five names) for error messages, or "" without users."""
    if not users:
        return ""
    shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
    return f" for {shown}"


def captcha_required(call: str, users: tuple[str, ...]) -> CaptchaRequired:
    return CaptchaRequired(
        f"{call}{for_users(users)}: the partner API demands a captcha (penalty ticket with p-captcha). "
        "A person must log in to the Tradovate web trader with the partner account and solve it; "
        "this can take about an hour. Nothing more was sent; run the command again afterwards",
        call=call,
        users=users,
    )


def emit_penalty_wait(on_event: OnEvent | None, call: str, seconds: float, now: float) -> None:
    log.info("%s: penalty ticket, waiting %.1f s", call, seconds)
    if on_event is not None:
        until = now + seconds
        on_event(
            ClientEvent(
                kind="penalty_wait",
                call=call,
                seconds=seconds,
                until=until,
                # The time is ``until``: whoever shows the message adds it, in its own format.
                message=f"{call}: penalty ticket, waiting",
            )
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
