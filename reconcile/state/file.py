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
from typing import NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from reconcile.bulk import gc_paused, share_fields_sets
from reconcile.errors import StateError, describe_os_error, first_invalid
from reconcile.fsutil import atomic_write_text
from reconcile.state.audit import FileAuditLog, audit_path_for
from reconcile.state.journal import FileJournal, Journal, journal_path_for
from reconcile.state.lock import LockHolder, check_held, read_holder, state_lock, unlock
from reconcile.state.model import (
    STATE_FORMAT_VERSION,
    AccountRecord,
    State,
    UserRecord,
    refuse_repeated_names,
    refuse_shared_ids,
)
from reconcile.state.sends import FileSendLog, sends_path_for
from reconcile.state.store import GuardedStore, StateStore, moved_under_write

R = TypeVar("R")


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
    except (ValueError, UnicodeDecodeError):
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


def _record_models(state: State) -> Iterator[BaseModel]:
    for record in state.users.values():
        yield record
        if record.contact is not None:
            yield record.contact
        yield from record.entitlements.values()
    yield from state.accounts.values()


class _Snapshot(NamedTuple):
    """What a FileStateStore last read or wrote: the file's identity and each record's JSON."""

    signature: tuple[int, int, int]
    lineage: str
    serial: int
    users: dict[str, str] | None
    """name -> serialized record; None until first needed (a read does not serialize)."""
    accounts: dict[str, str] | None = None
    """account name -> serialized record, as ``users``."""


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _user_json(record: UserRecord) -> str:
    # A half-finished cancel is rare: other users' blocks stay as they were before the field.
    exclude = None if record.cancelledOn else {"cancelledOn"}
    return record.model_dump_json(indent=2, exclude=exclude).replace("\n", "\n    ")


def _account_json(record: AccountRecord) -> str:
    # A lost reset answer is rare: other accounts' blocks stay as they were before the field.
    exclude = None if record.resetUnsettled else {"resetUnsettled"}
    return record.model_dump_json(indent=2, exclude=exclude).replace("\n", "\n    ")


def _blocks(
    stored: dict[str, str] | None,
    records: Mapping[str, R],
    changed: Collection[str] | None,
    dump: Callable[[R], str],
) -> dict[str, str]:
    """Each record's JSON block: re-serialize only ``changed`` ones when the stored blocks are known."""
    if stored is None or changed is None:
        return {name: dump(record) for name, record in records.items()}
    blocks = dict(stored)
    for name in changed:
        record = records.get(name)
        if record is None:
            blocks.pop(name, None)
        else:
            blocks[name] = dump(record)
    return blocks


def _any_differs(
    stored: dict[str, str], records: Mapping[str, R], changed: Collection[str], dump: Callable[[R], str]
) -> bool:
    for name in changed:
        record = records.get(name)
        block = stored.get(name)
        if (record is None) != (block is None) or (record is not None and dump(record) != block):
            return True
    return False


def _section(key: str, blocks: dict[str, str], last: bool) -> str:
    end = "\n" if last else ",\n"
    if not blocks:
        return f'  "{key}": {{}}' + end
    body = ",\n".join(f"    {json.dumps(name)}: {blocks[name]}" for name in sorted(blocks))
    return f'  "{key}": {{\n' + body + "\n  }" + end


class FileStateStore(GuardedStore, StateStore):
    """State as one JSON document on local disk (``state/<environment>.json`` by default).

    The document is pretty-printed with sorted keys, one user per block, so a state file kept
    in Git diffs by user. The store remembers what it last read or wrote (keyed by the file's
    inode, mtime and size): a save re-serializes only the users it is told changed, and checks
    lineage and serial without re-reading a file nobody else touched.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._snapshot: _Snapshot | None = None

    def describe(self) -> str:
        return str(self.path)

    def lock(
        self,
        *,
        timeout: float = 0.0,
        purpose: str = "apply",
        on_wait: Callable[[str], None] | None = None,
    ) -> contextlib.AbstractContextManager[LockHolder]:
        """Hold the lock on the state file (:func:`reconcile.state.lock.state_lock`)."""
        return state_lock(self.path, timeout=timeout, purpose=purpose, on_wait=on_wait)

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

    def _valid_snapshot(self) -> _Snapshot | None:
        snap = self._snapshot
        if snap is not None and _file_signature(self.path) == snap.signature:
            return snap
        return None

    def read(self) -> State | None:
        try:
            raw = self.path.read_bytes()
            signature = _file_signature(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(describe_os_error(exc, "read state", self.path)) from None
        try:
            # The fast path: pydantic parses and validates in one pass (Rust), several times
            # quicker than json.loads + model_validate on a large desk.
            with gc_paused():
                state = State.model_validate_json(raw)
        except ValidationError:
            pass  # fall through to the slow path, which says exactly what is wrong
        else:
            # Each user and account record holds one "userId" key, each account one "accountId":
            # more of them means a name or an id repeated (a bad merge), which the parser above
            # silently resolved; look closer.
            if raw.count(b'"userId"') != len(state.users) + len(state.accounts) or raw.count(
                b'"accountId"'
            ) != len(state.accounts):
                refuse_repeated_keys(raw, str(self.path))
            refuse_shared_ids(state, str(self.path))
            share_fields_sets(_record_models(state))
            if signature is not None:
                self._snapshot = _Snapshot(signature, state.lineage, state.serial, None)
            return state
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
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
        refuse_shared_ids(state, str(self.path))
        if signature is not None:
            self._snapshot = _Snapshot(signature, state.lineage, state.serial, None)
        return state

    def read_header(self) -> tuple[str, int] | None:
        snap = self._valid_snapshot()
        if snap is not None:
            return (snap.lineage, snap.serial)
        state = self.read()
        return None if state is None else (state.lineage, state.serial)

    def _differs(
        self, state: State, changed: Collection[str] | None, changed_accounts: Collection[str] | None = None
    ) -> bool:
        snap = self._valid_snapshot()
        if snap is None or snap.users is None or snap.accounts is None or changed is None:
            return super()._differs(state, changed, changed_accounts)
        if changed_accounts is None:
            if set(snap.accounts) != set(state.accounts):
                return True
            changed_accounts = list(state.accounts)
        return _any_differs(snap.users, state.users, changed, _user_json) or _any_differs(
            snap.accounts, state.accounts, changed_accounts, _account_json
        )

    def _write(
        self, state: State, changed: Collection[str] | None, changed_accounts: Collection[str] | None = None
    ) -> None:
        snap = self._valid_snapshot() if changed is not None else None
        users = _blocks(snap and snap.users, state.users, changed, _user_json)
        accounts = _blocks(snap and snap.accounts, state.accounts, changed_accounts, _account_json)
        binding = "" if state.binding is None else f'  "binding": {state.binding.model_dump_json()},\n'
        text = (
            "{\n"
            # A state without accounts is written as before they existed.
            + (_section("accounts", accounts, last=False) if accounts else "")
            + binding
            + f'  "environment": {json.dumps(state.environment)},\n'
            f'  "format_version": {STATE_FORMAT_VERSION},\n'
            f'  "lineage": {json.dumps(state.lineage)},\n'
            f'  "serial": {state.serial},\n' + _section("users", users, last=True) + "}\n"
        )
        check_held(self.path)  # a lock file removed by hand must not let a second run write too
        try:
            atomic_write_text(self.path, text)
        except OSError as exc:
            # The rename is the last step: the file still holds its last complete version.
            raise StateError(
                describe_os_error(exc, "write state", self.path)
                + " (the state file keeps its last complete version; nothing saved before is lost)"
            ) from None
        signature = _file_signature(self.path)
        self._snapshot = (
            _Snapshot(signature, state.lineage, state.serial, users, accounts)
            if signature is not None
            else None
        )

    def replace(self, state: State, *, expected: tuple[str, int] | None) -> None:
        """Write exactly ``state`` (its serial too) if the file still holds ``expected``."""
        header = self.read_header()
        if header != expected:
            raise moved_under_write(self.describe(), header, expected)
        self._write(state, None)


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
