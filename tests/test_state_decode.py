"""The fast state reader (reconcile.state.decode) reads the very State pydantic reads, or refuses alike."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from test_planner_support import record

from reconcile.errors import StateError, first_invalid
from reconcile.state.decode import LazyUser
from reconcile.state.file import FileStateStore
from reconcile.state.model import GrantRecord, State, StateBinding, UserRecord, refuse_shared_ids
from reconcile.state.postgres import PostgresStateStore

TIMES = st.sampled_from(
    [
        "2026-01-01T00:00:00Z",
        "2026-01-01T10:20:30.5Z",
        "2026-01-01T10:20:30.123456Z",
        "2026-01-01T10:20:30.1234567Z",  # 7 digits: msgspec would round, pydantic truncates
        "2026-01-01t10:20:30z",
        "2026-01-01 10:20:30+02:00",
        "2026-01-01T10:20:30+0200",
        "2026-01-01T10:20Z",
        "2026-01-01T10:20:30",
        "2026-02-30T00:00:00Z",  # no such day
        "2026-01-01T24:00:00Z",
        "1767225600",
        "yesterday",
    ]
)
MAYBE = st.sampled_from([None, "absent"])


def _optional(draw: Any, record: dict[str, Any], key: str, value: st.SearchStrategy[Any]) -> None:
    choice = draw(st.sampled_from(["absent", "null", "value"]))
    if choice == "null":
        record[key] = None
    elif choice == "value":
        record[key] = draw(value)


@st.composite
def user_records(draw: Any, user_id: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "userId": draw(st.sampled_from([user_id, str(user_id), user_id + 0.0, True]))
        if draw(st.booleans()) is False
        else user_id,
        "email": draw(st.sampled_from(["a@example.com", "é@example.com", 5])),
        "firstName": "First",
        "lastName": draw(st.text(alphabet='ab\u00e9\\"\n', max_size=5)),
        "createdAt": draw(TIMES),
        "updatedAt": draw(TIMES),
    }
    for key, value in (
        ("origin", st.sampled_from(["created", "adopted", "other"])),
        ("lifecycle", st.sampled_from(["active", "cancelled", "cancelled", "closed"])),
        ("tradovateSubscriptionPlanId", st.sampled_from([7, 2**70, "7"])),
        ("contact", _contacts()),
        ("entitlements", st.dictionaries(st.sampled_from(["tv", "plus"]), _grants(), max_size=2)),
        ("cancelledAt", TIMES),
        ("cancelledOn", st.lists(st.sampled_from(["live", "demo"]), max_size=2)),
    ):
        if draw(st.booleans()):
            _optional(draw, record, key, value)
    if draw(st.integers(0, 20)) == 0:
        record["unknown"] = 1
    return record


@st.composite
def _contacts(draw: Any) -> dict[str, Any]:
    contact: dict[str, Any] = {"phone": "+1", "streetAddress1": "1 Main St", "city": "NY", "country": "US"}
    for key in ("streetAddress2", "state", "postCode"):
        _optional(draw, contact, key, st.sampled_from(["x", 3]))
    if draw(st.integers(0, 10)) == 0:
        del contact["city"]
    return contact


@st.composite
def _grants(draw: Any) -> dict[str, Any]:
    return {
        "entitlementId": draw(st.sampled_from([31, "31"])),
        "status": draw(st.sampled_from(["granted", "awaiting_agreement", "denied"])),
        "updatedAt": draw(TIMES),
    }


def _document(users: dict[str, Any], **header: Any) -> dict[str, Any]:
    return {"environment": "sim", "format_version": 2, "lineage": "L", "serial": 3, "users": users, **header}


def _pydantic(raw: bytes, path: Path) -> State | str:
    """What pydantic makes of the document, with the store's id check: the State, or the refusal."""
    try:
        state = State.model_validate(json.loads(raw))
        refuse_shared_ids(state, str(path))
    except ValidationError as exc:
        return f"state {path} is not a valid state document: {first_invalid(exc)}"
    except StateError as exc:
        return str(exc)
    return state


def _fast(path: Path) -> State | str:
    """What the store reads, every record read whole (a lazy record's refusal comes on first use)."""
    try:
        state = FileStateStore(path).read()
        assert state is not None
        for record in state.users.values():
            if isinstance(record, LazyUser):
                record.materialize()
    except StateError as exc:
        return str(exc)
    return state


def _same(fast: State | str, slow: State | str) -> None:
    if isinstance(slow, str) or isinstance(fast, str):
        assert fast == slow
        return
    assert fast == slow
    assert fast.model_dump_json() == slow.model_dump_json()
    assert fast.model_fields_set == slow.model_fields_set
    assert repr(fast) == repr(slow)
    for name, theirs in slow.users.items():
        mine = fast.users[name]
        assert type(mine) is UserRecord
        assert mine.model_fields_set == theirs.model_fields_set
        assert mine.model_dump_json(exclude_unset=True) == theirs.model_dump_json(exclude_unset=True)
        if theirs.contact is not None:
            assert (
                mine.contact is not None and mine.contact.model_fields_set == theirs.contact.model_fields_set
            )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.integers(0, 10**6), min_size=1, max_size=4, unique=True).flatmap(
        lambda ids: st.tuples(*(user_records(i) for i in ids))
    )
)
def test_any_document_reads_as_pydantic_reads_it(tmp_path: Path, records: tuple[dict[str, Any], ...]) -> None:
    path = tmp_path / "sim.json"
    raw = json.dumps(_document({f"u{i}": r for i, r in enumerate(records)})).encode()
    path.write_bytes(raw)
    _same(_fast(path), _pydantic(raw, path))


@pytest.mark.parametrize(
    "header",
    [{}, {"binding": {"endpoint": "sim:embedded", "dataAccountId": 1}}, {"binding": None},
     {"format_version": 1}, {"format_version": True}, {"serial": "3"}, {"accounts": {}}, {"extra": 1}],
)  # fmt: skip
def test_the_header_reads_as_pydantic_reads_it(tmp_path: Path, header: dict[str, Any]) -> None:
    path = tmp_path / "sim.json"
    raw = json.dumps(_document({}, **header)).encode()
    path.write_bytes(raw)
    slow = _pydantic(raw, path)
    if header.get("format_version") is True:
        slow = (
            f"state {path} is not a valid state document: format_version must be a whole number, "
            "not true; restore it from version control or a backup"
        )
    _same(_fast(path), slow)


def _churned(tmp_path: Path) -> FileStateStore:
    store = FileStateStore(tmp_path / "sim.json")
    state = store.load("sim")
    for i in range(6):
        user = record(i, f"t{i}")
        state.users[f"t{i}"] = user.model_copy(update={"lifecycle": "cancelled"}) if i % 2 else user
    store.save(state)
    return store


def test_a_cancelled_user_is_read_whole_only_when_more_than_its_id_is_used(tmp_path: Path) -> None:
    store = _churned(tmp_path)
    state = FileStateStore(store.path).read()
    assert state is not None
    lazy = state.users["t1"]
    assert type(lazy) is LazyUser and type(state.users["t0"]) is UserRecord
    assert (lazy.userId, lazy.lifecycle) == (state.users["t1"].userId, "cancelled")
    assert type(lazy) is LazyUser, "the id and lifecycle are at hand"
    assert lazy.email == "t1@example.com"
    assert type(lazy) is UserRecord and state.users["t1"] is lazy, "read in place, the same object"
    reread = State.model_validate_json(store.path.read_bytes())
    assert state == reread and state.users == reread.users


def test_a_lazy_record_reads_the_document_it_came_from_even_after_a_rewrite(tmp_path: Path) -> None:
    store = _churned(tmp_path)
    state = FileStateStore(store.path).read()
    assert state is not None
    was = State.model_validate_json(store.path.read_bytes()).users["t3"]
    changed = state.model_copy(
        update={"users": {**state.users, "t3": was.model_copy(update={"email": "x@y.z"})}}
    )
    store.save(changed, changed=["t3"])
    store.compact()
    assert json.loads(store.path.read_text())["users"]["t3"]["email"] == "x@y.z"
    assert state.users["t3"] == was, "the first read still reads its own document"


def test_a_record_changed_in_place_under_a_reader_is_refused(tmp_path: Path) -> None:
    store = _churned(tmp_path)
    state = FileStateStore(store.path).read()
    assert state is not None
    raw = store.path.read_bytes()
    with open(store.path, "r+b") as file:  # an editor that writes in place, not by rename
        file.write(raw.replace(b'"t5@example.com"', b'"t5@example.co"'))
        file.truncate()
    with pytest.raises(StateError, match=r"changed in place while reconcile used it \(user 't5'"):
        _ = state.users["t5"].email


@pytest.mark.parametrize(
    ("field", "value"),
    [("createdAt", "2026-02-30T00:00:00Z"), ("email", 5), ("contact", {"phone": "1"}), ("unknown", 1),
     ("createdAt", "2026-01-01T00:00:00.1234567Z")],
)  # fmt: skip
def test_a_cancelled_user_is_checked_whole_on_first_use_as_pydantic_checks_it(
    tmp_path: Path, field: str, value: object
) -> None:
    store = _churned(tmp_path)
    document = json.loads(store.path.read_bytes())
    document["users"]["t3"][field] = value
    store.path.write_text(json.dumps(document))
    expected = _pydantic(store.path.read_bytes(), store.path)
    state = FileStateStore(store.path).read()
    assert state is not None
    assert (state.users["t3"].userId, state.users["t3"].lifecycle) == (3, "cancelled"), "all a plan needs"
    if isinstance(expected, State):  # a form only pydantic reads: pydantic's value
        assert state.users["t3"].createdAt == expected.users["t3"].createdAt
        return
    assert f"users.t3.{field}" in expected
    with pytest.raises(StateError) as refused:
        _ = state.users["t3"].email
    assert str(refused.value) == expected


def test_saves_and_compaction_keep_unread_records_as_they_were(tmp_path: Path) -> None:
    store = _churned(tmp_path)
    before = store.path.read_bytes()
    fresh = FileStateStore(store.path)
    state = fresh.load("sim")
    state.users["t0"] = state.users["t0"].model_copy(update={"email": "new@example.com"})
    with fresh.lock():
        state = fresh.save(state, changed=["t0"])
    assert type(state.users["t1"]) is LazyUser, "saving did not read the cancelled users whole"
    after = store.path.read_bytes()
    assert (
        after.replace(b"new@example.com", b"t0@example.com").replace(b'"serial": 2', b'"serial": 1') == before
    )
    reread = FileStateStore(store.path).read()
    assert reread is not None and reread.users == state.users


def test_copies_and_dumps_of_an_unread_record_are_whole(tmp_path: Path) -> None:
    store = _churned(tmp_path)
    expected = State.model_validate_json(store.path.read_bytes())
    for use in (
        lambda s: s.model_dump_json(),
        lambda s: s.model_copy(deep=True).users,
        lambda s: {n: r.model_copy() for n, r in s.users.items()},
        lambda s: {n: r.model_dump() for n, r in s.users.items()},
        lambda s: repr(s.users),
    ):
        state = FileStateStore(store.path).read()
        assert state is not None
        assert use(state) == use(expected)


def test_a_file_read_is_closed_once_its_lazy_records_are_gone(tmp_path: Path) -> None:
    store = _churned(tmp_path)
    state = FileStateStore(store.path).read()
    assert state is not None
    open_before = len(os.listdir("/proc/self/fd"))
    del state
    assert len(os.listdir("/proc/self/fd")) == open_before - 1


def _pg_churned() -> tuple[PostgresStateStore, State]:
    from pg_fixtures import new_database

    store = PostgresStateStore(new_database(), "sim")
    state = store.load("sim")
    grant = GrantRecord(entitlementId=31, status="granted", updatedAt=record(0, "x").createdAt)
    for i in range(6):
        user = record(i, f"t{i}", entitlements={"tv": grant})
        state.users[f"t{i}"] = user.model_copy(update={"lifecycle": "cancelled"}) if i % 2 else user
    return store, store.save(state)


def test_postgres_reads_a_cancelled_user_whole_only_when_more_than_its_id_is_used() -> None:
    store, saved = _pg_churned()
    with store:
        state = store.read()
        assert state is not None
        assert [type(r) for r in state.users.values()] == [UserRecord, LazyUser] * 3
        assert (state.users["t1"].userId, state.users["t1"].lifecycle) == (1, "cancelled")
        assert type(state.users["t1"]) is LazyUser
        assert state == saved and state.users == saved.users, "read whole on comparison"
        assert all(type(r) is UserRecord for r in state.users.values())
        assert state.users["t3"].entitlements["tv"].entitlementId == 31


def test_postgres_refuses_a_cancelled_row_another_run_changed_or_damaged_since_the_read() -> None:
    store, _ = _pg_churned()
    with store:
        state = store.read()
        assert state is not None
        with psycopg.connect(store.dsn) as conn:
            conn.execute("UPDATE reconcile.users SET user_id = 99 WHERE name = 't1'")
            conn.execute("""UPDATE reconcile.users SET contact = '{"phone": 1}' WHERE name = 't3'""")
        with pytest.raises(StateError, match="user 't1' changed since this run read the state"):
            _ = state.users["t1"].email
        with pytest.raises(
            StateError, match=r"user 't3' is not a valid record: contact\.phone: Input should be"
        ):
            _ = state.users["t3"].email
        assert state.users["t5"].email == "t5@example.com"


def _swap_in_place(path: Path, first: str, second: str) -> None:
    """Swap two same-length records' text, writing in place (not by rename)."""
    raw = path.read_bytes()
    users = json.loads(raw)["users"]
    a, b = (json.dumps(users[n], indent=2).replace("\n", "\n    ").encode() for n in (first, second))
    assert a in raw and b in raw and len(a) == len(b)
    with open(path, "r+b") as file:
        file.write(raw.replace(a, b"\0").replace(b, a).replace(b"\0", b))


@pytest.mark.parametrize("how", ["mtime restored", "within one clock tick"])
def test_a_save_never_writes_another_users_record_under_an_unread_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    store = _churned(tmp_path)
    before = os.stat(store.path)
    fresh = FileStateStore(store.path)
    state = fresh.load("sim")
    if how == "within one clock tick":  # the file's times cannot tell this write from the last
        monkeypatch.setattr("reconcile.state.decode._identity", lambda fd: (0, 0))
        state = FileStateStore(store.path).load("sim")
    _swap_in_place(store.path, "t1", "t3")  # e.g. cp -p of a copy with the two swapped
    os.utime(store.path, ns=(before.st_atime_ns, before.st_mtime_ns))
    state.users["t0"] = state.users["t0"].model_copy(update={"email": "new@example.com"})
    changed = r"changed in place while reconcile used it \(user 't[13]'"
    with pytest.raises(StateError, match=changed), fresh.lock():
        fresh.save(state, changed=["t0"])
    ids = {n: u["userId"] for n, u in json.loads(store.path.read_bytes())["users"].items()}
    assert ids["t1"] != 1 or ids["t3"] == 3, "never t1 -> 3 and t3 -> 1 from what this run read"


def test_a_state_with_unread_records_pickles_whole(tmp_path: Path) -> None:
    import pickle

    store = _churned(tmp_path)
    state = FileStateStore(store.path).read()
    assert state is not None and type(state.users["t1"]) is LazyUser
    copied = pickle.loads(pickle.dumps(state))
    assert copied == State.model_validate_json(store.path.read_bytes())
    assert type(copied.users["t1"]) is UserRecord


def test_postgres_full_save_writes_back_the_cancelled_users_it_read_unread() -> None:
    import threading

    store, saved = _pg_churned()
    with store:
        state = store.read()
        assert state is not None and type(state.users["t1"]) is LazyUser
        binding = StateBinding(endpoint="https://demo.example", dataAccountId=11111)
        assert state.binding != binding
        rebound = state.model_copy(update={"binding": binding})
        done: list[State] = []
        # A full save (state rebind's) rewrites every row: once, one read inside it waited forever.
        writer = threading.Thread(target=lambda: done.append(store.save(rebound)), daemon=True)
        writer.start()
        writer.join(timeout=20)
        assert done, "the full save did not finish"
        again = store.read()
        assert again is not None and again.binding == binding
        assert again.users == saved.users and again.users["t3"].entitlements["tv"].entitlementId == 31
