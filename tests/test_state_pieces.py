"""A state document laid out one record per block is read a piece at a time, as a whole read reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_planner_support import record
from test_state_decode import _document, _fast, _pydantic, _same, user_records

from reconcile.errors import StateError
from reconcile.state import decode, file
from reconcile.state.decode import LazyUser
from reconcile.state.file import FileStateStore
from reconcile.state.model import AccountRecord, State

NAMES = st.text(alphabet='ab{}"\\\n é,', min_size=1, max_size=6)


@pytest.fixture
def whole_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Runs of a few records each; the outcome of every whole read (``accepted``, ``refused``)."""
    monkeypatch.setattr(decode, "PIECE", 64)
    outcomes: list[str] = []

    def spy(raw: bytes, opened: Any, where: str) -> State:
        try:
            state = decode.decode_document(raw, opened, where)
        except decode.Refused:
            outcomes.append("refused")
            raise
        outcomes.append("accepted")
        return state

    monkeypatch.setattr(file, "decode_document", spy)
    return outcomes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(NAMES, min_size=1, max_size=6, unique=True).flatmap(
        lambda names: st.tuples(st.just(names), *(user_records(i) for i in range(len(names))))
    ),
    st.sampled_from([1, 2, 4]),
)
def test_any_document_laid_out_by_block_reads_in_pieces_as_pydantic_reads_it(
    tmp_path: Path, whole_reads: list[str], drawn: tuple[Any, ...], indent: int
) -> None:
    names, *records = drawn
    path = tmp_path / "sim.json"
    raw = json.dumps(_document(dict(zip(names, records, strict=True))), indent=indent).encode()
    path.write_bytes(raw)
    whole_reads.clear()
    _same(_fast(path), _pydantic(raw, path))
    assert "accepted" not in whole_reads, "what a whole read vouches for, the pieces do"


def _tool_layout(tmp_path: Path, count: int = 12) -> FileStateStore:
    """A state as reconcile writes it: every third user active, the others cancelled."""
    store = FileStateStore(tmp_path / "sim.json")
    state = store.load("sim")
    for i in range(count):
        user = record(i, f"t{i:02d}")
        state.users[f"t{i:02d}"] = user if i % 3 == 0 else user.model_copy(update={"lifecycle": "cancelled"})
    store.save(state)
    return store


def _edited(tmp_path: Path, old: bytes, new: bytes) -> Path:
    """The state of :func:`_tool_layout` with ``old`` (found once) replaced by ``new``."""
    store = _tool_layout(tmp_path)
    raw = store.path.read_bytes()
    assert raw.count(old) == 1
    store.path.write_bytes(raw.replace(old, new))
    return store.path


def test_the_accounts_before_the_users_are_read_past_and_read_fast(
    tmp_path: Path, whole_reads: list[str]
) -> None:
    store = _tool_layout(tmp_path)
    state = store.load("sim")
    when = state.users["t00"].createdAt
    for i in range(5):
        state.accounts[f"a{i}"] = AccountRecord(
            accountId=100 + i, user="t00", userId=0, createdAt=when, updatedAt=when
        )
    store.save(state)
    raw = store.path.read_bytes()
    assert raw.index(b'"accounts"') < 64 < raw.index(b'"users"'), "beyond the first piece"
    read = FileStateStore(store.path).read()
    assert whole_reads == []
    assert read == State.model_validate_json(raw) and read.accounts["a4"].accountId == 104
    store.path.write_bytes(json.dumps(json.loads(raw)).encode())
    assert FileStateStore(store.path).read() == read
    assert whole_reads == ["accepted"], "read whole, the fast way too"


def test_reconciles_own_layout_reads_in_pieces_and_each_unread_record_finds_its_own(
    tmp_path: Path, whole_reads: list[str]
) -> None:
    store = _tool_layout(tmp_path)
    state = FileStateStore(store.path).read()
    assert state is not None and whole_reads == []
    assert list(state.users) == sorted(state.users), "the document's order"
    assert [type(r) for r in state.users.values()].count(LazyUser) == 8
    for name in reversed(list(state.users)):  # runs read again out of order
        assert state.users[name].email == f"{name}@example.com"
    assert state == State.model_validate_json(store.path.read_bytes())


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda raw: raw.replace(b'\n  "users"', b'\n"users"'), id="users at another indent"),
        pytest.param(lambda raw: json.dumps(json.loads(raw)).encode(), id="on one line"),
        pytest.param(
            lambda raw: json.dumps({"users": json.loads(raw)["users"], **json.loads(raw)}, indent=2).encode(),
            id="users not last",
        ),
    ],
)
def test_any_other_layout_is_read_whole_to_the_same_state(
    tmp_path: Path, whole_reads: list[str], edit: Any
) -> None:
    store = _tool_layout(tmp_path)
    expected = State.model_validate_json(store.path.read_bytes())
    store.path.write_bytes(edit(store.path.read_bytes()))
    assert _fast(store.path) == expected
    assert whole_reads == ["accepted"]


def test_a_name_repeated_in_another_piece_is_refused_as_a_whole_read_refuses_it(
    tmp_path: Path, whole_reads: list[str]
) -> None:
    path = _edited(tmp_path, b'"t07": {\n      "userId": 7', b'"t01": {\n      "userId": 7')
    with pytest.raises(StateError, match=r"user 't01' is recorded 2 times \(userId 1 and 7\)"):
        FileStateStore(path).read()
    assert whole_reads == ["accepted"], "read whole from the file the pieces left open"


def test_a_record_kept_as_read_from_another_indent_does_not_cut_the_users_in_the_wrong_place(
    tmp_path: Path, whole_reads: list[str]
) -> None:
    """Its entitlements sit at the users' indent: a cut there is tried, refused, and passed over."""
    grant = {"entitlementId": 31, "status": "granted", "updatedAt": "2026-01-01T00:00:00Z"}
    grants = {name: grant for name in "ab"}
    users = {f"t{i}": record(i, f"t{i}", lifecycle="cancelled").model_dump(mode="json") for i in range(4)}
    users["t1"]["entitlements"] = grants
    text = json.dumps(_document(users), indent=2)
    kept = json.dumps(users["t1"], indent=1).replace("\n", "\n  ")  # as a bench-written state held it
    assert '},\n    "b": {' in kept
    text = text.replace(json.dumps(users["t1"], indent=2).replace("\n", "\n    "), kept)
    store = FileStateStore(tmp_path / "sim.json")
    store.path.write_text(text)
    state = _fast(store.path)
    assert whole_reads == []
    assert isinstance(state, State) and state == State.model_validate_json(text)
    assert state.users["t1"].entitlements["b"].entitlementId == 31


@pytest.mark.parametrize("piece", [64, 1024, 1 << 20])
def test_unread_records_read_in_any_order_each_read_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    """A run read again (another order than the document's) is placed record by record."""
    store = _tool_layout(tmp_path, count=30)
    monkeypatch.setattr(decode, "PIECE", piece)
    state = FileStateStore(store.path).read()
    assert state is not None
    source = state.users["t01"].__pydantic_extra__
    assert isinstance(source, decode.DocumentSource)
    for i in [29, 1, 17, 2, 28, 4, 16, 5, 25, 7]:
        assert state.users[f"t{i:02d}"].email == f"t{i:02d}@example.com"
    assert state == State.model_validate_json(store.path.read_bytes())
    placed = [length > 0 for length in source.lengths]
    assert any(placed) == (piece == 1024) and not all(placed), "only runs read twice"
    state = FileStateStore(store.path).read()
    assert state is not None
    store.path.write_bytes(store.path.read_bytes().replace(b'"t02@example.com"', b'"t02@example.co"'))
    with pytest.raises(StateError, match=r"changed in place while reconcile used it \(user 't02'"):
        _ = state.users["t02"].email


def test_unread_records_noted_together_are_as_each_noted_alone() -> None:
    source = decode.CancelledSource("sim.json")
    alone = source.add("a", 1)
    together = source.add_all(["b", "c"], [2, 3])
    slots = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__")
    for index, lazy in enumerate([alone, *together]):
        assert type(lazy) is LazyUser
        assert [getattr(lazy, s) for s in slots] == [getattr(alone, s) for s in slots]
        assert lazy.__pydantic_private__ == index
        assert (lazy.userId, lazy.lifecycle) == (index + 1, "cancelled")
    assert source.names == ["a", "b", "c"]


def _whole(path: Path, monkeypatch: pytest.MonkeyPatch) -> State | str:
    """What the store reads with the pieces path out of the way (the whole read: msgspec, then pydantic)."""

    def refuse(*args: Any) -> State:
        raise decode.Refused

    with monkeypatch.context() as patched:
        patched.setattr(file, "read_in_pieces", refuse)
        return _fast(path)


def test_bytes_that_are_no_utf8_in_an_active_record_are_refused_as_a_whole_read_refuses_them(
    tmp_path: Path, whole_reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """msgspec skips a field it does not keep without checking its bytes: the full decode then fails."""
    path = _edited(tmp_path, b'"t03@example.com"', b'"t03@example.co\xff"')
    refusal = _whole(path, monkeypatch)
    assert isinstance(refusal, str) and "is not valid JSON" in refusal
    assert _fast(path) == refusal


def test_a_user_id_beyond_64_bits_is_read_as_pydantic_reads_it(
    tmp_path: Path, whole_reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled user's id is kept in a 64-bit array: one it cannot hold is left to pydantic."""
    store = _tool_layout(tmp_path)
    raw = store.path.read_bytes()
    for user_id in (2**64 - 1, 2**63, -(2**63) - 1):
        huge = raw.replace(b'"userId": 2,', b'"userId": %d,' % user_id)
        store.path.write_bytes(huge)
        state = _fast(store.path)
        assert isinstance(state, State) and state.users["t02"].userId == user_id
        assert state == _whole(store.path, monkeypatch) == _pydantic(huge, store.path)


@pytest.mark.parametrize("pieces", [True, False], ids=["in pieces", "whole"])
@pytest.mark.parametrize(
    ("edit", "refusal"),
    [
        pytest.param(
            (b'"t04": {\n      "userId"', b'"t01": {\n      "user\\u0049d"'),
            "user 't01' is recorded 2 times (userId 1 and 4)",
            id="a name repeated",
        ),
        pytest.param(
            (b'"userId": 1,', b'"userId": 1,\n      "user\\u0049d": 99,'),
            "user 't01' is recorded 2 times (userId 1 and 99)",
            id="a userId repeated in a record",
        ),
    ],
)
def test_a_repeat_hidden_from_the_key_count_by_an_escaped_letter_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pieces: bool, edit: tuple[bytes, bytes], refusal: str
) -> None:
    """``"user\\u0049d"`` is a ``userId`` key the byte count does not see: the repeat it hides is still found.

    Kept silently, the last record of a name wins: the plan would cancel (or update) the trader
    whose id that record holds under another trader's name.
    """
    monkeypatch.setattr(decode, "PIECE", 64)
    path = _edited(tmp_path, *edit)
    read = _fast(path) if pieces else _whole(path, monkeypatch)
    assert isinstance(read, str) and refusal in read


def _outcome(read: State | str) -> tuple[str, ...]:
    """A read compared whole: its JSON, its users' order and sets of fields; or the refusal."""
    if isinstance(read, str):
        return ("refused", read)
    fields = [sorted(user.model_fields_set) for user in read.users.values()]
    return ("read", read.model_dump_json(), repr(read), json.dumps([list(read.users), fields]))


def _spliced(data: st.DataObject, raw: bytes) -> bytes:
    """``raw`` with a hostile edit: a byte in, a byte out, cut short, a record twice, a key escaped, ..."""
    at = data.draw(st.integers(0, len(raw)))
    entry = raw.find(b'\n    "', raw.find(b'"users"'))
    close = raw.find(b"\n    }", entry)
    edits = [
        raw[:at]
        + data.draw(st.sampled_from([b"\x00", b"\xff", b"\xc3", b"\t", b"\r", b",", b"}", b'"', b"\\", b"{"]))
        + raw[at:],
        raw[:at] + raw[at + 1 :],
        raw[:at],
        raw[:at] + raw[at:].replace(b"\n", b"\r\n"),
        raw.replace(
            b'"userId"', data.draw(st.sampled_from([b'"user\\u0049d"', b'"userId": 1, "userId"'])), 1
        ),
        raw.replace(
            b'"userId": 1,', b'"userId": %d,' % data.draw(st.sampled_from([2**63, 2**64, -(2**63) - 1])), 1
        ),
        raw.replace(b'"lifecycle"', b'"lifecycle": "active", "lifecycle"', 1),
        raw[: close + 6] + b"," + raw[entry : close + 6] + raw[close + 6 :] if 0 < entry < close else raw,
        raw.replace(b"}\n  }\n}", b"},\n  }\n}") + data.draw(st.sampled_from([b"", b"x", b"\x0c", b"{}"])),
        b"\xef\xbb\xbf" + raw,
    ]
    return data.draw(st.sampled_from(edits))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(NAMES, min_size=1, max_size=5, unique=True), st.data())
def test_any_edit_of_a_document_laid_out_by_block_reads_in_pieces_as_the_whole_read_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str], data: st.DataObject
) -> None:
    """Whatever the bytes, the pieces give the whole read's State or refusal (no other, and no crash)."""
    records = [  # valid records mostly (an edit then decides), any record sometimes
        data.draw(user_records(i))
        if data.draw(st.integers(0, 3)) == 0
        else record(i, name, lifecycle=data.draw(st.sampled_from(["active", "cancelled"]))).model_dump(
            mode="json"
        )
        for i, name in enumerate(names, start=1)
    ]
    path = tmp_path / "sim.json"
    raw = json.dumps(_document(dict(zip(names, records, strict=True))), indent=2).encode()
    for _ in range(data.draw(st.integers(1, 2))):
        raw = _spliced(data, raw)
    path.write_bytes(raw)
    whole = _outcome(_whole(path, monkeypatch))
    with monkeypatch.context() as patched:
        patched.setattr(decode, "PIECE", data.draw(st.sampled_from([16, 64, 200, 1 << 20])))
        assert _outcome(_fast(path)) == whole


@pytest.mark.parametrize("pieces", [True, False], ids=["in pieces", "whole"])
@pytest.mark.parametrize("user", ["t01", "t03"], ids=["cancelled", "active"])
def test_a_document_nested_deeper_than_python_recurses_is_refused_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pieces: bool, user: str
) -> None:
    email = b'"email": "%s@' % user.encode()
    path = _edited(tmp_path, email, b'"deep": ' + b"[" * 5000 + b"]" * 5000 + b",\n      " + email)
    read = _fast(path) if pieces else _whole(path, monkeypatch)
    assert isinstance(read, str) and "is not valid JSON (maximum recursion depth exceeded" in read
