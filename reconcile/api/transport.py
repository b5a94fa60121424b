"""The default HTTP transport: urllib3's connection pools under httpx's requests and responses.

httpx's client costs about 0.78 ms of client CPU per small POST on loopback and its transport alone
(httpcore and h11) 0.65 ms; urllib3's pool 0.48 ms. The partner API's exchanges are small JSON
bodies, never streamed, so each answer is read whole and handed to httpx as bytes (still encoded:
httpx decodes gzip as its own transport's answers).

Failures map onto httpx's exceptions with the same meaning, so
:class:`reconcile.api.client.PartnerClient` tells a request that never left this machine
(:class:`httpx.ConnectError`, :class:`httpx.ConnectTimeout`) from one that may have been applied.
"""

from __future__ import annotations

import ssl
import threading
import urllib.request
from typing import Any

import httpx
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError
from urllib3.util import SKIP_HEADER

_Origin = tuple[str, str, int]

MAX_IDLE = 20
"""Connections per origin kept open between requests (httpx's pool kept as many)."""

_NOT_SENT, _WRITING, _READING = range(3)
_stage = threading.local()
"""How far this thread's request got (set by :class:`_Connection`): whether it may have been applied."""


class _Connection(HTTPConnection):
    """urllib3's connection, noting on this thread when the request starts and ends going out."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        _stage.now = _WRITING
        super().request(*args, **kwargs)
        _stage.now = _READING


class _TLSConnection(_Connection, HTTPSConnection):
    """The same over TLS (the handshake happens before :meth:`request`)."""


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


class KeepAliveTransport(httpx.BaseTransport):
    """Send each request over an idle connection to its origin, opening one when none is idle.

    At most :data:`MAX_IDLE` connections per origin stay open between requests (the applier's
    worker threads come and go; their connections are not theirs). A connection the server
    closed (``Connection: close``, or an idle one it dropped) is not reused: a request never goes
    out on a socket already known to be dead. Nothing is retried or redirected here.
    """

    def __init__(self, *, timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context`` verifies HTTPS servers; by default httpx's (certifi, or ``SSL_CERT_FILE``)."""
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._pools: dict[_Origin, HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        pool = self._pools.get((url.scheme, url.host, url.port or 0)) or self._pool(request)
        _stage.now = _NOT_SENT
        try:
            answer = pool.urlopen(
                request.method,
                url.raw_path.decode("ascii"),
                body=request.read() or None,
                headers=_headers(request),
                retries=False,
                redirect=False,
                assert_same_host=False,
                preload_content=True,
                decode_content=False,
            )
        except (HTTPError, OSError) as exc:
            raise _failure(exc, request, self.timeout) from exc
        return httpx.Response(
            answer.status,
            headers=list(answer.headers.iteritems()),
            stream=httpx.ByteStream(answer.data),
            extensions={
                "http_version": answer.version_string.encode("ascii"),
                "reason_phrase": answer.reason.encode("latin-1") if answer.reason else b"",
            },
            request=request,
        )

    def close(self) -> None:
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()

    def _pool(self, request: httpx.Request) -> HTTPConnectionPool:
        """The pool of connections to ``request``'s origin, made on first use."""
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"cannot send to a {url.scheme!r} URL", request=request)
        with self._lock:
            key = (url.scheme, url.host, url.port or 0)
            pool = self._pools.get(key)
            if pool is None:
                options: dict[str, Any] = {
                    "maxsize": MAX_IDLE,
                    "block": False,
                    "timeout": Timeout(connect=self.timeout, read=self.timeout),
                    "retries": False,
                }
                if url.scheme == "https":
                    if self._ssl_context is None:
                        self._ssl_context = httpx.create_ssl_context()
                    pool = _TLSPool(url.host, url.port or 443, ssl_context=self._ssl_context, **options)
                else:
                    pool = _Pool(url.host, url.port or 80, **options)
                self._pools[key] = pool
            return pool


def _headers(request: httpx.Request) -> dict[str, str]:
    """The headers httpx built, as they are (no ``User-Agent`` or ``Accept-Encoding`` of urllib3's)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in request.headers.raw:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    for name in ("User-Agent", "Accept-Encoding"):
        if name not in request.headers:
            headers[name] = SKIP_HEADER
    return headers


def _failure(exc: Exception, request: httpx.Request, timeout: float) -> httpx.TransportError:
    """httpx's exception for ``exc``: a connect error only when nothing of the request went out."""
    stage = getattr(_stage, "now", _NOT_SENT)
    if isinstance(exc, NewConnectionError):  # a subclass of ConnectTimeoutError: test it first
        return httpx.ConnectError(str(exc), request=request)
    if isinstance(exc, ConnectTimeoutError) or (stage == _NOT_SENT and isinstance(exc, ReadTimeoutError)):
        return httpx.ConnectTimeout(f"no connection within {timeout:g} s", request=request)
    if stage == _NOT_SENT:  # the TLS handshake failed (an untrusted certificate …)
        return httpx.ConnectError(str(exc), request=request)
    timed_out = isinstance(exc, ReadTimeoutError) or isinstance(exc.__context__, TimeoutError)
    if stage == _WRITING:
        if timed_out:
            return httpx.WriteTimeout("the request could not be written in time", request=request)
        return httpx.WriteError(str(exc), request=request)
    if timed_out:
        return httpx.ReadTimeout(f"no answer within {timeout:g} s", request=request)
    return httpx.RemoteProtocolError(f"the answer broke off ({exc})", request=request)


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
