"""Benchmark `reconcile apply` and `reconcile refresh` through `sim serve`, beside a minimal driver.

Run: ``.venv/bin/python bench/apply.py [--sizes 10000 20000 50000] [--refresh-sizes 10000 100000]
[--rounds N]``.
Rate limits are off. Per size, two applies on one desk, each user with contact info and Sim+:

1. creates every user and sets their contact info (Sim+ waits: nobody has signed yet);
2. after half the users sign the Market Data Agreement, grants Sim+ to them.

The simulator records every partner-API request each apply sends. A minimal driver written here
(``http.client``, keep-alive, one login, as many connections as the apply uses workers) then sends
exactly those requests to a fresh simulator in the same state, in the same order between the
sequential calls (creates, signal reads). For each apply it prints, each beside its target: the
apply's wall time and the driver's (ratio <= 1.2), the apply process's CPU per user (<= 0.5 ms),
and the requests made beside the lower bound ⌈C/100⌉ + email changes + contact updates + 1 signal
read + 2 per grant + ⌈X/100⌉ (they must be equal: the script exits 1 when they are not).

Each apply's line is followed by its timeline from the simulator's side: how long after the
process started its first request came, how long after the last answer it exited, and how long no
request was in flight between them (the simulator idle while the apply worked alone). Beside it,
the apply's wall from its first request on, as a multiple of the driver's: the apply without its
start-up (imports, manifest, state, plan: what the driver, handed the requests, never does).
Then comes the same minimal driver sending the same requests through the apply's transport
(``reconcile.api.transport``) to a third simulator: its ratio to the driver is what the HTTP layer
alone costs in wall time, before anything else the tool does. Last, the same requests go through
the apply's whole client (``PartnerClient``, on as many threads) to a fourth simulator; with
``reconcile plan`` of the same desk and state, run just before the apply, that splits the apply's
CPU per user into its plan, its calls and the rest (recording, the workers' own steps), beside what
the 0.5 ms target leaves for the rest.

Before the applies it prints two floors under the apply's CPU per user: the client's own layers
against a transport that answers at once, and one request through the apply's transport alone
beside httpx's own transport (the apply's before it) and ``http.client`` (the driver's), same
simulator, one thread.

``--create-latency SECONDS``: every simulator answers each create that late, as a remote API would
(the driver sends each create alone, as the apply did before it sent the next batch's create
beside the follow-ups of the one before).

``--rounds N``: the whole comparison N times over, each on fresh simulators, then per shape the
median of the rounds' wall ratios and CPU per user, with the verdicts read off them (a shared
machine's speed drifts by 10-30 % between two runs a minute apart). Before anything is timed, the
checkout's modules are compiled, as an installed reconcile's are: where the environment forbids
writing bytecode, each apply would otherwise compile them again at its start.

``--repo CHECKOUT``: the checkout whose ``reconcile plan`` and ``reconcile apply`` run (each in its
own process). The simulators and the in-process figures (the client's overhead, the transport
alone, the driver through the apply's transport or client) import the reconcile this Python has
installed: to bench a change to those, install that checkout, or run with ``PYTHONPATH`` set to it.

``--server-cpu``: the simulators run on one CPU of their own, this script's driver and the applies
it starts on the others (by default all share every CPU). The first line printed says which.

``--refresh-sizes``: a simulator seeded with that many users (with contact info) and a matching
state; ``reconcile refresh`` then reads them all: requests and time (target: a few requests per
thousand users).
"""

from __future__ import annotations

import argparse
import http.client
import io
import itertools
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from precompile import compile_bytecode  # bench/ is the script's folder: first on sys.path

ROOT = Path(__file__).resolve().parent.parent
REPO = [ROOT]  # the checkout whose reconcile runs (--repo)
WORKERS = 6  # the apply's default concurrency (reconcile/apply/run.py)
SEQUENTIAL = (
    "/user/createevaluationusers",
    "/user/canceleverything",
    "/adminalertsignal/deps",
    "/user/items",
)
"""Calls an apply makes one at a time: the driver keeps them in place, alone."""
CPU_TARGET_MS = 0.5
WALL_TARGET = 1.2
ENV = {
    "BENCH_PASSWORD": "Bench-Password-1!",
    "TRADOVATE_USERNAME": "partner-admin",
    "TRADOVATE_PASSWORD": "sim-admin-password",
    "TRADOVATE_APP_ID": "reconcile-bench",
    "TRADOVATE_APP_VERSION": "1.0",
    "TRADOVATE_CID": "1",
    "TRADOVATE_SEC": "bench",
    "TRADOVATE_DEVICE_ID": "reconcile-bench",
    # The simulator runs without limits, but the client paces every endpoint: past 10,000 users
    # (100 creates) it would wait real hours. An hour of a second keeps it measuring throughput
    # (tokens then live 1.4 s: their renewals are counted with the logins).
    "RECONCILE_TIME_SCALE": "3600",
}


def serve_counting(db: str, cpus: str | None = None) -> None:
    """Serve the simulator on a free loopback port, counting and recording partner-API requests.

    ``GET /_bench/counts``: requests per path so far; ``GET /_bench/take``: the recorded requests
    ([method, path?query, body]) since the last take; ``GET /_bench/spans``: when each partner-API
    request since the last call of it came in and was answered, and its call ([start, end, path],
    epoch seconds); ``GET /_bench/cpu``: the CPU seconds this process has used so far.
    ``cpus``: the CPUs it runs on, comma-separated (:func:`place`).
    """
    from reconcile.sim.app import create_app
    from reconcile.sim.config import SimConfig
    from reconcile.sim.server import base_url, make

    if cpus:  # before the server starts its threads: they inherit it
        os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    app = create_app(SimConfig(limits_enabled=False), db)
    counts: Counter[str] = Counter()
    recorded: list[tuple[str, str, str]] = []
    spans: list[tuple[float, float, str]] = []
    lock = threading.Lock()

    def reply(start_response: Callable[..., Any], value: object) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(value).encode()]

    def counting(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        with lock:
            if path == "/_bench/counts":
                return reply(start_response, dict(counts))
            if path == "/_bench/take":
                taken = list(recorded)
                recorded.clear()
                return reply(start_response, taken)
            if path == "/_bench/spans":
                timed = list(spans)
                spans.clear()
                return reply(start_response, timed)
            if path == "/_bench/cpu":
                return reply(start_response, time.process_time())
            counts[path.lower()] += 1
        if path.startswith("/v1/") and not path.startswith("/v1/auth/"):
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            query = environ.get("QUERY_STRING", "")
            with lock:
                recorded.append(
                    (environ["REQUEST_METHOD"], path + (f"?{query}" if query else ""), body.decode())
                )
        started = time.time()
        answer = list(app(environ, start_response))
        with lock:
            spans.append((started, time.time(), path))
        return answer

    server = make(counting, "127.0.0.1", 0)
    print(f"listening on {base_url(server)}", flush=True)
    server.serve_forever()


SERVER_CPUS: list[int] = []
"""The CPUs the simulators run on (:func:`place`); empty: every CPU, shared with the clients."""


def place(own_cpu: bool) -> str:
    """With ``own_cpu``, give the simulators a CPU of their own and this process (the driver, and
    the applies it starts) the others; return how the processes run, for the report.

    A remote API never shares the client's CPUs; on one small machine the simulator does, and it
    then migrates between the cores the client uses too. Neither placement is a deployment's (a
    client placed here has fewer CPUs than it would have), so the default stays the shared one.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not own_cpu or len(cpus) < 2:
        return f"shared: simulators and clients on the same {len(cpus) or 'unknown number of'} CPU(s)"
    SERVER_CPUS[:] = cpus[:1]
    os.sched_setaffinity(0, cpus[1:])
    return (
        f"placed (--server-cpu): simulators on CPU {cpus[0]}, the applies and the driver on CPU "
        f"{','.join(map(str, cpus[1:]))}"
    )


@contextmanager
def simulator(db: Path) -> Iterator[str]:
    """A counting simulator in its own process over ``db`` (on the server's CPU); yields its /v1 URL."""
    cpus = ",".join(map(str, SERVER_CPUS))
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-counting", str(db), *(["--cpus", cpus] if cpus else [])],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:\d+/v1", server.stdout.readline())
        if not match:
            raise SystemExit("the simulator did not start")
        yield match.group(0)
    finally:
        server.terminate()
        server.wait(timeout=10)


def bench_get(url: str, what: str) -> Any:
    return httpx.get(f"{url.rsplit('/v1', 1)[0]}/_bench/{what}", timeout=60).json()


def drive(
    url: str,
    requests: list[list[str]],
    through: type[_ThroughHttpClient | _ThroughTransport | _ThroughClient] | None = None,
) -> tuple[float, float, int]:
    """Send ``requests`` as a minimal client would; return (wall s, CPU s, answers that were not 2xx).

    One login, then keep-alive connections; a run of calls between two sequential ones goes
    out over ``WORKERS`` connections at once, like the apply's worker threads. ``through``: the
    bytes go out through ``http.client`` (the driver, by default), through the apply's transport
    as the apply sends them (:class:`_ThroughTransport`: the same loop, to measure what the HTTP
    layer alone costs), or through the apply's whole client (:class:`_ThroughClient`: what its
    calls cost, without the recording around them).
    """
    parts = urlsplit(url)
    login = {
        key: ENV[f"TRADOVATE_{var}"]
        for key, var in (("name", "USERNAME"), ("password", "PASSWORD"), ("appId", "APP_ID"), ("cid", "CID"),
                         ("appVersion", "APP_VERSION"), ("sec", "SEC"), ("deviceId", "DEVICE_ID"))
    }  # fmt: skip
    exchange = (through or _ThroughHttpClient)(url)
    failed = [0]

    def send(lane: int, method: str, path: str, body: str, token: str = "") -> bytes:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, data = exchange(lane, method, path, body.encode() if body else None, headers)
        if status >= 300:
            failed[0] += 1
        return data

    started, cpu = time.perf_counter(), time.process_time()
    answer = send(0, "POST", parts.path + "/auth/accesstokenrequest", json.dumps(login))
    token = json.loads(answer)["accessToken"]

    def worker(lane: int, batch: list[list[str]], next_index: Iterator[int]) -> None:
        for i in next_index:
            if i >= len(batch):
                return
            method, path, body = batch[i]
            send(lane, method, path, body, token)

    for sequential, group in itertools.groupby(
        requests, key=lambda r: r[1].split("?")[0].lower()[3:] in SEQUENTIAL
    ):
        batch = list(group)
        if sequential:
            for method, path, body in batch:
                send(0, method, path, body, token)
            continue
        counter = itertools.count()
        threads = [threading.Thread(target=worker, args=(lane, batch, counter)) for lane in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    exchange.close()
    return time.perf_counter() - started, time.process_time() - cpu, failed[0]


class _ThroughHttpClient:
    """One ``http.client`` connection per lane (worker): the driver."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
        self.connections = [http.client.HTTPConnection(host, port) for _ in range(WORKERS)]

    def __call__(
        self, lane: int, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        conn = self.connections[lane]
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


class _ThroughTransport:
    """The apply's transport as the apply uses it: one pool shared by every lane."""

    def __init__(self, url: str) -> None:
        from reconcile.api.transport import KeepAliveTransport

        parts = urlsplit(url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.transport: httpx.BaseTransport = KeepAliveTransport(timeout=30)

    def __call__(
        self, lane: int, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        request = httpx.Request(method, self.origin + path, content=body, headers=headers)
        response = self.transport.handle_request(request)
        return response.status_code, response.read()

    def close(self) -> None:
        self.transport.close()


class _ThroughHttpxTransport(_ThroughTransport):
    """httpx's own transport (httpcore and h11), the apply's until llhttp read its answers."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.transport.close()
        self.transport = httpx.HTTPTransport(retries=0)


class _ThroughClient:
    """The apply's client as the apply calls it: one :class:`reconcile.api.client.PartnerClient`
    shared by every lane, over the apply's transport, through its whole pipeline for each call
    (token flow, penalty tickets, retries, redaction, JSON in and out); no pacing, nothing recorded.

    It logs in on its first call, as the apply does: the driver's own login is not sent. Each
    answer is parsed as JSON, not into the call's model (a few microseconds of a call).
    """

    def __init__(self, url: str) -> None:
        from reconcile.api.auth import TokenAuth
        from reconcile.api.client import PartnerClient
        from reconcile.api.credentials import Credentials
        from reconcile.api.token_cache import TokenCache
        from reconcile.api.transport import KeepAliveTransport
        from reconcile.errors import ReconcileError

        self.refused = ReconcileError  # imported here, once: not inside the calls being measured
        self.prefix = urlsplit(url).path
        self.cache = tempfile.TemporaryDirectory(prefix="reconcile-bench-token-")
        auth = TokenAuth(Credentials.from_env(ENV), endpoint=url, cache=TokenCache(self.cache.name))
        self.client = PartnerClient(url, transport=KeepAliveTransport(timeout=30), auth=auth)

    def __call__(
        self, lane: int, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        if path.endswith("/auth/accesstokenrequest"):
            return 200, b'{"accessToken": ""}'  # the client logs in itself, once
        target, _, query = path.partition("?")
        target = target.removeprefix(self.prefix)
        try:
            self.client._call(  # the pipeline every typed call goes through
                method,
                target,
                call=target.rsplit("/", 1)[-1],
                body=json.loads(body) if body else None,
                params=dict(parse_qsl(query)) or None,
            )
        except self.refused:
            return 400, b""
        return 200, b""

    def close(self) -> None:
        self.client.close()
        self.cache.cleanup()


def write_manifest(path: Path, users: int) -> None:
    lines = [
        "apiVersion: reconcile/v1",
        "environment: sim",
        "partner:",
        "  dataAccountId: 11111",
        "  entitlements: {simplus: 12345}",
        "defaults: {tradovateSubscriptionPlanId: 7}",
        "users:" if users else "users: []",
    ]
    for i in range(users):
        lines.append(
            f"  - {{name: bench{i:05d}, email: bench{i:05d}@example.com, password: {{env: BENCH_PASSWORD}}, "
            f"firstName: Bench, lastName: User{i}, entitlements: [simplus], "
            f'contact: {{phone: "+1212{i:07d}", streetAddress1: {i} Main St, city: New York, state: NY, '
            f'postCode: "10001", country: US}}}}'
        )
    path.write_text("\n".join(lines) + "\n")


def partner_requests(counts: dict[str, int]) -> tuple[int, int]:
    """(partner-API requests, login/renew requests) from the simulator's per-path counts."""
    api = sum(n for p, n in counts.items() if p.startswith("/v1/") and not p.startswith("/v1/auth/"))
    auth = sum(n for p, n in counts.items() if p.startswith("/v1/auth/"))
    return api, auth


def lower_bound(result: dict[str, Any]) -> int:
    planned = result["planned"]
    grants = planned["grant_entitlement"] + planned.get("recheck", 0)
    return int(
        math.ceil(planned["create"] / 100)
        + planned["update_email"]
        + planned["update_contact"]
        + (1 if grants else 0)
        + 2 * result["summary"]["granted"]
        + math.ceil(planned["cancel_everything"] / 100)
    )


def client_overhead(calls: int) -> tuple[float, float]:
    """CPU ms per updatecontactinfo call and per created user, against a transport that answers at once.

    The same PartnerClient pipeline as a real apply (auth, penalties, retries, parsing); the
    answers are canned, so the figure is the client's own cost, without any simulator.
    """
    from reconcile.api.auth import TokenAuth
    from reconcile.api.client import PartnerClient
    from reconcile.api.credentials import Credentials
    from reconcile.api.models import EvaluationUser, UpdateContactInfo
    from reconcile.api.token_cache import TokenCache

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/auth/accesstokenrequest"):
            expires = "2099-01-01T00:00:00+00:00"
            return httpx.Response(200, json={"accessToken": "t", "expirationTime": expires})
        if path.endswith("/user/createevaluationusers"):
            users = json.loads(request.content)["users"]
            return httpx.Response(200, json={"results": [{"userId": i + 1} for i in range(len(users))]})
        body = json.loads(request.content)
        return httpx.Response(200, json={"contactInfo": {"id": 1, **body}})

    with tempfile.TemporaryDirectory() as tmp:
        auth = TokenAuth(Credentials("bench", "bench"), endpoint="http://bench/v1", cache=TokenCache(tmp))
        client = PartnerClient("http://bench/v1", transport=httpx.MockTransport(answer), auth=auth)
        contact = UpdateContactInfo(
            userId=1,
            firstName="Bench",
            lastName="User",
            phone="+12125550100",
            streetAddress1="1 Main St",
            city="New York",
            state="NY",
            postCode="10001",
            country="US",
        )
        client.update_contact_info(contact)  # logs in
        started = time.process_time()
        for _ in range(calls):
            client.update_contact_info(contact, user="bench")
        per_call = (time.process_time() - started) / calls
        users = [
            EvaluationUser(
                name=f"bench{i:05d}",
                email=f"bench{i:05d}@example.com",
                password="Bench-Password-1!",
                firstName="Bench",
                lastName="User",
                tradovateSubscriptionPlanId=7,
            )
            for i in range(100)
        ]
        started = time.process_time()
        for _ in range(max(calls // 100, 1)):
            client.create_evaluation_users(users)
        per_user = (time.process_time() - started) / (max(calls // 100, 1) * 100)
        client.close()
    return 1000 * per_call, 1000 * per_user


def transport_floor(url: str, calls: int) -> list[float]:
    """CPU ms per request of the apply's transport, httpx's own and ``http.client``, one thread.

    All send the same small GET to the same simulator over kept-alive connections (as far as
    the server keeps them): what one request costs this process before any layer of the client.
    """
    path = "/_bench/counts"
    figures = []
    for exchange in (_ThroughTransport(url), _ThroughHttpxTransport(url), _ThroughHttpClient(url)):
        exchange(0, "GET", path, None, {})
        started = time.process_time()
        for _ in range(calls):
            exchange(0, "GET", path, None, {})
        figures.append(1000 * (time.process_time() - started) / calls)
        exchange.close()
    return figures


def plan_once(manifest: Path, work: Path, url: str) -> float:
    """CPU s of ``reconcile plan`` of the desk against the state the apply is about to start from:
    the apply's own start (imports, manifest, state, planning, the plan's JSON) before any call."""
    _, cpu, _, _ = _reconcile("plan", manifest, work, url)
    return cpu


def apply_once(
    manifest: Path, work: Path, url: str
) -> tuple[float, float, dict[str, Any], tuple[float, float]]:
    """Run ``reconcile apply`` in its own process; return (wall s, its CPU s, its JSON result, and
    when it started and ended in epoch seconds)."""
    wall, cpu, stdout, span = _reconcile("apply", manifest, work, url, "--auto-approve")
    return wall, cpu, json.loads(stdout), span


def _reconcile(
    command: str, manifest: Path, work: Path, url: str, *options: str
) -> tuple[float, float, str, tuple[float, float]]:
    """Run ``reconcile COMMAND`` on the bench's desk and state, JSON out, in its own process; return
    (wall s, its CPU s, its output, and when it started and ended in epoch seconds)."""
    env = {**os.environ, **ENV, "XDG_CACHE_HOME": str(work / "cache"), "PYTHONPATH": str(REPO[0])}
    state = str(work / "state" / "sim.json")
    argv = [sys.executable, "-m", "reconcile", command, "-f", str(manifest), "--state", state,
            "--endpoint", url, *options, "--format", "json"]  # fmt: skip
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started, launched = time.perf_counter(), time.time()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=work, check=False)
    wall, ended = time.perf_counter() - started, time.time()
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return wall, cpu, done.stdout, (launched, ended)


def timeline(spans: list[list[Any]], launched: float, ended: float) -> tuple[str, float]:
    """Where an apply's wall time went beside its requests: before the first, after the last, and
    between them with none in flight (the simulator idle while the apply works alone), with the
    calls around most of that idle time; with it, the seconds from the start to the first request
    (0 when it made none). ``spans``: [start, end, path] of each request (:func:`serve_counting`)."""
    if not spans:
        return "no requests", 0.0
    ordered = sorted(spans)
    idle, reach, reached_by = 0.0, ordered[0][1], ordered[0][2]
    between: Counter[str] = Counter()
    times: Counter[str] = Counter()
    for start, end, path in ordered[1:]:
        if start > reach:
            idle += start - reach
            pair = f"{reached_by.rsplit('/', 1)[-1]} and {path.rsplit('/', 1)[-1]}"
            between[pair] += start - reach
            times[pair] += 1
        if end > reach:
            reach, reached_by = end, path
    first, last = ordered[0][0], reach
    most = ""
    if between:
        pair, seconds = between.most_common(1)[0]
        most = f" ({seconds:.2f} s of it between {pair}, {times[pair]} times)"
    return (
        f"first request {first - launched:.2f} s after the start, exit {ended - last:.2f} s after the "
        f"last answer, none in flight for {idle:.2f} s of the {last - first:.2f} s between{most}",
        first - launched,
    )


def slow_creates(url: str, seconds: float) -> None:
    """Make the simulator at ``url`` answer every create ``seconds`` late (its ``slow`` fault)."""
    fault = {"kind": "slow", "path": "/user/createevaluationusers", "count": 1_000_000, "seconds": seconds}
    httpx.post(f"{url.rsplit('/v1', 1)[0]}/_sim/faults", json=fault, timeout=30).raise_for_status()


def sign_half(url: str, users: int) -> None:
    with httpx.Client(timeout=30) as admin:
        for i in range(0, users, 2):
            admin.post(f"{url.rsplit('/v1', 1)[0]}/_sim/agreements", json={"name": f"bench{i:05d}"})


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


Figures = tuple[float, float, float, float, float, float]
"""One round of one run: wall ratio, the apply's CPU ms/user, the driver's, the simulator's CPU
serving the apply divided by its CPU serving the driver, and two parts of the apply's CPU ms/user:
its plan (:func:`plan_once`) and its calls (:class:`_ThroughClient`)."""


def cpu_parts(ms: float, plan_ms: float, calls_ms: float, driver_ms: float) -> str:
    """The apply's CPU per user in three parts, and what the target leaves for the third.

    ``plan_ms``: ``reconcile plan`` of the same desk and state (its start, before any call);
    ``calls_ms``: the same requests through its client on as many threads (:class:`_ThroughClient`);
    the rest is the recording around the calls (state saves, the journal, the audit log) and the
    workers' own steps. Each part is measured in its own process, so the three add up only nearly.
    """
    rest = ms - plan_ms - calls_ms
    left = CPU_TARGET_MS - plan_ms - calls_ms
    return (
        f"{ms:.3f} ms/user = its plan {plan_ms:.3f} (`reconcile plan`, same desk and state) + its calls "
        f"{calls_ms:.3f} (the same requests through its client on {WORKERS} threads; "
        f"{calls_ms / driver_ms:.2f}x the driver's {driver_ms:.3f}) + the rest {rest:.3f} (recording, "
        f"the workers' steps); the target leaves {left:.3f} for the rest"
    )


def bench_apply(users: int, create_latency: float = 0.0, rounds: int = 1) -> bool:
    """Print both applies at ``users`` beside the driver; return whether the request counts were minimal.

    ``create_latency``: every simulator answers each create that many seconds late (a remote API's
    create, not a local simulator's 8 ms), for the apply and the driver alike. ``rounds``: the
    whole comparison that many times over, each on fresh simulators; the verdicts are then read
    off the median of the rounds (a shared machine's speed drifts between two runs a minute apart).
    """
    ok = True
    seen: dict[str, list[Figures]] = {}
    for number in range(1, rounds + 1):
        if rounds > 1:
            print(f"{users:>6} round {number} of {rounds}", flush=True)
        ok = _bench_round(users, create_latency, seen, verdicts=rounds == 1) and ok
    if rounds > 1:
        for run, figures in seen.items():
            ratio, ms, d_ms, sim, plan_ms, calls_ms = map(statistics.median, zip(*figures, strict=True))
            print(
                f"{users:>6} {run:<30} median of {rounds}: wall ratio {ratio:.2f} (target <= {WALL_TARGET}) "
                f"{_verdict(ratio <= WALL_TARGET)}; apply CPU {ms:.3f} ms/user (target <= {CPU_TARGET_MS}) "
                f"{_verdict(ms <= CPU_TARGET_MS)}, {ms / d_ms:.2f}x the driver's {d_ms:.3f}; the simulator's "
                f"CPU serving the apply {sim:.2f}x what the driver's calls cost it",
                flush=True,
            )
            print(f"{'':>6} {'':<30} {cpu_parts(ms, plan_ms, calls_ms, d_ms)}", flush=True)
    return ok


def _bench_round(
    users: int, create_latency: float, seen: dict[str, list[Figures]], *, verdicts: bool
) -> bool:
    """One comparison at ``users`` on fresh simulators (see :func:`bench_apply`); adds to ``seen``."""
    work = Path(tempfile.mkdtemp(prefix="reconcile-bench-apply-"))
    ok = True
    try:
        manifest = work / "desk.yaml"
        write_manifest(manifest, users)
        with (
            simulator(work / "sim.sqlite") as url,
            simulator(work / "driver.sqlite") as driver_url,
            simulator(work / "transport.sqlite") as transport_url,
            simulator(work / "client.sqlite") as client_url,
        ):
            others = (driver_url, transport_url, client_url)
            if create_latency > 0:
                for each in (url, *others):
                    slow_creates(each, create_latency)
                print(f"{'':>6} every create answered {create_latency} s late (--create-latency)", flush=True)
            for run in ("create + contact", "Sim+ grants after half signed"):
                if run.startswith("Sim+"):
                    for each in (url, *others):
                        sign_half(each, users)
                plan_cpu = plan_once(manifest, work, url)  # before the simulator's figures start
                before, sim_before = bench_get(url, "counts"), bench_get(url, "cpu")
                bench_get(url, "spans")
                wall, cpu, result, (launched, ended) = apply_once(manifest, work, url)
                after, sim_cpu = bench_get(url, "counts"), bench_get(url, "cpu") - sim_before
                spent, start_up = timeline(bench_get(url, "spans"), launched, ended)
                made, auth = partner_requests({p: after.get(p, 0) - before.get(p, 0) for p in after})
                bound = lower_bound(result)
                ok = ok and made == bound
                sent = bench_get(url, "take")
                d_sim_before = bench_get(driver_url, "cpu")
                d_wall, d_cpu, d_failed = drive(driver_url, sent)
                d_sim_cpu = bench_get(driver_url, "cpu") - d_sim_before
                sim_ratio = sim_cpu / d_sim_cpu
                h_wall, h_cpu, h_failed = drive(transport_url, sent, _ThroughTransport)
                _, c_cpu, c_failed = drive(client_url, sent, _ThroughClient)
                ms, d_ms = 1000 * cpu / users, 1000 * d_cpu / users
                plan_ms, calls_ms = 1000 * plan_cpu / users, 1000 * c_cpu / users
                seen.setdefault(run, []).append((wall / d_wall, ms, d_ms, sim_ratio, plan_ms, calls_ms))
                counted = f"requests {made} (lower bound {bound}{'' if made == bound else ' NOT EQUAL'})"
                walls = f"apply wall {wall:.2f} s, driver {d_wall:.2f} s: ratio {wall / d_wall:.2f}"
                wall_met = _verdict(wall <= WALL_TARGET * d_wall)
                wall_ok = f" (target <= {WALL_TARGET}) {wall_met}" if verdicts else ""
                cpu_ok = f" (target <= {CPU_TARGET_MS}) {_verdict(ms <= CPU_TARGET_MS)}" if verdicts else ""
                print(
                    f"{users:>6} {run:<30} {counted}, logins {auth}; {walls}{wall_ok}; "
                    f"apply CPU {ms:.3f} ms/user{cpu_ok}, driver CPU {d_ms:.3f} ms/user ({ms / d_ms:.2f}x)"
                    + (f"; driver answers not 2xx: {d_failed}" if d_failed else ""),
                    flush=True,
                )
                print(
                    f"{'':>6} {'  the apply alone:':<30} {spent}; from its first request on, "
                    f"{(wall - start_up) / d_wall:.2f} times the driver's wall",
                    flush=True,
                )
                print(
                    f"{'':>6} {'  the simulator:':<30} {sim_cpu:.2f} s of CPU serving the apply, "
                    f"{d_sim_cpu:.2f} s serving the driver the same calls ({sim_ratio:.2f}x)",
                    flush=True,
                )
                print(
                    f"{'':>6} {'  the driver on its transport:':<30} wall {h_wall:.2f} s: "
                    f"ratio {h_wall / d_wall:.2f} to the driver; CPU {1000 * h_cpu / users:.3f} ms/user"
                    + (f"; answers not 2xx: {h_failed}" if h_failed else ""),
                    flush=True,
                )
                print(
                    f"{'':>6} {'  where its CPU goes:':<30} {cpu_parts(ms, plan_ms, calls_ms, d_ms)}"
                    + (f"; the calls through its client failed: {c_failed}" if c_failed else ""),
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ok


def seed(db: Path, users: int) -> dict[str, Any]:
    """Fill a simulator database with ``users`` users with contact info; return their state records."""
    from reconcile.sim.app import create_app
    from reconcile.sim.config import SimConfig
    from reconcile.sim.rules import insert_user, update_contact_info

    app = create_app(SimConfig(limits_enabled=False), db)
    org = app.config.organization_id
    now = "2026-01-01T00:00:00Z"
    records: dict[str, Any] = {}
    with app.store.transaction() as tx:
        for i in range(users):
            name = f"bench{i:06d}"
            user_id = insert_user(
                tx,
                app.config,
                name=name,
                email=f"{name}@example.com",
                first_name="Bench",
                last_name=f"User{i}",
                password="Bench-Password-1!",
                org_id=org,
                origin="api",
            )
            contact = {
                "phone": f"+1212{i:07d}",
                "streetAddress1": f"{i} Main St",
                "city": "New York",
                "state": "NY",
                "postCode": "10001",
                "country": "US",
            }
            update_contact_info(
                tx, org, {"userId": user_id, "firstName": "Bench", "lastName": f"User{i}", **contact}
            )
            records[name] = {
                "userId": user_id,
                "email": f"{name}@example.com",
                "firstName": "Bench",
                "lastName": f"User{i}",
                "contact": contact,
                "createdAt": now,
                "updatedAt": now,
            }
    return records  # fmt: skip


def bench_refresh(users: int) -> None:
    """Print the requests and time of ``reconcile refresh`` over ``users`` managed users."""
    work = Path(tempfile.mkdtemp(prefix="reconcile-bench-refresh-"))
    try:
        manifest = work / "desk.yaml"
        write_manifest(manifest, 0)
        records = seed(work / "sim.sqlite", users)
        with simulator(work / "sim.sqlite") as url:
            binding = {"endpoint": url, "dataAccountId": 11111}
            state = {"environment": "sim", "format_version": 2, "lineage": "bench", "serial": 1,
                     "users": records, "binding": binding}  # fmt: skip
            (work / "state").mkdir()
            (work / "state" / "sim.json").write_text(json.dumps(state))
            env = {**os.environ, **ENV, "XDG_CACHE_HOME": str(work / "cache"), "PYTHONPATH": str(REPO[0])}
            argv = [sys.executable, "-m", "reconcile", "refresh", "-f", str(manifest), "--endpoint", url,
                    "--state", str(work / "state" / "sim.json")]  # fmt: skip
            before = bench_get(url, "counts")
            started = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=work, check=False)
            wall = time.perf_counter() - started
            after = bench_get(url, "counts")
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        made, _ = partner_requests({p: after.get(p, 0) - before.get(p, 0) for p in after})
        per_thousand = 1000 * made / users
        print(
            f"refresh {users:>7,} managed users: {made} requests ({per_thousand:.1f} per 1,000 users; "
            f"target: a few), {wall:.2f} s  {_verdict(per_thousand <= 10)}",
            flush=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 20_000, 50_000])
    parser.add_argument("--refresh-sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose reconcile applies")
    parser.add_argument(
        "--create-latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="answer every create this late, as a remote API does (default: as fast as the simulator)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="compare each size this many times over, on fresh simulators; verdicts from the median",
    )
    parser.add_argument(
        "--server-cpu",
        action="store_true",
        help="run the simulators on a CPU of their own, the applies and the driver on the others",
    )
    parser.add_argument("--serve-counting", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--cpus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_counting:
        serve_counting(args.serve_counting, args.cpus)
        return 0
    REPO[0] = args.repo
    if any(n < 1 for n in [*args.sizes, *args.refresh_sizes]):
        parser.error("every size is a number of users, at least 1")
    if args.rounds < 1:
        parser.error("--rounds is at least 1")
    compile_bytecode(REPO[0])
    print(place(args.server_cpu), flush=True)
    per_call, per_created = client_overhead(2000)
    print(
        f"client overhead (instant in-process transport): {per_call:.3f} ms CPU per updatecontactinfo "
        f"call, {per_created:.3f} ms CPU per created user (batches of 100)",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp, simulator(Path(tmp) / "floor.sqlite") as url:
        ours_ms, httpx_ms, http_client_ms = transport_floor(url, 2000)
    print(
        f"transport alone (one thread, through sim serve): the apply's {ours_ms:.3f} ms CPU per request, "
        f"httpx's own {httpx_ms:.3f} ms (the apply's before), "
        f"http.client {http_client_ms:.3f} ms (the driver's)",
        flush=True,
    )
    ok = True
    for users in args.sizes:
        ok = bench_apply(users, args.create_latency, args.rounds) and ok
    for users in args.refresh_sizes:
        bench_refresh(users)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
