"""The default HTTP transport: kept-alive HTTP/1.1 connections, answers read by llhttp (httptools).

The client builds each :class:`httpx.Request` itself and runs the token flow (:func:`send`): the
client layer's per-request URL merging, cookie jar and header handling cost about as much CPU
as the exchange itself. Below it, httpx's own transport (httpcore and h11, pure Python) spent
0.18 ms of CPU on each small request against ``sim serve``; this one spends ~0.08
(``bench/apply.py``'s "transport alone" line): the difference was most of the apply's CPU per user.

What is written here is the part HTTP leaves to a client: the request's head (from the headers
httpx built, each checked against RFC 9110's grammar before anything is sent), the pool of idle
connections per origin, and when a connection may be reused. Reading an answer (status line,
headers, framing by length, chunks or the close, informational answers) is llhttp's, Node.js's
parser, through httptools. ``tests/test_api_transport_h11.py`` runs the same exchanges through
httpx's transport too and pins each difference from h11.

Failures are httpx's exceptions, in the order a request goes out, so
:class:`reconcile.api.client.PartnerClient` tells a request that never left this machine
(:class:`httpx.ConnectError`, :class:`httpx.ConnectTimeout`: DNS, refused, the TLS handshake)
from one that may have been applied (:class:`httpx.WriteError` and every later failure).
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import httptools
import httpx

MAX_IDLE = 20
"""Connections per origin kept open between requests (as httpx's client kept)."""
KEEPALIVE_EXPIRY = 5.0
"""Seconds a connection may stay idle and still be reused (httpx's default).

A connection idle longer (a pacing wait of an hour between creates) may have been dropped by a
firewall or load balancer without a close the poll could see; a create sent on it would be lost.
"""

_READ_SIZE = 65536
_MAX_HEAD = 100 * 1024
"""The most bytes read without the answer's head complete (httpcore's limit for h11)."""
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A method or header name (RFC 9110 5.6.2)."""
_FIELD_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?")
"""A header value (RFC 9110 5.5): no CR, LF or NUL, no whitespace at either end."""
_TARGET = re.compile(rb"[\x21-\x7e]+")
_FRAMING = frozenset((b"host", b"content-length", b"transfer-encoding", b"connection"))
"""The request headers that decide how the server reads the request and whether it keeps the connection."""
_Origin = tuple[str, str, int]


class KeepAliveTransport(httpx.BaseTransport):
    """HTTP/1.1 with kept-alive connections, no retries, TLS verified as httpx verifies.

    A request without a timeout of its own gets ``timeout`` (the client always sets one).
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
    ) -> None:
        """``ssl_context`` verifies HTTPS servers; by default httpx's (certifi, or ``SSL_CERT_FILE``)."""
        self._timeout = httpx.Timeout(timeout).as_dict()
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", self._timeout)
        head, body, close = _request_bytes(request)
        origin = _origin(request.url)
        connection = self._checkout(origin) or self._connect(origin, timeout)
        try:
            answer = connection.exchange(head, body, timeout, head_only=request.method == "HEAD")
        except BaseException:
            connection.close()
            raise
        self._checkin(origin, connection, reusable=answer.reusable and not close)
        return answer.response()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [c for connections in self._idle.values() for c in connections]
            self._idle.clear()
        for connection in idle:
            connection.close()

    def _checkout(self, origin: _Origin) -> _Connection | None:
        """An idle connection to ``origin`` not idle too long, that the server has not closed, or None."""
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                if not idle:
                    return None
                connection = idle.pop()
            if time.monotonic() - connection.idle_since <= self._keepalive_expiry and connection.still_open():
                return connection
            connection.close()

    def _checkin(self, origin: _Origin, connection: _Connection, *, reusable: bool) -> None:
        connection.idle_since = time.monotonic()
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if reusable and not self._closed and len(idle) < MAX_IDLE:
                idle.append(connection)
                return
        connection.close()

    def _connect(self, origin: _Origin, timeout: dict[str, Any]) -> _Connection:
        scheme, host, port = origin
        try:
            sock = socket.create_connection((host, port), timeout=timeout.get("connect"))
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc)) from exc
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name the socket module's IDNA refuses
            raise httpx.ConnectError(str(exc)) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._tls().wrap_socket(sock, server_hostname=host)
        except TimeoutError as exc:
            sock.close()
            raise httpx.ConnectTimeout(str(exc)) from exc
        except OSError as exc:  # ssl.SSLError and certificate failures are OSErrors
            sock.close()
            raise httpx.ConnectError(str(exc)) from exc
        return _Connection(sock)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = httpx.create_ssl_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context


def _origin(url: httpx.URL) -> _Origin:
    scheme = url.scheme
    if scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol '{scheme}://'.")
    host = url.raw_host.decode("ascii")  # IDNA 2008, as httpx encoded it
    port = url.port
    return scheme, host, (443 if scheme == "https" else 80) if port is None else port


def _request_bytes(request: httpx.Request) -> tuple[bytes, bytes, bool]:
    """The request's head and body as they go on the wire, and whether it asks for the close.

    Nothing unsendable gets this far, nor a body whose framing the server would read otherwise
    than it is written (h11 refuses those too): the rest would be read as the next request.
    """
    method = request.method.encode("ascii", "replace")  # "?" is no token character
    target = request.url.raw_path
    if _TOKEN.fullmatch(method) is None or _TARGET.fullmatch(target) is None:
        raise httpx.LocalProtocolError(f"cannot send the request line {method!r} {target!r}")
    lines = [method + b" " + target + b" HTTP/1.1"]
    framing: dict[bytes, bytes] = {}
    for name, value in request.headers.raw:
        if _TOKEN.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
            raise httpx.LocalProtocolError(
                f"cannot send the header {name.decode('latin-1')!r}: illegal characters"
            )
        lower = name.lower()
        if lower in _FRAMING:
            framing[lower] = framing[lower] + b"," + value if lower in framing else value
        lines.append(name + b": " + value)
    body = request.read()
    if b"transfer-encoding" in framing:
        body = _chunked(body, framing[b"transfer-encoding"].lower())
    elif framing.get(b"content-length", b"0" if not body else b"") != b"%d" % len(body):
        raise httpx.LocalProtocolError(f"the request's Content-Length is not its body's {len(body)} bytes")
    if b"host" not in framing:
        raise httpx.LocalProtocolError("Missing mandatory Host: header")
    close = b"close" in framing.get(b"connection", b"").lower()
    return b"\r\n".join(lines) + b"\r\n\r\n", body, close


def _chunked(body: bytes, coding: bytes) -> bytes:
    """Frame ``body`` as one chunk and the last, the only transfer-coding a request may have here."""
    if coding != b"chunked":
        raise httpx.LocalProtocolError("Only Transfer-Encoding: chunked is supported")
    return (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"


class _Answer:
    """An answer as llhttp reads it: the parser's callbacks (httptools calls them by name)."""

    __slots__ = (
        "beyond",
        "body",
        "coded",
        "complete",
        "framed",
        "head_done",
        "head_only",
        "head_size",
        "headers",
        "keep_alive",
        "parser",
        "reason",
        "status",
        "version",
    )

    def __init__(self, *, head_only: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head_only = head_only
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.version = b"HTTP/1.1"
        self.head_done = False
        self.head_size = 0
        self.framed = False
        """The head names a Content-Length or a Transfer-Encoding (else the close ends the body)."""
        self.coded = False
        """The head names a Content-Encoding (httpx must decode the body)."""
        self.complete = False
        self.keep_alive = False
        self.beyond = False
        """Bytes came after the answer: the connection is not in a known state."""

    def on_message_begin(self) -> None:
        if self.complete:
            self.beyond = True
            raise _Stop  # not this request's answer: leave it unread, and the connection unused
        self.reason = b""
        self.headers = []
        self.body = []
        self.head_done = self.framed = self.coded = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # a trailer field after a chunked body: h11 drops them, and they are not the head's
        value = value.rstrip(b" \t")  # llhttp keeps the whitespace after a value
        lower = name.lower()
        if lower == b"transfer-encoding" and value.lower() != b"chunked":
            # A body still coded as the server sent it would be read as the answer (h11 refuses too).
            raise httpx.RemoteProtocolError(f"unsupported Transfer-Encoding {value.decode('latin-1')!r}")
        self.framed = self.framed or lower in (b"content-length", b"transfer-encoding")
        self.coded = self.coded or lower == b"content-encoding"
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status < 100:
            raise httpx.RemoteProtocolError(f"status {self.status} is no HTTP status")
        if self.status == 101:  # raised before llhttp would hand the connection over
            raise httpx.RemoteProtocolError("the server switched protocols instead of answering")
        self.version = b"HTTP/" + self.parser.get_http_version().encode("ascii")
        if self._informational():
            return
        self.head_done = True
        if self.head_only:
            self.complete = True
            raise _Stop  # a HEAD answer has no body, whatever its headers say

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self._informational():
            self.complete = True
            # HTTP/1.0 connections are never reused (as h11); llhttp forgets this for the next message.
            self.keep_alive = self.version == b"HTTP/1.1" and self.parser.should_keep_alive()

    def release(self) -> None:
        """Drop the parser once the answer is read.

        It refers back to this answer (its callbacks): a cycle per request, which only the cyclic
        GC frees. A 20k-user apply left ~225k such objects to it, and its collections hold the
        GIL while every worker waits.
        """
        del self.parser

    def response(self) -> httpx.Response:
        """The answer as httpx's response; its body already read unless it must be decoded."""
        body = b"".join(self.body)
        response = httpx.Response(
            self.status,
            headers=self.headers,
            stream=_Body(body),
            extensions={"http_version": self.version, "reason_phrase": self.reason},
        )
        if not self.coded:
            # What httpx's read() would store after passing the bytes through its identity
            # decoder and chunker: 8% of an apply's CPU. Without it, read() still decodes.
            response._content = body
        return response

    def _informational(self) -> bool:
        return self.status < 200  # 1xx: a 101 was refused on arrival

    @property
    def reusable(self) -> bool:
        return self.keep_alive and not self.head_only and not self.beyond

    def feed(self, data: bytes) -> None:
        """Read ``data``; at the end of the stream (``b""``), end an answer framed by the close."""
        if not data:
            if not self.head_done:
                raise httpx.RemoteProtocolError("Server disconnected without sending a complete answer.")
            if self.framed:
                raise httpx.RemoteProtocolError("Server disconnected before the answer's body was complete.")
            self.complete = True
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            # httptools catches BaseException in callbacks: a Ctrl-C, SystemExit or MemoryError
            # would otherwise surface as a parser error (a traceback, not "interrupted").
            if exc.__context__ is None:
                raise
            if not isinstance(exc.__context__, _Stop):
                raise exc.__context__ from None
        except httptools.HttpParserError as exc:
            if not self.complete:
                raise httpx.RemoteProtocolError(f"malformed answer: {exc}") from exc
            self.beyond = True
        if not self.head_done:
            self.head_size += len(data)
            if self.head_size > _MAX_HEAD:
                raise httpx.RemoteProtocolError(f"the answer's head is over {_MAX_HEAD} bytes")


class _Body(httpx.SyncByteStream):
    """A body already read (unlike httpx's ByteStream, httpx.Response does not read it at once)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self._body


class _Stop(Exception):
    """Stops the parser once the answer is read (a HEAD answer's head, or its end)."""


class _Connection:
    """One socket, one request at a time."""

    __slots__ = ("idle_since", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.idle_since = 0.0
        """When the connection was last put back idle (``time.monotonic``)."""

    def exchange(self, head: bytes, body: bytes, timeout: dict[str, Any], *, head_only: bool) -> _Answer:
        sock = self.sock
        unsent: OSError | None = None
        try:
            _set_timeout(sock, timeout.get("write"))
            if len(body) < _READ_SIZE:
                sock.sendall(head + body)
            else:
                sock.sendall(head)
                sock.sendall(body)
        except TimeoutError as exc:
            raise httpx.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            unsent = exc  # the server may have answered, then stopped reading: h11 reads that answer
        answer = _Answer(head_only=head_only)
        try:
            self._read(answer, timeout)
        except httpx.TransportError:
            if unsent is None:
                raise
            raise httpx.WriteError(str(unsent)) from unsent
        if unsent is not None:
            answer.beyond = True  # the rest of the request is somewhere: never reuse the connection
        return answer

    def _read(self, answer: _Answer, timeout: dict[str, Any]) -> None:
        """Feed ``answer`` what the server sends until it is complete."""
        sock = self.sock
        try:
            _set_timeout(sock, timeout.get("read"))
            while not answer.complete:
                answer.feed(sock.recv(_READ_SIZE))
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc)) from exc
        finally:
            answer.release()

    def still_open(self) -> bool:
        """Whether the server has neither closed this idle connection nor sent on it unasked."""
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return not poller.poll(0)
        readable, _, _ = select.select([sock], [], [], 0)  # Windows: no descriptor limit there
        return not readable

    def close(self) -> None:
        self.sock.close()


def _set_timeout(sock: socket.socket, seconds: float | None) -> None:
    if sock.gettimeout() != seconds:  # setting it is a system call even when it does not change
        sock.settimeout(seconds)


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
