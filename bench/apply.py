"""Benchmark `reconcile apply` at scale against the simulator over loopback, rate limits off.

Run: ``.venv/bin/python bench/apply.py [--users 10000]``. Two applies on one desk, each user with
contact info and Sim+:

1. creates every user and sets their contact info (Sim+ waits: nobody has signed yet);
2. after half the users sign the Market Data Agreement, grants Sim+ to them.

For each apply it prints the wall time, the apply process's own CPU time per user (the client's
overhead; the rest of the wall time is the simulator), the requests the simulator served (counted
inside the simulator's process, partner-API paths only; logins reported apart) and the lower bound
⌈C/100⌉ + email changes + contact updates + 1 signal read + 2 per grant + ⌈X/100⌉. They must be
equal: the script exits 1 when they are not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def serve_counting(db: str) -> None:
    """Serve the simulator on a free loopback port, counting requests per path (``GET /_bench/counts``)."""
    from reconcile.sim.app import create_app
    from reconcile.sim.config import SimConfig
    from reconcile.sim.server import base_url, make

    app = create_app(SimConfig(limits_enabled=False), db)
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def counting(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/_bench/counts":
            with lock:
                body = json.dumps(dict(counts)).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        with lock:
            counts[path.lower()] += 1
        return app(environ, start_response)

    server = make(counting, "127.0.0.1", 0)
    print(f"listening on {base_url(server)}", flush=True)
    server.serve_forever()


def write_manifest(path: Path, users: int) -> None:
    lines = [
        "apiVersion: reconcile/v1",
        "environment: sim",
        "partner:",
        "  dataAccountId: 11111",
        "  entitlements: {simplus: 12345}",
        "defaults: {tradovateSubscriptionPlanId: 7}",
        "users:",
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--serve-counting", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_counting:
        serve_counting(args.serve_counting)
        return 0
    per_call, per_created = client_overhead(2000)
    print(
        f"client overhead (instant in-process transport): {per_call:.3f} ms CPU per updatecontactinfo "
        f"call, {per_created:.3f} ms CPU per created user (batches of 100)",
        flush=True,
    )

    work = Path(tempfile.mkdtemp(prefix="reconcile-bench-apply-"))
    manifest = work / "desk.yaml"
    write_manifest(manifest, args.users)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-counting", str(work / "sim.sqlite")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:\d+/v1", server.stdout.readline())
        if not match:
            print("the simulator did not start", file=sys.stderr)
            return 1
        url = match.group(0)
        base = url.rsplit("/v1", 1)[0]
        env = {
            **os.environ,
            "BENCH_PASSWORD": "Bench-Password-1!",
            "TRADOVATE_USERNAME": "partner-admin",
            "TRADOVATE_PASSWORD": "sim-admin-password",
            "TRADOVATE_APP_ID": "reconcile-bench",
            "TRADOVATE_APP_VERSION": "1.0",
            "TRADOVATE_CID": "1",
            "TRADOVATE_SEC": "bench",
            "TRADOVATE_DEVICE_ID": "reconcile-bench",
            "XDG_CACHE_HOME": str(work / "cache"),
            # The simulator runs without limits, but the client paces every endpoint: past 10,000
            # users (100 creates) it would wait real hours. An hour of a second keeps it measuring
            # throughput (tokens then live 1.4 s: their renewals are counted with the logins).
            "RECONCILE_TIME_SCALE": "3600",
        }
        ok = True
        print(f"users: {args.users}")
        for run in ("create + contact", "Sim+ grants after half signed"):
            if run.startswith("Sim+"):
                with httpx.Client(timeout=30) as admin:
                    for i in range(0, args.users, 2):
                        admin.post(f"{base}/_sim/agreements", json={"name": f"bench{i:05d}"})
            before = httpx.get(f"{base}/_bench/counts", timeout=30).json()
            cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "reconcile",
                    "apply",
                    "-f",
                    str(manifest),
                    "--state",
                    str(work / "state" / "sim.json"),
                    "--endpoint",
                    url,
                    "--auto-approve",
                    "--format",
                    "json",
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=work,
                check=False,
            )
            wall = time.perf_counter() - started
            cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            # The apply process's own CPU (planning, state saves, HTTP, JSON): the client's overhead.
            cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            after = httpx.get(f"{base}/_bench/counts", timeout=30).json()
            delta = {p: after.get(p, 0) - before.get(p, 0) for p in after}
            made, auth = partner_requests(delta)
            bound = lower_bound(json.loads(done.stdout))
            ok = ok and made == bound
            print(
                f"{run}: wall {wall:.2f} s, requests made {made}, lower bound {bound}, "
                f"logins/renewals {auth}, {1000 * wall / max(made, 1):.3f} ms per request, "
                f"apply process CPU {cpu:.2f} s ({1000 * cpu / args.users:.3f} ms per user)"
                + ("" if made == bound else "  <-- NOT EQUAL")
            )
        return 0 if ok else 1
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
