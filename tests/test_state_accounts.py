"""Evaluation accounts in recorded state (issue 14), on every backend of the store contract."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from test_state_contract import STORE_FACTORIES, _user

from reconcile.errors import StateError
from reconcile.state.file import FileStateStore
from reconcile.state.model import AccountRecord
from reconcile.state.store import StateStore

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _account(account_id: int, user: str = "trader001", **fields: object) -> AccountRecord:
    values: dict[str, object] = {
        "accountId": account_id, "user": user, "userId": 100001, "template": "eval50k",
        "tradingPermissionId": account_id + 1000, "risk": {"dailyLossAutoLiq": 800.0, "doNotUnlock": True},
        "riskCategory": "standard", "trading": "locked", "lastReset": date(2026, 11, 20),
        "createdAt": NOW, "updatedAt": NOW,
    }  # fmt: skip
    return AccountRecord.model_validate(values | fields)


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    return STORE_FACTORIES[request.param](tmp_path)


def test_accounts_round_trip_field_by_field(store: StateStore) -> None:
    state = store.load("sim")
    state.users["trader001"] = _user(100001, "a@example.com")
    state.accounts["EVAL1"] = _account(500001)
    unsettled = date(2026, 11, 21)
    state.accounts["EVAL2"] = _account(500002, permission="revoked", revokedAt=NOW, resetUnsettled=unsettled)
    saved = store.save(state)
    again = store.read()
    assert again is not None and again == saved and again.accounts["EVAL2"].resetUnsettled == unsettled


def test_a_save_naming_changed_accounts_writes_those_and_removes_dropped_ones(store: StateStore) -> None:
    state = store.load("sim")
    for i in range(3):
        state.accounts[f"EVAL{i}"] = _account(500000 + i)
    state = store.save(state, changed=(), changed_accounts=None)
    state.accounts["EVAL1"] = state.accounts["EVAL1"].model_copy(update={"trading": "active"})
    del state.accounts["EVAL2"]
    after = store.save(state, changed=(), changed_accounts={"EVAL1", "EVAL2"})
    assert after.serial == 2
    again = store.read()
    assert again is not None and sorted(again.accounts) == ["EVAL0", "EVAL1"]
    assert again.accounts["EVAL1"].trading == "active"
    assert store.save(after, changed=(), changed_accounts={"EVAL1"}).serial == 2, "nothing changed"


@pytest.mark.parametrize(
    ("second", "found"),
    [
        ("EVAL2", "accountId 500001 is recorded for EVAL1, EVAL2"),
        # The planner matches names in any case: one of the two would never be governed.
        ("eval1", "account name (in any case) eval1 is recorded for EVAL1, eval1"),
    ],
)
def test_two_accounts_sharing_an_id_or_a_name_in_any_case_are_refused_as_corrupt(
    store: StateStore, second: str, found: str
) -> None:
    state = store.load("sim")
    state.accounts["EVAL1"] = _account(500001)
    state.accounts[second] = _account(500001 if second == "EVAL2" else 500002)
    store.save(state)
    with pytest.raises(StateError) as info:
        store.load("sim")
    assert f"is corrupt: {found}" in str(info.value)


def test_state_written_before_accounts_reads_unchanged_and_is_written_the_same(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "sim.json")
    state = store.load("sim")
    state.users["trader001"] = _user(100001, "a@example.com")
    store.save(state)
    before = store.path.read_text()
    assert '"accounts"' not in before, "a desk without accounts keeps its state file as it was"
    loaded = FileStateStore(store.path).read()
    assert loaded is not None and loaded.accounts == {}


def test_file_store_incremental_account_save_writes_the_same_document_as_a_full_save(tmp_path: Path) -> None:
    incremental = FileStateStore(tmp_path / "a.json")
    state = incremental.load("sim")
    state.users["trader001"] = _user(100001, "a@example.com")
    for i in range(4):
        state.accounts[f"EVAL{i}"] = _account(500000 + i)
    state = incremental.save(state)
    state.accounts["EVAL1"] = state.accounts["EVAL1"].model_copy(update={"permission": "revoked"})
    del state.accounts["EVAL3"]
    state.accounts["EVAL9"] = _account(500009)
    state = incremental.save(state, changed=(), changed_accounts={"EVAL1", "EVAL3", "EVAL9"})
    # The save went to the change log: a fresh reader folds it in, and so does compaction.
    assert FileStateStore(tmp_path / "a.json").read() == state
    incremental.compact()
    full = FileStateStore(tmp_path / "b.json")
    full._write(state, None)
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


@pytest.mark.parametrize(
    ("accounts", "found"),
    [
        ('"EVAL1": {a}, "EVAL1": {b}', "account 'EVAL1' is recorded 2 times (accountId 500001 and 500002)"),
        ('"EVAL1": {a_twice}', "account 'EVAL1' is recorded 2 times (accountId 500001 and 500003)"),
    ],
)
def test_file_store_refuses_a_document_that_repeats_an_account_name_or_id(
    tmp_path: Path, accounts: str, found: str
) -> None:
    a = _account(500001).model_dump_json()
    b = _account(500002).model_dump_json()
    twice = a[:-1] + ', "accountId": 500003}'
    text = accounts.replace("{a_twice}", twice).replace("{a}", a).replace("{b}", b)
    path = tmp_path / "sim.json"
    path.write_text(
        '{"accounts": {' + text + '}, "environment": "sim", "format_version": 2, "lineage": "l", '
        '"serial": 3, "users": {}}'
    )
    with pytest.raises(StateError) as info:
        FileStateStore(path).read()
    assert f"state {path} is corrupt: {found}" in str(info.value)
    json.loads(path.read_text())  # valid JSON: only the repeats are wrong


def test_postgres_writes_only_the_accounts_named_as_changed(tmp_path: Path) -> None:
    import psycopg
    from pg_fixtures import new_database

    from reconcile.state.postgres import PostgresStateStore

    dsn = new_database()
    with PostgresStateStore(dsn, "sim") as store:
        state = store.load("sim")
        state.accounts["EVAL1"] = _account(500001)
        state.accounts["EVAL2"] = _account(500002)
        saved = store.save(state)
        saved.accounts["EVAL1"].trading = "active"
        # EVAL2 differs too but is not named: a row store must not rewrite (or even read) it.
        saved.accounts["EVAL2"].trading = "active"
        assert store.save(saved, changed=(), changed_accounts={"EVAL1"}).serial == 2
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT name, trading, risk FROM reconcile.accounts ORDER BY name").fetchall()
    assert rows == [
        ("EVAL1", "active", {"dailyLossAutoLiq": 800.0, "doNotUnlock": True}),
        ("EVAL2", "locked", {"dailyLossAutoLiq": 800.0, "doNotUnlock": True}),
    ]
