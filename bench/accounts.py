"""Evaluation accounts applied through `sim serve`: requests made beside the lower bound.

A desk of N evaluation accounts (``--accounts``, default 10,000; ten per trader) in two applies
against a counting simulator (bench/apply.py's): the first creates the traders and every account
(some switched to a risk category, some locked at once); the second mixes every account action:
risk updates, category switches, unlocks, resets to two trade dates, and revocations (``trading:
revoked`` and accounts removed from the manifest). Each is planned to a file first; the lower
bound is read from it: ⌈creates/100⌉ + ⌈risk updates/100⌉ + ⌈switches per category/100⌉ + locks
and unlocks + ⌈resets per trade date/100⌉ + (1 confirming read + ⌈revocations/100⌉), plus the
users' own (bench/apply.py). They must be equal: the script exits 1 when they are not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apply import ENV, bench_get, lower_bound, partner_requests, simulator


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


def reconcile(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconcile", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        check=False,
    )


def measure(run: str, work: Path, manifest: Path, url: str, env: dict[str, str], size: int) -> bool:
    """Apply ``manifest`` (planned to a file first), print the figures; True when requests = lower bound."""
    state = work / "state" / "accounts.json"
    where = ["-f", str(manifest), "--state", str(state), "--endpoint", url]
    budget = ["--allow-cancellations", str(size)]
    planned = reconcile(work, env, "plan", *where, *budget, "--out", str(work / "plan.json"))
    if planned.returncode != 0:
        print(planned.stderr, file=sys.stderr)
        return False
    actions = json.loads((work / "plan.json").read_text())["actions"]
    before = bench_get(url, "counts")
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
    after = bench_get(url, "counts")
    made, auth = partner_requests({p: after.get(p, 0) - before.get(p, 0) for p in after})
    bound = lower_bound(json.loads(done.stdout)) + account_lower_bound(actions)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(Counter(a["action"] for a in actions).items()))
    print(
        f"{run} ({kinds}): wall {wall:.2f} s, requests made {made}, lower bound {bound}, "
        f"logins/renewals {auth}, {1000 * wall / max(made, 1):.3f} ms per request, "
        f"apply process CPU {cpu:.2f} s ({1000 * cpu / size:.3f} ms per account)"
        + ("" if made == bound else "  <-- NOT EQUAL"),
        flush=True,
    )
    return made == bound


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reconcile-bench-accounts-"))
    manifest = work / "desk.yaml"
    env = {**os.environ, **ENV, "XDG_CACHE_HOME": str(work / "cache")}
    try:
        with simulator(work / "sim.sqlite") as url:
            ok = True
            print(f"accounts: {args.accounts}")
            for second, run in ((False, "accounts: create"), (True, "accounts: every account action")):
                write_account_manifest(manifest, args.accounts, second)
                ok = measure(run, work, manifest, url, env, args.accounts) and ok
            return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
