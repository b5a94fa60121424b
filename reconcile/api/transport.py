"""The default HTTP transport: httpx's own (httpcore), used without httpx's client layer.

The client builds each :class:`httpx.Request` itself and runs the token flow (:func:`send`): the
client layer's per-request URL merging, cookie jar and header handling cost about as much CPU
as the exchange itself. A hand-written HTTP/1.1 transport measured 0.08 ms of client CPU per
small POST on loopback against httpx's 0.22 ms (urllib3: 0.21 ms), but the wire protocol is
left to a library that is kept up: 0.14 ms a request is not worth owning HTTP parsing and TLS.

:class:`httpx.HTTPTransport` maps failures onto httpx's exceptions, so
:class:`reconcile.api.client.PartnerClient` tells a request that never left this machine
(:class:`httpx.ConnectError`, :class:`httpx.ConnectTimeout`) from one that may have been applied.
"""

from __future__ import annotations

import ssl
import urllib.request

import httpx

MAX_IDLE = 20
"""Connections per origin kept open between requests (as httpx's client kept)."""


class KeepAliveTransport(httpx.HTTPTransport):
    """httpx's transport with the client's defaults: kept-alive connections, no retries.

    A request without a timeout of its own gets ``timeout`` (the client always sets one).
    """

    def __init__(self, *, timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context`` verifies HTTPS servers; by default httpx's (certifi, or ``SSL_CERT_FILE``)."""
        super().__init__(
            verify=ssl_context if ssl_context is not None else True,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=MAX_IDLE),
            retries=0,
        )
        self._timeout = httpx.Timeout(timeout).as_dict()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions.setdefault("timeout", self._timeout)
        return super().handle_request(request)


class _ThroughHttpx(httpx.BaseTransport):
    """httpx's own client as the transport: it routes through the proxies the environment names."""

    def __init__(self, timeout: float) -> None:
        self._client = httpx.Client(timeout=timeout)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._client.send(request)

    def close(self) -> None:
        self._client.close()


def default_transport(scheme: str, *, timeout: float) -> httpx.BaseTransport:
    """The transport for an endpoint of ``scheme``: :class:`KeepAliveTransport`, unless a proxy is set.

    With ``HTTP(S)_PROXY`` or ``ALL_PROXY`` in the environment, httpx's client sends (it reads
    those, ``NO_PROXY`` and the certificate variables exactly as before this transport existed).
    """
    proxies = urllib.request.getproxies_environment()
    if proxies.get(scheme) or proxies.get("all"):
        return _ThroughHttpx(timeout)
    return KeepAliveTransport(timeout=timeout)


def send(transport: httpx.BaseTransport, request: httpx.Request, auth: httpx.Auth | None) -> httpx.Response:
    """Send ``request`` through ``auth``'s flow (login, resend on 401) as httpx's client did."""
    if auth is None:
        return _read(transport.handle_request(request), request)
    flow = auth.sync_auth_flow(request)
    try:
        request = next(flow)
        while True:
            response = _read(transport.handle_request(request), request)
            try:
                request = flow.send(response)
            except StopIteration:
                return response
    finally:
        flow.close()


def _read(response: httpx.Response, request: httpx.Request) -> httpx.Response:
    response.request = request
    response.read()
    return response
