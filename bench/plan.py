"""Benchmark ``reconcile plan`` on three shapes of desk, in every output format, beside PyYAML's C loader.

At ``--users`` users (default 100k) it writes one manifest and three recorded states:

- *new desk*: no state at all (every user is a create, a contact update and a grant);
- *settled desk*: every user recorded, 10% of them differing (new users, changed emails, contacts);
- *churned desk*: the settled desk plus 4x as many cancelled users in state (years of churn).

Then, each in its own process, it runs ``reconcile plan --format F`` for every shape and format
(text, json, markdown) and PyYAML's C loader with the garbage collector disabled (its best case)
parsing the same manifest; every figure is printed beside its target, in the same run:

- plan wall time ≤ 0.5x the C loader's parse, peak RSS ≤ 700 MiB;
- at ``--million`` users (default 1M; 0 skips) the new desk in text: peak ≤ 4 GiB and time ≤ 12x
  the 100k figure (cost grows linearly);
- ``reconcile --help`` no slower than ``reconcile validate`` of examples/desk.yaml.

    .venv/bin/python bench/plan.py                               # 100k + 1M, about ten minutes
    .venv/bin/python bench/plan.py --users 5000 --million 0      # a quick run
    .venv/bin/python bench/plan.py --repo /tmp/old-checkout      # the same figures for other code
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from precompile import compile_bytecode  # bench/ is the script's folder: first on sys.path

ROOT = Path(__file__).resolve().parent.parent
ENTITLEMENTS = {"simplus": 12345, "tradingview": 31}
CHANGED_EVERY = 10  # 10% of the users differ from the recorded state
CHURN = 4  # cancelled users in the churned state per active one
SHAPES = ("new", "settled", "churned")
FORMATS = ("text", "json", "markdown")
RATIO_TARGET = 0.5
PEAK_TARGET_MIB = 700
MILLION_PEAK_TARGET_MIB = 4096
NOW = "2026-01-01T00:00:00Z"


def _contact(i: int) -> dict[str, str]:
    return {
        "phone": f"+1212555{i % 10000:04d}",
        "streetAddress1": f"{i} Main St",
        "city": "New York",
        "state": "NY",
        "postCode": "10001",
        "country": "US",
    }


USERS_PER_FILE = 100_000
"""Larger desks are split over files in one folder (the loader refuses files over 128 MiB)."""


def _manifest_lines(first: int, users: int) -> Iterator[str]:
    yield from (
        "apiVersion: reconcile/v1",
        "environment: sim",
        "partner:",
        "  dataAccountId: 11111",
        "  entitlements:",
        *(f"    {name}: {ident}" for name, ident in ENTITLEMENTS.items()),
        "defaults:",
        "  tradovateSubscriptionPlanId: 7",
        "policy: {maxCancellations: 1000000000, maxCancellationPercent: 100}",
        "users:",
    )
    for i in range(first, first + users):
        name = f"trader{i:07d}"
        yield from (
            f"  - name: {name}",
            f"    email: {name}@example.com",
            "    password: {generate: true}",
            f"    firstName: First{i}",
            f"    lastName: Last{i}",
            "    entitlements: [tradingview]",
            "    contact:",
            *(f'      {key}: "{value}"' for key, value in _contact(i).items()),
        )


def _record(i: int, name: str, **changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "userId": 1_000_000 + i,
        "email": f"{name}@example.com",
        "firstName": f"First{i}",
        "lastName": f"Last{i}",
        "tradovateSubscriptionPlanId": 7,
        "contact": _contact(i),
        "entitlements": {"tradingview": {"entitlementId": 31, "status": "granted", "updatedAt": NOW}},
        "createdAt": NOW,
        "updatedAt": NOW,
    }
    record.update(changes)
    return record


def _settled_users(users: int) -> dict[str, object]:
    records: dict[str, object] = {}
    for i in range(users):
        name = f"trader{i:07d}"
        kind = (i // CHANGED_EVERY) % 3 if i % CHANGED_EVERY == 0 else None
        if kind == 0:
            continue  # not in state: a create
        if kind == 1:
            records[name] = _record(i, name, email=f"old-{name}@example.com")
        elif kind == 2:
            records[name] = _record(i, name, contact=dict(_contact(i), city="Boston"))
        else:
            records[name] = _record(i, name)
    return records


def _cancelled_users(users: int, first: int) -> dict[str, object]:
    return {
        f"gone{i:08d}": _record(
            first + i, f"gone{i:08d}", lifecycle="cancelled", cancelledAt=NOW, entitlements={}
        )
        for i in range(users)
    }


def _write_state(path: Path, users: dict[str, object]) -> None:
    document = {
        "binding": {"endpoint": "sim:embedded", "dataAccountId": 11111},
        "environment": "sim",
        "format_version": 2,
        "lineage": "00000000-0000-4000-8000-000000000000",
        "serial": 1,
        "users": users,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1))


def write_inputs(folder: Path, users: int, shapes: tuple[str, ...]) -> tuple[Path, dict[str, Path]]:
    """Write the manifest folder and one state file per shape (the new desk's does not exist).

    In a process of its own: a measured process's peak RSS (``ru_maxrss``) starts from its parent's
    at the fork, and building 500k state records would make this one's gigabytes.
    """
    argv = [sys.executable, __file__, "--write-inputs", str(folder), str(users), ",".join(shapes)]
    subprocess.run(argv, check=True)
    return folder / "manifest", {shape: folder / shape / "state" / "sim.json" for shape in shapes}


def _write_inputs(folder: Path, users: int, shapes: tuple[str, ...]) -> None:
    manifest = folder / "manifest"
    manifest.mkdir(parents=True, exist_ok=True)
    for first in range(0, users, USERS_PER_FILE):
        part = manifest / f"users-{first // USERS_PER_FILE:03d}.yaml"
        part.write_text("\n".join(_manifest_lines(first, min(USERS_PER_FILE, users - first))) + "\n")
    states = {shape: folder / shape / "state" / "sim.json" for shape in shapes}
    if "settled" in shapes or "churned" in shapes:
        settled = _settled_users(users)
        if "settled" in shapes:
            _write_state(states["settled"], settled)
        if "churned" in shapes:
            _write_state(states["churned"], {**settled, **_cancelled_users(CHURN * users, 2 * users)})


MEMORY_CAP = 6 << 30
"""Address space a measured process may take: a plan that needs more fails instead of making the
shared machine swap or kill its neighbours (the old code needed ~25 GB for 1M users)."""


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def measure(argv: list[str], out: Path, repo: Path) -> tuple[float, float, int, str]:
    """Run a process under :data:`MEMORY_CAP`; return (wall seconds, peak RSS MiB, exit code, stderr tail)."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    started = time.perf_counter()
    with out.open("wb") as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, cwd=repo, env=env, preexec_fn=_capped)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        stderr.seek(0)
        tail = stderr.read().decode(errors="replace")[-400:]
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), tail


_PARSE = (
    "import gc, pathlib, sys, time, yaml\n"
    "data = [p.read_bytes() for p in sorted(pathlib.Path(sys.argv[1]).glob('*.yaml'))]\n"
    "gc.disable()\n"
    "t = time.perf_counter(); [yaml.load(d, Loader=yaml.CSafeLoader) for d in data]\n"
    "print(time.perf_counter() - t)\n"
)


def cloader_seconds(manifest: Path, folder: Path, repeats: int) -> float:
    """PyYAML's C loader, collector off, parsing ``manifest``: the fastest of ``repeats`` runs."""
    out = folder / "parse.txt"
    times = []
    for _ in range(repeats):
        measure([sys.executable, "-c", _PARSE, str(manifest)], out, ROOT)
        times.append(float(out.read_text().split()[0]))
    return min(times)


def plan_once(manifest: Path, state: Path, fmt: str, folder: Path, repo: Path) -> tuple[float, float]:
    """Run ``reconcile plan`` once; return (wall seconds, peak MiB); exit on a failed plan."""
    argv = [sys.executable, "-m", "reconcile", "plan", "-f", str(manifest), "--state", str(state)]
    wall, peak, code, tail = measure([*argv, "--format", fmt], folder / f"plan.{fmt}", repo)
    if code not in (0, 2):
        print(f"plan --format {fmt} failed (exit {code}, peak {peak:.0f} MiB): {tail.strip()[-200:]}")
        return math.inf, peak
    return wall, peak


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def bench_shapes(args: argparse.Namespace, base: Path) -> dict[tuple[str, str], float]:
    """Print one line per shape and format at ``args.users``; return their wall times."""
    manifest, states = write_inputs(base / "desk", args.users, SHAPES)
    parse = cloader_seconds(manifest, base / "desk", args.repeats)
    print(
        f"{args.users:,} users, manifest {sum(p.stat().st_size for p in manifest.iterdir()) / 1e6:.1f} MB; "
        f"PyYAML C loader "
        f"(gc disabled) parses it in {parse:.2f} s; targets: plan <= {RATIO_TARGET}x that, "
        f"peak <= {PEAK_TARGET_MIB} MiB"
    )
    print(
        f"{'shape':>8} {'format':>9} {'plan s':>7} {'C-load s':>8} {'ratio':>6} {'target':>6} "
        f"{'peak MiB':>9} {'target':>7}  verdict"
    )
    walls: dict[tuple[str, str], float] = {}
    for shape in SHAPES:
        folder = states[shape].parent.parent
        folder.mkdir(parents=True, exist_ok=True)
        for fmt in FORMATS:
            runs = [plan_once(manifest, states[shape], fmt, folder, args.repo) for _ in range(args.repeats)]
            wall, peak = min(r[0] for r in runs), max(r[1] for r in runs)
            walls[shape, fmt] = wall
            ratio = wall / parse
            print(
                f"{shape:>8} {fmt:>9} {wall:>7.2f} {parse:>8.2f} {ratio:>6.2f} {RATIO_TARGET:>6} "
                f"{peak:>9.0f} {PEAK_TARGET_MIB:>7}  "
                f"{_verdict(ratio <= RATIO_TARGET and peak <= PEAK_TARGET_MIB)}",
                flush=True,
            )
    return walls


def users_limit(repo: Path) -> int:
    """The most users a manifest may hold in ``repo``'s reconcile (the loader's MAX_USERS)."""
    code = "from reconcile.manifest.loader import MAX_USERS; print(MAX_USERS)"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout)


def bench_million(args: argparse.Namespace, base: Path, small_text: float) -> None:
    """Print the new desk's text plan at ``args.million`` users beside 12x the smaller figure."""
    limit = users_limit(args.repo)
    if args.million > limit:
        print(
            f"{args.million:,} users: refused by the loader (a manifest holds at most {limit:,} users, "
            f'README "Limits"); measuring {limit:,}, the most it takes',
            flush=True,
        )
        args.million = limit
    manifest, states = write_inputs(base / "million", args.million, ("new",))
    parse = cloader_seconds(manifest, base / "million", 1)
    states["new"].parent.parent.mkdir(parents=True, exist_ok=True)
    wall, peak = plan_once(manifest, states["new"], "text", states["new"].parent.parent, args.repo)
    scale = args.million / args.users
    linear = 1.2 * scale * small_text
    print(
        f"{args.million:,} users, new desk, text: plan {wall:.2f} s (target <= {linear:.2f} s = "
        f"12x the {args.users:,}-user {small_text:.2f} s, scaled), ratio {wall / (scale * small_text):.2f} "
        f"of linear; C loader {parse:.2f} s (plan/C-load {wall / parse:.2f}); peak {peak:.0f} MiB "
        f"(target <= {MILLION_PEAK_TARGET_MIB})  "
        f"{_verdict(wall <= linear and peak <= MILLION_PEAK_TARGET_MIB)}",
        flush=True,
    )


def bench_help(args: argparse.Namespace, base: Path) -> None:
    """Print the median wall time of ``reconcile --help`` beside ``reconcile validate``."""
    env = {"TRADER001_PASSWORD": "Sim-Passw0rd-001"}
    os.environ.update(env)
    python = [sys.executable, "-m", "reconcile"]
    desk = str(ROOT / "examples" / "desk.yaml")
    help_s = statistics.median(
        measure([*python, "--help"], base / "help.txt", args.repo)[0] for _ in range(5)
    )
    valid_s = statistics.median(
        measure([*python, "validate", "-f", desk], base / "validate.txt", args.repo)[0] for _ in range(5)
    )
    print(
        f"reconcile --help {help_s:.3f} s, reconcile validate {valid_s:.3f} s "
        f"(target: help <= validate)  {_verdict(help_s <= valid_s)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000, help="desk size for the three shapes")
    parser.add_argument(
        "--million", type=int, default=1_000_000, help="new-desk size for the scaling line (0: skip)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per figure (the fastest counts)")
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose reconcile runs")
    parser.add_argument("--keep", type=Path, help="write inputs and outputs here and keep them")
    parser.add_argument("--write-inputs", nargs=3, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_inputs:
        folder, users, shapes = args.write_inputs
        _write_inputs(Path(folder), int(users), tuple(shapes.split(",")))
        return
    compile_bytecode(args.repo)
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        bench_help(args, base)
        walls = bench_shapes(args, base)
        if args.million:
            bench_million(args, base, walls["new", "text"])


if __name__ == "__main__":
    main()
