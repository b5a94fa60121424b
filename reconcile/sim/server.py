"""Run the simulator as a real threaded HTTP server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    # Keep-alive: under HTTP/1.0 every request pays a new TCP connection. Werkzeug switches
    # threaded servers to 1.1 only for handlers that do not set it, so say it here.
    protocol_version = "HTTP/1.1"

    # One log line per request would drown test output and slow the benchmark; errors still print.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def make(app: Any, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True) -> BaseWSGIServer:
    """Bind a threaded Werkzeug server for ``app`` (``port=0`` picks a free port)."""
    handler = _QuietHandler if quiet else WSGIRequestHandler
    return make_server(host, port, app, threaded=True, request_handler=handler)


def base_url(server: BaseWSGIServer) -> str:
    """The partner-API base URL of a running server: ``http://HOST:PORT/v1``."""
    return f"http://{server.host}:{server.port}/v1"


@contextmanager
def serve(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a background thread; yield its base URL; stop on exit."""
    server = make(app, host, port)
    thread = threading.Thread(target=server.serve_forever, name="reconcile-sim", daemon=True)
    thread.start()
    try:
        yield base_url(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
