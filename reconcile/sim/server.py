"""Run the simulator as a real threaded HTTP server (loopback, unless an admin token guards it)."""

from __future__ import annotations

import hmac
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from reconcile.api.endpoints import is_loopback
from reconcile.errors import ReconcileError
from reconcile.sim.app import is_admin_request

ADMIN_TOKEN_ENV = "RECONCILE_SIM_ADMIN_TOKEN"
"""The variable holding the bearer token every ``/_sim/`` route then requires."""


class _QuietHandler(WSGIRequestHandler):
    # Keep-alive: under HTTP/1.0 every request pays a new TCP connection. Werkzeug switches
    # threaded servers to 1.1 only for handlers that do not set it, so say it here.
    protocol_version = "HTTP/1.1"

    # One log line per request would drown test output and slow the benchmark; errors still print.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        # The app dates its answers on the simulator's clock (time-scaled); the server's own,
        # real Date would be a second, contradicting one.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Server", self.version_string())


def admin_token(environ: dict[str, str] | None = None) -> str | None:
    """Return the admin token from ``RECONCILE_SIM_ADMIN_TOKEN``, or None when unset or empty."""
    value = (os.environ if environ is None else environ).get(ADMIN_TOKEN_ENV, "")
    return value or None


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without an admin token: ``/_sim/`` rewrites everything."""
    if token is None and not is_loopback(host.strip("[]")):
        raise ReconcileError(
            f"refusing to serve the simulator on {host}: its /_sim/ routes (reset, add users, faults) "
            f"would be open to the network. Serve on 127.0.0.1, or set {ADMIN_TOKEN_ENV} to a secret "
            "that every /_sim/ request must then send as 'Authorization: Bearer TOKEN'"
        )


def guard_admin(app: Any, token: str) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """Wrap a WSGI ``app`` so that ``/_sim/`` routes answer 401 without ``Bearer token``."""
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if is_admin_request(environ):
            sent = str(environ.get("HTTP_AUTHORIZATION", "")).encode()
            if not hmac.compare_digest(sent, expected):
                body = json.dumps(
                    {"errorText": f"the /_sim/ routes need the admin token ({ADMIN_TOKEN_ENV})"}
                ).encode()
                start_response(
                    "401 Unauthorized",
                    [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
                )
                return [body]
        result: Iterable[bytes] = app(environ, start_response)
        return result

    return guarded


def make(
    app: Any, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True, token: str | None = None
) -> BaseWSGIServer:
    """Bind a threaded Werkzeug server for ``app`` (``port=0`` picks a free port).

    With ``token``, every ``/_sim/`` request must carry it; without, only loopback is allowed.
    """
    check_exposure(host, token)
    handler = _QuietHandler if quiet else WSGIRequestHandler
    served = guard_admin(app, token) if token is not None else app
    return make_server(host, port, served, threaded=True, request_handler=handler)


def base_url(server: BaseWSGIServer) -> str:
    """The partner-API base URL of a running server: ``http://HOST:PORT/v1``."""
    return f"http://{server.host}:{server.port}/v1"


@contextmanager
def serve(app: Any, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None) -> Iterator[str]:
    """Serve ``app`` from a background thread; yield its base URL; stop on exit."""
    server = make(app, host, port, token=token)
    thread = threading.Thread(target=server.serve_forever, name="reconcile-sim", daemon=True)
    thread.start()
    try:
        yield base_url(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
