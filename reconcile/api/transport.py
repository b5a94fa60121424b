"""The default HTTP transport: plain HTTP/1.1 over kept-alive connections, one request at a time each.

httpx's own transport (httpcore and h11, a pool per client) cost about 0.15-0.2 ms of CPU per
request, and ``http.client`` parses every answer's headers with the ``email`` package (another
0.1 ms): as much as everything else the client does for a call. The partner API's exchanges are
small JSON bodies, never streamed, so this transport writes the request httpx built in one
``sendall`` and reads the answer whole (``Content-Length``, chunked, or until close).

Failures map onto httpx's exceptions with the same meaning, so
:class:`reconcile.api.client.PartnerClient` tells a request that never left this machine
(:class:`httpx.ConnectError`, :class:`httpx.ConnectTimeout`) from one that may have been applied.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import urllib.request
from typing import BinaryIO

import httpx

_Origin = tuple[str, str, int]

MAX_LINE = 65536
"""The longest status or header line read (as ``http.client``): a hostile server cannot grow memory."""
MAX_HEADERS = 100
MAX_IDLE = 20
"""Connections per origin kept open between requests (httpx's pool kept as many)."""


class _Broken(Exception):
    """The server's answer is not HTTP/1.1 as it should be, or broke off."""


class _Connection:
    """One open socket and its buffered reader."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader: BinaryIO = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class KeepAliveTransport(httpx.BaseTransport):
    """Send each request over an idle connection to its origin, opening one when none is idle.

    At most :data:`MAX_IDLE` connections per origin stay open between requests (the applier's
    worker threads come and go; their connections are not theirs). A connection the server
    closed (``Connection: close``, or an idle one it dropped) is not reused: a request never goes
    out on a socket already known to be dead.
    """

    def __init__(self, *, timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._closed = False
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        conn = self._idle_connection(origin) or self._connect(origin, request)
        try:
            conn.sock.sendall(_request_bytes(request))
        except BaseException as exc:
            conn.close()
            if isinstance(exc, TimeoutError):
                raise httpx.WriteTimeout("the request could not be written in time", request=request) from exc
            if isinstance(exc, OSError):
                raise httpx.WriteError(str(exc), request=request) from exc
            raise
        try:
            status, reason, headers, content, keep = _read_response(conn.reader, request.method)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, TimeoutError):
                raise httpx.ReadTimeout(f"no answer within {self.timeout:g} s", request=request) from exc
            if isinstance(exc, (OSError, _Broken, ValueError)):
                raise httpx.RemoteProtocolError(f"the answer broke off ({exc})", request=request) from exc
            raise
        self._release(origin, conn, keep)
        return httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(content),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
            request=request,
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for conn in connections:
                conn.close()

    def _idle_connection(self, origin: _Origin) -> _Connection | None:
        """An idle connection to ``origin`` the server has not closed, or None."""
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                conn = idle.pop() if idle else None
            if conn is None or not _readable(conn.sock):
                return conn
            conn.close()

    def _release(self, origin: _Origin, conn: _Connection, keep: bool) -> None:
        """Keep ``conn`` for the next request when the server allows it and few are idle; else close it."""
        if keep:
            with self._lock:
                idle = self._idle.setdefault(origin, [])
                if not self._closed and len(idle) < MAX_IDLE:
                    idle.append(conn)
                    return
        conn.close()

    def _connect(self, origin: _Origin, request: httpx.Request) -> _Connection:
        """A new connection to ``origin`` (connect errors raised as httpx's)."""
        scheme, host, port = origin
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"cannot send to a {scheme!r} URL", request=request)
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection within {self.timeout:g} s", request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                if self._ssl_context is None:
                    self._ssl_context = httpx.create_ssl_context()
                sock = self._ssl_context.wrap_socket(sock, server_hostname=host)
        except TimeoutError as exc:
            sock.close()
            raise httpx.ConnectTimeout(f"no TLS session within {self.timeout:g} s", request=request) from exc
        except OSError as exc:  # ssl.SSLError is an OSError
            sock.close()
            raise httpx.ConnectError(str(exc), request=request) from exc
        return _Connection(sock)


def _request_bytes(request: httpx.Request) -> bytes:
    """``request`` as written on the wire, with the headers httpx gave it (Host, Content-Length …)."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    lines.extend(b"%s: %s" % (name, value) for name, value in request.headers.raw)
    return b"\r\n".join(lines) + b"\r\n\r\n" + request.read()


def _read_response(
    reader: BinaryIO, method: str
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]:
    """Read one answer: (status, reason, headers, body, whether the connection may be reused)."""
    while True:
        version, status, reason = _status_line(reader)
        headers = _headers(reader)
        if not 100 <= status < 200:
            break  # an interim answer (100 Continue) is followed by the real one
    fields = {name.lower(): value for name, value in headers}
    keep = version == b"HTTP/1.1" and b"close" not in fields.get(b"connection", b"").lower()
    if method == "HEAD" or status in (204, 304):
        return status, reason, headers, b"", keep
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        return status, reason, headers, _chunked(reader), keep
    length = fields.get(b"content-length")
    if length is None:
        return status, reason, headers, reader.read(), False  # the body ends when the server closes
    size = int(length)
    body = reader.read(size)
    if size < 0 or len(body) != size:
        raise _Broken(f"{len(body)} of {size} bytes")
    return status, reason, headers, body, keep


def _line(reader: BinaryIO) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise _Broken("a line too long")
    if not line:
        raise _Broken("the server closed the connection")
    return line


def _status_line(reader: BinaryIO) -> tuple[bytes, int, bytes]:
    parts = _line(reader).rstrip(b"\r\n").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise _Broken("no HTTP status line")
    return parts[0], int(parts[1]), parts[2] if len(parts) == 3 else b""


def _headers(reader: BinaryIO) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    while True:
        line = _line(reader)
        if line in (b"\r\n", b"\n"):
            return headers
        if len(headers) == MAX_HEADERS:
            raise _Broken("too many headers")
        name, sep, value = line.partition(b":")
        if not sep:
            raise _Broken("a header without a colon")
        headers.append((name.strip(), value.strip()))


def _chunked(reader: BinaryIO) -> bytes:
    body = bytearray()
    while True:
        size = int(_line(reader).split(b";", 1)[0].strip(), 16)
        if size == 0:
            _headers(reader)  # the trailer, usually empty
            return bytes(body)
        chunk = reader.read(size)
        if len(chunk) != size or reader.read(2) != b"\r\n":
            raise _Broken("a chunk broke off")
        body += chunk


def _readable(sock: socket.socket) -> bool:
    """True when an idle connection has something to read: the server closed it (or broke the protocol)."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


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
