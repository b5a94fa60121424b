"""Two `reconcile apply` runs from two working directories against one PostgreSQL database.

The first run is held at a crash point (after its first saved batch) while it holds the
environment's advisory lock, so the second meets it for certain, whatever the machine's speed: the
second must wait, name the holder, and plan only after the first finished. Killing the held holder
with SIGKILL must hand the lock to the waiter at once (the server drops a session lock with its
connection); the latency is printed and recorded, never asserted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from apply_support import served_sim, served_sim_env, sim_admin, write_desk
from pg_fixtures import new_database
from poll_support import polling

from reconcile.apply.crashpoints import PAUSE_ENV
from reconcile.state.postgres import PostgresStateStore

pytestmark = pytest.mark.slow

DESK = 30


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with served_sim(tmp_path) as url:
        yield url


@pytest.fixture
def dsn() -> str:
    return new_database()


def checkout(tmp_path: Path, name: str, manifest: Path) -> Path:
    """A working directory of its own (a pipeline's checkout) holding a copy of the manifest."""
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(manifest, folder / "desk.yaml")
    return folder


def start_apply(
    folder: Path, url: str, dsn: str, *extra: str, pause: str | None = None
) -> subprocess.Popen[str]:
    env = served_sim_env(folder)
    env["RECONCILE_BACKEND"] = dsn
    env.pop("RECONCILE_TEST_CRASH_AT", None)
    if pause is not None:
        env[PAUSE_ENV] = pause
    return subprocess.Popen(
        [sys.executable, "-m", "reconcile", "apply", "-f", "desk.yaml", "--endpoint", url,
         "--auto-approve", "--batch-size", "10", "--lock-timeout", "120", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=folder,
        env=env,
    )  # fmt: skip


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    """Poll ``condition``; fail with the process's output if it exits first or a hang is certain."""

    def stop() -> str:
        process.kill()
        out, err = process.communicate()
        return f"{out}\n{err}"

    for _ in polling(f"the apply {what}", on_timeout=stop):
        if condition():
            return
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the apply exited ({process.returncode}) before {what}:\n{out}\n{err}")


def waiting_for_advisory_lock(dsn: str) -> bool:
    """True when some session of this database is blocked on an advisory lock."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    return bool(row and row[0])


def holder_pid(store: PostgresStateStore) -> int | None:
    holder = store.lock_holder()
    return None if holder is None else holder.pid


def serial(store: PostgresStateStore) -> int:
    header = store.read_header()
    return 0 if header is None else header[1]


def assert_desk_recorded_once(store: PostgresStateStore, url: str) -> None:
    users = sim_admin(url, "GET", "users")
    names = [u["name"] for u in users]
    assert len(names) == DESK == len(set(names)), "a trader was created twice"
    state = store.load("sim")
    assert {n: r.userId for n, r in state.users.items()} == {u["name"]: u["id"] for u in users}
    assert store.journal("sim").unsettled() == []


def test_second_apply_waits_for_the_first_and_plans_after_it(tmp_path: Path, server: str, dsn: str) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", DESK)
    one, two = checkout(tmp_path, "pipeline-1", manifest), checkout(tmp_path, "pipeline-2", manifest)
    store = PostgresStateStore(dsn, "sim")
    # Held half-way: its first batch is saved, the rest is still to do, the lock is held.
    release = tmp_path / "release"
    first = start_apply(one, server, dsn, pause=f"after_create_save:{release}")
    wait_until(lambda: Path(f"{release}.reached").exists(), first, "saving its first batch")
    try:
        assert holder_pid(store) == first.pid
        second = start_apply(two, server, dsn)
        wait_until(lambda: waiting_for_advisory_lock(dsn), second, "waiting for the lock")
    finally:
        release.touch()
    first_out, first_err = first.communicate(timeout=300)
    second_out, second_err = second.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second_err
    # The waiter said whom it waited for, and planned only once the holder had finished.
    assert "waiting for the lock" in second_err and f"held by pid {first.pid}" in second_err
    assert "Plan: 30 to create." in first_out
    assert "No changes." in second_out and "nothing to do" in second_out
    # Three batches of 10, one serial each, none from the waiter.
    assert serial(store) == 3
    creates = [line for line in store.audit_log("sim").read() if line["action"] == "create"]
    assert sorted(u for line in creates for u in line["users"]) == [f"trader{i:04d}" for i in range(DESK)]
    assert_desk_recorded_once(store, server)
    assert holder_pid(store) is None
    store.close()


def test_killed_holder_hands_the_lock_to_the_waiter_at_once(
    tmp_path: Path, server: str, dsn: str, record_property: Callable[[str, object], None]
) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", DESK)
    one, two = checkout(tmp_path, "pipeline-1", manifest), checkout(tmp_path, "pipeline-2", manifest)
    store = PostgresStateStore(dsn, "sim")
    # Held right after its first batch is saved (a known place inside the lock, not a race with
    # a run that may finish before a signal reaches it).
    release = tmp_path / "release"
    first = start_apply(one, server, dsn, pause=f"after_create_save:{release}")
    wait_until(lambda: Path(f"{release}.reached").exists(), first, "saving its first batch")
    assert serial(store) >= 1
    second = start_apply(two, server, dsn)
    try:
        wait_until(lambda: waiting_for_advisory_lock(dsn), second, "waiting for the lock")
    finally:
        os.kill(first.pid, signal.SIGKILL)
    killed = time.perf_counter()
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    # Until the waiter is seen holding the lock, or has finished with it (an upper bound then).
    for _ in polling("the waiter to take the lock", interval=0.005, on_timeout=second.kill):
        if holder_pid(store) == second.pid or second.poll() is not None:
            break
    latency = time.perf_counter() - killed
    record_property("lock_handover_seconds", round(latency, 3))
    print(f"the waiter held the lock {latency:.3f} s after the holder was SIGKILLed")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert "waiting for the lock" in err and f"held by pid {first.pid}" in err
    assert "Apply complete" in out
    # The waiter finished what the killed run left: every trader once, recorded with its id.
    assert_desk_recorded_once(store, server)
    assert serial(store) >= 3
    store.close()
