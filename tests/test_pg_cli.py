"""``reconcile state migrate | push | pull`` against a real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner, Result
from pg_fixtures import new_database

from reconcile.cli.state_pg import migrate_command, pull_command, push_command
from reconcile.errors import StateError
from reconcile.state.file import FileStateStore
from reconcile.state.model import State, UserRecord
from reconcile.state.postgres import SCHEMA_VERSION, PostgresStateStore

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@click.group()
def state() -> None:
    """Stand-in for the `state` group these commands are attached to."""


for _command in (migrate_command, push_command, pull_command):
    state.add_command(_command)


def _run(*args: str) -> Result:
    return CliRunner().invoke(state, list(args))


def _user(user_id: int) -> UserRecord:
    return UserRecord(
        userId=user_id,
        email=f"t{user_id}@example.com",
        firstName="T",
        lastName="U",
        createdAt=NOW,
        updatedAt=NOW,
    )


@pytest.fixture
def dsn(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("RECONCILE_BACKEND", raising=False)
    return new_database()


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sim.json"


def _file_state(path: Path, users: int) -> State:
    store = FileStateStore(path)
    state = store.load("sim")
    for i in range(1, users + 1):
        state.users[f"trader{i:03d}"] = _user(i)
    return store.save(state)


def _error(result: Result) -> str:
    assert isinstance(result.exception, StateError), result.output
    return str(result.exception)


def test_migrate_reports_versions_and_masks_the_password(dsn: str) -> None:
    password = str(psycopg.conninfo.conninfo_to_dict(dsn)["password"])
    first = _run("migrate", "--backend", dsn)
    assert first.exit_code == 0 and f"migrated from version 0 to {SCHEMA_VERSION}" in first.output
    again = _run("migrate", "--backend", dsn)
    assert f"is at version {SCHEMA_VERSION}; nothing to do" in again.output
    assert password not in first.output + again.output


def test_migrate_reads_the_backend_from_the_environment(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "no PostgreSQL backend given" in _error(_run("migrate"))
    monkeypatch.setenv("RECONCILE_BACKEND", dsn)
    assert _run("migrate").exit_code == 0


def test_push_then_pull_round_trips_lineage_serial_and_users(
    dsn: str, state_file: Path, tmp_path: Path
) -> None:
    pushed = _file_state(state_file, 3)
    result = _run("push", "-e", "sim", "--state", str(state_file), "--backend", dsn)
    assert result.exit_code == 0, result.output
    assert f"lineage {pushed.lineage}, serial {pushed.serial}" in result.output
    with PostgresStateStore(dsn, "sim") as store:
        assert store.read() == pushed
    assert "nothing to do" in _run("push", "-e", "sim", "--state", str(state_file), "--backend", dsn).output

    elsewhere = tmp_path / "other" / "sim.json"
    pulled = _run("pull", "-e", "sim", "--state", str(elsewhere), "--backend", dsn)
    assert pulled.exit_code == 0, pulled.output
    assert FileStateStore(elsewhere).read() == pushed


def test_push_refuses_another_lineage_unless_forced(dsn: str, state_file: Path) -> None:
    with PostgresStateStore(dsn, "sim") as store:
        theirs = store.load("sim")
        theirs.users["someone"] = _user(99)
        store.save(theirs)
    mine = _file_state(state_file, 1)
    refused = _run("push", "-e", "sim", "--state", str(state_file), "--backend", dsn)
    assert "another lineage" in _error(refused) and "--force" in _error(refused)
    with PostgresStateStore(dsn, "sim") as store:
        still = store.read()
        assert still is not None and set(still.users) == {"someone"}
    forced = _run("push", "-e", "sim", "--state", str(state_file), "--backend", dsn, "--force")
    assert forced.exit_code == 0 and "forced" in forced.output
    with PostgresStateStore(dsn, "sim") as store:
        assert store.read() == mine


def test_pull_refuses_to_go_back_to_an_older_serial(dsn: str, state_file: Path) -> None:
    newer = _file_state(state_file, 1)
    assert _run("push", "-e", "sim", "--state", str(state_file), "--backend", dsn).exit_code == 0
    newer.users["trader002"] = _user(2)
    FileStateStore(state_file).save(newer)  # the file moves on; PostgreSQL stays behind
    refused = _run("pull", "-e", "sim", "--state", str(state_file), "--backend", dsn)
    assert "it is newer (serial 2, copying serial 1)" in _error(refused)
    assert "trader002" in (FileStateStore(state_file).read() or State.empty("sim")).users


def test_push_refuses_diverged_content_at_the_same_serial(dsn: str, state_file: Path) -> None:
    _file_state(state_file, 1)
    assert _run("push", "-e", "sim", "--state", str(state_file), "--backend", dsn).exit_code == 0
    store = FileStateStore(state_file)
    diverged = store.read()
    assert diverged is not None
    diverged.users["trader001"].email = "changed@example.com"
    store._write(diverged, None)  # same serial, other content: two writers went separate ways
    assert "diverged" in _error(_run("push", "-e", "sim", "--state", str(state_file), "--backend", dsn))


def test_push_waits_for_no_one_when_an_apply_holds_the_lock(dsn: str, state_file: Path) -> None:
    _file_state(state_file, 1)
    with PostgresStateStore(dsn, "sim") as store, store.lock(timeout=0, purpose="apply"):
        refused = _run("push", "-e", "sim", "--state", str(state_file), "--backend", dsn)
    assert "is locked" in _error(refused) and "(apply)" in _error(refused)
    with PostgresStateStore(dsn, "sim") as store:
        assert store.read() is None
