"""Recorded state (DESIGN §4): what the tool created or adopted, and what it last applied.

A :class:`StateStore` reads and writes one :class:`State` document per environment. Every
backend passes the shared contract test in ``tests/test_state_contract.py``.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import uuid
from collections.abc import Callable, Collection, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconcile.bulk import gc_paused, share_fields_sets
from reconcile.contact import ContactAddress
from reconcile.errors import StateError, describe_os_error, first_invalid
from reconcile.fsutil import atomic_write_text

if TYPE_CHECKING:
    # Only for annotations: reconcile.state.lock imports this module.
    from reconcile.state.audit import AuditLog
    from reconcile.state.journal import Journal
    from reconcile.state.lock import LockHolder

STATE_FORMAT_VERSION = 2
"""Written by this reconcile; version 1 (before :class:`StateBinding`) is read too."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactRecord(_Model, ContactAddress):
    """The contact fields last applied (same names as the manifest and the API)."""


class GrantRecord(_Model):
    """One entitlement of one user, by the manifest's entitlement name."""

    entitlementId: int
    status: Literal["granted", "awaiting_agreement"]
    updatedAt: datetime


class UserRecord(_Model):
    """One managed user: created by this tool or explicitly adopted."""

    userId: int
    origin: Literal["created", "adopted"] = "created"
    lifecycle: Literal["active", "cancelled"] = "active"
    email: str
    firstName: str
    lastName: str
    tradovateSubscriptionPlanId: int | None = None
    contact: ContactRecord | None = None
    entitlements: dict[str, GrantRecord] = Field(default_factory=dict)
    createdAt: datetime
    updatedAt: datetime
    cancelledAt: datetime | None = None
    cancelledOn: list[str] = Field(default_factory=list)
    """Hosts (endpoint labels) whose cancel-everything succeeded; sorted.

    ``lifecycle`` turns ``cancelled`` only once every host of the run did (DESIGN §7: live and
    demo); until then the user stays ``active`` and the next plan finishes the cancel.
    """


class StateBinding(_Model):
    """The organization and endpoint a state belongs to (DESIGN §8.10): set on first write."""

    endpoint: str
    """The endpoint label plans are bound to: a base URL, or ``sim:embedded``."""
    dataAccountId: int
    """The partner's data account (``partner.dataAccountId``): the organization."""

    def describe(self) -> str:
        return f"{self.endpoint} (partner data account {self.dataAccountId})"


class State(_Model):
    """The recorded state of one environment."""

    format_version: Literal[1, 2] = 2
    lineage: str = Field(default_factory=lambda: str(uuid.uuid4()))
    serial: int = 0
    environment: str
    binding: StateBinding | None = None
    """None only in state written before version 2, until its next write."""
    users: dict[str, UserRecord] = Field(default_factory=dict)

    @classmethod
    def empty(cls, environment: str) -> State:
        """A new, never-saved state (serial 0, fresh lineage)."""
        return cls(environment=environment)

    def content_equals(self, other: State) -> bool:
        """True when both hold the same binding and users (lineage and serial aside)."""
        return (
            self.environment == other.environment
            and self.binding == other.binding
            and self.users == other.users
        )


class StateStore(abc.ABC):
    """Where recorded state lives. Implementations must pass the store contract test."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A short, secret-free description for messages (a path or a masked DSN)."""

    @abc.abstractmethod
    def read(self) -> State | None:
        """Return a copy of the stored state, or None when nothing was ever saved."""

    @abc.abstractmethod
    def _write(self, state: State, changed: Collection[str] | None) -> None:
        """Persist ``state`` atomically (all of it, or nothing).

        ``changed`` names the users that differ from what is stored (None = unknown, write all);
        a backend that stores rows may write only those.
        """

    def read_header(self) -> tuple[str, int] | None:
        """Return the stored (lineage, serial), or None when nothing was ever saved."""
        state = self.read()
        return None if state is None else (state.lineage, state.serial)

    def _differs(self, state: State, changed: Collection[str] | None) -> bool:
        """True when ``state`` holds content the store does not have yet."""
        current = self.read()
        return current is None or not current.content_equals(state)

    _expected: StateBinding | None = None

    def bind(self, binding: StateBinding) -> None:
        """From now on, :meth:`load` refuses state bound elsewhere and binds unbound state here."""
        self._expected = binding

    def load(self, environment: str) -> State:
        """Return the stored state, or a new empty one for ``environment``.

        After :meth:`bind`, state bound to another organization or endpoint is refused, and state
        not bound yet (new, or written before version 2) comes back bound, for its next write.
        """
        state = self.read()
        if state is None:
            state = State.empty(environment)
        elif state.environment != environment:
            raise StateError(
                f"{self.describe()} holds state of environment {state.environment!r}, "
                f"not {environment!r}; pass --state for the right file"
            )
        expected = self._expected
        if expected is None or state.binding == expected:
            return state
        if state.binding is None:
            return state.model_copy(update={"binding": expected})
        raise StateError(
            f"{self.describe()} belongs to {state.binding.describe()}, not {expected.describe()}: "
            "its users are recorded there, and acting on them elsewhere would report or change "
            f"users that are not there. Pass --endpoint {state.binding.endpoint} (and the manifest "
            "of that organization) to use it where it belongs; if the organization really moved, "
            "move the state on purpose with `reconcile state rebind -f MANIFEST --endpoint URL`"
        )

    # What a run keeps with the state: its lock, intent journal and audit log. The file store
    # keeps them in files next to the state; a server backend keeps them on the server. Callers
    # never ask which backend they hold.

    def lock(
        self,
        *,
        timeout: float = 0.0,
        purpose: str = "apply",
        on_wait: Callable[[str], None] | None = None,
    ) -> contextlib.AbstractContextManager[LockHolder]:
        """Hold this state's exclusive lock for the ``with`` block.

        Waits up to ``timeout`` seconds (0 = fail at once, negative = forever), then raises
        :class:`~reconcile.errors.LockError` naming the holder; ``on_wait`` hears once who holds
        it when the wait begins.
        """
        raise StateError(f"{self.describe()} has no lock; refusing to use it for a run that writes")

    def read_lock(
        self, *, timeout: float = 0.0, on_wait: Callable[[str], None] | None = None
    ) -> contextlib.AbstractContextManager[LockHolder | None]:
        """Hold the lock while a reader (plan) reads, so it never sees a run half-way."""
        return self.lock(timeout=timeout, purpose="plan", on_wait=on_wait)

    def lock_holder(self) -> LockHolder | None:
        """Return who holds this state's lock, as far as the backend records it."""
        return None

    def journal(self, environment: str) -> Journal:
        """Return the intent journal kept with this state."""
        raise StateError(f"{self.describe()} keeps no journal; apply cannot run on it safely")

    def audit_log(self, environment: str, *, clock: Callable[[], datetime] | None = None) -> AuditLog:
        """Return the audit log kept with this state."""
        raise StateError(f"{self.describe()} keeps no audit log; apply cannot run on it")

    def local_dir(self) -> Path:
        """The local folder for files that go with this state (the embedded simulator's data)."""
        return Path("state")

    def save(self, state: State, changed: Collection[str] | None = None) -> State:
        """Persist ``state`` if it differs from what is stored; return what is stored now.

        The serial moves only when content changes; the lineage is never changed by a save;
        a save based on an older serial is refused (another run wrote in between). The
        caller's object is never mutated.
        """
        header = self.read_header()
        if header is not None:
            lineage, serial = header
            if lineage != state.lineage:
                raise StateError(
                    f"refusing to overwrite {self.describe()}: its lineage {lineage} "
                    f"differs from the state being saved ({state.lineage})"
                )
            if serial != state.serial:
                raise StateError(
                    f"refusing to overwrite {self.describe()}: it moved to serial {serial} "
                    f"since it was read at serial {state.serial}; another run wrote it"
                )
            if not self._differs(state, changed):
                return state.model_copy(update={"users": dict(state.users)})
        # A shallow copy with its own users mapping: deep-copying 100k records per batch would
        # cost more than the save. Records are shared with the caller's object; the store keeps
        # its own serialized copy, so nothing the caller does later reaches stored state.
        update = {"serial": state.serial + 1, "users": dict(state.users)}
        new = state.model_copy(update={**update, "format_version": STATE_FORMAT_VERSION})
        self._write(new, changed)
        return new


_CORRUPT_ADVICE = (
    "an id belongs to one trader, so acting on this state could change or cancel the wrong one. "
    "Restore it from version control or a backup (or correct it by hand, each name with the one "
    "userId the organization has for it), then check it with `reconcile plan --refresh`"
)


def refuse_shared_ids(state: State, where: str) -> None:
    """Raise :class:`StateError` when two recorded names share one ``userId`` (DESIGN §8.8)."""
    names_of: dict[int, str] = {}
    shared: dict[int, list[str]] = {}
    for name, record in state.users.items():
        first = names_of.setdefault(record.userId, name)
        if first != name:
            shared.setdefault(record.userId, [first]).append(name)
    if shared:
        found = "; ".join(
            f"userId {user_id} is recorded for {', '.join(sorted(names))}"
            for user_id, names in sorted(shared.items())
        )
        raise StateError(f"state {where} is corrupt: {found}; {_CORRUPT_ADVICE}")


def refuse_repeated_names(repeated: dict[str, list[object]], where: str) -> None:
    """Raise :class:`StateError` when a name is recorded more than once (with its userIds)."""
    if repeated:
        found = "; ".join(
            f"user {name!r} is recorded {len(ids)} times (userId {' and '.join(map(str, ids))})"
            for name, ids in sorted(repeated.items())
        )
        raise StateError(f"state {where} is corrupt: {found}; {_CORRUPT_ADVICE}")


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


def _user_id_of(value: object) -> object:
    return value.get("userId", "missing") if isinstance(value, dict) else "missing"


def refuse_repeated_keys(raw: bytes, where: str) -> None:
    """Raise :class:`StateError` when a state document repeats a user name or a user's userId.

    JSON parsers keep the last of repeated keys silently; in state that hides a second id.
    """
    try:
        data = json.loads(raw, object_pairs_hook=_keep_repeats)
    except (ValueError, UnicodeDecodeError):
        return  # the caller reports malformed JSON
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, _Keys):
        return
    repeated = {name: [_user_id_of(v) for v in values] for name, values in users.repeated.items()}
    for name, record in users.items():
        if isinstance(record, _Keys) and "userId" in record.repeated:
            repeated[name] = record.repeated["userId"]
    refuse_repeated_names(repeated, where)


def _record_models(state: State) -> Iterator[BaseModel]:
    for record in state.users.values():
        yield record
        if record.contact is not None:
            yield record.contact
        yield from record.entitlements.values()


class _Snapshot(NamedTuple):
    """What a FileStateStore last read or wrote: the file's identity and each user's JSON."""

    signature: tuple[int, int, int]
    lineage: str
    serial: int
    users: dict[str, str] | None
    """name -> serialized record; None until first needed (a read does not serialize)."""


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


class FileStateStore(StateStore):
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
        from reconcile.state.lock import state_lock

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
        from reconcile.state.lock import read_holder

        return read_holder(self.path)

    def journal(self, environment: str) -> Journal:
        """Return ``<state folder>/<environment>.journal.jsonl``."""
        from reconcile.state.journal import Journal, journal_path_for

        return Journal(journal_path_for(self.path, environment))

    def audit_log(self, environment: str, *, clock: Callable[[], datetime] | None = None) -> AuditLog:
        """Return ``<state folder>/<environment>.audit.jsonl``."""
        from reconcile.state.audit import AuditLog, audit_path_for

        return AuditLog(audit_path_for(self.path, environment), clock=clock)

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
            # Each record holds one "userId" key: more of them than users means a name or an id
            # repeated (a bad merge), which the parser above silently resolved; look closer.
            if raw.count(b'"userId"') != len(state.users):
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
        if isinstance(data, dict) and data.get("format_version") not in (None, 1, STATE_FORMAT_VERSION):
            raise StateError(
                f"state {self.path} has format_version {data.get('format_version')!r}; this "
                f"reconcile reads versions up to {STATE_FORMAT_VERSION}: upgrade reconcile"
            )
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

    def _differs(self, state: State, changed: Collection[str] | None) -> bool:
        snap = self._valid_snapshot()
        if snap is None or snap.users is None or changed is None:
            return super()._differs(state, changed)
        for name in changed:
            record = state.users.get(name)
            stored = snap.users.get(name)
            if (record is None) != (stored is None) or (record is not None and _user_json(record) != stored):
                return True
        return False

    def _write(self, state: State, changed: Collection[str] | None) -> None:
        snap = self._valid_snapshot()
        if snap is not None and snap.users is not None and changed is not None:
            users = dict(snap.users)
            for name in changed:
                record = state.users.get(name)
                if record is None:
                    users.pop(name, None)
                else:
                    users[name] = _user_json(record)
        else:
            users = {name: _user_json(record) for name, record in state.users.items()}
        body = ",\n".join(f"    {json.dumps(name)}: {users[name]}" for name in sorted(users))
        binding = "" if state.binding is None else f'  "binding": {state.binding.model_dump_json()},\n'
        text = (
            "{\n" + binding + f'  "environment": {json.dumps(state.environment)},\n'
            f'  "format_version": {STATE_FORMAT_VERSION},\n'
            f'  "lineage": {json.dumps(state.lineage)},\n'
            f'  "serial": {state.serial},\n'
            + ('  "users": {\n' + body + "\n  }\n" if users else '  "users": {}\n')
            + "}\n"
        )
        from reconcile.state.lock import check_held

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
            _Snapshot(signature, state.lineage, state.serial, users) if signature is not None else None
        )


def default_state_path(environment: str, base: str | os.PathLike[str] = "state") -> Path:
    """``state/<environment>.json``."""
    return Path(base) / f"{environment}.json"
