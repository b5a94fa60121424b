"""The simulator's real server (waitress): kept-alive connections, idle closes, drops, dates, shutdown."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import sim_serve_argv
from sim_support import USER

from reconcile.api.client import PartnerClient
from reconcile.api.models import EvaluationUser
from reconcile.api.transport import KeepAliveTransport
from reconcile.errors import ReconcileError
from reconcile.operations.clients import open_client
from reconcile.operations.settings import Settings
from reconcile.sim import admin
from reconcile.sim.app import SimApp, create_app
from reconcile.sim.config import SimConfig
from reconcile.sim.server import THREADS, SimServer, base_url, make, serve
from reconcile.sim.testing import ManualClock, login

CREATE = "/v1/user/createevaluationusers"


def trader(name: str) -> EvaluationUser:
    return EvaluationUser(
        name=name, email=f"{name}@example.com", password="Trader-Pa55!", firstName="Tess", lastName="Trader"
    )


class Recording:
    """A WSGI wrapper recording each request's path and the client's port (one port, one connection)."""

    def __init__(self, app: SimApp) -> None:
        self.app = app
        self.seen: list[tuple[str, int]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.seen.append((environ["PATH_INFO"].lower(), int(environ["REMOTE_PORT"])))
        return self.app(environ, start_response)

    def ports(self, path: str | None = None) -> list[int]:
        return [port for seen, port in self.seen if path is None or seen == path]


@contextmanager
def running(app: Any, idle_timeout: int = 60) -> Iterator[SimServer]:
    server = make(app, idle_timeout=idle_timeout)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def partner_client(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PartnerClient]:
    """The client apply uses, on its default transport (no proxy), logged in as the simulator's admin."""
    monkeypatch.setenv("RECONCILE_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("TRADOVATE_USERNAME", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with open_client("sim", endpoint=url, settings=Settings.from_environ(os.environ)) as client:
        assert isinstance(client._transport, KeepAliveTransport)
        yield client


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited 30 s for {what}")
        time.sleep(0.05)


@pytest.fixture
def recording(tmp_path: Path) -> Recording:
    return Recording(create_app(SimConfig(), tmp_path / "sim.sqlite"))


def test_calls_share_one_kept_alive_connection(
    recording: Recording, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    with running(recording) as server, partner_client(base_url(server), tmp_path, monkeypatch) as client:
        client.create_evaluation_users([trader("alice")])
        assert [user.name for user in client.list_users()] == ["alice"]
        assert server.open_connections() == 1
    assert len(recording.seen) == 3  # login, create, list
    assert len(set(recording.ports())) == 1, recording.seen
    assert capfd.readouterr() == ("", "")  # no line per request


def test_a_connection_the_server_closed_while_idle_is_dialled_again(
    recording: Recording, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The partner API closes idle connections too: the next call, a create, must neither be
    # reported as outcome-unknown nor be sent twice.
    with (
        running(recording, idle_timeout=1) as server,
        partner_client(base_url(server), tmp_path, monkeypatch) as client,
    ):
        client.create_evaluation_users([trader("alice")])
        wait_until(lambda: server.open_connections() == 0, "the server to close the idle connection")
        (created,) = client.create_evaluation_users([trader("bobby")])
        assert created.userId is not None
        assert sorted(user.name for user in client.list_users()) == ["alice", "bobby"]
    first, second = recording.ports(CREATE)  # each create sent once
    assert first != second


def test_a_dropped_create_is_applied_and_closed_without_any_answer(
    recording: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    # Waitress closes a connection unanswered when the app raises ClientDisconnected before any
    # header is written (reconcile.sim.server); if an upgrade answered it instead, this fails.
    with running(recording) as server, httpx.Client(base_url=base_url(server)) as client:
        token = login(client)
        admin.arm_fault(recording.app.store, "drop_after_apply", "/user/createevaluationusers")
        body = json.dumps({"users": [USER]}).encode()
        request = (
            f"POST {CREATE} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with caplog.at_level(logging.WARNING), socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(request)
            sock.settimeout(10)
            assert sock.recv(65536) == b""  # closed, no status line
        assert [user["name"] for user in admin.dump_users(recording.app.store)] == [USER["name"]]
        assert caplog.records == []


def test_one_date_on_the_simulators_clock(tmp_path: Path) -> None:
    app = create_app(SimConfig(), tmp_path / "sim.sqlite", ManualClock())
    with serve(app) as url, httpx.Client(base_url=url) as client:
        answer = client.get("/user/list")
    assert answer.status_code == 401
    assert answer.headers.get_list("Date") == ["Fri, 01 Jan 2027 00:00:00 GMT"]


def test_shutdown_stops_the_loop_and_frees_the_port(recording: Recording) -> None:
    server = make(recording)
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    with httpx.Client(base_url=base_url(server)) as client:
        client.get("/user/list")  # leaves a kept-alive connection open
        server.shutdown()
        server.server_close()
    loop.join(timeout=5)
    assert not loop.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    with serve(recording, port=server.port) as again, httpx.Client(base_url=again) as client:
        assert client.get("/user/list").status_code == 401


def test_ctrl_c_ends_sim_serve_quietly_with_a_connection_open(tmp_path: Path) -> None:
    served = subprocess.Popen(
        sim_serve_argv(tmp_path / "sim.sqlite"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A child of a background job may inherit SIGINT ignored; Ctrl-C reaches a foreground one.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert served.stdout is not None
        url = served.stdout.readline().strip().removeprefix("listening on ")
        with httpx.Client(base_url=url) as client:
            assert client.get("/user/list").status_code == 401  # a kept-alive connection stays open
            served.send_signal(signal.SIGINT)
            out, err = served.communicate(timeout=30)
    finally:
        served.kill()
    assert (served.returncode, out, err) == (0, "", "")


def test_a_failure_inside_the_app_is_answered_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    def failing(environ: dict[str, Any], start_response: Any) -> Any:
        raise RuntimeError("a simulator bug")

    with caplog.at_level(logging.ERROR), serve(failing) as url, httpx.Client(base_url=url) as client:
        assert client.get("/user/list").status_code == 500
    # Counted among what was logged: a server thread of an earlier test in this worker may still
    # log while this one runs (seen once under -n 2).
    failures = [repr(record.exc_info[1]) for record in caplog.records if record.exc_info]
    assert failures.count("RuntimeError('a simulator bug')") == 1, failures


def test_a_port_in_use_is_an_error_for_people(recording: Recording) -> None:
    # Werkzeug's server printed why and what to do; waitress raises a bare OSError, which the
    # CLI would report as "cannot use a file".
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        threads = threading.active_count()
        with pytest.raises(ReconcileError, match=rf"127\.0\.0\.1:{port}: Address already in use; .*--port"):
            make(recording, port=port)
    assert threading.active_count() == threads  # none of the server's threads left behind


def test_slow_answers_whose_clients_gave_up_do_not_hold_the_servers_threads(recording: Recording) -> None:
    # A slow fault longer than the client's read timeout: the client gives up (and apply resends
    # an idempotent call), but a worker that slept on would hold one of the server's fixed threads
    # for the whole fault. Enough of them starved every other request (Werkzeug: one thread each).
    with running(recording) as server, httpx.Client(base_url=base_url(server)) as client:
        token = login(client)
        admin.arm_fault(recording.app.store, "slow", "/user/list", count=THREADS, seconds=60.0)
        auth = {"Authorization": f"Bearer {token}"}

        def give_up() -> None:
            with pytest.raises(httpx.TimeoutException):
                httpx.get(f"{base_url(server)}/user/list", headers=auth, timeout=0.5)

        callers = [threading.Thread(target=give_up) for _ in range(THREADS)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        assert client.get("/account/list", headers=auth, timeout=20).status_code == 200


def test_a_slow_answer_still_comes_late_to_a_client_that_waits(recording: Recording) -> None:
    with running(recording) as server, httpx.Client(base_url=base_url(server)) as client:
        token = login(client)
        admin.arm_fault(recording.app.store, "slow", "/user/list", seconds=0.5)
        started = time.monotonic()
        answer = client.get("/user/list", headers={"Authorization": f"Bearer {token}"}, timeout=20)
        assert (answer.status_code, answer.headers["X-Sim-Fault"]) == (200, "slow")
        assert time.monotonic() - started >= 0.5


def test_a_bracketed_ipv6_host_gives_a_usable_url(recording: Recording) -> None:
    # `sim serve --host [::1]` (the form URLs use) printed http://[[::1]]:PORT/v1.
    try:
        server = make(recording, host="[::1]")
    except ReconcileError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert base_url(server) == f"http://[::1]:{server.port}/v1"
        assert httpx.URL(base_url(server)).host == "::1"
    finally:
        server.server_close()
