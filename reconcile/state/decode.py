"""Read a large state document fast and lean: msgspec validates, cancelled users stay on disk.

A desk that churns keeps every cancelled user in state forever (its name must never be reused,
its id must stay unique), so state grows while the manifest does not: 100k active users beside
400k cancelled ones. Parsing that into pydantic models took seconds and gigabytes. Here:

- msgspec checks every active record against a schema at least as strict as the models' (a
  record it refuses sends the caller to pydantic, which says exactly what is wrong; one it accepts
  pydantic accepts too, with equal values: tests/test_state_decode.py holds both to that);
- an active user becomes its :class:`UserRecord` directly (no second validation), sharing its
  timestamps, and its fields-set with every record of the same shape;
- a cancelled user becomes a :class:`LazyUser`: its name, ``userId`` and ``lifecycle`` are
  checked and at hand (the planner, the id checks and the budgets need no more), and the rest is
  checked and decoded from the document on first use (a refusal then says what a whole read
  says). The document stays open (its inode pinned) while such records live, so a later rewrite
  of the file cannot change what they read.
"""

from __future__ import annotations

import functools
import json
import os
import weakref
from array import array
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any, BinaryIO, Literal, NamedTuple, cast

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType
from pydantic import TypeAdapter, ValidationError
from pydantic_core import TzInfo

from reconcile.bulk import assemble, share_fields_sets
from reconcile.errors import StateError, first_invalid
from reconcile.state.model import AccountRecord, ContactRecord, GrantRecord, State, StateBinding, UserRecord

_WHEN = r"^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,6})?([Zz]|[+-]\d\d:\d\d)$"
When = Annotated[str, Meta(pattern=_WHEN)]
"""A timestamp in the one form both parsers read alike (others go to pydantic)."""


# Fields in the models' order (kw_only allows required after optional), so a record's values
# zip with its model's field names; UNSET marks what the document left out (pydantic's fields set).
class _Contact(Struct, forbid_unknown_fields=True, kw_only=True):
    phone: str
    streetAddress1: str
    streetAddress2: str | UnsetType | None = UNSET
    city: str
    state: str | UnsetType | None = UNSET
    postCode: str | UnsetType | None = UNSET
    country: str


class _Grant(Struct, forbid_unknown_fields=True):
    entitlementId: int
    status: Literal["granted", "awaiting_agreement"]
    updatedAt: When


class _User(Struct, forbid_unknown_fields=True, kw_only=True):
    userId: int
    origin: Literal["created", "adopted"] | UnsetType = UNSET
    lifecycle: Literal["active", "cancelled"] | UnsetType = UNSET
    email: str
    firstName: str
    lastName: str
    tradovateSubscriptionPlanId: int | UnsetType | None = UNSET
    contact: _Contact | UnsetType | None = UNSET
    entitlements: dict[str, _Grant] | UnsetType = UNSET
    createdAt: When
    updatedAt: When
    cancelledAt: When | UnsetType | None = UNSET
    cancelledOn: list[str] | UnsetType = UNSET


class _Binding(Struct, forbid_unknown_fields=True):
    endpoint: str
    dataAccountId: int


class _Document(Struct, forbid_unknown_fields=True):
    environment: str
    lineage: str  # pydantic would make one up: a document without is left to it
    format_version: Literal[1, 2] | UnsetType = UNSET
    serial: int | UnsetType = UNSET
    binding: _Binding | UnsetType | None = UNSET
    users: dict[str, Raw] | UnsetType = UNSET
    accounts: Raw | UnsetType = UNSET


class Refused(Exception):
    """The fast reader cannot vouch for this document: pydantic must read it."""


class _Lean(Struct):
    """What a cancelled user is checked for when read (the rest is checked on first use)."""

    userId: int
    lifecycle: Literal["active", "cancelled"] = "active"


_USER_DECODER = msgspec.json.Decoder(_User)
_LEAN_DECODER = msgspec.json.Decoder(_Lean)
_IS_UNSET = UNSET.__eq__  # True for UNSET, NotImplemented otherwise: a C call, no Python frame


class _Shape(NamedTuple):
    """What records holding the same fields share: their fields set, and the defaults of the rest."""

    fields_set: set[str]
    missing: tuple[tuple[str, Callable[[], Any] | None, Any], ...]


_SHAPES: dict[tuple[Any, ...], _Shape] = {}


def _values(record: Struct, model: type[Any]) -> tuple[dict[str, Any], set[str]]:
    """The model's ``__dict__`` and fields set for ``record`` (the Struct of the same fields)."""
    row = astuple(record)
    key = (model, *map(_IS_UNSET, row))
    shape = _SHAPES.get(key)
    if shape is None:
        present = {f for f, v in zip(record.__struct_fields__, row, strict=True) if v is not UNSET}
        fields = model.model_fields
        missing = tuple((f, fields[f].default_factory, fields[f].default) for f in fields if f not in present)
        shape = _SHAPES[key] = _Shape(present, missing)
    values = dict(zip(record.__struct_fields__, row, strict=False))  # as long by construction
    for name, factory, default in shape.missing:
        values[name] = default if factory is None else factory()  # a new {} or [] each, as pydantic
    return values, shape.fields_set


astuple = msgspec.structs.astuple


_built = assemble
"""A model from values already validated (tests/test_state_decode.py holds it to the validated one)."""


def _set(value: Any, default: Any) -> Any:
    return default if value is UNSET else value


_GRANT_FIELDS = set(GrantRecord.model_fields)


@functools.cache
def _zone(seconds: int) -> TzInfo:
    return TzInfo(seconds)


class RecordBuilder:
    """Turn validated records into models, sharing equal timestamps (one object per instant)."""

    def __init__(self) -> None:
        self._times: dict[str, datetime] = {}

    def when(self, text: str) -> datetime:
        found = self._times.get(text)
        if found is None:
            try:
                found = datetime.fromisoformat(text)
            except ValueError:
                raise Refused from None  # an impossible date: pydantic says which
            offset = found.utcoffset()
            if offset is not None:  # pydantic's own time zone class, so values repr alike too
                found = found.replace(tzinfo=_zone(int(offset.total_seconds())))
            self._times[text] = found
        return found

    def user(self, r: _User) -> UserRecord:
        values, fields_set = _values(r, UserRecord)
        times, when = self._times, self.when
        if type(r.contact) is _Contact:
            values["contact"] = _built(ContactRecord, *_values(r.contact, ContactRecord))
        if r.entitlements:
            grants = {}
            for name, g in r.entitlements.items():
                at = times.get(g.updatedAt) or when(g.updatedAt)
                grant = {"entitlementId": g.entitlementId, "status": g.status, "updatedAt": at}
                grants[name] = _built(GrantRecord, grant, _GRANT_FIELDS)
            values["entitlements"] = grants
        values["createdAt"] = times.get(r.createdAt) or when(r.createdAt)
        values["updatedAt"] = times.get(r.updatedAt) or when(r.updatedAt)
        if type(r.cancelledAt) is str:
            values["cancelledAt"] = when(r.cancelledAt)
        return _built(UserRecord, values, fields_set)


def _identity(fd: int) -> tuple[int, int]:
    """What an in-place write to the open file changes (a rename over it changes neither)."""
    st = os.fstat(fd)
    return (st.st_mtime_ns, st.st_size)


class CancelledSource:
    """Where the unread cancelled users of one read come from: what every store's source holds."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.names: list[str] = []
        self.user_ids = array("q")

    def add(self, name: str, user_id: int) -> LazyUser:
        """Note a cancelled user whose record is not read yet; return it, unread."""
        record = _new_lazy(LazyUser)
        _setattr(record, "__dict__", _LAZY_FIELDS)
        _setattr(record, "__pydantic_fields_set__", None)
        # The two slots pydantic keeps for extra fields and private attributes hold, until the
        # record is read, where it comes from (neither is in use: extra fields are forbidden).
        _setattr(record, "__pydantic_extra__", self)
        _setattr(record, "__pydantic_private__", len(self.names))
        self.names.append(name)
        self.user_ids.append(user_id)
        return record

    def text(self, index: int) -> bytes | None:
        """The record's JSON exactly as stored, where the store keeps JSON (None: it does not)."""
        return None

    def record(self, index: int) -> UserRecord:
        """Read the record whole (and check it)."""
        raise NotImplementedError

    def read_ahead(self, indexes: Sequence[int]) -> None:
        """Read these records whole now, together where the store can (:meth:`record` then has them)."""


def read_whole(records: Iterable[UserRecord]) -> None:
    """Read whole (in place) every unread record among ``records``, each source's together."""
    unread: dict[CancelledSource, list[LazyUser]] = {}
    for record in records:
        if type(record) is LazyUser:
            unread.setdefault(cast(CancelledSource, record.__pydantic_extra__), []).append(record)
    for source, lazies in unread.items():
        source.read_ahead([cast(int, lazy.__pydantic_private__) for lazy in lazies])
        for lazy in lazies:
            lazy.materialize()


class DocumentSource(CancelledSource):
    """The cancelled users of a state document: the open document and each record's place."""

    def __init__(self, file: BinaryIO, where: str) -> None:
        super().__init__(where)
        self.offsets = array("q")
        self.lengths = array("q")
        self._fd = file.fileno()
        self._identity = _identity(self._fd)
        self._builder = RecordBuilder()
        weakref.finalize(self, file.close)

    def place(self, name: str, user_id: int, offset: int, length: int) -> LazyUser:
        """Note where a cancelled user's record is; return it, unread."""
        self.offsets.append(offset)
        self.lengths.append(length)
        return self.add(name, user_id)

    def text(self, index: int) -> bytes:
        """The record's JSON exactly as the document holds it (still this user's, still cancelled).

        A save writes this text back unread: an edit in place that the file's mtime does not
        show (one within the clock's tick, or an mtime set back as ``cp -p`` does) must not put
        another user's record under this name. (Not the ctime: the rename of a save over the
        document changes it too.)
        """
        length = self.lengths[index]
        data = os.pread(self._fd, length, self.offsets[index])
        if len(data) != length or _identity(self._fd) != self._identity:
            raise self._changed(index)
        try:
            lean = _LEAN_DECODER.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise self._changed(index) from None
        if lean.userId != self.user_ids[index] or lean.lifecycle != "cancelled":
            raise self._changed(index)
        return data

    def record(self, index: int) -> UserRecord:
        text = self.text(index)
        try:
            record = self._builder.user(_USER_DECODER.decode(text))
        except (Refused, msgspec.ValidationError):
            record = self._validated(index, text)
        except msgspec.DecodeError:
            raise self._changed(index) from None
        if record.userId != self.user_ids[index] or record.lifecycle != "cancelled":
            raise self._changed(index)
        return record

    def _validated(self, index: int, text: bytes) -> UserRecord:
        """The record as pydantic reads it, or its refusal in the words a whole read would use."""
        try:  # as the whole read does it (json, then pydantic's Python mode: its messages differ)
            return UserRecord.model_validate(json.loads(text))
        except ValidationError as exc:
            raise StateError(
                f"state {self.where} is not a valid state document: users.{self.names[index]}."
                f"{first_invalid(exc)}"
            ) from None

    def _changed(self, index: int) -> StateError:
        return StateError(
            f"state {self.where} changed in place while reconcile used it (user "
            f"{self.names[index]!r} reads differently now): run the command again, and let only "
            "reconcile write the state file while it runs"
        )


_setattr = object.__setattr__
_LAZY_FIELDS = {"lifecycle": "cancelled"}
"""Every unread record's ``__dict__`` (never written to: a write reads the record first)."""


def _new_lazy(cls: type[LazyUser]) -> LazyUser:
    return cls.__new__(cls)


class LazyUser(UserRecord):
    """A cancelled user read from a document: ``userId`` and ``lifecycle`` now, the rest on first use.

    On first use of anything else it becomes a plain :class:`UserRecord` (its class changes in
    place), so identity, equality and serialization are a UserRecord's from then on.
    """

    def materialize(self) -> UserRecord:
        """Read the record whole (in place); return it."""
        if type(self) is LazyUser:
            source, index = self.__pydantic_extra__, self.__pydantic_private__
            assert isinstance(source, CancelledSource) and isinstance(index, int)
            record = source.record(index)
            object.__setattr__(self, "__dict__", record.__dict__)
            object.__setattr__(self, "__pydantic_fields_set__", record.__pydantic_fields_set__)
            object.__setattr__(self, "__pydantic_extra__", None)
            object.__setattr__(self, "__pydantic_private__", None)
            object.__setattr__(self, "__class__", UserRecord)
        return self

    def raw_json(self) -> bytes | None:
        """The record's JSON as read (None once it was read whole: then serialize it)."""
        if type(self) is not LazyUser:
            return None
        source, index = self.__pydantic_extra__, self.__pydantic_private__
        assert isinstance(source, CancelledSource) and isinstance(index, int)
        return source.text(index)

    def __getattr__(self, name: str) -> Any:
        if type(self) is LazyUser and name == "userId":
            source = self.__pydantic_extra__
            assert isinstance(source, CancelledSource)
            return source.user_ids[self.__pydantic_private__]
        return getattr(self.materialize(), name)


def _reading_first(name: str) -> Callable[..., Any]:
    def method(self: LazyUser, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.materialize(), name)(*args, **kwargs)

    method.__name__ = name
    return method


# Everything pydantic does with a model reads its __dict__ directly: read the record first.
for _name in (
    "__repr__", "__str__", "__repr_args__", "__iter__", "__getstate__", "__copy__",
    "__deepcopy__", "__setattr__", "__delattr__", "__rich_repr__", "__pretty__", "model_copy",
    "model_dump", "model_dump_json", "__reduce__", "__reduce_ex__",
):  # fmt: skip
    setattr(LazyUser, _name, _reading_first(_name))


def _equal(self: LazyUser, other: object) -> bool:
    if isinstance(other, LazyUser):
        mine, theirs = self.raw_json(), other.raw_json()
        if mine is not None and mine == theirs:
            return True  # the same text: the same record, neither read whole for it
        other.materialize()
    return UserRecord.__eq__(self.materialize(), other)


LazyUser.__eq__ = _equal  # type: ignore[assignment,method-assign]
LazyUser.model_fields_set = property(lambda self: self.materialize().model_fields_set)  # type: ignore[assignment,method-assign]


def decode_document(raw: bytes, file: BinaryIO, where: str) -> State:
    """Read a state document (``raw``, the content of the open ``file``) the fast way.

    Raises :class:`Refused` for anything it cannot vouch for; the caller then lets pydantic read
    it (slower, and exact about what is wrong). ``file`` stays open while cancelled users read
    lazily from it may be used.
    """
    try:
        doc = msgspec.json.decode(raw, type=_Document)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise Refused from None
    binding = _set(doc.binding, None)
    values = {
        "format_version": _set(doc.format_version, 2),
        "lineage": doc.lineage,
        "serial": _set(doc.serial, 0),
        "environment": doc.environment,
        "binding": None if binding is None else StateBinding(**msgspec.structs.asdict(binding)),
        "users": _users(_set(doc.users, {}), raw, file, where),
        "accounts": _accounts(doc.accounts),
    }
    present = {f for f in doc.__struct_fields__ if getattr(doc, f) is not UNSET}
    return _built(State, values, present)


def _users(records: dict[str, Raw], raw: bytes, file: BinaryIO, where: str) -> dict[str, UserRecord]:
    builder = RecordBuilder()
    source = DocumentSource(file, where)
    users: dict[str, UserRecord] = {}
    lean, full = _LEAN_DECODER.decode, _USER_DECODER.decode
    view = memoryview(raw)
    position = 0
    try:
        for name, text in records.items():
            record = lean(text)
            if record.lifecycle != "cancelled":
                users[name] = builder.user(full(text))
                continue
            # Records are in the document's order, each after the one before; a record is an
            # object, so it starts at the first brace after the last (unless its name holds one).
            size = len(text)
            position = raw.index(b"{", position)
            if view[position : position + size] != cast(Any, text):
                position = raw.find(text, position)
            users[name] = source.place(name, record.userId, position, size)
            position += size
    except (msgspec.ValidationError, ValueError):
        raise Refused from None
    return users


def _accounts(text: Raw | UnsetType) -> dict[str, AccountRecord]:
    if text is UNSET:
        return {}
    try:
        accounts = _ACCOUNTS.validate_json(text)
    except ValidationError:
        raise Refused from None
    share_fields_sets(accounts.values())
    return accounts


_ACCOUNTS = TypeAdapter(dict[str, AccountRecord])
