"""Recorded state as one JSON file on local disk, with its lock, journal and audit log beside it.

``state/<environment>.json`` by default; next to it ``<environment>.json.lock`` (the lock,
:mod:`reconcile.state.lock`), ``<environment>.journal.jsonl`` and ``<environment>.audit.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple

from pydantic import BaseModel, ValidationError

from reconcile.bulk import gc_paused, share_fields_sets
from reconcile.errors import ReconcileError, StateError, describe_os_error, first_invalid
from reconcile.fsutil import atomic_write_text
from reconcile.state.audit import FileAuditLog, audit_path_for
from reconcile.state.changelog import (
    RECORD_MODELS,
    LogHead,
    append_entry,
    changes_path_for,
    entry_line,
    fold_changes,
    record_models,
    remove_log,
)
from reconcile.state.decode import LazyUser, Refused, decode_document, escapes_a_letter, read_in_pieces
from reconcile.state.journal import FileJournal, Journal, journal_path_for
from reconcile.state.lock import LockHolder, check_held, read_holder, state_lock, unlock
from reconcile.state.model import (
    STATE_FORMAT_VERSION,
    AccountRecord,
    State,
    StateBinding,
    UserRecord,
    refuse_repeated_names,
    refuse_shared_ids,
)
from reconcile.state.sends import FileSendLog, sends_path_for
from reconcile.state.store import GuardedStore, StateStore, moved_under_write


class _Keys(dict[str, object]):
    """A JSON object that remembers the values of keys it saw more than once."""

    repeated: dict[str, list[object]]


def _keep_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = _Keys(pairs)
    obj.repeated = {}
    if len(obj) != len(pairs):
        for key, value in pairs:
            obj.repeated.setdefault(key, []).append(value)
        obj.repeated = {k: v for k, v in obj.repeated.items() if len(v) > 1}
    return obj


def _id_of(value: object, key: str) -> object:
    return value.get(key, "missing") if isinstance(value, dict) else "missing"


def refuse_repeated_keys(raw: bytes, where: str) -> None:
    """Raise :class:`StateError` when a state document repeats a name or a record's id.

    JSON parsers keep the last of repeated keys silently; in state that hides a second id.
    Users are checked by ``userId``, accounts by ``accountId``.
    """
    try:
        data = json.loads(raw, object_pairs_hook=_keep_repeats)
    except (ValueError, RecursionError):
        return  # the caller reports malformed JSON
    if not isinstance(data, dict):
        return
    for section, kind, key in (("users", "user", "userId"), ("accounts", "account", "accountId")):
        records = data.get(section)
        if not isinstance(records, _Keys):
            continue
        repeated = {name: [_id_of(v, key) for v in values] for name, values in records.repeated.items()}
        for name, record in records.items():
            if isinstance(record, _Keys) and key in record.repeated:
                repeated[name] = record.repeated[key]
        refuse_repeated_names(repeated, where, kind=kind, key=key)


Signature = tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]


COMPACT_ABOVE = 1 << 20
"""Bytes of change log below which it is never folded in before the lock's release."""


class _Snapshot(NamedTuple):
    """What a FileStateStore last read or wrote: both files' identity, the header, each record's JSON."""

    signature: Signature
    environment: str
    lineage: str
    serial: int
    binding: StateBinding | None
    records: dict[str, dict[str, str]] | None
    """field -> name -> serialized record; None until first needed (a read does not serialize)."""
    head: LogHead
    """The header of the base document (what a change log builds on)."""
    base_bytes: int
    log_bytes: int
    """The size of the change log that counts (0: none, or one built on another base)."""


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _record_json(record: BaseModel) -> str:
    # A half-finished cancel and a lost reset answer are rare: other records' blocks stay as they
    # were before those fields existed.
    exclude: set[str] | None = None
    if isinstance(record, LazyUser) and (text := record.raw_json()) is not None:
        return text.decode()  # as read: reading it whole to write the same would take longer
    if isinstance(record, UserRecord) and not record.cancelledOn:
        exclude = {"cancelledOn"}
    elif isinstance(record, AccountRecord) and not record.resetUnsettled:
        exclude = {"resetUnsettled"}
    return record.model_dump_json(indent=2, exclude=exclude).replace("\n", "\n    ")


def _identity(state: State, names: Mapping[str, Collection[str] | None]) -> tuple[int, ...]:
    return (*(id(n) for n in names.values()), *(id(getattr(state, field)) for field in RECORD_MODELS))


def _all_json(state: State) -> dict[str, dict[str, str]]:
    return {
        field: {name: _record_json(record) for name, record in getattr(state, field).items()}
        for field in RECORD_MODELS
    }


def _document(state: State, records: dict[str, dict[str, str]]) -> str:
    """The base document: sorted keys, one record per block, so a state kept in Git diffs by record."""
    header: dict[str, str] = {
        "environment": json.dumps(state.environment),
        "format_version": str(STATE_FORMAT_VERSION),
        "lineage": json.dumps(state.lineage),
        "serial": str(state.serial),
    }
    if state.binding is not None:
        header["binding"] = state.binding.model_dump_json()
    for field, texts in records.items():
        if not texts and field != "users":
            continue  # a state without accounts is written as before they existed
        body = ",\n".join(f"    {json.dumps(name)}: {texts[name]}" for name in sorted(texts))
        header[field] = "{\n" + body + "\n  }" if texts else "{}"
    return "{\n" + ",\n".join(f"  {json.dumps(key)}: {header[key]}" for key in sorted(header)) + "\n}\n"


class FileStateStore(GuardedStore, StateStore):
    """State as a JSON document on local disk (``state/<environment>.json`` by default).

    The document is pretty-printed with sorted keys, one record per block, so a state file kept
    in Git diffs by user. A save appends only the records it changed to the change log beside it
    (:mod:`reconcile.state.changelog`), so its cost follows the batch, not the desk; the log is
    folded back into the document when it grows as large, and when an exclusive lock is released.
    The store remembers what it last read or wrote (keyed by both files' inode, mtime and size):
    it checks lineage and serial without re-reading files nobody else touched.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.changes_path = changes_path_for(self.path)
        self._snapshot: _Snapshot | None = None
        self._read: tuple[object, object] | None = None
        """The record mappings of the State the last read returned (see :meth:`will_change`)."""
        self._found: tuple[tuple[int, ...], dict[str, dict[str, str | None]]] | None = None

    def describe(self) -> str:
        return str(self.path)

    def lock(
        self,
        *,
        timeout: float = 0.0,
        purpose: str = "apply",
        on_wait: Callable[[str], None] | None = None,
    ) -> contextlib.AbstractContextManager[LockHolder]:
        """Hold the lock on the state file (:func:`reconcile.state.lock.state_lock`).

        Released after anything but a plan, it first folds the change log into the document, so
        between runs the document alone is the state.
        """
        return self._holding(timeout=timeout, purpose=purpose, on_wait=on_wait)

    @contextlib.contextmanager
    def _holding(
        self, *, timeout: float, purpose: str, on_wait: Callable[[str], None] | None
    ) -> Iterator[LockHolder]:
        with state_lock(self.path, timeout=timeout, purpose=purpose, on_wait=on_wait) as holder:
            try:
                yield holder
            except BaseException:
                if purpose != "plan":
                    with contextlib.suppress(ReconcileError):  # the run's own error says more
                        self.compact()
                raise
            if purpose != "plan":
                self.compact()

    def read_lock(
        self, *, timeout: float = 0.0, on_wait: Callable[[str], None] | None = None
    ) -> contextlib.AbstractContextManager[LockHolder | None]:
        """Lock as :meth:`lock` does, but only when the state folder exists.

        With no state folder no run has begun writing, so there is nothing to see half-way; and a
        plan that only reads must not create a state folder where there was none (its lock file
        inside an existing one goes away with the lock).
        """
        if not self.path.parent.is_dir():
            return contextlib.nullcontext()
        return self.lock(timeout=timeout, purpose="plan", on_wait=on_wait)

    def lock_holder(self) -> LockHolder | None:
        """Return the holder record next to the state file, if any."""
        return read_holder(self.path)

    def unlock(self, lock_id: str) -> LockHolder:
        """Remove the holder record ``lock_id`` (:func:`reconcile.state.lock.unlock`)."""
        return unlock(self.path, lock_id)

    def journal(self, environment: str) -> Journal:
        """Return ``<state folder>/<environment>.journal.jsonl``."""
        return FileJournal(journal_path_for(self.path, environment))

    def audit_log(self, environment: str, *, clock: Callable[[], datetime] | None = None) -> FileAuditLog:
        """Return ``<state folder>/<environment>.audit.jsonl``."""
        return FileAuditLog(audit_path_for(self.path, environment), clock=clock)

    def send_log(self, environment: str) -> FileSendLog:
        """Return ``<state folder>/<environment>.pacing.jsonl``."""
        return FileSendLog(sends_path_for(self.path, environment))

    def local_dir(self) -> Path:
        return self.path.parent

    def _signature(self) -> Signature:
        return (_file_signature(self.path), _file_signature(self.changes_path))

    def _valid_snapshot(self) -> _Snapshot | None:
        snap = self._snapshot
        if snap is not None and self._signature() == snap.signature:
            return snap
        return None

    def read(self) -> State | None:
        try:
            signature = self._signature()
            file = self.path.open("rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(describe_os_error(exc, "read state", self.path)) from None
        state, size = self._parse(file)
        head = LogHead(state.lineage, state.serial)
        log_bytes = fold_changes(self.changes_path, state, str(self.path))
        refuse_shared_ids(state, str(self.path))
        # A document replaced while we read it: read again. An append to the log is no reason to
        # (only complete lines were folded in, the state is whole), and a reader that retried on
        # every append would never finish beside an apply saving batch after batch.
        if signature[0] != _file_signature(self.path):
            return self.read()
        self._read = (state.users, state.accounts)
        self._snapshot = _Snapshot(
            signature,
            state.environment,
            state.lineage,
            state.serial,
            state.binding,
            None,
            head,
            size,
            log_bytes,
        )
        return state

    def _parse(self, file: BinaryIO) -> tuple[State, int]:
        """The base document as a State and its size, or a :class:`StateError` saying exactly what is wrong.

        ``file`` is closed once no record read from it needs it.
        """
        try:
            # A document laid out as reconcile writes it is read a piece at a time: a desk with
            # years of cancelled users never sits in memory whole (reconcile.state.decode).
            size = os.fstat(file.fileno()).st_size  # first: the file closes with its last record
            with gc_paused():
                return read_in_pieces(file, str(self.path)), size
        except Refused:
            pass  # read it whole: the fast way below, or the exact one
        except OSError as exc:
            file.close()
            raise StateError(describe_os_error(exc, "read state", self.path)) from None
        try:
            raw = file.read()
        except OSError as exc:
            file.close()
            raise StateError(describe_os_error(exc, "read state", self.path)) from None
        return self._parse_whole(raw, file), len(raw)

    def _parse_whole(self, raw: bytes, file: BinaryIO) -> State:
        """The base document ``raw`` (the content of ``file``) as a State, or a :class:`StateError`."""
        try:
            # The fast path (reconcile.state.decode): msgspec validates, cancelled users are
            # read on first use; several times quicker and leaner than pydantic on a large desk.
            with gc_paused():
                state = decode_document(raw, file, str(self.path))
        except Refused:
            file.close()  # fall through to the slow path, which says exactly what is wrong
        else:
            # Each user and account record holds one "userId" key, each account one "accountId":
            # more of them means a name or an id repeated (a bad merge), which the parser above
            # silently resolved; look closer (also when a key is spelled with an escape: uncounted).
            if (
                raw.count(b'"userId"') != len(state.users) + len(state.accounts)
                or raw.count(b'"accountId"') != len(state.accounts)
                or escapes_a_letter(raw)
            ):
                refuse_repeated_keys(raw, str(self.path))
            return state
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # (UnicodeDecodeError is a ValueError)
            raise StateError(
                f"state {self.path} is not valid JSON ({exc}); restore it from version control "
                "or a backup (it is never written partially by reconcile)"
            ) from None
        _check_format_version(data, self.path)
        refuse_repeated_keys(raw, str(self.path))
        try:
            state = State.model_validate(data)
        except ValidationError as exc:
            raise StateError(
                f"state {self.path} is not a valid state document: {first_invalid(exc)}"
            ) from None
        share_fields_sets(record_models(state.users, state.accounts))
        return state

    def will_change(self, state: State) -> None:
        """Serialize the records of ``state``, just read and not changed yet, as the base of saves.

        A read does not serialize (a plan never writes), so without a base the first save of a
        run read the whole document again to compare and then rewrote it whole: 0.4 s of a 10k
        grants apply. Taken only when ``state`` holds the very mappings the last read returned
        and the files are as read: a State changed since would pass its changes off as the base.
        """
        snap = self._valid_snapshot()
        read = self._read
        if snap is None or snap.records is not None or read is None:
            return
        if read[0] is not state.users or read[1] is not state.accounts:
            return
        if (state.lineage, state.serial) != (snap.lineage, snap.serial):
            return
        self._snapshot = snap._replace(records=_all_json(state))

    def read_header(self) -> tuple[str, int] | None:
        snap = self._valid_snapshot()
        if snap is not None:
            return (snap.lineage, snap.serial)
        state = self.read()
        return None if state is None else (state.lineage, state.serial)

    def _changes(
        self, state: State, names: Mapping[str, Collection[str] | None], records: dict[str, dict[str, str]]
    ) -> dict[str, dict[str, str | None]]:
        """Per record field, the records of ``state`` whose JSON differs from ``records`` (None: removed).

        ``names`` holds, per record field, the names that may differ; a field it does not name,
        or names None for, is compared whole.
        """
        found: dict[str, dict[str, str | None]] = {}
        for field in RECORD_MODELS:
            current, stored = getattr(state, field), records[field]
            candidates = names.get(field)
            diff: dict[str, str | None] = {}
            for name in current.keys() | stored.keys() if candidates is None else candidates:
                record = current.get(name)
                text = None if record is None else _record_json(record)
                if text != stored.get(name):
                    diff[name] = text
            if diff:
                found[field] = diff
        return found

    def _differs(
        self, state: State, changed: Collection[str] | None, changed_accounts: Collection[str] | None = None
    ) -> bool:
        snap = self._valid_snapshot()
        if snap is None or snap.records is None:
            return super()._differs(state, changed, changed_accounts)
        names = {"users": changed, "accounts": changed_accounts}
        changes = self._changes(state, names, snap.records)
        # save() calls _write next with the same records (a copy of the State sharing its
        # mappings): keep what was found, so each changed record is serialized once per save.
        self._found = (_identity(state, names), changes)
        return state.binding != snap.binding or bool(changes)

    def _write(
        self, state: State, changed: Collection[str] | None, changed_accounts: Collection[str] | None = None
    ) -> None:
        check_held(self.path)  # a lock file removed by hand must not let a second run write too
        snap = self._valid_snapshot()
        if snap is None or snap.records is None:
            self._rewrite(state, _all_json(state))
            return
        names = {"users": changed, "accounts": changed_accounts}
        found, self._found = self._found, None
        if found is not None and found[0] == _identity(state, names):
            changes = found[1]
        else:
            changes = self._changes(state, names, snap.records)
        line = entry_line(state, changes)
        start = None if snap.log_bytes else snap.head
        try:
            size = append_entry(self.changes_path, line, start=start, keep=snap.log_bytes)
        except OSError as exc:
            raise self._not_written(exc, self.changes_path) from None
        for field, diff in changes.items():
            stored = snap.records[field]
            for name, text in diff.items():
                if text is None:
                    stored.pop(name, None)
                else:
                    stored[name] = text
        self._snapshot = snap = snap._replace(
            signature=self._signature(),
            lineage=state.lineage,
            serial=state.serial,
            binding=state.binding,
            log_bytes=size,
        )
        if size > max(snap.base_bytes, COMPACT_ABOVE):  # reading the log costs as much as the base
            self.compact()

    def _not_written(self, exc: OSError, path: Path) -> StateError:
        """The error of a write that failed: an append or a rename is the last step, so nothing is lost."""
        self._snapshot = None
        return StateError(
            describe_os_error(exc, "write state", path)
            + " (the state keeps its last complete version; nothing saved before is lost)"
        )

    def _rewrite(self, state: State, records: dict[str, dict[str, str]]) -> None:
        """Write the whole document (atomically), then drop the change log it now includes."""
        text = _document(state, records)
        try:
            atomic_write_text(self.path, text)
            remove_log(self.changes_path)
        except OSError as exc:
            raise self._not_written(exc, self.path) from None
        head = LogHead(state.lineage, state.serial)
        self._snapshot = _Snapshot(
            self._signature(),
            state.environment,
            state.lineage,
            state.serial,
            state.binding,
            records,
            head,
            len(text.encode()),
            0,
        )

    def compact(self) -> None:
        """Fold the change log into the document, if there is one (the state itself stays the same)."""
        if not self.changes_path.exists():
            return
        check_held(self.path)  # never rewrite the document beside another run that took the lock
        snap = self._valid_snapshot()
        if snap is None or snap.records is None:
            state = self.read()
            if state is None:
                return
            self._rewrite(state, _all_json(state))
            return
        header = State(
            environment=snap.environment, lineage=snap.lineage, serial=snap.serial, binding=snap.binding
        )
        self._rewrite(header, snap.records)

    def replace(self, state: State, *, expected: tuple[str, int] | None) -> None:
        """Write exactly ``state`` (its serial too) if the file still holds ``expected``."""
        header = self.read_header()
        if header != expected:
            raise moved_under_write(self.describe(), header, expected)
        check_held(self.path)
        # Fold the log in first: killed after the rename below, a log left beside a document of
        # its base's serial (a forced copy of an older state) would be folded into it.
        self.compact()
        self._rewrite(state, _all_json(state))


def default_state_path(environment: str, base: str | os.PathLike[str] = "state") -> Path:
    """``state/<environment>.json``."""
    return Path(base) / f"{environment}.json"


def _check_format_version(data: object, path: Path) -> None:
    """Refuse a document whose format_version is not a version this reconcile reads."""
    if not isinstance(data, dict) or "format_version" not in data:
        return  # the model says what is missing
    version = data["format_version"]
    if type(version) is not int:  # not bool either: True == 1 in Python
        raise StateError(
            f"state {path} is not a valid state document: format_version must be a whole number, "
            f"not {json.dumps(version)}; restore it from version control or a backup"
        )
    if version not in (1, STATE_FORMAT_VERSION):
        raise StateError(
            f"state {path} has format_version {version}; this reconcile reads versions up to "
            f"{STATE_FORMAT_VERSION}: upgrade reconcile"
        )
