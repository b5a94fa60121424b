"""Benchmark `reconcile apply` at scale against the simulator over loopback, rate limits off.

Run: ``.venv/bin/python bench/apply.py [--users 10000]``. Two applies on one desk, each user with
contact info and Sim+:

1. creates every user and sets their contact info (Sim+ waits: nobody has signed yet);
2. after half the users sign the Market Data Agreement, grants Sim+ to them.

Then, with ``--accounts N`` (default 10,000; 0 skips it), a desk of N evaluation accounts (ten per
trader) in two applies: the first creates the traders and every account (some switched to a risk
category, some locked at once); the second mixes every account action: risk updates, category
switches, unlocks, resets to two trade dates, and revocations (``trading: revoked`` and accounts
removed from the manifest). Each is planned to a file first; the lower bound is read from it.

For each apply it prints the wall time, the apply process's own CPU time per user (the client's
overhead; the rest of the wall time is the simulator), the requests the simulator served (counted
inside the simulator's process, partner-API paths only; logins reported apart) and the lower bound
⌈C/100⌉ + email changes + contact updates + 1 signal read + 2 per grant + ⌈X/100⌉, plus for
accounts ⌈creates/100⌉ + ⌈risk updates/100⌉ + ⌈switches per category/100⌉ + locks and unlocks +
⌈resets per trade date/100⌉ + (1 confirming read + ⌈revocations/100⌉). They must be equal: the
script exits 1 when they are not.
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


def account_lower_bound(actions: list[dict[str, Any]]) -> int:
    """The fewest requests the account actions of a plan can take (see the module docstring)."""
    kinds = Counter(a["action"] for a in actions)
    per_category = Counter(a["riskCategoryId"] for a in actions if a["action"] == "switch_risk_category")
    per_day = Counter(a["resetTo"] for a in actions if a["action"] == "reset_account")
    revokes = kinds["revoke_trading"]
    return (
        math.ceil(kinds["create_account"] / 100)
        + math.ceil(kinds["update_risk"] / 100)
        + sum(math.ceil(n / 100) for n in per_category.values())
        + kinds["set_trading"]
        + sum(math.ceil(n / 100) for n in per_day.values())
        + ((1 + math.ceil(revokes / 100)) if revokes else 0)
    )


def write_account_manifest(path: Path, accounts: int, second: bool) -> None:
    """Ten accounts per trader; ``second`` is the edit that mixes every account action."""
    lines = [
        "apiVersion: reconcile/v1",
        "environment: sim",
        "partner:",
        "  dataAccountId: 11111",
        "  accountTemplates:",
        "    eval50k: {templateAccountId: 5001, initialBalance: 50000, "
        "risk: {trailingMaxDrawdown: 2500, dailyLossAutoLiq: 1000}}",
        "  riskCategories: {standard: 31, halted: 32}",
        "defaults: {tradovateSubscriptionPlanId: 7}",
        "users:",
    ]
    for u in range(math.ceil(accounts / 10)):
        entries = [_account_entry(i, second) for i in range(u * 10, min(accounts, u * 10 + 10))]
        kept = ", ".join(e for e in entries if e)
        lines.append(
            f"  - {{name: desk{u:05d}, email: desk{u:05d}@example.com, password: {{env: BENCH_PASSWORD}}, "
            f"firstName: Bench, lastName: Desk{u}, accounts: [{kept}]}}"
        )
    path.write_text("\n".join(lines) + "\n")


def _account_entry(i: int, second: bool) -> str:
    """Account ``i``: its share of the mix (by ``i % 10``), as the first or the second apply wants it."""
    fields = {
        0: "risk: {dailyLossAutoLiq: 800}" if second else "",
        1: "riskCategory: halted" if second else "riskCategory: standard",
        2: "trading: active" if second else "trading: locked",
        3: "resetTo: 2025-06-02" if second else "",
        4: "resetTo: 2025-06-03" if second else "",
        5: "trading: revoked" if second else "",
    }.get(i % 10, "")
    if second and i % 10 == 6:
        return ""  # removed from the manifest: its permission is revoked
    return f"{{name: BENCH{i:06d}, template: eval50k{', ' + fields if fields else ''}}}"


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


def reconcile(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconcile", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        check=False,
    )


def measure(
    run: str, work: Path, manifest: Path, url: str, env: dict[str, str], size: int, *, accounts: bool = False
) -> bool:
    """Apply ``manifest`` (planned to a file first), print the figures; True when requests = lower bound."""
    base = url.rsplit("/v1", 1)[0]
    # Each desk its own state: the accounts desk does not name the users desk's traders.
    state = work / "state" / ("accounts.json" if accounts else "sim.json")
    where = ["-f", str(manifest), "--state", str(state), "--endpoint", url]
    budget = ["--allow-cancellations", str(size)] if accounts else []
    planned = reconcile(work, env, "plan", *where, *budget, "--out", str(work / "plan.json"))
    if planned.returncode != 0:
        print(planned.stderr, file=sys.stderr)
        return False
    actions = json.loads((work / "plan.json").read_text())["actions"]
    before = httpx.get(f"{base}/_bench/counts", timeout=30).json()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = reconcile(
        work, env, "apply", str(work / "plan.json"), *where, "--auto-approve", *budget, "--format", "json"
    )
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The apply process's own CPU (planning, state saves, HTTP, JSON): the client's overhead.
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return False
    after = httpx.get(f"{base}/_bench/counts", timeout=30).json()
    made, auth = partner_requests({p: after.get(p, 0) - before.get(p, 0) for p in after})
    bound = lower_bound(json.loads(done.stdout)) + account_lower_bound(actions)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(Counter(a["action"] for a in actions).items()))
    print(
        f"{run} ({kinds}): wall {wall:.2f} s, requests made {made}, lower bound {bound}, "
        f"logins/renewals {auth}, {1000 * wall / max(made, 1):.3f} ms per request, "
        f"apply process CPU {cpu:.2f} s ({1000 * cpu / size:.3f} ms per {'account' if accounts else 'user'})"
        + ("" if made == bound else "  <-- NOT EQUAL"),
        flush=True,
    )
    return made == bound


def bench_env(work: Path) -> dict[str, str]:
    """The environment of the apply processes: the simulator's admin login, caches under ``work``."""
    return {
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--accounts", type=int, default=10_000)
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
        env = bench_env(work)
        ok = True
        if args.users:
            print(f"users: {args.users}")
            write_manifest(manifest, args.users)
            for run in ("create + contact", "Sim+ grants after half signed"):
                if run.startswith("Sim+"):
                    with httpx.Client(timeout=30) as admin:
                        for i in range(0, args.users, 2):
                            admin.post(f"{base}/_sim/agreements", json={"name": f"bench{i:05d}"})
                ok = measure(run, work, manifest, url, env, args.users) and ok
        if args.accounts:
            print(f"accounts: {args.accounts}")
            for second, run in ((False, "accounts: create"), (True, "accounts: every account action")):
                write_account_manifest(manifest, args.accounts, second)
                ok = measure(run, work, manifest, url, env, args.accounts, accounts=True) and ok
        return 0 if ok else 1
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
