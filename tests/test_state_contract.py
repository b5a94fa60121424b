"""The contract every StateStore backend must pass (STYLE: one shared test, run on every backend).

Every test taking the ``store`` fixture runs on each backend of ``STORE_FACTORIES`` and covers
each interface of :mod:`reconcile.state.store`: reading and writing, binding, the lock, and the
journal and audit log kept with the state. A backend joins by adding a factory there.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconcile.apply.intents import IntentJournal
from reconcile.errors import LockError, StateError
from reconcile.planning.plan import GrantEntitlement
from reconcile.state.file import FileStateStore
from reconcile.state.model import GrantRecord, State, StateBinding, UserRecord
from reconcile.state.store import StateStore

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _user(user_id: int, email: str) -> UserRecord:
    return UserRecord(
        userId=user_id,
        email=email,
        firstName="Test",
        lastName="User",
        entitlements={
            "simplus": GrantRecord(entitlementId=12345, status="awaiting_agreement", updatedAt=NOW)
        },
        createdAt=NOW,
        updatedAt=NOW,
    )


def _file_store(tmp_path: Path) -> StateStore:
    return FileStateStore(tmp_path / "state" / "sim.json")


def _postgres_store(tmp_path: Path) -> StateStore:
    # A database of its own per test, on the throwaway server of tests/pg_fixtures.py.
    from pg_fixtures import new_database

    from reconcile.state.postgres import PostgresStateStore

    return PostgresStateStore(new_database(), "sim")


STORE_FACTORIES: dict[str, Callable[[Path], StateStore]] = {"file": _file_store, "postgres": _postgres_store}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    return STORE_FACTORIES[request.param](tmp_path)


def test_empty_store_reads_none_and_loads_a_fresh_state(store: StateStore) -> None:
    assert store.read() is None
    assert store.read_header() is None
    state = store.load("sim")
    assert state.serial == 0 and state.users == {} and state.environment == "sim"
    assert store.read() is None, "load must not write"


def test_save_then_reload_round_trips(store: StateStore) -> None:
    state = store.load("sim")
    state.users["trader001"] = _user(100001, "trader001@example.com")
    saved = store.save(state)
    assert saved.serial == 1
    assert saved.lineage == state.lineage
    again = store.read()
    assert again is not None
    assert again == saved
    assert again.users["trader001"].entitlements["simplus"].status == "awaiting_agreement"


def test_serial_moves_only_when_content_changes(store: StateStore) -> None:
    state = store.load("sim")
    state.users["trader001"] = _user(100001, "a@example.com")
    first = store.save(state)
    unchanged = store.save(first)
    assert unchanged.serial == first.serial
    changed = first.model_copy(deep=True)
    changed.users["trader002"] = _user(100002, "b@example.com")
    second = store.save(changed, changed={"trader002"})
    assert second.serial == first.serial + 1
    header = store.read_header()
    assert header == (first.lineage, second.serial)


def test_reads_return_copies(store: StateStore) -> None:
    state = store.load("sim")
    state.users["trader001"] = _user(100001, "a@example.com")
    saved = store.save(state)
    read = store.read()
    assert read is not None
    read.users["trader001"].email = "mutated@example.com"
    saved.users.clear()
    again = store.read()
    assert again is not None and again.users["trader001"].email == "a@example.com"
    assert state.serial == 0, "save must not mutate the caller's object"


def test_stale_serial_is_refused(store: StateStore) -> None:
    base = store.save(store.load("sim"))
    one = base.model_copy(deep=True)
    one.users["trader001"] = _user(1, "a@example.com")
    store.save(one)
    two = base.model_copy(deep=True)
    two.users["trader002"] = _user(2, "b@example.com")
    with pytest.raises(StateError, match="another run wrote it"):
        store.save(two)


def test_other_lineage_is_refused(store: StateStore) -> None:
    store.save(store.load("sim"))
    with pytest.raises(StateError, match="lineage"):
        store.save(State.empty("sim"))


def test_other_environment_is_refused_on_load(store: StateStore) -> None:
    store.save(store.load("sim"))
    with pytest.raises(StateError, match="environment 'sim'"):
        store.load("live")


def test_removed_users_are_removed(store: StateStore) -> None:
    state = store.load("sim")
    state.users["trader001"] = _user(1, "a@example.com")
    state.users["trader002"] = _user(2, "b@example.com")
    saved = store.save(state)
    saved.users.pop("trader001")
    after = store.save(saved, changed={"trader001"})
    reread = store.read()
    assert reread is not None and set(reread.users) == {"trader002"} and reread.serial == after.serial


def test_replace_stores_exactly_and_only_over_the_expected_header(store: StateStore) -> None:
    copied = State.empty("sim").model_copy(update={"serial": 7})
    copied.users["trader001"] = _user(100001, "a@example.com")
    store.replace(copied, expected=None)
    assert store.read() == copied, "lineage and serial are kept, not moved"
    for stale in (None, (copied.lineage, 6), ("another-lineage", 7)):
        with pytest.raises(StateError, match="another run wrote it"):
            store.replace(copied, expected=stale)
    store.replace(copied.model_copy(update={"serial": 9}), expected=(copied.lineage, 7))
    assert store.read_header() == (copied.lineage, 9)


def test_state_saved_unbound_is_bound_on_load_and_written_so_on_its_next_save(store: StateStore) -> None:
    state = store.load("sim")
    state.users["trader001"] = _user(100001, "a@example.com")
    store.save(state)
    here = StateBinding(endpoint="sim:embedded", dataAccountId=11111)
    store.bind(here)
    loaded = store.load("sim")
    assert loaded.binding == here
    unchanged = store.read()
    assert unchanged is not None and unchanged.binding is None, "load must not write"
    store.save(loaded)
    again = store.read()
    assert again is not None and again.binding == here


# Lock -----------------------------------------------------------------------------------


def test_lock_names_its_holder_while_held_and_is_free_after(store: StateStore) -> None:
    assert store.lock_holder() is None
    with store.lock(timeout=0) as holder:
        assert holder.pid == os.getpid() and holder.purpose == "apply"
        seen = store.lock_holder()
        assert seen is not None and seen.lock_id == holder.lock_id
    assert store.lock_holder() is None
    with store.lock(timeout=0):
        pass


def test_second_locker_is_refused_at_once_with_the_holder_named(store: StateStore) -> None:
    with store.lock(timeout=0) as holder:
        with pytest.raises(LockError) as info, store.lock(timeout=0):
            pass
        assert holder.lock_id in str(info.value)


def test_waiter_hears_once_who_holds_the_lock_then_gives_up(store: StateStore) -> None:
    told: list[str] = []
    with store.lock(timeout=0) as holder:
        waiting = store.lock(timeout=0.2, on_wait=told.append)
        with pytest.raises(LockError, match=holder.lock_id), waiting:
            pass
    assert len(told) == 1 and holder.lock_id in told[0]


def test_read_lock_keeps_a_writer_out_while_a_plan_reads(store: StateStore) -> None:
    store.save(store.load("sim"))
    with store.read_lock(timeout=0) as holder:
        assert holder is not None and holder.purpose == "plan"
        with pytest.raises(LockError), store.lock(timeout=0):
            pass
    with store.lock(timeout=0):
        pass


def test_unlock_never_removes_a_lock_that_is_held(store: StateStore) -> None:
    with pytest.raises(LockError):
        store.unlock("no-such-lock")
    with store.lock(timeout=0) as holder:
        with pytest.raises(LockError):
            store.unlock(holder.lock_id)
        seen = store.lock_holder()
        assert seen is not None and seen.lock_id == holder.lock_id


# Journal and audit log ------------------------------------------------------------------


def _grant(user: str) -> GrantEntitlement:
    return GrantEntitlement(
        user=user, userId=1, entitlement="simplus", entitlementId=12345, accountId=11111, agreement_gated=True
    )


def test_journal_keeps_unsettled_intents_until_settled_or_cleared(store: StateStore) -> None:
    # Through the applier's typed view, as apply uses it; the store keeps the records.
    journal = IntentJournal(store.journal("sim"))
    assert journal.unsettled() == []
    first = journal.begin("grant", [_grant("a")])
    second = journal.begin("grant", [_grant("b")], agreement_alert_id=7)
    journal.settle(first)
    # The next run opens the journal anew and finds what was left open, as it was.
    assert IntentJournal(store.journal("sim")).unsettled() == [second]
    journal.clear()
    assert IntentJournal(store.journal("sim")).unsettled() == []


def test_audit_log_keeps_every_line_in_order(store: StateStore) -> None:
    log = store.audit_log("sim", clock=lambda: NOW)
    log.record("create", users=["a", "b"], outcome="ok", request_id="r1")
    log.sync()
    log.record("cancel_everything", users=["c"], outcome="failed", detail={"errorText": "nope"})
    log.close()
    log.record("stop", outcome="stopped")  # recording after close goes on
    log.close()
    time = "2026-11-27T12:00:00.000+00:00"
    lines = [
        {"time": time, "action": "create", "users": ["a", "b"], "outcome": "ok", "request_id": "r1"},
        {"time": time, "action": "cancel_everything", "users": ["c"], "outcome": "failed",
         "detail": {"errorText": "nope"}},
        {"time": time, "action": "stop", "users": [], "outcome": "stopped"},
    ]  # fmt: skip
    assert log.read() == lines
    assert store.audit_log("sim").read() == lines


def test_local_dir_is_a_local_folder(store: StateStore) -> None:
    assert isinstance(store.local_dir(), Path)


# File-store specifics -------------------------------------------------------------------


def test_file_store_writes_private_files_and_no_temp_leftovers(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "sim.json")
    store.save(store.load("sim"))
    mode = stat.S_IMODE(os.stat(tmp_path / "sim.json").st_mode)
    assert mode == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["sim.json"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not valid JSON"),
        (b"\x00\xff\xfe", "is not valid JSON"),
        (b'{"format_version": 99}', "format_version 99"),
        # A version that is not a whole number is no version at all (True == 1 in Python).
        (b'{"format_version": true, "environment": "sim", "users": {}}', "must be a whole number, not true"),
        (b'{"format_version": "2", "environment": "sim", "users": {}}', 'must be a whole number, not "2"'),
        (b'{"format_version": 1, "environment": "sim", "users": {"x": {"userId": "nope"}}}', "users.x"),
    ],
)
def test_file_store_corrupt_documents_give_clear_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "sim.json"
    path.write_bytes(content)
    with pytest.raises(StateError, match=message) as info:
        FileStateStore(path).read()
    assert str(path) in str(info.value)


def test_file_store_incremental_save_writes_the_same_document_as_a_full_save(tmp_path: Path) -> None:
    incremental = FileStateStore(tmp_path / "a.json")
    state = incremental.load("sim")
    for i in range(5):
        state.users[f"trader{i:03d}"] = _user(i, f"t{i}@example.com")
    state = incremental.save(state)
    state.users["trader002"] = state.users["trader002"].model_copy(update={"email": "new@example.com"})
    state.users.pop("trader004")
    state.users["trader009"] = _user(9, "t9@example.com")
    state = incremental.save(state, changed={"trader002", "trader004", "trader009"})
    log = (tmp_path / "a.changes.jsonl").read_text().splitlines()
    assert len(log) == 2, "the log names its base, then holds one line per save"
    assert json.loads(log[1])["users"].keys() == {"trader002", "trader004", "trader009"}
    reread = FileStateStore(tmp_path / "a.json").read()
    assert reread is not None and reread.users == state.users and reread.serial == state.serial

    incremental.compact()
    assert not (tmp_path / "a.changes.jsonl").exists()
    full = FileStateStore(tmp_path / "b.json")
    full._write(state, None)  # the same content serialized from scratch
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


def test_file_store_notices_a_write_by_another_process(tmp_path: Path) -> None:
    mine = FileStateStore(tmp_path / "sim.json")
    state = mine.save(mine.load("sim"))
    other = FileStateStore(tmp_path / "sim.json")
    theirs = other.load("sim")
    theirs.users["trader001"] = _user(1, "a@example.com")
    other.save(theirs)
    state.users["trader002"] = _user(2, "b@example.com")
    with pytest.raises(StateError, match="another run wrote it"):
        mine.save(state, changed={"trader002"})


def test_binding_is_set_on_first_write_and_another_is_refused(store: StateStore) -> None:
    here = StateBinding(endpoint="http://127.0.0.1:8765/v1", dataAccountId=11111)
    store.bind(here)
    state = store.load("sim")
    assert state.binding == here, "a new state is bound where it is first used"
    state.users["trader001"] = _user(100001, "a@example.com")
    store.save(state)
    again = store.read()
    assert again is not None and again.binding == here and again.format_version == 2
    for elsewhere in (
        StateBinding(endpoint="sim:embedded", dataAccountId=11111),
        StateBinding(endpoint=here.endpoint, dataAccountId=22222),
    ):
        store.bind(elsewhere)
        with pytest.raises(StateError) as info:
            store.load("sim")
        assert f"belongs to {here.describe()}, not {elsewhere.describe()}" in str(info.value)
        assert store.describe() in str(info.value)


def test_two_names_sharing_one_user_id_are_refused_as_corrupt(store: StateStore) -> None:
    state = store.load("sim")
    state.users["trader001"] = _user(100001, "a@example.com")
    state.users["trader002"] = _user(100001, "b@example.com")  # a bad merge or a hand edit
    store.save(state)
    with pytest.raises(StateError) as info:
        store.load("sim")
    message = str(info.value)
    assert "is corrupt: userId 100001 is recorded for trader001, trader002" in message
    assert store.describe() in message and "Restore it from version control" in message


def _document(users: str) -> bytes:
    return (
        '{"environment": "sim", "format_version": 1, "lineage": "l", "serial": 3, "users": {' + users + "}}"
    ).encode()


def _record_json(user_id: int, *, extra: str = "") -> str:
    return _user(user_id, "a@example.com").model_dump_json()[:-1] + extra + "}"


@pytest.mark.parametrize(
    ("users", "found"),
    [
        # One name, two records: a JSON parser keeps the last one and forgets the first id.
        (
            f'"trader001": {_record_json(100001)}, "trader001": {_record_json(100002)}',
            "user 'trader001' is recorded 2 times (userId 100001 and 100002)",
        ),
        # One record, two ids.
        (
            '"trader001": ' + _record_json(100001, extra=', "userId": 100003'),
            "user 'trader001' is recorded 2 times (userId 100001 and 100003)",
        ),
    ],
)
def test_file_store_refuses_a_document_that_repeats_a_name_or_an_id(
    tmp_path: Path, users: str, found: str
) -> None:
    path = tmp_path / "sim.json"
    path.write_bytes(_document(users))
    with pytest.raises(StateError) as info:
        FileStateStore(path).read()
    assert f"state {path} is corrupt: {found}" in str(info.value)


def test_file_store_reads_a_name_that_merely_looks_like_the_user_id_key(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    record = _user(100001, "a@example.com").model_copy(update={"firstName": "userId"})
    path.write_bytes(_document(f'"trader001": {record.model_dump_json()}'))
    state = FileStateStore(path).read()
    assert state is not None and state.users["trader001"].firstName == "userId"


def test_apply_on_state_sharing_an_id_cancels_nobody(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from apply_support import PASSWORD, write_desk
    from cli_support import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADER_PASSWORD", PASSWORD)
    manifest = write_desk(tmp_path / "desk.yaml", 3)
    assert run("apply", "-f", manifest, "--auto-approve").exit_code == 0
    path = tmp_path / "state" / "sim.json"
    document = json.loads(path.read_text())
    kept_id = document["users"]["trader0001"]["userId"]
    document["users"]["trader0002"]["userId"] = kept_id  # corrupt: trader0002 now names trader0001's id
    path.write_text(json.dumps(document))
    write_desk(manifest, 2)  # trader0002 leaves; trader0001 stays
    for command in (["plan"], ["apply", "--auto-approve", "--allow-cancellations", "1"]):
        result = run(*command, "-f", manifest)
        assert result.exit_code == 1, result.output
        assert f"is corrupt: userId {kept_id} is recorded for trader0001, trader0002" in result.stderr
        assert "Traceback" not in result.output
    listed = run("sim", "users", "--db", tmp_path / "state" / "sim.sqlite")
    assert {u["name"]: u["status"] for u in json.loads(listed.stdout)} == dict.fromkeys(
        ["trader0000", "trader0001", "trader0002"], "Active"
    )


def test_send_times_of_the_last_hour_come_back_and_older_ones_are_forgotten(store: StateStore) -> None:
    log = store.send_log("sim")
    now = 1_800_000_000.0
    log.sent("old", "/user/createevaluationusers", now - 4000)
    log.answered("old", now - 3990)
    log.sent("done", "/user/createevaluationusers", now - 600)
    log.answered("done", now - 599)
    log.sent("lost", "/auth/accesstokenrequest", now - 30)  # killed before its answer came
    expected = [("/user/createevaluationusers", now - 599), ("/auth/accesstokenrequest", now)]
    assert sorted(log.load(now)) == sorted(expected)
    # What the read kept is all a later run sees (the file is rewritten; the old row deleted).
    assert sorted(store.send_log("sim").load(now + 1)) == sorted(expected)
    assert store.send_log("sim").load(now + 3600) == []


def test_a_send_time_ahead_of_the_clock_counts_from_the_read_and_stays_so(store: StateStore) -> None:
    log = store.send_log("sim")
    now = 1_800_000_000.0
    log.sent("ahead", "/user/createevaluationusers", now + 3e7)  # the clock was a year ahead
    log.answered("ahead", now + 3e7)
    assert log.load(now) == [("/user/createevaluationusers", now)]
    assert store.send_log("sim").load(now + 3600) == []  # an hour after the read it is gone
