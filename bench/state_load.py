"""Print seconds and RSS growth of loading recorded state, per shape and store, beside the targets.

    .venv/bin/python bench/plan.py --users 100000 --million 0 --keep /tmp/desk   # writes the states
    .venv/bin/python bench/state_load.py --file /tmp/desk/desk/churned/state/sim.json
    .venv/bin/python bench/state_load.py --file STATE.json --repo ../old-checkout   # other code, same input
    .venv/bin/python bench/state_load.py --file STATE.json --pg                # via PostgreSQL too
    .venv/bin/python bench/state_load.py --file STATE.json --as-written /tmp/w  # and as reconcile lays it out

Each load runs in its own process (``--one``): seconds of ``store.read()`` and RSS before and
after it (current and peak). ``--pg`` first copies the document into a throwaway PostgreSQL
cluster (started as the tests start theirs, tests/pg_fixtures.py) or ``RECONCILE_BENCH_PG_DSN``.
``--as-written DIR`` also measures a copy of each document as reconcile itself writes it (every
record serialized anew: ``bench/plan.py`` writes its states with ``json.dumps(indent=1)``).
Figures from two checkouts are comparable only when taken in the same run (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _one(kind: str, where: str) -> None:
    """Load once in this process and print one JSON line of figures."""
    from reconcile.state.file import FileStateStore

    store: object
    if kind == "pg":
        from reconcile.state.postgres import PostgresStateStore

        store = PostgresStateStore(where, environment="sim")
    else:
        store = FileStateStore(where)
    before = _rss_mib()
    start, cpu = time.perf_counter(), time.process_time()
    state = store.read()  # type: ignore[attr-defined]
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = _rss_mib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    users = len(state.users) if state is not None else 0
    figures = {"seconds": seconds, "cpu": cpu, "before": before, "after": after, "peak": peak}
    print(json.dumps({**figures, "users": users}))


def _measure(repo: Path, kind: str, where: str) -> dict[str, float]:
    python = repo / ".venv" / "bin" / "python"
    code = (
        f"import sys; sys.path[:0] = [{str(repo)!r}, {str(ROOT / 'bench')!r}]; "
        f"import state_load; state_load._one({kind!r}, {where!r})"
    )
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _fill_pg(dsn: str, path: Path, repo: Path) -> None:
    """Store the document at ``path`` in PostgreSQL (with ``repo``'s code: its own schema)."""
    code = (
        f"import sys; sys.path[:0] = [{str(repo)!r}]\n"
        "from reconcile.state.file import FileStateStore\n"
        "from reconcile.state.postgres import PostgresStateStore\n"
        f"state = FileStateStore({str(path)!r}).read()\n"
        f"store = PostgresStateStore({dsn!r}, environment='sim')\n"
        "store.replace(state, expected=store.read_header())\n"
    )
    subprocess.run([str(repo / ".venv" / "bin" / "python"), "-c", code], check=True)


def _as_written(path: Path, folder: Path, number: int) -> str:
    """Write a copy of the document at ``path`` laid out as reconcile writes it; return its path."""
    copy = folder / str(number) / "sim.json"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.unlink(missing_ok=True)
    code = (
        f"import sys; sys.path[:0] = [{str(ROOT)!r}]\n"
        "from reconcile.state.decode import read_whole\n"
        "from reconcile.state.file import FileStateStore\n"
        f"state = FileStateStore({str(path)!r}).read()\n"
        "read_whole(state.users.values())\n"
        f"store = FileStateStore({str(copy)!r})\n"
        "with store.lock():\n"
        "    store.replace(state, expected=None)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    return str(copy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", action="append", required=True, help="a state document (repeatable)")
    parser.add_argument("--repo", action="append", help="checkouts to compare (default: this one)")
    parser.add_argument("--pg", action="store_true", help="also load each through PostgreSQL")
    parser.add_argument("--as-written", type=Path, metavar="DIR", help="also copies as reconcile writes them")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    repos = [Path(r).resolve() for r in args.repo or [ROOT]]
    dsn = _dsn() if args.pg else None
    files = list(args.file)
    if args.as_written is not None:
        files += [_as_written(Path(f), args.as_written, n) for n, f in enumerate(args.file)]
    for file in files:
        for repo in repos:
            targets = [("file", file)]
            if dsn is not None:
                _fill_pg(dsn, Path(file), repo)
                targets.append(("pg", dsn))
            for kind, where in targets:
                for _ in range(args.runs):
                    r = _measure(repo, kind, where)
                    print(
                        f"{file} {kind:4} {repo.name:12} users {r['users']:>7}: {r['seconds']:.2f} s "
                        f"({r['cpu']:.2f} s CPU), "
                        f"RSS +{r['after'] - r['before']:.0f} MiB (peak +{r['peak'] - r['before']:.0f} MiB)",
                        flush=True,
                    )


def _dsn() -> str:
    dsn = os.environ.get("RECONCILE_BENCH_PG_DSN")
    if dsn:
        return dsn
    sys.path[:0] = [str(ROOT / "tests")]
    from pg_fixtures import new_database  # type: ignore[import-not-found]

    return new_database()  # type: ignore[no-any-return]


if __name__ == "__main__":
    main()
