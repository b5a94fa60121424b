"""The default transport reads every answer as httpx's own transport (h11) does, or refuses it.

Each example scripts one answer from parts (status lines, framing headers right and wrong, chunks,
gzip, informational answers, bytes after the answer, a close part-way), sends a request through
both transports to servers that give it, then a second request, and compares what each read.
Where they may differ, the default transport is the stricter one, and each case is named below.
Requests too: each is written byte for byte as h11 writes it, or refused before a connection opens.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from reconcile.api.transport import KeepAliveTransport
from tests.test_api_transport import DROP, Server, eventually, ok

AFTER = ok(b"after")
TIMEOUT = 2.0
STATUS_LINES = (
    b"HTTP/1.1 200 OK",
    b"HTTP/1.1 201 Created",
    b"HTTP/1.1 200",
    b"HTTP/1.0 200 OK",
    b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 304 Not Modified",
    b"HTTP/1.1 404 Not Found",
    b"HTTP/1.1 500 Internal Server Error",
    b"HTTP/1.1 101 Switching Protocols",
    b"HTTP/2 200 OK",
    b"HTTP/1.1 2xx OK",
    b"garbage",
)
HEADERS = {
    "length": b"Content-Length: {n}",
    "length+1": b"Content-Length: {n+1}",
    "length-1": b"Content-Length: {n-1}",
    "length twice": b"Content-Length: {n}\r\nContent-Length: {n}",
    "two lengths": b"Content-Length: {n}\r\nContent-Length: {n+1}",
    "length spaced": b"Content-Length:  {n} ",
    "length word": b"Content-Length: ten",
    "chunked": b"Transfer-Encoding: chunked",
    "chunked and length": b"Transfer-Encoding: chunked\r\nContent-Length: 3",
    "gzip coding": b"Transfer-Encoding: gzip",
    "gzip then chunked": b"Transfer-Encoding: gzip, chunked",
    "close": b"Connection: close",
    "keep-alive": b"Connection: keep-alive",
    "plain": b"X-A: b",
    "unspaced": b"X-A:b",
    "empty": b"X-E:",
    "latin-1": "X-H: café".encode("latin-1"),
    "folded": b"X-F: a\r\n  b",
    "no colon": b"Bad header",
    "space before colon": b"X-A : b",
    "gzip content": b"Content-Encoding: gzip",
}


def refused_only_here(names: list[str]) -> bool:
    """Whether h11 may read an answer with these headers that llhttp refuses.

    Content-Length twice, or beside Transfer-Encoding (a request smuggler's tools), and obs-fold
    (deprecated by RFC 9112): the transport reports a protocol error, never a different answer.
    """
    heads = b"\r\n".join(HEADERS[name] for name in names).lower()
    lengths = heads.count(b"content-length")
    return "folded" in names or lengths > 1 or (lengths == 1 and b"transfer-encoding" in heads)


@dataclass
class Script:
    answer: bytes
    close: bool
    headers: list[str]
    beyond: bool
    """Bytes follow the answer (a second answer or junk)."""


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    status = draw(st.sampled_from(STATUS_LINES))
    names = draw(st.lists(st.sampled_from(sorted(HEADERS)), max_size=3, unique=True))
    body = draw(st.sampled_from([b"", b"hello", b'{"id":7}']))
    if "gzip content" in names:
        body = gzip.compress(body, mtime=0)
    chunked = any("chunked" in name for name in names)
    wire = body
    if chunked:
        trailer = draw(st.sampled_from([b"", b"X-T: 1\r\n", b"Content-Encoding: gzip\r\n"]))
        wire = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n" + trailer + b"\r\n"
    n = len(wire)
    lines = [status] + [
        HEADERS[name]
        .replace(b"{n}", b"%d" % n)
        .replace(b"{n+1}", b"%d" % (n + 1))
        .replace(b"{n-1}", b"%d" % max(n - 1, 0))
        for name in names
    ]
    answer = b"\r\n".join(lines) + b"\r\n\r\n" + wire
    if draw(st.booleans()):
        answer = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + answer
    beyond = draw(st.sampled_from([b"", b"", b"junk", ok(b"next")]))
    answer += beyond
    cut = draw(st.none() | st.integers(0, len(answer)))
    if cut is not None:
        answer = answer[:cut]
    framed = (
        chunked
        or any(name.startswith("length") for name in names)
        or b" 204 " in status
        or b" 304 " in status
    )
    tidy = (
        cut is None and framed and status in STATUS_LINES[:8] and not set(names) & {"length+1", "length word"}
    )
    # Only a tidy answer may leave the connection open: anything else would wait for the timeout.
    close = draw(st.booleans()) if tidy else True
    overlong = "length-1" in names and n > 0  # the body's last byte follows the declared length
    return Script(answer, close, names, bool(beyond or overlong) and cut is None)


def exchange(make: type[httpx.BaseTransport], script: Script) -> tuple[object, object, int]:
    first = (DROP if script.close else b"") + script.answer
    server = Server([lambda _r: first, lambda _r: AFTER, lambda _r: AFTER])
    transport = make()
    try:
        first_read = read(transport, server)
        if script.close:  # else a transport may reuse the connection before the close arrives
            eventually(lambda: server.ended == 1)
        return first_read, read(transport, server), server.connections
    finally:
        transport.close()
        server.listener.close()


def read(transport: httpx.BaseTransport, server: Server) -> object:
    request = httpx.Request(
        "GET", server.url + "/x", extensions={"timeout": httpx.Timeout(TIMEOUT).as_dict()}
    )
    try:
        response = transport.handle_request(request)
        response.read()
    except httpx.ConnectError:
        return "not sent"
    except httpx.TransportError:
        return "failed"
    return response.status_code, tuple(response.headers.raw), response.content


class H11(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__(retries=0)


@settings(max_examples=120, deadline=None)
@given(script=scripts())
def test_every_answer_is_read_as_h11_reads_it_or_refused(script: Script) -> None:
    h11_first, h11_second, h11_connections = exchange(H11, script)
    first, second, connections = exchange(KeepAliveTransport, script)
    if first != h11_first:
        assert first == "failed", f"h11 read {h11_first!r}, this transport {first!r}"
        assert refused_only_here(script.headers), f"refused what h11 read: {h11_first!r}"
        return
    if second != h11_second:
        # h11 kept the connection and took the bytes after the answer for the next answer.
        assert script.beyond or b" 204 " in script.answer or b" 304 " in script.answer, (h11_second, second)
        assert second == (200, ((b"Content-Length", b"5"),), b"after")
        return
    assert connections == h11_connections


HEADER_BYTES = st.lists(
    st.sampled_from([b"a", b"Z", b"-", b":", b" ", b"\t", b"\r", b"\n", b"\x00", b"\x01", b"\x7f", b"\xe9"]),
    max_size=4,
).map(b"".join)
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def written(make: type[httpx.BaseTransport], build: Callable[[str], httpx.Request]) -> bytes | str:
    """What a server read of the request ``build`` makes for it (its port left out), or "refused"."""
    server = Server([lambda _r: ok(b"")])
    transport = make()
    try:
        transport.handle_request(build(server.url)).read()
    except httpx.LocalProtocolError:
        assert make is H11 or server.connections == 0  # refused before a connection was opened
        return "refused"
    finally:
        transport.close()
        server.listener.close()
    return server.requests[0].replace(str(server.port).encode(), b"PORT")


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "G T", "G\rT", "G\x00T"]),
    name=HEADER_BYTES,
    value=HEADER_BYTES,
    body=st.sampled_from([None, b"", b'{"a":1}']),
)
def test_every_request_is_written_as_h11_writes_it_or_refused_before_sending(
    method: str, name: bytes, value: bytes, body: bytes | None
) -> None:
    def build(url: str) -> httpx.Request:
        return httpx.Request(method, url + "/p?q=a%20b", headers=[(name, value)], content=body)

    try:
        build("http://127.0.0.1:1")
    except (TypeError, ValueError):  # httpx will not build it: no transport sees it
        return
    h11, ours = written(H11, build), written(KeepAliveTransport, build)
    if ours != h11:
        # Stricter than h11: a control character in a header value is refused, never sent.
        assert ours == "refused" and CONTROL.search(value), (h11, ours)
