"""Benchmark ``reconcile plan`` at 1k / 10k / 100k users beside PyYAML's C loader (issue 2, "Speed").

For each size it writes a manifest and a matching recorded state in which 10% of the users
differ (new users, changed emails, changed contacts), then runs, each in its own process:

- ``reconcile plan -f manifest.yaml --state state.json`` as a user would (output to a file),
- the manifest loader alone (``reconcile.manifest.loader.load_manifest``),
- ``yaml.load(..., Loader=yaml.CSafeLoader)`` on the same manifest (parse only, nothing else),

and prints wall time and peak memory (max RSS) of each. Target at 100k users: the whole plan
takes at most 0.25x the C loader's parse time and stays under 1 GB.

    .venv/bin/python bench/plan.py                 # 1000 10000 100000
    .venv/bin/python bench/plan.py --sizes 1000 --keep /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconcile.state.model import ContactRecord, GrantRecord, State, UserRecord  # noqa: E402

ENTITLEMENTS = {"simplus": 12345, "tradingview": 31}
CHANGED_EVERY = 10  # 10% of the users differ from the recorded state


def _contact(i: int) -> dict[str, str]:
    return {
        "phone": f"+1212555{i % 10000:04d}",
        "streetAddress1": f"{i} Main St",
        "city": "New York",
        "state": "NY",
        "postCode": "10001",
        "country": "US",
    }


def write_inputs(folder: Path, users: int) -> tuple[Path, Path]:
    """Write manifest.yaml and state.json for ``users`` users; every 10th user differs."""
    lines = [
        "apiVersion: reconcile/v1",
        "environment: sim",
        "partner:",
        "  dataAccountId: 11111",
        "  entitlements:",
        *(f"    {name}: {ident}" for name, ident in ENTITLEMENTS.items()),
        "defaults:",
        "  tradovateSubscriptionPlanId: 7",
        "users:",
    ]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    records: dict[str, UserRecord] = {}
    for i in range(users):
        name = f"trader{i:07d}"
        contact = _contact(i)
        lines += [
            f"  - name: {name}",
            f"    email: {name}@example.com",
            "    password: {generate: true}",
            f"    firstName: First{i}",
            f"    lastName: Last{i}",
            "    entitlements: [tradingview]",
            "    contact:",
            *(f'      {key}: "{value}"' for key, value in contact.items()),
        ]
        change = i % CHANGED_EVERY == 0
        kind = (i // CHANGED_EVERY) % 3
        if change and kind == 0:
            continue  # not in state: a create
        email = f"old-{name}@example.com" if change and kind == 1 else f"{name}@example.com"
        recorded_contact = dict(contact, city="Boston") if change and kind == 2 else contact
        records[name] = UserRecord(
            userId=1_000_000 + i,
            email=email,
            firstName=f"First{i}",
            lastName=f"Last{i}",
            tradovateSubscriptionPlanId=7,
            contact=ContactRecord(**recorded_contact),
            entitlements={"tradingview": GrantRecord(entitlementId=31, status="granted", updatedAt=now)},
            createdAt=now,
            updatedAt=now,
        )
    manifest = folder / "manifest.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    state = folder / "state.json"
    state.write_text(State(environment="sim", users=records).model_dump_json())
    return manifest, state


def measure(argv: list[str], out: Path) -> tuple[float, float, int, str]:
    """Run a process; return (wall seconds, peak RSS MiB, exit code, stderr tail)."""
    started = time.perf_counter()
    with out.open("wb") as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        stderr.seek(0)
        tail = stderr.read().decode(errors="replace")[-400:]
    code = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, code, tail


_PARSE = (
    "import sys, time, yaml\n"
    "data = open(sys.argv[1], 'rb').read()\n"
    "t = time.perf_counter(); yaml.load(data, Loader=yaml.CSafeLoader)\n"
    "print(time.perf_counter() - t)\n"
)
_LOAD = (
    "import sys, time\n"
    "from reconcile.manifest.loader import load_manifest\n"
    "t = time.perf_counter(); m = load_manifest([sys.argv[1]])\n"
    "print(time.perf_counter() - t, len(m.manifest.users))\n"
)


def bench(size: int, folder: Path) -> dict[str, object]:
    folder.mkdir(parents=True, exist_ok=True)
    manifest, state = write_inputs(folder, size)
    python = sys.executable
    plan = measure(
        [python, "-m", "reconcile", "plan", "-f", str(manifest), "--state", str(state)],
        folder / "plan.txt",
    )
    load = measure([python, "-c", _LOAD, str(manifest)], folder / "load.txt")
    parse = measure([python, "-c", _PARSE, str(manifest)], folder / "parse.txt")
    parse_seconds = float((folder / "parse.txt").read_text().split()[0])
    row: dict[str, object] = {
        "users": size,
        "manifest_mb": round(manifest.stat().st_size / 1e6, 1),
        "plan_s": round(plan[0], 2),
        "plan_peak_mib": round(plan[1]),
        "plan_exit": plan[2],
        "load_s": round(load[0], 2),
        "load_peak_mib": round(load[1]),
        "cloader_parse_s": round(parse_seconds, 2),
        "cloader_peak_mib": round(parse[1]),
        "plan_vs_parse": round(plan[0] / parse_seconds, 3),
    }
    if plan[2] not in (0, 2):
        row["plan_error"] = plan[3].strip()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--keep", type=Path, help="write inputs and outputs here and keep them")
    parser.add_argument("--json", action="store_true", help="print one JSON object per size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        header = (
            f"{'users':>7} {'MB':>6} {'plan s':>8} {'plan MiB':>9} {'load s':>7} {'load MiB':>9} "
            f"{'CLoader s':>10} {'plan/parse':>11}  target: plan/parse <= 0.25 and < 1024 MiB"
        )
        if not args.json:
            print(header, flush=True)
        for size in args.sizes:
            row = bench(size, base / f"n{size}")
            if args.json:
                print(json.dumps(row), flush=True)
                continue
            verdict = "ok" if row["plan_vs_parse"] <= 0.25 and row["plan_peak_mib"] < 1024 else "MISSED"  # type: ignore[operator]
            print(
                f"{size:>7} {row['manifest_mb']:>6} {row['plan_s']:>8} {row['plan_peak_mib']:>9} "
                f"{row['load_s']:>7} {row['load_peak_mib']:>9} {row['cloader_parse_s']:>10} "
                f"{row['plan_vs_parse']:>11}  {verdict}",
                flush=True,
            )
            if "plan_error" in row:
                print(f"        plan failed (exit {row['plan_exit']}): {row['plan_error']}", flush=True)


if __name__ == "__main__":
    main()
