"""plan, check, apply and state show/list on PostgreSQL: --backend, RECONCILE_BACKEND, the manifest.

Also the state lock that `plan` and `check` take (both backends), and that apply on PostgreSQL
keeps its journal and audit log in the database, leaving no side files next to a state file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from apply_support import PASSWORD, desk_here, write_desk
from cli_support import call as run
from pg_fixtures import new_database

from reconcile.apply.intents import IntentJournal
from reconcile.state.file import FileStateStore
from reconcile.state.postgres import PostgresStateStore
from reconcile.state.store import StateStore

CREDENTIALS = ("TRADOVATE_USERNAME", "TRADOVATE_PASSWORD", "TRADOVATE_SEC", "TRADOVATE_CID")


@pytest.fixture
def dsn() -> str:
    return new_database()


@pytest.fixture
def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A desk of 12 traders in a working directory with no API credentials and no backend set."""
    for name in (*CREDENTIALS, "RECONCILE_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    return desk_here(tmp_path, monkeypatch, 12, simplus=True)


def apply_to_postgres(capsys: pytest.CaptureFixture[str], desk: Path, dsn: str) -> dict[str, object]:
    """Apply the desk against the embedded simulator with state in ``dsn``; return the JSON result."""
    code, out, err = run(capsys, "apply", "-f", desk, "--backend", dsn, "--auto-approve", "--format", "json")
    assert code == 0, err
    result: dict[str, object] = json.loads(out)
    return result


def test_apply_keeps_state_journal_and_audit_in_postgres_and_nothing_beside_a_state_file(
    tmp_path: Path, desk: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = apply_to_postgres(capsys, desk, dsn)
    assert result["ok"]
    with PostgresStateStore(dsn, "sim") as store:
        state = store.load("sim")
        assert len(state.users) == 12 and state.serial == result["state_serial"]
        actions = [line["action"] for line in store.audit_log("sim").read()]
        assert actions.count("create") == 1
        assert store.journal("sim").unsettled() == []
    # Only the embedded simulator's own database is local; no state, journal, audit or lock file.
    assert sorted(p.name for p in (tmp_path / "state").iterdir() if "sim.sqlite" not in p.name) == []
    assert PASSWORD not in json.dumps(result)
    # The second apply reads what the first wrote (the plan is bound to the PostgreSQL serial).
    again = apply_to_postgres(capsys, desk, dsn)
    planned = again["planned"]
    assert isinstance(planned, dict) and again["state_serial"] == state.serial
    assert planned["recheck"] == 12 and sum(planned.values()) == 12  # only agreement re-checks


@pytest.mark.parametrize("how", ["option", "environment", "manifest"])
def test_plan_and_check_read_postgres_state_without_credentials(
    tmp_path: Path,
    desk: Path,
    dsn: str,
    how: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serial = apply_to_postgres(capsys, desk, dsn)["state_serial"]
    args: list[str | Path] = ["-f", desk]
    if how == "option":
        args += ["--backend", dsn]
    elif how == "environment":
        monkeypatch.setenv("RECONCILE_BACKEND", dsn)
    else:
        monkeypatch.setenv("DESK_STATE_DSN", dsn)
        desk.write_text(desk.read_text() + "backend:\n  postgres:\n    dsnEnv: DESK_STATE_DSN\n")
    code, out, err = run(capsys, "plan", *args, "--detailed-exitcode")
    assert code == 0, out + err  # in sync with what apply recorded in PostgreSQL
    assert f"state serial {serial}" in out and "No changes." in out
    write_desk(tmp_path / "more.yaml", 13, simplus=True)
    more = [a if a != desk else tmp_path / "more.yaml" for a in args]
    if how == "manifest":
        (tmp_path / "more.yaml").write_text(
            (tmp_path / "more.yaml").read_text() + "backend:\n  postgres:\n    dsnEnv: DESK_STATE_DSN\n"
        )
    code, out, err = run(capsys, "plan", *more, "--detailed-exitcode")
    assert code == 2 and "Plan: 1 to create" in out, out + err
    code, out, err = run(capsys, "check", *more)
    assert code == 1 and "not in sync: the plan has 2 changes" in err  # a create and its grant
    # Nothing of it landed in a local state file.
    assert not (tmp_path / "state" / "sim.json").exists()


def test_state_show_and_list_read_postgres(
    desk: Path, dsn: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    serial = apply_to_postgres(capsys, desk, dsn)["state_serial"]
    password = str(psycopg.conninfo.conninfo_to_dict(dsn)["password"])
    with PostgresStateStore(dsn, "sim") as store:
        intent = IntentJournal(store.journal("sim")).begin("cancel", [])
        with store.lock(purpose="apply") as holder:
            code, out, err = run(capsys, "state", "show", "--backend", dsn, "--format", "json")
            assert code == 0, err
            shown = json.loads(out)
            assert shown["serial"] == serial and shown["users"]["total"] == 12
            assert shown["users"]["awaiting_agreement"] == 12
            assert shown["lock"]["lock_id"] == holder.lock_id
            assert shown["open_intents"] == [{"id": intent.id, "call": "cancel", "users": 0}]
            assert password not in out and "(environment sim)" in shown["path"]
            # No unlock for PostgreSQL: the lock dies with its holder's connection.
            code, _, err = run(capsys, "state", "unlock", holder.lock_id, "--backend", dsn)
            assert code == 1 and "needs no unlock" in err
        monkeypatch.setenv("RECONCILE_BACKEND", dsn)
        code, out, err = run(capsys, "state", "show")
        assert code == 0 and "lock: not held" in out and f"open intent {intent.id}" in out
    code, out, _ = run(capsys, "state", "list", "--format", "json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == [f"trader{i:04d}" for i in range(12)]
    assert all(r["entitlements"] == {"simplus": "awaiting_agreement"} for r in rows)


@pytest.fixture(params=["file", "postgresql"])
def store_args(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[StateStore, list[str]]]:
    """A state store and the options that select it."""
    if request.param == "file":
        path = tmp_path / "state" / "sim.json"
        yield FileStateStore(path), ["--state", str(path)]
    else:
        dsn = new_database()
        with PostgresStateStore(dsn, "sim") as store:
            yield store, ["--backend", dsn]


@pytest.mark.parametrize("command", ["plan", "check"])
def test_plan_waits_for_the_state_lock_unless_told_not_to(
    desk: Path,
    store_args: tuple[StateStore, list[str]],
    command: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, selected = store_args
    with store.lock(purpose="apply") as holder:
        code, out, err = run(capsys, command, "-f", desk, *selected)
        assert code == 1 and out == ""
        assert "is locked" in err and holder.lock_id in err and "--lock-timeout" in err
        code, out, err = run(capsys, command, "-f", desk, *selected, "--lock-timeout", "0.2")
        assert code == 1 and "waiting for the lock" in err and holder.lock_id in err
        if isinstance(store, PostgresStateStore):  # the DSN's password is never shown
            assert str(psycopg.conninfo.conninfo_to_dict(selected[1])["password"]) not in err
        code, out, err = run(capsys, command, "-f", desk, *selected, "--lock=false")
        assert "Plan: 12 to create" in out, err
    # Free again: plan takes and releases the lock.
    code, out, err = run(capsys, command, "-f", desk, *selected)
    assert "Plan: 12 to create" in out, err
    assert store.lock_holder() is None


def test_refresh_reads_and_writes_postgres_state(
    desk: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    serial = apply_to_postgres(capsys, desk, dsn)["state_serial"]
    code, out, err = run(capsys, "refresh", "-f", desk, "--backend", dsn, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["state_serial"] == serial  # the API matches what apply recorded there
    assert not (Path("state") / "sim.json").exists()
