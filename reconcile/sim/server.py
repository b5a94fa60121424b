"""Run the simulator as a real HTTP/1.1 server on waitress (loopback, unless an admin token guards it).

Connections are kept alive, as the partner API keeps them, so the client's pooled-connection
path (reuse, a connection the server closed while idle) meets a real server in the tests and the
benchmark; Werkzeug's development server closed every connection after one answer.
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from waitress import wasyncore
from waitress.channel import ClientDisconnected
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ThreadedTaskDispatcher

from reconcile.api.endpoints import is_loopback
from reconcile.errors import ReconcileError
from reconcile.sim.app import is_admin_request
from reconcile.sim.faults import CLIENT_GONE_KEY, DropConnection

ADMIN_TOKEN_ENV = "RECONCILE_SIM_ADMIN_TOKEN"
"""The variable holding the bearer token every ``/_sim/`` route then requires."""

THREADS = 16
"""Requests served at once. Waitress takes a thread per request, not per connection (idle kept-alive
connections hold none): apply sends on 6 threads by default, tests hold up to a few slow faults
besides, and a slow fault must never queue the rest of a run behind it."""

IDLE_TIMEOUT = 60
"""Seconds a kept-alive connection may sit idle before the server closes it (a common front-end
default, e.g. a load balancer's); clients must then notice and dial again."""


class SimServer:
    """A bound waitress server: :meth:`serve_forever` until :meth:`shutdown`, then :meth:`server_close`."""

    def __init__(self, app: Any, host: str, port: int, idle_timeout: int) -> None:
        self._map: dict[int, Any] = {}
        # Its threads start once the socket is bound: waitress starts them first, and a failed
        # bind left 16 idle threads (and the wake-up pipe) behind for good.
        dispatcher = ThreadedTaskDispatcher()
        try:
            server = create_server(
                _dropping(app),
                map=self._map,
                _dispatcher=dispatcher,
                host=host,
                port=port,
                # One socket: for a name like localhost, waitress would otherwise bind its IPv4 and IPv6
                # addresses (on two ports when port=0).
                ipv4=":" not in host,
                ipv6=":" in host,
                threads=THREADS,
                channel_timeout=idle_timeout,
                # Idle connections are looked for every cleanup_interval seconds: as often as they expire.
                cleanup_interval=max(1, min(30, idle_timeout)),
                connection_limit=1000,
                asyncore_use_poll=True,  # select() fails past 1024 descriptors
                clear_untrusted_proxy_headers=False,  # no proxy in front; nothing to strip
            )
        except OSError as exc:  # Werkzeug's server said this itself; waitress leaves it to its caller
            wasyncore.close_all(self._map)
            raise ReconcileError(
                f"cannot serve the simulator on {host}:{port}: {exc.strerror or exc}; stop the program "
                "that uses that port, or choose another --port (0 picks a free one)"
            ) from None
        if not isinstance(server, BaseWSGIServer):  # a name with several addresses: one socket each
            server.close()
            wasyncore.close_all(self._map)
            raise ReconcileError(f"{host} names several addresses; serve the simulator on one IP address")
        dispatcher.set_thread_count(THREADS)
        self._server = server
        self.host = host.strip("[]")  # waitress takes [::1] as well as ::1; URLs add the brackets
        self.port = int(server.getsockname()[1])
        self._stop = threading.Event()
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        """Answer requests until :meth:`shutdown` (or Ctrl-C) stops the loop."""
        self._stopped.clear()
        try:
            while not self._stop.is_set() and self._map:
                wasyncore.loop(timeout=1.0, map=self._map, use_poll=True, count=1)
        except KeyboardInterrupt:
            pass  # Ctrl-C ends `sim serve` quietly, exit status 0
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (running in another thread) and wait until it returns."""
        self._stop.set()
        self._server.pull_trigger()  # wake the loop out of its poll
        self._stopped.wait(timeout=5)

    def server_close(self) -> None:
        """Close the listening socket and every connection; let the worker threads finish."""
        wasyncore.close_all(self._map)
        self._server.task_dispatcher.shutdown(timeout=5)

    def open_connections(self) -> int:
        """Client connections the server holds open now (kept-alive ones included)."""
        channels: dict[int, Any] = self._server.active_channels  # type: ignore[assignment]  # stub: a dict
        return len(channels)


def _dropping(app: Any) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """Turn the app's ``drop_after_apply`` into a connection waitress closes without an answer.

    Waitress closes a channel without writing when the task raises ``ClientDisconnected`` before
    any header is written (``HTTPChannel.service``); any other exception would be answered 500.
    """

    def served(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ[CLIENT_GONE_KEY] = _hung_up(environ)
        try:
            result: Iterable[bytes] = app(environ, start_response)
        except DropConnection as exc:
            raise ClientDisconnected(f"simulated drop after applying {exc}") from exc
        return result

    return served


def _hung_up(environ: dict[str, Any]) -> Callable[[], bool] | None:
    """Return a check of whether the request's client has closed its connection (None if unknown).

    Waitress's own ``waitress.client_disconnected`` only learns it by reading on while a request
    runs (``channel_request_lookahead``), which drops the answers of clients that half-close
    after sending; peeking at the socket learns it without reading.
    """
    sock = getattr(getattr(environ.get("waitress.client_disconnected"), "__self__", None), "socket", None)
    if not isinstance(sock, socket.socket):
        return None

    def gone() -> bool:
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False  # nothing to read: still there
        except OSError:
            return True

    return gone


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
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    token: str | None = None,
    idle_timeout: int = IDLE_TIMEOUT,
) -> SimServer:
    """Bind a waitress server for ``app`` (``port=0`` picks a free port); it logs no line per request.

    With ``token``, every ``/_sim/`` request must carry it; without, only loopback is allowed.
    """
    check_exposure(host, token)
    served = guard_admin(app, token) if token is not None else app
    return SimServer(served, host, port, idle_timeout)


def base_url(server: SimServer) -> str:
    """The partner-API base URL of a running server: ``http://HOST:PORT/v1``."""
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"http://{host}:{server.port}/v1"


@contextmanager
def serve(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    token: str | None = None,
    idle_timeout: int = IDLE_TIMEOUT,
) -> Iterator[str]:
    """Serve ``app`` from a background thread; yield its base URL; stop on exit."""
    server = make(app, host, port, token=token, idle_timeout=idle_timeout)
    thread = threading.Thread(target=server.serve_forever, name="reconcile-sim", daemon=True)
    thread.start()
    try:
        yield base_url(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
