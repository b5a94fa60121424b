"""Run the simulator in-process as an httpx transport, with faults that look like the network's."""

from __future__ import annotations

from typing import Any

import httpx

from reconcile.sim.faults import READ_TIMEOUT_KEY, DropConnection, SimulatedTimeout


class SimTransport(httpx.BaseTransport):
    """An ``httpx.BaseTransport`` over a WSGI app (normally :func:`reconcile.sim.app.create_app`).

    The "drop the connection" fault surfaces as :class:`httpx.RemoteProtocolError` and a slow
    answer beyond the request's read timeout as :class:`httpx.ReadTimeout`, as they would from a
    socket, so client code written against this transport behaves the same on the network.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")

        def with_timeout(environ: dict[str, Any], start_response: Any) -> Any:
            if read_timeout is not None:
                environ[READ_TIMEOUT_KEY] = read_timeout
            return self.app(environ, start_response)

        try:
            return httpx.WSGITransport(app=with_timeout).handle_request(request)
        except DropConnection:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from None
        except SimulatedTimeout as exc:
            raise httpx.ReadTimeout(f"timed out after {exc.waited:g} s", request=request) from None
