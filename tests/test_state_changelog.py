"""The file store's change log: saves append the batch, reads fold it in, crashes never cost a save."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_planner_support import record

from reconcile.errors import StateError
from reconcile.state import file as file_store
from reconcile.state.file import FileStateStore
from reconcile.state.model import State


def _desk(tmp_path: Path, users: int) -> tuple[FileStateStore, State]:
    store = FileStateStore(tmp_path / "sim.json")
    state = store.load("sim")
    for i in range(users):
        state.users[f"trader{i:05d}"] = record(i, f"trader{i:05d}")
    return store, store.save(state)


def _rename(store: FileStateStore, state: State, name: str, email: str) -> State:
    state.users[name] = state.users[name].model_copy(update={"email": email})
    return store.save(state, changed=[name])


def test_a_batch_save_writes_the_batch_whatever_the_desk_size(tmp_path: Path) -> None:
    appended = []
    for users in (10, 2000):
        store, state = _desk(tmp_path / str(users), users)
        base = store.path.read_bytes()
        _rename(store, state, "trader00001", "new@example.com")
        assert store.path.read_bytes() == base, "the document is not rewritten"
        appended.append(store.changes_path.stat().st_size)
    assert appended[0] == appended[1]


def test_the_first_save_after_a_read_appends_the_batch_when_the_run_said_it_will_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An apply reads, then saves: its first save neither reads the document again nor rewrites it."""
    _desk(tmp_path, 50)
    store = FileStateStore(tmp_path / "sim.json")
    state = store.load("sim")
    store.will_change(state)
    base = store.path.read_bytes()
    reads: list[int] = []
    read = FileStateStore.read
    monkeypatch.setattr(FileStateStore, "read", lambda self: reads.append(1) or read(self))
    unchanged = store.save(state, changed=["trader00003"])
    assert unchanged.serial == state.serial and not store.changes_path.exists()
    saved = _rename(store, unchanged, "trader00003", "new@example.com")
    assert reads == [] and store.path.read_bytes() == base, "appended to the log, nothing read or rewritten"
    monkeypatch.undo()
    again = FileStateStore(store.path).read()
    assert again is not None and again.serial == saved.serial == state.serial + 1
    assert again.users == saved.users and again.users["trader00003"].email == "new@example.com"


def test_a_state_that_is_not_the_one_just_read_is_no_base(tmp_path: Path) -> None:
    """Its records may already hold changes: taken as the base, those would never be saved."""
    _desk(tmp_path, 5)
    store = FileStateStore(tmp_path / "sim.json")
    read = store.load("sim")
    changed = read.model_copy(update={"users": dict(read.users)})
    changed.users["trader00001"] = changed.users["trader00001"].model_copy(update={"email": "x@example.com"})
    store.will_change(changed)
    saved = store.save(changed, changed=[])
    again = FileStateStore(store.path).read()
    assert again is not None and saved.serial == read.serial + 1
    assert again.users["trader00001"].email == "x@example.com"


def test_every_store_reads_the_folded_state_and_the_lock_release_folds_it_in(tmp_path: Path) -> None:
    store, state = _desk(tmp_path, 3)
    with store.lock():
        state = _rename(store, state, "trader00001", "a@example.com")
        state.users.pop("trader00002")
        state = store.save(state, changed=["trader00002"])
        other = FileStateStore(store.path).read()
        assert other is not None and other.serial == state.serial == 3
        assert other.users == state.users and "trader00002" not in other.users
    assert not store.changes_path.exists(), "released: the document alone is the state"
    document = json.loads(store.path.read_text())
    assert document["serial"] == 3 and document["users"]["trader00001"]["email"] == "a@example.com"


def test_a_plan_lock_leaves_the_log_as_it_is(tmp_path: Path) -> None:
    store, state = _desk(tmp_path, 2)
    _rename(store, state, "trader00001", "a@example.com")
    log = store.changes_path.read_bytes()
    with store.read_lock():
        assert FileStateStore(store.path).read() is not None
    assert store.changes_path.read_bytes() == log


def test_a_torn_append_counts_for_nothing_and_is_cut_by_the_next_save(tmp_path: Path) -> None:
    store, state = _desk(tmp_path, 2)
    state = _rename(store, state, "trader00001", "a@example.com")
    with store.changes_path.open("ab") as fh:
        fh.write(b'{"format_version":2,"lineage":"')  # killed mid-append: its save never returned
    again = FileStateStore(store.path)
    state = again.load("sim")
    assert state.serial == 2 and state.users["trader00001"].email == "a@example.com"
    state = _rename(again, state, "trader00000", "b@example.com")  # the first save after a read folds
    state = _rename(again, state, "trader00001", "c@example.com")
    lines = store.changes_path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)
    reread = FileStateStore(store.path).read()
    assert reread is not None and reread.serial == 4 and reread.users == state.users


def test_an_append_cuts_a_torn_tail_it_finds(tmp_path: Path) -> None:
    store, state = _desk(tmp_path, 2)
    state = _rename(store, state, "trader00001", "a@example.com")
    kept = store.changes_path.stat().st_size
    with store.changes_path.open("ab") as fh:
        fh.write(b'{"format_version":2')
    assert store._snapshot is not None
    store._snapshot = store._snapshot._replace(signature=store._signature())  # as if it were ours
    state = _rename(store, state, "trader00000", "b@example.com")
    lines = store.changes_path.read_bytes()[kept:].splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["serial"] == 3
    assert FileStateStore(store.path).read() == state


def test_a_log_built_on_another_base_is_ignored_then_replaced(tmp_path: Path) -> None:
    store, state = _desk(tmp_path, 2)
    state = _rename(store, state, "trader00001", "a@example.com")
    stale = store.changes_path.read_bytes()
    store.compact()
    store.changes_path.write_bytes(stale)  # a compaction killed between its rename and the removal
    again = FileStateStore(store.path)
    state = again.load("sim")
    assert state.serial == 2 and state.users["trader00001"].email == "a@example.com"
    state = _rename(again, state, "trader00000", "b@example.com")
    assert not store.changes_path.exists(), "the first save after a read writes the whole document"
    state = _rename(again, state, "trader00001", "c@example.com")
    head = json.loads(store.changes_path.read_text().splitlines()[0])
    assert head == {"base": {"lineage": state.lineage, "serial": 3}}
    assert FileStateStore(store.path).read() == state


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda line: line.replace('"serial":2', '"serial":5'), "follows lineage .* serial 4, not lineage"),
        (
            lambda line: line.replace('"userId": 1', '"userId": "x"'),
            "line 2 of its change log .* not a valid",
        ),
    ],
)
def test_a_damaged_log_is_refused_with_its_line(tmp_path: Path, edit: object, message: str) -> None:
    store, state = _desk(tmp_path, 2)
    state = _rename(store, state, "trader00001", "a@example.com")
    _rename(store, state, "trader00000", "b@example.com")
    head, first, second = store.changes_path.read_text().splitlines()
    store.changes_path.write_text("\n".join([head, edit(first), second]) + "\n")  # type: ignore[operator]
    with pytest.raises(StateError, match=message) as info:
        FileStateStore(store.path).read()
    assert str(store.path) in str(info.value)


def test_a_log_as_large_as_the_document_is_folded_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_store, "COMPACT_ABOVE", 0)
    store, state = _desk(tmp_path, 4)
    for i in range(40):
        state = _rename(store, state, "trader00001", f"a{i}@example.com")
        if not store.changes_path.exists():
            break
    else:
        pytest.fail("the log was never folded in")
    assert 1 < i < 39
    reread = FileStateStore(store.path).read()
    assert reread == state and json.loads(store.path.read_text())["serial"] == state.serial


def test_a_run_that_fails_still_folds_its_log_in_when_it_lets_go(tmp_path: Path) -> None:
    store, state = _desk(tmp_path, 2)
    with pytest.raises(RuntimeError), store.lock():
        state = _rename(store, state, "trader00001", "a@example.com")
        raise RuntimeError("the run stops")
    assert not store.changes_path.exists()
    assert json.loads(store.path.read_text())["users"]["trader00001"]["email"] == "a@example.com"


def test_a_forced_push_killed_before_the_log_is_removed_leaves_one_state_or_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, base = _desk(tmp_path, 3)  # serial 1
    pushed = base.model_copy(deep=True)
    pushed.users.pop("trader00002")  # an older copy elsewhere, with other content at the same serial
    state = _rename(store, base, "trader00001", "a@example.com")
    state = _rename(store, state, "trader00000", "b@example.com")  # serial 3: a log built on serial 1
    before = FileStateStore(store.path).read()

    def killed(path: Path) -> None:
        raise KeyboardInterrupt  # the process dies after the rename, before the log is removed

    monkeypatch.setattr(file_store, "remove_log", killed)
    with pytest.raises(KeyboardInterrupt):
        store.replace(pushed, expected=(state.lineage, state.serial))
    after = FileStateStore(store.path).read()
    assert after in (before, pushed), "never the pushed document with the old log folded in"


def test_a_disk_full_mid_append_loses_nothing_saved_and_applies_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    store, state = _desk(tmp_path, 3)
    state = _rename(store, state, "trader00001", "a@example.com")  # serial 2, in the log
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        if len(data) > 10:
            return real_write(fd, data[: len(data) // 2])  # half the line fits, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    kept = state.model_copy(deep=True)
    state.users["trader00002"] = state.users["trader00002"].model_copy(update={"email": "c@example.com"})
    with pytest.raises(StateError, match=r"disk is full.*nothing saved before is lost"):
        store.save(state, changed=["trader00002"])
    monkeypatch.setattr(os, "write", real_write)  # space is free again
    assert FileStateStore(store.path).read() == kept
    again = _rename(store, kept.model_copy(deep=True), "trader00000", "d@example.com")  # goes on
    assert again.serial == 3
    assert FileStateStore(store.path).read() == again
    with store.lock():
        pass
    assert FileStateStore(store.path).read() == again and not store.changes_path.exists()


@pytest.mark.parametrize("head", [b"garbage\n", b'{"base": null}\n', b"[1]\n", b'"base"\n'])
def test_a_log_whose_first_line_is_damaged_is_refused_naming_the_log(tmp_path: Path, head: bytes) -> None:
    store, state = _desk(tmp_path, 2)
    _rename(store, state, "trader00001", "a@example.com")
    lines = store.changes_path.read_bytes().splitlines(keepends=True)
    store.changes_path.write_bytes(head + b"".join(lines[1:]))
    with pytest.raises(StateError, match="line 1 of its change log") as info:
        FileStateStore(store.path).read()
    assert str(store.changes_path) in str(info.value)


def test_a_reader_is_not_starved_by_a_writer_appending_while_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, state = _desk(tmp_path, 3)
    state = _rename(writer, state, "trader00001", "a0@example.com")
    real_fold = file_store.fold_changes
    folds = []

    def fold_after_an_append(path: Path, folded: State, where: str) -> int:
        nonlocal state
        folds.append(folded.serial)
        if len(folds) < 20:  # an apply saving a batch during every read (plan --no-lock)
            state = _rename(writer, state, "trader00001", f"a{len(folds)}@example.com")
        return real_fold(path, folded, where)

    monkeypatch.setattr(file_store, "fold_changes", fold_after_an_append)
    read = FileStateStore(writer.path).read()
    assert len(folds) == 1, "an append leaves what was read consistent: no need to read again"
    assert read is not None and read.serial == 3
    assert read.users["trader00001"].email == "a1@example.com"  # the save made before the log was read


def test_a_reader_reads_again_when_the_document_is_replaced_while_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, state = _desk(tmp_path, 3)
    with writer.lock():
        state = _rename(writer, state, "trader00001", "a@example.com")
        real_fold = file_store.fold_changes
        folds = []

        def compact_first(path: Path, folded: State, where: str) -> int:
            folds.append(folded.serial)
            if len(folds) == 1:
                _rename(writer, state, "trader00002", "c@example.com")
                writer.compact()  # the log this reader is about to fold is gone
            return real_fold(path, folded, where)

        monkeypatch.setattr(file_store, "fold_changes", compact_first)
        read = FileStateStore(writer.path).read()
    assert folds == [1, 3] and read is not None and read.serial == 3
    assert read.users["trader00001"].email == "a@example.com"
