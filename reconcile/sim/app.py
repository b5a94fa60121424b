"""The simulator's WSGI application: the partner API's routes, auth, limits, penalties and faults.

Why Werkzeug (WSGI): the API client is synchronous httpx, and ``httpx.WSGITransport`` runs a WSGI
app in-process with no event loop and no socket, which is what the embedded ``environment: sim``
and fast tests need; :mod:`reconcile.sim.server` runs the very same app as a real loopback server
(waitress). Werkzeug gives the routing, request parsing and response objects of a well-kept
library without a framework's weight.

Each partner-API request runs in one SQLite transaction: fault lookup, auth, rate limit, penalty
ticket and the operation itself commit together, so a request is applied fully or not at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.http import http_date
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from reconcile.contract import ContractViolation, validate_request, validate_response
from reconcile.sim import admin, rules
from reconcile.sim.config import RuntimeSettings, SimConfig
from reconcile.sim.faults import (
    CLIENT_GONE_KEY,
    FAULT_HEADER,
    READ_TIMEOUT_KEY,
    DropConnection,
    Fault,
    SimulatedTimeout,
)
from reconcile.sim.rules import HttpError
from reconcile.sim.store import Clock, Store, Tx

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

Body = Any


@dataclass(frozen=True)
class Call:
    """What an operation handler gets: the transaction, the request, its JSON body, the session."""

    tx: Tx
    request: Request
    body: Any
    session: Any


Handler = Callable[["SimApp", Call], Body]

_OPERATIONS: dict[tuple[str, str], str] = {}
"""(method, lower-case path) → handler name; filled by :func:`_operation`."""
_HANDLERS: dict[str, Handler] = {}


def _operation(method: str, path: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _OPERATIONS[(method, path.lower())] = handler.__name__
        _HANDLERS[handler.__name__] = handler
        return handler

    return register


def _field(body: Any, name: str) -> Any:
    return body.get(name, "") if isinstance(body, dict) else ""


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, sort_keys=True), status=status, mimetype="application/json", headers=headers
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"errorText": message}, status, headers)


def _int_arg(request: Request, name: str) -> int:
    value = request.args.get(name)
    if value is None or not value.lstrip("-").isdigit():
        raise HttpError(400, f"query parameter {name!r} must be an integer (got {value!r})")
    return int(value)


def _int_list_arg(request: Request, name: str) -> list[int]:
    """An array query parameter in either spelling: ``ids=1&ids=2`` or ``ids=1,2``."""
    raw = [part for value in request.args.getlist(name) for part in value.split(",") if part]
    if not raw or not all(part.strip().isdigit() for part in raw):
        raise HttpError(400, f"query parameter {name!r} must list integers, e.g. {name}=100001,100002")
    return [int(p) for p in raw]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _body_digest(body: Any) -> str:
    without_ticket = {k: v for k, v in body.items() if k != "p-ticket"} if isinstance(body, dict) else body
    return hashlib.sha256(json.dumps(without_ticket, sort_keys=True).encode()).hexdigest()


def _real_seconds(sim_seconds: float, settings: RuntimeSettings) -> float:
    """Simulated seconds as real seconds, rounded up to the millisecond (whole seconds stay ints)."""
    real = math.ceil(max(sim_seconds, 0.0) / settings.time_scale * 1000) / 1000
    return int(real) if real == int(real) else real


_WINDOW = 3600.0
_NO_AUTH = {"/auth/accesstokenrequest"}
_ALTERNATE_BODIES: dict[str, Callable[[Any], bool]] = {
    # The conformance page completes a signal with {alertId, userId}; the contract says
    # {adminAlertSignalId}. DESIGN §7: accept both shapes on input.
    "/adminalertsignal/completealertsignal": lambda b: (
        isinstance(b, dict) and isinstance(b.get("alertId"), int) and isinstance(b.get("userId"), int)
    ),
}
_DOCUMENTED_NUMBERS: dict[str, frozenset[str]] = {
    # The partner docs' access-token example sends `cid: 0`, a number, where the contract types
    # cid as a string. DESIGN §7: accept both shapes on input (the client sends a string).
    "/auth/accesstokenrequest": frozenset({"cid"}),
}


def _contract_shape(path: str, body: Any) -> Any:
    """Return ``body`` with the numbers the partner docs send where the contract wants text, as text."""
    fields = _DOCUMENTED_NUMBERS.get(path)
    if not fields or not isinstance(body, dict):
        return body
    return {
        key: str(value) if key in fields and type(value) is int else value  # not bool: True is no id
        for key, value in body.items()
    }


ADMIN_PREFIX = "/_sim/"
"""Where the simulator's own admin routes live (reset, users, faults, config)."""


def route_path(request: Request) -> str:
    """Return the path the router matches: lower-case, slashes merged, without the ``/v1`` prefix."""
    path = re.sub("/+", "/", request.path).lower()
    return path[3:] if path.startswith("/v1/") else path


def is_admin_path(path: str) -> bool:
    """Say whether a routed path (see :func:`route_path`) belongs to the admin routes."""
    return path.startswith(ADMIN_PREFIX) or path == ADMIN_PREFIX.rstrip("/")


def is_admin_request(environ: WSGIEnvironment) -> bool:
    """Say whether the router sends this request to an admin route: the test the token guard uses."""
    return is_admin_path(route_path(Request(environ)))


CHECK_CONTRACT_ENV = "RECONCILE_SIM_CHECK_CONTRACT"
"""Set to ``1`` to have the simulator check each of its answers against the contract."""


class SimApp:
    """The WSGI callable; ``.store`` and ``.config`` are there for tests and the CLI."""

    def __init__(self, config: SimConfig, store: Store, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.store = store
        self.sleep = sleep
        # Self-check every answer against the contract before sending it (the test suite sets
        # this for every simulator, in-process or `sim serve`): a violation becomes an HTTP 500
        # the client reports, so no test can pass on an answer the real API would never give.
        self.check_contract = os.environ.get(CHECK_CONTRACT_ENV) == "1"
        self.url_map = Map(
            [
                Rule(path, endpoint=name, methods=[method])
                for (method, path), name in sorted(_OPERATIONS.items())
            ]
            + [
                Rule(f"{ADMIN_PREFIX}users", endpoint="_sim_users", methods=["GET", "POST"]),
                Rule(f"{ADMIN_PREFIX}agreements", endpoint="_sim_agreements", methods=["POST"]),
                Rule(f"{ADMIN_PREFIX}config", endpoint="_sim_config", methods=["GET", "POST"]),
                Rule(f"{ADMIN_PREFIX}faults", endpoint="_sim_faults", methods=["GET", "POST"]),
                Rule(f"{ADMIN_PREFIX}reset", endpoint="_sim_reset", methods=["POST"]),
                Rule(f"{ADMIN_PREFIX}accounts", endpoint="_sim_accounts", methods=["GET"]),
                Rule(f"{ADMIN_PREFIX}accounts/pnl", endpoint="_sim_accounts_pnl", methods=["POST"]),
            ],
            strict_slashes=False,
        )

    # --- WSGI ------------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        path = route_path(request)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            endpoint, _ = adapter.match(path, method=request.method)
        except MethodNotAllowed:
            return _error(405, f"{request.method} is not allowed on {request.path}")(environ, start_response)
        except NotFound:
            return _error(404, f"{request.path} is not a path of the simulated partner API")(
                environ, start_response
            )
        except HTTPException as exc:  # pragma: no cover - werkzeug redirects are off (strict_slashes)
            return _error(exc.code or 400, str(exc))(environ, start_response)
        if is_admin_path(path):
            response = self._admin(str(endpoint), request)
        else:
            response = self._partner(str(endpoint), path, request, environ)
        return response(environ, start_response)

    # --- the partner API -------------------------------------------------------------------------

    def _partner(self, handler_name: str, path: str, request: Request, environ: WSGIEnvironment) -> Response:
        body: Any = None
        if request.method == "POST":
            try:
                body = json.loads(request.get_data() or b"null")
            except ValueError:
                return _error(400, f"the body of POST {request.path} is not valid JSON")
        fault: Fault | None = None
        with self.store.transaction() as tx:
            now = tx.now
            fault = self._take_fault(tx, path)
            if fault is not None and fault.kind == "http500":
                response = _error(500, "simulated internal server error", {FAULT_HEADER: fault.kind})
            elif fault is not None and fault.kind == "http429":
                retry_after = {"Retry-After": f"{fault.seconds:g}", FAULT_HEADER: fault.kind}
                response = _error(429, f"simulated rate limit on {path}; retry later", retry_after)
            elif fault is not None and fault.kind in ("penalty", "captcha"):
                response = self._penalty(tx, path, body, fault.seconds, captcha=fault.kind == "captcha")
                response.headers[FAULT_HEADER] = fault.kind
            else:
                try:
                    response = self._serve(tx, handler_name, path, request, body)
                except HttpError as exc:
                    response = _error(exc.status, exc.message)
        if fault is not None and fault.kind in ("slow", "malformed", "drop_after_apply"):
            response = self._after_apply(fault, response, environ)
        # Simulated time, so a client reads token lifetimes on the simulator's clock.
        response.headers["Date"] = http_date(now)
        return response

    def _serve(self, tx: Tx, handler_name: str, path: str, request: Request, body: Any) -> Response:
        session = None if path in _NO_AUTH else self._session(tx, request)
        if (
            session is not None
            and session["login"] != self.config.admin_name.lower()
            and path not in _TRADER_CALLS
        ):
            raise HttpError(403, "access denied: this call needs the partner administrator's access token")
        login = session["login"] if session is not None else str(_field(body, "name")).lower()
        limited = self._limited(tx, path, f"{login}:{path}", body)
        if limited is not None:
            return limited
        if request.method == "POST":
            body = {k: v for k, v in body.items() if k != "p-ticket"} if isinstance(body, dict) else body
            body = _contract_shape(path, body)
            alternate = _ALTERNATE_BODIES.get(path)
            if alternate is None or not alternate(body):
                try:
                    validate_request("POST", path, body)
                except ContractViolation as exc:
                    return _error(400, str(exc))
        answer = _HANDLERS[handler_name](self, Call(tx, request, body, session))
        if self.check_contract:
            try:
                validate_response(request.method, path, 200, answer)
            except ContractViolation as exc:
                print(f"reconcile sim: contract violation: {request.method} {path}: {exc}", file=sys.stderr)
                return _error(500, f"simulator contract violation (a simulator bug): {exc}")
        return _json(answer)

    def _take_fault(self, tx: Tx, path: str) -> Fault | None:
        row = tx.one("SELECT * FROM faults WHERE path IN (?, '*') ORDER BY id LIMIT 1", (path,))
        if row is None:
            return None
        if row["remaining"] <= 1:
            tx.run("DELETE FROM faults WHERE id = ?", (row["id"],))
        else:
            tx.run("UPDATE faults SET remaining = remaining - 1 WHERE id = ?", (row["id"],))
        return Fault(kind=row["kind"], path=row["path"], seconds=row["seconds"])

    def _after_apply(self, fault: Fault, response: Response, environ: WSGIEnvironment) -> Response:
        if fault.kind == "slow":
            timeout = environ.get(READ_TIMEOUT_KEY)
            if timeout is not None and fault.seconds > timeout:
                self.sleep(timeout)
                raise SimulatedTimeout(timeout)
            self._slow(fault.seconds, environ.get(CLIENT_GONE_KEY))
            response.headers[FAULT_HEADER] = fault.kind
            return response
        if fault.kind == "malformed":
            text = response.get_data()
            garbled = Response(text[: max(1, len(text) // 2)], status=200, mimetype="application/json")
            garbled.headers[FAULT_HEADER] = fault.kind
            return garbled
        # drop_after_apply: the answer is never given. In-process, SimTransport turns this into a
        # dropped connection; on the real server, reconcile.sim.server closes the connection.
        raise DropConnection(environ.get("PATH_INFO", ""))

    def _slow(self, seconds: float, gone: Callable[[], bool] | None) -> None:
        """Sleep ``seconds``; on the real server, only while the client still waits for the answer.

        The real server has a fixed number of threads: a client that gave up at its read timeout must
        not keep one asleep, or a few resent calls starve every other request.
        """
        if gone is None:
            self.sleep(seconds)
            return
        while seconds > 0 and not gone():
            self.sleep(min(seconds, 0.1))
            seconds -= 0.1

    def _session(self, tx: Tx, request: Request) -> Any:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HttpError(401, "missing access token: send 'Authorization: Bearer <accessToken>'")
        row = tx.one("SELECT * FROM sessions WHERE token_hash = ?", (_token_hash(token),))
        if row is None or row["closed_at"] is not None:
            raise HttpError(401, "access token is not valid (unknown, or closed by a newer login)")
        if row["expires_at"] <= tx.now:
            raise HttpError(401, "access token expired: renew it before expirationTime or log in again")
        return row

    def _penalty(self, tx: Tx, path: str, body: Any, sim_seconds: float, *, captcha: bool) -> Response:
        ticket = secrets.token_urlsafe(16)
        tx.run(
            "INSERT INTO penalties (ticket, path, body_digest, not_before, captcha) VALUES (?, ?, ?, ?, ?)",
            (ticket, path, _body_digest(body), tx.now + sim_seconds, int(captcha)),
        )
        answer: dict[str, Any] = {"p-ticket": ticket, "p-time": _real_seconds(sim_seconds, tx.settings)}
        if captcha:
            answer["p-captcha"] = True
        return _json(answer)

    def _limited(self, tx: Tx, path: str, key: str, body: Any) -> Response | None:
        """Enforce the path's hourly limit; a valid penalty ticket lets one request through."""
        limit = self.config.rate_limits.get(path)
        if limit is None:
            return None
        if isinstance(body, dict) and "p-ticket" in body:
            row = tx.one("SELECT * FROM penalties WHERE ticket = ?", (body["p-ticket"],))
            if row is None or row["used"] or row["path"] != path or row["body_digest"] != _body_digest(body):
                raise HttpError(400, "p-ticket is unknown, used, or was issued for a different request body")
            if row["captcha"]:
                raise HttpError(
                    403, "this penalty ticket needs a captcha: log in on the web, solve it, then retry"
                )
            if row["not_before"] > tx.now:
                return self._penalty(tx, path, body, row["not_before"] - tx.now, captcha=False)
            tx.run("UPDATE penalties SET used = 1 WHERE ticket = ?", (row["ticket"],))
            tx.run("INSERT INTO rate_events VALUES (?, ?)", (key, tx.now))
            return None
        if tx.settings.limits_enabled:
            events = tx.all(
                "SELECT at FROM rate_events WHERE key = ? AND at > ? ORDER BY at", (key, tx.now - _WINDOW)
            )
            if len(events) >= limit.per_hour:
                wait = events[len(events) - limit.per_hour]["at"] + _WINDOW - tx.now
                answer = "penalty" if tx.settings.penalties_enabled else "429"
                tx.run("INSERT INTO over_limit VALUES (?, ?, ?)", (path, tx.now, answer))
                if tx.settings.penalties_enabled:
                    return self._penalty(tx, path, body, self.config.penalty_seconds, captcha=False)
                retry_after = max(1, math.ceil(wait / tx.settings.time_scale))
                return _error(
                    429,
                    f"rate limit: at most {limit.per_hour} requests per hour to {path}; retry later",
                    {"Retry-After": str(retry_after)},
                )
        tx.run("INSERT INTO rate_events VALUES (?, ?)", (key, tx.now))
        return None

    # --- admin -----------------------------------------------------------------------------------

    def _admin(self, endpoint: str, request: Request) -> Response:
        try:
            body: Any = json.loads(request.get_data() or b"{}") if request.method == "POST" else None
        except ValueError:
            return _error(400, "the body is not valid JSON")
        if request.method == "POST" and not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        try:
            return _json(self._admin_call(endpoint, request.method, body))
        except HttpError as exc:
            return _error(exc.status, exc.message)

    def _admin_call(self, endpoint: str, method: str, body: Any) -> Any:
        store, config = self.store, self.config
        if endpoint == "_sim_users":
            return admin.dump_users(store) if method == "GET" else admin.add_user(store, config, body)
        if endpoint == "_sim_agreements":
            if not isinstance(body.get("name"), str):
                raise HttpError(400, 'expected {"name": "<user name>"}')
            return admin.sign_agreement(store, config, body["name"])
        if endpoint == "_sim_config":
            return (
                admin.get_config(store, config) if method == "GET" else admin.set_config(store, config, body)
            )
        if endpoint == "_sim_faults":
            if method == "GET":
                return admin.list_faults(store)
            try:
                return admin.arm_fault(
                    store,
                    str(body["kind"]),
                    str(body.get("path", "*")),
                    int(body.get("count", 1)),
                    float(body.get("seconds", 0.0)),
                )
            except (KeyError, TypeError, ValueError):
                raise HttpError(
                    400,
                    'expected {"kind": ..., "path": "/user/createevaluationusers", "count": N, "seconds": S}',
                ) from None
        if endpoint == "_sim_accounts":
            return admin.dump_accounts(store, config)
        if endpoint == "_sim_accounts_pnl":
            return admin.move_balance(store, config, body)
        return admin.reset(store, config)


# --- operations (one per contract path) -----------------------------------------------------------

_BAD_LOGIN = "Incorrect username or password. Please try again. Note that passwords are case-sensitive."


_TRADER_CALLS = {"/auth/renewaccesstoken"}
"""What a trader's own token may call here: the partner calls need the administrator's token."""


@_operation("POST", "/auth/accesstokenrequest")
def access_token_request(app: SimApp, call: Call) -> Body:
    """Log the partner administrator in, or a trader with their own name and password."""
    config, tx, body = app.config, call.tx, call.body
    app_checks = [
        (body.get(field), getattr(config, attr))
        for field, attr in (("appId", "app_id"), ("cid", "cid"), ("sec", "sec"))
        if getattr(config, attr) is not None
    ]
    name, password = str(body.get("name") or ""), str(body.get("password") or "")
    if _same(name, config.admin_name):
        checks = [(password, config.admin_password), *app_checks]
        if not all(_same(str(given or ""), expected) for given, expected in checks):
            raise HttpError(401, _BAD_LOGIN)
        return _open_session(config, tx, config.admin_name.lower(), _token_answer)
    trader = tx.one("SELECT * FROM users WHERE name = ?", (name,))
    if trader is None or not rules.check_password(password, trader["password_hash"]):
        raise HttpError(401, _BAD_LOGIN)
    if not all(_same(str(given or ""), expected) for given, expected in app_checks):
        raise HttpError(401, _BAD_LOGIN)
    if trader["status"] != "Active":
        raise HttpError(401, f"the user {name} is {trader['status']}: it cannot log in")
    return _open_session(config, tx, name.lower(), lambda _c, t, e: _trader_token_answer(trader, t, e))


def _same(given: str, expected: str) -> bool:
    """Compare secrets in constant time (as bytes: any character may be sent)."""
    return secrets.compare_digest(given.encode(), expected.encode())


def _open_session(
    config: SimConfig, tx: Tx, login: str, answer: Callable[[SimConfig, str, float], Body]
) -> Body:
    """Start a session for ``login`` (at most max_sessions at once) and answer its token."""
    open_sessions = tx.all(
        "SELECT token_hash FROM sessions WHERE login = ? AND closed_at IS NULL AND expires_at > ? "
        "ORDER BY issued_at, rowid",
        (login, tx.now),
    )
    # At most max_sessions at once: a new login closes the oldest.
    for row in open_sessions[: max(0, len(open_sessions) - config.max_sessions + 1)]:
        tx.run("UPDATE sessions SET closed_at = ? WHERE token_hash = ?", (tx.now, row["token_hash"]))
    token = secrets.token_urlsafe(32)
    expires = tx.now + config.token_lifetime_minutes * 60
    tx.run("INSERT INTO sessions VALUES (?, ?, ?, ?, NULL)", (_token_hash(token), login, tx.now, expires))
    return answer(config, token, expires)


def _trader_token_answer(trader: Any, token: str, expires: float) -> Body:
    return {
        "accessToken": token,
        "expirationTime": rules.iso(expires),
        "userId": trader["id"],
        "name": trader["name"],
        "userStatus": trader["status"],
        "hasLive": False,
        "hasSimPlus": False,
    }


def _token_answer(config: SimConfig, token: str, expires: float) -> Body:
    return {
        "accessToken": token,
        "expirationTime": rules.iso(expires),
        "userId": config.admin_user_id,
        "name": config.admin_name,
        "userStatus": "Active",
        "hasLive": False,
        "hasSimPlus": False,
    }


@_operation("GET", "/auth/renewaccesstoken")
def renew_access_token(app: SimApp, call: Call) -> Body:
    expires = call.tx.now + app.config.token_lifetime_minutes * 60
    call.tx.run(
        "UPDATE sessions SET expires_at = ? WHERE token_hash = ?", (expires, call.session["token_hash"])
    )
    token = call.request.headers["Authorization"].partition(" ")[2]
    return _token_answer(app.config, token, expires)


@_operation("GET", "/auth/me")
def me(app: SimApp, call: Call) -> Body:
    config = app.config
    return {
        "userId": config.admin_user_id,
        "name": config.admin_name,
        "fullName": f"{config.organization_name} administrator",
        "email": config.admin_email,
        "emailVerified": True,
        "isTrial": False,
        "organizationName": config.organization_name,
    }


@_operation("POST", "/user/createevaluationusers")
def create_evaluation_users(app: SimApp, call: Call) -> Body:
    return rules.create_evaluation_users(call.tx, app.config, app.config.organization_id, call.body)


@_operation("POST", "/user/modifyemailaddress")
def modify_email_address(app: SimApp, call: Call) -> Body:
    return rules.modify_email_address(call.tx, app.config.organization_id, call.body)


@_operation("POST", "/user/canceleverything")
def cancel_everything(app: SimApp, call: Call) -> Body:
    return rules.cancel_everything(call.tx, app.config.organization_id, call.body)


@_operation("GET", "/user/list")
def user_list(app: SimApp, call: Call) -> Body:
    return rules.list_users(call.tx, app.config.organization_id)


@_operation("GET", "/user/item")
def user_item(app: SimApp, call: Call) -> Body:
    return rules.user_item(call.tx, app.config.organization_id, _int_arg(call.request, "id"))


@_operation("GET", "/user/items")
def user_items(app: SimApp, call: Call) -> Body:
    return rules.user_items(call.tx, app.config.organization_id, _int_list_arg(call.request, "ids"))


@_operation("GET", "/user/find")
def user_find(app: SimApp, call: Call) -> Body:
    name = call.request.args.get("name")
    if not name:
        raise HttpError(400, "query parameter 'name' is required")
    return rules.find_user(call.tx, app.config.organization_id, name)


@_operation("POST", "/contactInfo/updatecontactinfo")
def update_contact_info(app: SimApp, call: Call) -> Body:
    return rules.update_contact_info(call.tx, app.config.organization_id, call.body)


@_operation("GET", "/contactInfo/item")
def contact_info_item(app: SimApp, call: Call) -> Body:
    return rules.contact_item(call.tx, app.config.organization_id, _int_arg(call.request, "id"))


@_operation("GET", "/contactInfo/deps")
def contact_info_deps(app: SimApp, call: Call) -> Body:
    return rules.contact_deps(call.tx, app.config.organization_id, [_int_arg(call.request, "masterid")])


@_operation("GET", "/contactInfo/ldeps")
def contact_info_ldeps(app: SimApp, call: Call) -> Body:
    return rules.contact_deps(call.tx, app.config.organization_id, _int_list_arg(call.request, "masterids"))


@_operation("POST", "/userPlugin/addentitlementsubscription")
def add_entitlement_subscription(app: SimApp, call: Call) -> Body:
    return rules.add_entitlement_subscription(call.tx, app.config, app.config.organization_id, call.body)


@_operation("GET", "/entitlement/list")
def entitlement_list(app: SimApp, call: Call) -> Body:
    return rules.entitlement_list(app.config)


@_operation("GET", "/adminAlertSignal/deps")
def admin_alert_signal_deps(app: SimApp, call: Call) -> Body:
    return rules.signal_deps(call.tx, app.config.organization_id, _int_arg(call.request, "masterid"))


@_operation("GET", "/adminAlertSignal/item")
def admin_alert_signal_item(app: SimApp, call: Call) -> Body:
    return rules.signal_item(call.tx, app.config.organization_id, _int_arg(call.request, "id"))


@_operation("POST", "/adminAlertSignal/completealertsignal")
def complete_alert_signal(app: SimApp, call: Call) -> Body:
    return rules.complete_alert_signal(call.tx, app.config.organization_id, call.body)


# --- evaluation accounts (Stage 4) -----------------------------------------------------------------


@_operation("POST", "/user/createevaluationaccounts")
def create_evaluation_accounts(app: SimApp, call: Call) -> Body:
    return rules.create_evaluation_accounts(call.tx, app.config, app.config.organization_id, call.body)


@_operation("POST", "/user/revoketradingpermission")
def revoke_trading_permission(app: SimApp, call: Call) -> Body:
    return rules.revoke_trading_permission(call.tx, app.config, app.config.organization_id, call.body)


@_operation("POST", "/user/revoketradingpermissions")
def revoke_trading_permissions(app: SimApp, call: Call) -> Body:
    return rules.revoke_trading_permissions(call.tx, app.config.organization_id, call.body)


@_operation("POST", "/account/resetdemoaccountstate")
def reset_demo_account_state(app: SimApp, call: Call) -> Body:
    return rules.reset_demo_account_state(call.tx, app.config.organization_id, call.body)


@_operation("POST", "/accountRiskStatus/switchriskcategory")
def switch_risk_category(app: SimApp, call: Call) -> Body:
    return rules.switch_risk_category(call.tx, app.config, app.config.organization_id, call.body)


@_operation("POST", "/accountRiskStatus/setadminautoliqaction")
def set_admin_auto_liq_action(app: SimApp, call: Call) -> Body:
    return rules.set_admin_auto_liq_action(call.tx, app.config.organization_id, call.body)


@_operation("POST", "/userAccountAutoLiq/updateuserautoliqs")
def update_user_auto_liqs(app: SimApp, call: Call) -> Body:
    return rules.update_user_auto_liqs(call.tx, app.config, app.config.organization_id, call.body)


def _masters(call: Call, form: str) -> list[int] | None:
    """The master ids a list/deps/ldeps read is limited to (None for ``list``: everything)."""
    if form == "deps":
        return [_int_arg(call.request, "masterid")]
    if form == "ldeps":
        return _int_list_arg(call.request, "masterids")
    return None


def _register_reads(entity: str, read: Callable[[SimApp, Call, list[int] | None], Body]) -> None:
    """Register ``/{entity}/list``, ``/deps?masterid=`` and ``/ldeps?masterids=`` over one read."""
    for form in ("list", "deps", "ldeps"):

        def handler(app: SimApp, call: Call, form: str = form) -> Body:
            return read(app, call, _masters(call, form))

        handler.__name__ = f"{entity}_{form}"
        _operation("GET", f"/{entity}/{form}")(handler)


_register_reads(
    "userPlugin",
    lambda app, call, users: rules.user_plugins(call.tx, app.config, app.config.organization_id, users),
)
_register_reads(
    "account",
    lambda app, call, users: rules.list_accounts(call.tx, app.config, app.config.organization_id, users),
)
_register_reads(
    "tradingPermission",
    lambda app, call, users: rules.list_trading_permissions(
        call.tx, app.config, app.config.organization_id, users
    ),
)
_register_reads(
    "userAccountAutoLiq",
    lambda app, call, accounts: rules.list_auto_liqs(call.tx, app.config.organization_id, accounts),
)
_register_reads(
    "accountRiskStatus",
    lambda app, call, accounts: rules.list_risk_statuses(call.tx, app.config.organization_id, accounts),
)


def create_app(
    config: SimConfig | None = None,
    db_path: str | Path = "state/sim.sqlite",
    clock: Clock | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> SimApp:
    """Build the simulator over the SQLite file ``db_path`` (created when missing).

    With ``config`` given, its runtime knobs (limits, penalties, time scale) replace the ones in
    the file; without, the file's knobs are kept, so ``reconcile sim config --db`` sticks for the
    embedded simulator. ``clock`` (real epoch seconds) and ``sleep`` are test seams.
    """
    effective = config or SimConfig()
    store = Store(db_path, clock=clock, defaults=RuntimeSettings.from_config(effective))
    if config is not None:
        with store.transaction() as tx:
            store.update_settings(tx, **RuntimeSettings.from_config(config).model_dump())
    return SimApp(effective, store, sleep=sleep)
