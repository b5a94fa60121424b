"""The default transport against a scripted HTTP(S) server on 127.0.0.1: framing, keep-alive, failures."""

from __future__ import annotations

import contextlib
import gc
import gzip
import itertools
import os
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import httpx
import pytest
import trustme

from reconcile.api.auth import TokenAuth
from reconcile.api.client import PartnerClient
from reconcile.api.credentials import Credentials
from reconcile.api.models import EvaluationUser
from reconcile.api.token_cache import TokenCache
from reconcile.api.transport import MAX_IDLE, KeepAliveTransport, _Answer, _ThroughHttpx, default_transport
from reconcile.errors import AuthError, OutcomeUnknown, TransportError

DROP = b"DROP:"
"""An answer starting so is sent without it, then the server closes the connection unannounced."""

Answer = Callable[[bytes], bytes | None]
"""Given one request (head and body), the raw bytes to write back; None: close without answering."""


def ok(body: bytes, *extra: str) -> bytes:
    head = "\r\n".join(["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra])
    return head.encode() + b"\r\n\r\n" + body


class Server:
    """Accepts connections on a loopback port; answers each request with the next scripted answer."""

    def __init__(self, answers: list[Answer], tls: ssl.SSLContext | None = None) -> None:
        self.answers = answers
        self.tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = 0
        """Connections the client closed (the server saw the end of the stream between requests)."""
        self.ended = 0
        """Connections closed, by either side."""
        self._count = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk_then_count, args=(conn,), daemon=True).start()

    def _talk_then_count(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client closed first: the thread ends, its socket too
            self._talk(conn)  # its reader of the socket is gone: the connection is closed
        with self._count:
            self.ended += 1

    def _talk(self, conn: socket.socket) -> None:
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:  # the client refused the certificate
                conn.close()
                return
        reader = conn.makefile("rb")
        with conn:
            while self.answers:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    try:
                        line = reader.readline()
                    except ConnectionResetError:  # the client closed with an answer left unread
                        line = b""
                    if not line:
                        with self._count:
                            self.closed += 1
                        return
                    head += line
                lines = head.split(b"\r\n")
                sizes = [h.split(b":")[1] for h in lines if h.lower().startswith(b"content-length")]
                length = int(sizes[0]) if sizes else 0
                request = head + reader.read(length)
                self.requests.append(request)
                answer = self.answers.pop(0)(request)
                if answer is None:
                    return
                conn.sendall(answer.removeprefix(DROP))
                if b"Connection: close" in answer or answer.startswith(DROP):
                    return


@pytest.fixture
def transport() -> Iterator[KeepAliveTransport]:
    t = KeepAliveTransport(timeout=2.0)
    yield t
    t.close()


def get(transport: KeepAliveTransport, server: Server, path: str = "/x") -> httpx.Response:
    request = httpx.Request("GET", server.url + path)
    response = transport.handle_request(request)
    response.read()
    return response


def test_answers_are_framed_by_length_and_the_connection_is_reused(transport: KeepAliveTransport) -> None:
    json_answer = ok(b'{"a":1}', "Content-Type: application/json")
    server = Server([lambda _r: json_answer, lambda _r: json_answer, lambda _r: ok(b"[]")])
    assert get(transport, server).json() == {"a": 1}
    assert get(transport, server).headers["content-type"] == "application/json"
    assert get(transport, server, "/y?q=1%2C2").content == b"[]"
    assert server.connections == 1
    assert server.requests[2].startswith(b"GET /y?q=1%2C2 HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in server.requests[0]


def test_an_answer_leaves_no_reference_cycle_for_the_collector(transport: KeepAliveTransport) -> None:
    """The parser refers back to its answer: kept after the read, every request left a cycle that
    only the cyclic GC frees, and its collections hold the GIL while the apply's workers wait."""
    answers: list[Answer] = [lambda _r: ok(b"[]") for _ in range(5)]
    answers.append(lambda _r: None)  # the server closes without an answer
    server = Server(answers)
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            assert get(transport, server).content == b"[]"
        with pytest.raises(httpx.RemoteProtocolError):
            get(transport, server)
        left = [o for o in gc.get_objects() if isinstance(o, _Answer)]
    finally:
        if was_enabled:
            gc.enable()
    assert left == []


def test_threads_that_come_and_go_share_the_idle_connections(transport: KeepAliveTransport) -> None:
    # The applier's worker threads end with each group: their connections outlive them, reused.
    server = Server([lambda _r: ok(b"1")] * 5)
    for _ in range(5):
        worker = threading.Thread(target=get, args=(transport, server))
        worker.start()
        worker.join()
    assert len(server.requests) == 5 and server.connections == 1


def eventually(condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` holds within a few seconds (the server's threads see a close a little later)."""
    deadline = time.monotonic() + 5.0
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_at_most_max_idle_connections_stay_open_and_close_closes_them() -> None:
    # The server answers only once every request has arrived: each thread holds its own connection.
    together = threading.Barrier(MAX_IDLE + 5)
    answers: list[Answer] = [lambda _r: (together.wait(5.0), ok(b"1"))[1]] * (MAX_IDLE + 5)
    server = Server([*answers, lambda _r: ok(b"spare")])
    transport = KeepAliveTransport(timeout=10.0)
    workers = [threading.Thread(target=get, args=(transport, server)) for _ in range(MAX_IDLE + 5)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert server.connections == MAX_IDLE + 5
    assert eventually(lambda: server.closed == 5)
    time.sleep(0.1)
    assert server.closed == 5  # the other MAX_IDLE stay open for the next requests
    transport.close()
    assert eventually(lambda: server.closed == MAX_IDLE + 5)


def test_a_post_sends_its_body_and_the_headers_httpx_built(transport: KeepAliveTransport) -> None:
    server = Server([lambda _r: ok(b"{}")])
    request = httpx.Request("POST", server.url + "/p", json={"userId": 1}, headers={"X-Request-Id": "r1"})
    transport.handle_request(request)
    sent = server.requests[0]
    assert sent.startswith(b"POST /p HTTP/1.1\r\n")
    assert b"\r\nX-Request-Id: r1\r\n" in sent and b"\r\nContent-Length: 12\r\n" in sent
    assert sent.endswith(b'\r\n\r\n{"userId":1}')


def test_chunked_answers_are_joined(transport: KeepAliveTransport) -> None:
    chunked = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n'
    server = Server([lambda _r: chunked, lambda _r: ok(b"2")])
    assert get(transport, server).json() == {"a": 1}
    assert get(transport, server).content == b"2"
    assert server.connections == 1


def test_a_gzipped_answer_is_decoded_and_its_header_bytes_kept(transport: KeepAliveTransport) -> None:
    body = gzip.compress(b'{"a":1}')
    answer = ok(body, "Content-Encoding: gzip").replace(b"200 OK", b"200 Fine", 1)
    server = Server([lambda _r: answer.replace(b"\r\n\r\n", b"\r\nX-Note: caf\xe9\r\n\r\n", 1)])
    response = get(transport, server)
    assert response.json() == {"a": 1}
    assert response.headers.raw[-1] == (b"X-Note", b"caf\xe9")
    assert response.reason_phrase == "Fine" and response.http_version == "HTTP/1.1"


def test_connection_close_and_an_unframed_answer_open_a_new_connection(transport: KeepAliveTransport) -> None:
    unframed = DROP + b"HTTP/1.0 200 OK\r\n\r\nuntil-close"
    server = Server([lambda _r: ok(b"1", "Connection: close"), lambda _r: unframed, lambda _r: ok(b"3")])
    assert get(transport, server).content == b"1"
    assert get(transport, server).content == b"until-close"
    assert get(transport, server).content == b"3"
    assert server.connections == 3


def test_an_idle_connection_the_server_dropped_is_not_reused(transport: KeepAliveTransport) -> None:
    # Writing into a socket the server closed succeeds; only the read fails. The transport sees
    # the close first and connects again instead of losing a request that was never read.
    server = Server([lambda _r: DROP + ok(b"1"), lambda _r: ok(b"2")])
    assert get(transport, server).content == b"1"
    time.sleep(0.2)
    assert get(transport, server).content == b"2"
    assert server.connections == 2


def test_a_refused_connection_is_a_connect_error(transport: KeepAliveTransport) -> None:
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(httpx.ConnectError):
        transport.handle_request(httpx.Request("GET", f"http://127.0.0.1:{port}/x"))


@pytest.mark.parametrize(
    "answer",
    [
        lambda _r: None,
        lambda _r: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        lambda _r: b"garbage\r\n\r\n",
        lambda _r: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_an_answer_that_breaks_off_is_a_protocol_error(transport: KeepAliveTransport, answer: Answer) -> None:
    broken = answer(b"")
    server = Server([lambda _r: None if broken is None else DROP + broken, lambda _r: ok(b"fine")])
    with pytest.raises(httpx.RemoteProtocolError):
        get(transport, server)
    assert get(transport, server).content == b"fine"  # the broken connection was not kept


def test_no_answer_in_time_is_a_read_timeout() -> None:
    server = Server([lambda _r: (threading.Event().wait(1.0), ok(b"late"))[1]])
    with KeepAliveTransport(timeout=0.2) as transport, pytest.raises(httpx.ReadTimeout):
        get(transport, server)


def test_204_and_head_answers_have_no_body(transport: KeepAliveTransport) -> None:
    server = Server([lambda _r: b"HTTP/1.1 204 No Content\r\n\r\n", lambda _r: ok(b"after")])
    assert get(transport, server).status_code == 204
    assert get(transport, server).content == b"after"
    assert server.connections == 1


def test_a_request_that_cannot_be_written_in_time_is_a_write_timeout() -> None:
    # The server accepts and never reads: the body fills the socket buffers and the send times out.
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/p"
    request = httpx.Request("POST", url, content=bytes(64 << 20))
    with listener, KeepAliveTransport(timeout=0.3) as transport, pytest.raises(httpx.WriteTimeout):
        transport.handle_request(request)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(ca: trustme.CA, answers: list[Answer], name: str = "127.0.0.1") -> Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return Server(answers, tls=context)


def trusting(ca: trustme.CA) -> KeepAliveTransport:
    context = httpx.create_ssl_context()
    ca.configure_trust(context)
    return KeepAliveTransport(timeout=2.0, ssl_context=context)


def test_https_to_a_trusted_server_keeps_its_connection(ca: trustme.CA) -> None:
    server = tls_server(ca, [lambda _r: ok(b'{"a":1}'), lambda _r: ok(b"2")])
    with trusting(ca) as transport:
        assert get(transport, server).json() == {"a": 1}
        assert get(transport, server, "/y").content == b"2"
    assert server.connections == 1
    assert server.requests[1].startswith(b"GET /y HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("name", "trusted"),
    [("127.0.0.1", False), ("partner.example", True)],
    ids=["unknown-ca", "another-name"],
)
def test_an_https_server_whose_certificate_fails_is_refused_before_sending(
    ca: trustme.CA, name: str, trusted: bool
) -> None:
    server = tls_server(ca, [lambda _r: ok(b"never")], name)
    transport = trusting(ca) if trusted else KeepAliveTransport(timeout=2.0)  # httpx's CAs: not this one
    with transport, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        get(transport, server)
    assert server.connections == 1 and server.requests == []


def test_a_proxy_in_the_environment_sends_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    assert isinstance(default_transport("http", timeout=1), KeepAliveTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert isinstance(default_transport("https", timeout=1), _ThroughHttpx)
    assert isinstance(default_transport("http", timeout=1), KeepAliveTransport)


def client_for(
    server: Server, tmp_path: object, transport: httpx.BaseTransport | None = None
) -> PartnerClient:
    auth = TokenAuth(Credentials("admin", "pw"), endpoint=server.url, cache=TokenCache(str(tmp_path)))
    return PartnerClient(
        server.url + "/v1", auth=auth, sleep=lambda _s: None, timeout=2.0, transport=transport
    )


LOGIN = ok(b'{"accessToken":"tok","expirationTime":"2099-01-01T00:00:00+00:00"}')


def test_a_create_whose_answer_broke_off_over_the_network_is_not_resent(tmp_path: object) -> None:
    server = Server([lambda _r: LOGIN, lambda _r: None])
    user = EvaluationUser(name="a", email="a@example.com", password="Pa55-word!", firstName="A", lastName="B")
    with client_for(server, tmp_path) as client, pytest.raises(OutcomeUnknown):
        client.create_evaluation_users([user])
    assert len(server.requests) == 2


def test_a_read_whose_answer_broke_off_is_resent_on_a_new_connection(tmp_path: object) -> None:
    server = Server([lambda _r: LOGIN, lambda _r: None, lambda _r: ok(b"[]")])
    with client_for(server, tmp_path) as client:
        assert client.list_users() == []
    assert [r.split(b" ")[1] for r in server.requests] == [
        b"/v1/auth/accesstokenrequest",
        b"/v1/user/list",
        b"/v1/user/list",
    ]
    assert b"Authorization: Bearer tok" in server.requests[2]


def test_a_server_that_never_listens_is_a_transport_error_naming_the_endpoint(tmp_path: object) -> None:
    free = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{free.getsockname()[1]}"
    free.close()
    auth = TokenAuth(Credentials("admin", "pw"), endpoint=url, cache=TokenCache(str(tmp_path)))
    client = PartnerClient(url + "/v1", auth=auth, sleep=lambda _s: None)
    with client, pytest.raises(TransportError, match="cannot connect to"):
        client.list_users()


@pytest.mark.parametrize("host", ["a..test", "a" * 64 + ".test"])
def test_a_host_name_no_resolver_takes_is_a_transport_error(tmp_path: object, host: str) -> None:
    # The socket module's IDNA codec refuses an empty or 64-character label with a UnicodeError,
    # which httpx's transport let through too: a traceback, not "cannot connect to".
    url = f"http://{host}:8"
    auth = TokenAuth(Credentials("admin", "pw"), endpoint=url, cache=TokenCache(str(tmp_path)))
    client = PartnerClient(url + "/v1", auth=auth, sleep=lambda _s: None)
    with client, pytest.raises(TransportError, match="cannot connect to"):
        client.list_users()


def test_a_create_whose_https_answer_broke_off_is_not_resent(ca: trustme.CA, tmp_path: object) -> None:
    server = tls_server(ca, [lambda _r: LOGIN, lambda _r: None])
    user = EvaluationUser(name="a", email="a@example.com", password="Pa55-word!", firstName="A", lastName="B")
    with client_for(server, tmp_path, trusting(ca)) as client, pytest.raises(OutcomeUnknown):
        client.create_evaluation_users([user])
    assert len(server.requests) == 2


def test_an_idle_connection_past_descriptor_1023_is_checked_and_reused(transport: KeepAliveTransport) -> None:
    import os
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"the open-files limit ({soft}) keeps every descriptor below 1024")
    read_end, write_end = os.pipe()
    held = [os.dup(read_end) for _ in range(1100)]  # the next sockets get descriptors past 1023
    try:
        server = Server([lambda _r: ok(b"1"), lambda _r: ok(b"2")])
        assert get(transport, server).content == b"1"
        assert get(transport, server).content == b"2"  # the idle connection was checked, then reused
        assert server.connections == 1
    finally:
        for fd in (*held, read_end, write_end):
            os.close(fd)


def test_informational_answers_before_the_final_one_are_skipped(transport: KeepAliveTransport) -> None:
    # httpx's transport (h11) skips every 1xx; http.client alone skips only 100, so a 103 Early
    # Hints would have been taken for the answer (an applied create reported as refused).
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    informational = early + b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
    server = Server([lambda _r: informational + ok(b'{"id":7}'), lambda _r: ok(b"[]")])
    first = get(transport, server)
    assert (first.status_code, first.json()) == (200, {"id": 7})
    assert get(transport, server).content == b"[]"
    assert server.connections == 1


@pytest.mark.parametrize("head", [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 201 Created\r\nContent-Type: appl"])
def test_a_head_cut_off_by_the_close_is_a_protocol_error(transport: KeepAliveTransport, head: bytes) -> None:
    # http.client alone reads the end of the stream as the end of the head: a 200 with no body.
    server = Server([lambda _r: DROP + head, lambda _r: ok(b"fine")])
    with pytest.raises(httpx.RemoteProtocolError):
        get(transport, server)
    assert get(transport, server).content == b"fine"


def test_a_read_whose_answer_head_broke_off_is_resent(tmp_path: object) -> None:
    # Taken for an empty 200, the list failed as "not what the contract describes" instead.
    server = Server([lambda _r: LOGIN, lambda _r: DROP + b"HTTP/1.1 200 OK\r\n", lambda _r: ok(b"[]")])
    with client_for(server, tmp_path) as client:
        assert client.list_users() == []
    assert len(server.requests) == 3


def test_a_header_that_cannot_be_written_is_a_local_protocol_error(transport: KeepAliveTransport) -> None:
    server = Server([lambda _r: ok(b"fine")])
    request = httpx.Request(
        "POST", server.url + "/p", headers={"Authorization": "Bearer a\r\nX: 1"}, content=b""
    )
    with pytest.raises(httpx.LocalProtocolError):
        transport.handle_request(request)
    assert server.requests == []


def test_a_token_no_header_can_carry_is_refused_at_login_and_never_cached(tmp_path: object) -> None:
    # Cached until its expiry (2099 here), it failed every later run before sending a byte, and a
    # create's failure said it may have been applied.
    login = ok(b'{"accessToken":"tok\\r\\nX: 1","expirationTime":"2099-01-01T00:00:00+00:00"}')
    server = Server([lambda _r: login] * 10)
    user = EvaluationUser(name="a", email="a@example.com", password="Pa55-word!", firstName="A", lastName="B")
    for _run in range(2):
        with (
            client_for(server, tmp_path) as client,
            pytest.raises(AuthError, match="no HTTP header can carry"),
        ):
            client.create_evaluation_users([user])
    assert [r.split(b" ")[1] for r in server.requests] == [b"/v1/auth/accesstokenrequest"] * 2


def test_an_international_host_is_reached_by_its_idna_2008_name(
    transport: KeepAliveTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Handed "straße.test", the socket module encodes it by IDNA 2003: "strasse.test", another host.
    dialled: list[object] = []

    def refuse(address: object, *_args: object, **_kwargs: object) -> socket.socket:
        dialled.append(address)
        raise ConnectionRefusedError

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(httpx.ConnectError):
        transport.handle_request(httpx.Request("GET", "http://straße.test:8/x"))
    assert dialled == [("xn--strae-oqa.test", 8)]
    for url in ("http://[::1]/x", "https://b.test/x", "http://b.test:0/x"):  # port 0 is not port 80
        with pytest.raises(httpx.ConnectError):
            transport.handle_request(httpx.Request("GET", url))
    assert dialled[1:] == [("::1", 80), ("b.test", 443), ("b.test", 0)]


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",  # then the close: no answer came
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nstill-coded",  # h11 refuses it too
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        # A framing field among the trailers (RFC 9110 6.5.1 forbids it): llhttp refuses, h11 reads it.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 9\r\n\r\n",
    ],
)
def test_what_is_not_an_answer_is_a_protocol_error(transport: KeepAliveTransport, answer: bytes) -> None:
    server = Server([lambda _r: DROP + answer, lambda _r: ok(b"fine")])
    with pytest.raises(httpx.RemoteProtocolError):
        get(transport, server)
    assert get(transport, server).content == b"fine"


@pytest.mark.parametrize(
    "answer",
    [
        ok(b"1") + b"junk",  # h11's transport kept the connection, then read "junk" as the next answer
        ok(b"1") + ok(b"unasked"),
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n1",  # never reused, as h11
    ],
)
def test_a_connection_in_doubt_is_not_reused(transport: KeepAliveTransport, answer: bytes) -> None:
    server = Server([lambda _r: answer, lambda _r: ok(b"2")])
    assert get(transport, server).content == b"1"
    assert get(transport, server).content == b"2"
    assert server.connections == 2


def test_an_answer_without_content_coding_is_read_once_and_whitespace_after_values_is_dropped(
    transport: KeepAliveTransport,
) -> None:
    server = Server([lambda _r: b"HTTP/1.1 200 OK\r\nContent-Length:  2 \r\nX-A: b\t\r\n\r\nok"])
    response = transport.handle_request(httpx.Request("GET", server.url + "/x"))
    assert response.content == b"ok"  # readable before read(): nothing to decode
    assert response.headers.raw == [(b"Content-Length", b"2"), (b"X-A", b"b")]


def test_trailer_fields_after_a_chunked_body_are_not_the_answers_headers(
    transport: KeepAliveTransport,
) -> None:
    # h11 drops trailers; read as headers, a trailing Content-Encoding made httpx "decode" plain JSON.
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
    chunked += b"Content-Encoding: gzip\r\n\r\n"
    server = Server([lambda _r: chunked, lambda _r: ok(b"2")])
    response = get(transport, server)
    assert response.json() == {}
    assert response.headers.raw == [(b"Transfer-Encoding", b"chunked")]
    assert get(transport, server).content == b"2" and server.connections == 1


def post(url: str, headers: dict[str, str], content: bytes) -> httpx.Request:
    return httpx.Request("POST", url, headers=headers, content=content)


def without_host(request: httpx.Request) -> httpx.Request:
    del request.headers["Host"]
    return request


@pytest.mark.parametrize(
    "build",
    [
        # A declared length other than the body's: the server reads the rest as the next request
        # (or the next request as this body), and pairs answers with the wrong requests. h11 refuses.
        lambda url: post(url, {"Content-Length": "3"}, b"GET /x HTTP/1.1\r\n\r\n"),
        lambda url: post(url, {"Content-Length": "30"}, b"{}"),
        lambda url: post(url, {"Content-Length": "2", "content-length": "3"}, b"{}"),
        lambda url: post(url, {"Content-Length": "+2"}, b"{}"),
        lambda url: post(url, {"Transfer-Encoding": "gzip"}, b"{}"),
        lambda url: without_host(httpx.Request("GET", url)),
        lambda url: httpx.Request("GÉT", url),
    ],
)
def test_a_request_whose_framing_the_server_would_misread_is_not_sent(
    transport: KeepAliveTransport, build: Callable[[str], httpx.Request]
) -> None:
    server = Server([lambda _r: ok(b"1")])
    with pytest.raises(httpx.LocalProtocolError):
        transport.handle_request(build(server.url + "/p"))
    assert server.connections == 0


def test_a_body_without_a_length_is_not_sent(transport: KeepAliveTransport) -> None:
    server = Server([lambda _r: ok(b"1")])
    request = httpx.Request("POST", server.url + "/p", content=b"{}")
    del request.headers["Content-Length"]
    with pytest.raises(httpx.LocalProtocolError):
        transport.handle_request(request)
    assert server.connections == 0


def test_a_request_that_asked_for_the_close_does_not_keep_its_connection(
    transport: KeepAliveTransport,
) -> None:
    # The server closes after answering it: reused, the next request would meet that close.
    server = Server([lambda _r: ok(b"1"), lambda _r: ok(b"2")])
    request = httpx.Request("GET", server.url + "/x", headers={"Connection": "Keep-Alive, close"})
    assert transport.handle_request(request).content == b"1"
    assert get(transport, server).content == b"2"
    assert server.connections == 2


def test_a_head_larger_than_httpcores_limit_is_refused_and_one_below_it_read(
    transport: KeepAliveTransport,
) -> None:
    # Without a limit a server trickling an endless header held the request and its memory forever.
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 300_000 + b"\r\nContent-Length: 2\r\n\r\nok"
    near = big.replace(b"a" * 300_000, b"a" * 90_000)
    server = Server([lambda _r: DROP + big, lambda _r: near])
    with pytest.raises(httpx.RemoteProtocolError, match="head"):
        get(transport, server)
    assert get(transport, server).content == b"ok"


def test_a_status_below_100_is_a_protocol_error(transport: KeepAliveTransport) -> None:
    server = Server([lambda _r: DROP + b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok"])
    with pytest.raises(httpx.RemoteProtocolError):
        get(transport, server)


def serve_head_then_reset(answer: bytes) -> tuple[socket.socket, str]:
    """A server that reads one request's head, sends ``answer`` and closes, the body unread."""
    listener = socket.create_server(("127.0.0.1", 0))

    def refuse_early() -> None:
        conn, _ = listener.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(65536)
        conn.sendall(answer)
        time.sleep(0.05)
        conn.close()  # the unread body makes this a reset

    threading.Thread(target=refuse_early, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/p"


def test_an_answer_sent_before_the_server_stopped_reading_the_body_is_read(
    transport: KeepAliveTransport,
) -> None:
    # A server refuses a body too large (or a request too early) at its head, answers and closes:
    # the rest of the body meets a reset. h11 reads that answer; a WriteError made a create refused
    # so "unknown", and a read that the server refused outright was resent.
    listener, url = serve_head_then_reset(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
    response = transport.handle_request(httpx.Request("POST", url, content=b"x" * (8 << 20)))
    assert (response.status_code, response.read()) == (413, b"big")
    assert transport._idle[("http", "127.0.0.1", listener.getsockname()[1])] == []
    listener.close()


def test_a_body_the_server_stopped_reading_without_an_answer_is_a_write_error(
    transport: KeepAliveTransport,
) -> None:
    listener, url = serve_head_then_reset(b"")
    with pytest.raises(httpx.WriteError):
        transport.handle_request(httpx.Request("POST", url, content=b"x" * (8 << 20)))
    listener.close()


def test_eight_threads_each_get_their_own_answers_while_the_transport_closes() -> None:
    # Answers echo their request's path, some close the connection, some arrive split in two.
    listener = socket.create_server(("127.0.0.1", 0))

    def talk(conn: socket.socket) -> None:
        with conn:
            buffered = b""
            for turn in itertools.count():
                while b"\r\n\r\n" not in buffered:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffered += data
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                path = head.split(b" ")[1]
                close = b"Connection: close\r\n" if turn % 7 == 6 else b""
                answer = b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (close, len(path), path)
                conn.sendall(answer[: turn % len(answer)])
                conn.sendall(answer[turn % len(answer) :])
                if close:
                    return

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=talk, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    transport = KeepAliveTransport(timeout=5.0)
    read: list[tuple[bytes, bytes]] = []

    def worker(lane: int) -> None:
        for i in range(40):
            path = f"/w{lane}/{i}".encode()
            read.append((path, transport.handle_request(httpx.Request("GET", url + path.decode())).content))

    workers = [threading.Thread(target=worker, args=(lane,)) for lane in range(8)]
    for thread in workers:
        thread.start()
    transport.close()  # in flight: their connections close as they come back
    for thread in workers:
        thread.join()
    listener.close()
    assert len(read) == 320 and all(path == content for path, content in read)
    assert transport._idle == {} or all(not idle for idle in transport._idle.values())


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_no_socket_outlives_a_failed_exchange() -> None:
    failures: list[Answer] = [
        lambda _r: DROP + b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab",
        lambda _r: DROP + b"garbage\r\n\r\n",
        lambda _r: DROP + b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
        lambda _r: ok(b"x") + b"junk",
        lambda _r: None,
        lambda _r: b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab",  # then the read timeout
    ]
    server = Server(failures * 2)
    transport = KeepAliveTransport(timeout=0.3)
    before = len(os.listdir("/proc/self/fd"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)  # a socket dropped unclosed warns when collected
        for _ in range(len(failures) * 2):
            with contextlib.suppress(httpx.TransportError):
                get(transport, server)
        with pytest.raises(httpx.LocalProtocolError):
            transport.handle_request(httpx.Request("GET", server.url, headers={"X": "\n"}))
        transport.close()
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert eventually(lambda: len(os.listdir("/proc/self/fd")) <= before)  # the server's ends close later


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_an_ipv6_literal_is_dialled_bare_and_named_in_brackets(transport: KeepAliveTransport) -> None:
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("::1 is not configured")
    port = listener.getsockname()[1]
    heads: list[bytes] = []

    def answer() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as reader:
            heads.append(b"".join(iter(reader.readline, b"\r\n")) + b"\r\n")
            conn.sendall(ok(b"v6"))

    threading.Thread(target=answer, daemon=True).start()
    response = transport.handle_request(httpx.Request("GET", f"http://[::1]:{port}/x"))
    listener.close()
    assert response.content == b"v6"
    assert heads == [f"GET /x HTTP/1.1\r\nHost: [::1]:{port}\r\n\r\n".encode()]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit, MemoryError])
def test_an_interruption_while_the_answer_is_read_is_raised_as_itself_and_the_connection_dropped(
    transport: KeepAliveTransport, monkeypatch: pytest.MonkeyPatch, interruption: type[BaseException]
) -> None:
    # A Ctrl-C lands in llhttp's callback as often as anywhere: it must reach the CLI's "interrupted".
    server = Server([lambda _r: ok(b"half-read"), lambda _r: ok(b"next")])
    read_body = _Answer.on_body

    def interrupted(answer: _Answer, body: bytes) -> None:
        raise interruption

    monkeypatch.setattr(_Answer, "on_body", interrupted)
    with pytest.raises(interruption):
        get(transport, server)
    monkeypatch.setattr(_Answer, "on_body", read_body)
    assert get(transport, server).content == b"next"
    assert server.connections == 2  # the connection read half-way was not put back


UNREADABLE = [
    ok(b"\x1f\x8b not gzip at all", "Content-Encoding: gzip"),
    ok(b"[" * 100_000),  # nested past Python's recursion limit: json raises RecursionError
    ok(b"[" * 100_000 + b'"p-ticket"'),  # read first as a possible penalty ticket
]


@pytest.mark.parametrize("answer", UNREADABLE, ids=["broken-gzip", "nested-json", "nested-ticket"])
def test_a_create_whose_answer_cannot_be_read_is_outcome_unknown_and_not_resent(
    tmp_path: object, answer: bytes
) -> None:
    server = Server([lambda _r: LOGIN, lambda _r: answer, lambda _r: ok(b'{"results":[{"userId":2}]}')])
    user = EvaluationUser(name="a", email="a@example.com", password="Pa55-word!", firstName="A", lastName="B")
    with client_for(server, tmp_path) as client, pytest.raises(OutcomeUnknown):
        client.create_evaluation_users([user])
    assert len(server.requests) == 2


@pytest.mark.parametrize("answer", UNREADABLE, ids=["broken-gzip", "nested-json", "nested-ticket"])
def test_a_read_whose_answer_cannot_be_read_is_resent(tmp_path: object, answer: bytes) -> None:
    server = Server([lambda _r: LOGIN, lambda _r: answer, lambda _r: ok(b"[]")])
    with client_for(server, tmp_path) as client:
        assert client.list_users() == []
    assert len(server.requests) == 3


def test_a_connection_idle_past_the_keepalive_expiry_is_not_reused() -> None:
    # After a pacing wait (an hour between creates) a pooled connection may have been dropped by a
    # firewall or load balancer without a close the poll sees: a create sent on it is lost
    # (OutcomeUnknown, its slot of the hour spent). httpx's pool dropped connections idle 5 s.
    server = Server([lambda _r: ok(b"1"), lambda _r: ok(b"2"), lambda _r: ok(b"3")])
    with KeepAliveTransport(timeout=2.0, keepalive_expiry=0.2) as transport:
        assert get(transport, server).content == b"1"
        assert get(transport, server).content == b"2"  # at once: the same connection
        time.sleep(0.3)
        assert get(transport, server).content == b"3"
    assert server.connections == 2
    assert eventually(lambda: server.closed == 1)  # the expired one was closed, not left open


def test_the_keepalive_expiry_is_httpxs() -> None:
    assert KeepAliveTransport()._keepalive_expiry == httpx.Limits().keepalive_expiry == 5.0
