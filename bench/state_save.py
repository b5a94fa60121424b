"""Print seconds per saved batch (100 changed users) at 1k, 10k and 100k managed users, per backend.

Also prints how long a waiter takes to get the PostgreSQL lock after its holder is SIGKILLed.

    .venv/bin/python bench/state_save.py [--sizes 1000,10000,100000] [--batches 5]

PostgreSQL: ``RECONCILE_BENCH_PG_DSN`` (a database the bench may fill), else a throwaway cluster
with fsync on, started as the tests start theirs (tests/pg_fixtures.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import psycopg  # noqa: E402

from reconcile.state.file import FileStateStore  # noqa: E402
from reconcile.state.model import GrantRecord, State, UserRecord  # noqa: E402
from reconcile.state.postgres import PostgresStateStore  # noqa: E402
from reconcile.state.store import StateStore  # noqa: E402

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
BATCH = 100


def _state(size: int) -> State:
    state = State.empty("sim")
    grant = GrantRecord(entitlementId=12345, status="granted", updatedAt=NOW)
    for i in range(size):
        state.users[f"trader{i:06d}"] = UserRecord(
            userId=100000 + i,
            email=f"trader{i:06d}@example.com",
            firstName="Test",
            lastName="User",
            entitlements={"simplus": grant},
            createdAt=NOW,
            updatedAt=NOW,
        )
    return state


def _seconds_per_batch(
    store: StateStore, size: int, batches: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    state = store.save(_state(size))
    names = sorted(state.users)
    timings = []
    for b in range(batches):
        changed = names[b * BATCH % size :][:BATCH]
        for name in changed:
            state.users[name].updatedAt = NOW + timedelta(minutes=b + 1)
        started = clock()
        # As an apply saves: the users it changed, and no account (None would mean "unknown":
        # a full comparison, the cost of the whole desk).
        state = store.save(state, changed=changed, changed_accounts=())
        timings.append(clock() - started)
    return statistics.median(timings)


def _database(admin: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    params = psycopg.conninfo.conninfo_to_dict(admin)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


_HOLDER = """
import sys, time
from reconcile.state.postgres import PostgresStateStore
with PostgresStateStore(sys.argv[1], "sim").lock(timeout=-1):
    print("locked", flush=True)
    time.sleep(600)
"""


def _lock_release_after_sigkill(dsn: str) -> float:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, dsn], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    store = PostgresStateStore(dsn, "sim")
    waiting: list[float] = []
    try:

        def killer(_message: str) -> None:  # called once the waiter finds the lock held
            waiting.append(time.perf_counter())
            os.kill(holder.pid, signal.SIGKILL)

        with store.lock(timeout=30, on_wait=killer):
            acquired = time.perf_counter()
    finally:
        holder.kill()
        holder.wait()
        store.close()
    return acquired - waiting[0]


def _file_only(sizes: list[int], batches: int) -> None:
    """Print the file store's wall and CPU seconds per batch at each size beside the first (target 2x).

    The wall time includes the fsync, whose latency on a shared disk varies more than the sizes do;
    the CPU time is the store's own work.
    """
    print(f"seconds per saved batch of {BATCH} changed users, file store (median of {batches})")
    first: tuple[float, float] | None = None
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            wall = _seconds_per_batch(FileStateStore(Path(tmp) / "w.json"), size, batches)
            cpu = _seconds_per_batch(FileStateStore(Path(tmp) / "c.json"), size, batches, time.process_time)
        first = first or (wall, cpu)
        ratios = (wall / first[0], cpu / first[1])
        verdict = "ok" if max(ratios) <= 2 else "MISSED"
        print(
            f"{size:>14,} wall {wall:.4f} s ({ratios[0]:.2f}x), CPU {cpu:.4f} s ({ratios[1]:.2f}x) the "
            f"{sizes[0]:,}-user figures (target <= 2x)  {verdict}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--file-only", action="store_true", help="measure the file store alone")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.file_only:
        _file_only(sizes, args.batches)
        return

    cluster = None
    admin = os.environ.get("RECONCILE_BENCH_PG_DSN")
    if not admin:
        from pg_fixtures import Cluster  # type: ignore[import-not-found]  # tests/, put on sys.path above

        cluster = Cluster(durable=True)
        cluster.start()
        if cluster.admin_dsn is None:
            sys.exit(f"cannot start PostgreSQL: {cluster.error}")
        admin = cluster.admin_dsn
    first = None
    try:
        print(f"seconds per saved batch of {BATCH} changed users (median of {args.batches})")
        print(f"{'managed users':>14} {'file':>10} {'postgres':>10}  file vs the first size (target <= 2x)")
        for size in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                file_seconds = _seconds_per_batch(FileStateStore(Path(tmp) / "sim.json"), size, args.batches)
            with PostgresStateStore(_database(admin), "sim") as pg:
                pg_seconds = _seconds_per_batch(pg, size, args.batches)
            first = first or file_seconds
            print(
                f"{size:>14,} {file_seconds:>10.4f} {pg_seconds:>10.4f}  {file_seconds / first:.2f}x",
                flush=True,
            )
        released = _lock_release_after_sigkill(_database(admin))
        print(f"postgres lock acquired by the waiter {released:.3f} s after its holder was SIGKILLed")
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
