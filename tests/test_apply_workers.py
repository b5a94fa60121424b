"""The run's worker threads: each call of a group answers its own Future, in order, on a worker."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from reconcile.apply.run import Run
from reconcile.state.file import FileStateStore


def a_run(tmp_path: Path, concurrency: int) -> Run:
    store = FileStateStore(tmp_path / "sim.json")
    return Run(
        store=store,
        state=store.load("sim"),
        client=None,  # never reached
        journal=store.journal("sim"),
        audit=store.audit_log("sim"),
        concurrency=concurrency,
    )


def test_each_call_answers_its_own_future_and_a_failure_stays_with_its_call(tmp_path: Path) -> None:
    def call(n: int) -> int:
        if n == 3:
            raise ValueError("three")
        return n * 10

    run = a_run(tmp_path, 2)
    try:
        with run.workers() as send:
            futures = send(call, [(n,) for n in range(6)])
        assert all(f.done() for f in futures)  # leaving waits for every call taken
        assert [f.result() for f in futures if f.exception() is None] == [0, 10, 20, 40, 50]
        assert str(futures[3].exception()) == "three"
    finally:
        run.close()


def test_every_call_runs_once_on_at_most_concurrency_worker_threads(tmp_path: Path) -> None:
    started: list[int] = []
    threads: set[str] = set()
    running, most = [0], [0]
    lock = threading.Lock()

    def call(n: int) -> None:
        with lock:
            started.append(n)
            threads.add(threading.current_thread().name)
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.002)
        with lock:
            running[0] -= 1

    run = a_run(tmp_path, 3)
    try:
        with run.workers() as send:
            send(call, [(n,) for n in range(20)])
            send(call, [(n,) for n in range(20, 25)])
    finally:
        run.close()
    assert sorted(started) == list(range(25))
    assert most[0] <= 3
    assert threads and all(name.startswith("apply_") for name in threads)


def test_an_empty_group_sends_nothing(tmp_path: Path) -> None:
    run = a_run(tmp_path, 2)
    try:
        with run.workers() as send:
            assert send(pytest.fail, []) == []
    finally:
        run.close()
