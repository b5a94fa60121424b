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
  of the file cannot change what they read;
- a document laid out one record per block, as reconcile writes it, is read a piece at a time
  (:func:`read_in_pieces`), so it never sits in memory whole (docs/internals.md says why the
  pieces read as the whole does); anything else is read whole (:func:`decode_document`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import weakref
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from itertools import compress, repeat
from operator import attrgetter, not_
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


_ESCAPED_LETTER = re.compile(rb"\\u00[4-7][0-9A-Fa-f]")


def escapes_a_letter(text: bytes | bytearray, start: int = 0, end: int = -1) -> bool:
    """Whether ``text[start:end]`` writes an ASCII letter as an escape (neither reconcile nor json.dumps do).

    ``"user\\u0049d"`` is a ``userId`` key the count of ``"userId"`` bytes misses: a repeated
    name or id it hides would be kept silently (the last wins), so the exact check must run.
    """
    end = len(text) if end < 0 else end
    first = text.find(b"\\", start, end)  # (one byte: a memchr, where the escape's four bytes are not)
    return first >= 0 and _ESCAPED_LETTER.search(text, first, end) is not None


class Refused(Exception):
    """The fast reader cannot vouch for this document: pydantic must read it."""


class _Lean(Struct):
    """What a cancelled user is checked for when read (the rest is checked on first use)."""

    userId: int
    lifecycle: Literal["active", "cancelled"] = "active"


_USER_DECODER = msgspec.json.Decoder(_User)
_LEAN_DECODER = msgspec.json.Decoder(_Lean)
_CANCELLED = "cancelled".__eq__
_PLACE = cast(UserRecord, None)
_LIFECYCLE = attrgetter("lifecycle")
_USER_ID = attrgetter("userId")
_IS_UNSET = UNSET.__eq__  # True for UNSET, NotImplemented otherwise: a C call, no Python frame


class _Shape(NamedTuple):
    """What records holding the same fields share: their fields set, and the defaults of the rest."""

    fields_set: set[str]
    missing: tuple[tuple[str, Callable[[], Any] | None, Any], ...]


_SHAPES: dict[tuple[Any, ...], _Shape] = {}


def _values(record: Struct, model: type[Any]) -> tuple[dict[str, Any], set[str]]:
    """The model's ``__dict__`` and fields set for ``record`` (the Struct of the same fields)."""
    values = _asdict(record)  # every field, in the model's order: UNSET where the document has none
    key = (model, *map(_IS_UNSET, values.values()))
    shape = _SHAPES.get(key)
    if shape is None:
        present = {f for f, v in values.items() if v is not UNSET}
        fields = model.model_fields
        missing = tuple((f, fields[f].default_factory, fields[f].default) for f in fields if f not in present)
        shape = _SHAPES[key] = _Shape(present, missing)
    for name, factory, default in shape.missing:
        values[name] = default if factory is None else factory()  # a new {} or [] each, as pydantic
    return values, shape.fields_set


_asdict = msgspec.structs.asdict


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

    def add_all(self, names: list[str], user_ids: list[int]) -> list[LazyUser]:
        """Note many cancelled users at once, as :meth:`add` does one (each write a C call: no frame)."""
        first = len(self.names)
        records = list(map(_new_lazy, repeat(LazyUser, len(names))))
        for slot, values in (
            ("__dict__", repeat(_LAZY_FIELDS)),
            ("__pydantic_fields_set__", repeat(None)),
            ("__pydantic_extra__", repeat(self)),
            ("__pydantic_private__", range(first, first + len(names))),
        ):
            deque(map(_setattr, records, repeat(slot), values), 0)
        self.names.extend(names)
        self.user_ids.extend(user_ids)
        return records

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
        self._run: tuple[int, dict[str, Raw]] = (-1, {})  # the run of records last read, decoded
        self._runs_read: set[int] = set()
        self._fd = file.fileno()
        self._identity = _identity(self._fd)
        self._builder = RecordBuilder()
        self._closing = weakref.finalize(self, file.close)

    def forget(self) -> None:
        """Leave the document open when this source goes (its records were not kept)."""
        self._closing.detach()

    def place(self, name: str, user_id: int, offset: int, length: int) -> LazyUser:
        """Note where a cancelled user's record is; return it, unread."""
        self.offsets.append(offset)
        self.lengths.append(length)
        return self.add(name, user_id)

    def group(self, names: list[str], user_ids: list[int], offset: int, length: int) -> list[LazyUser]:
        """Note cancelled users whose records are in the run of records at ``offset``; return them, unread.

        Where each lies in the run is found when the first of them is read (a negative length
        marks a run: the records' lengths are not known yet).
        """
        self.offsets.extend(repeat(offset, len(names)))
        self.lengths.extend(repeat(-length, len(names)))
        return self.add_all(names, user_ids)

    def text(self, index: int) -> bytes:
        """The record's JSON exactly as the document holds it (still this user's, still cancelled).

        A save writes this text back unread: an edit in place that the file's mtime does not
        show (one within the clock's tick, or an mtime set back as ``cp -p`` does) must not put
        another user's record under this name. (Not the ctime: the rename of a save over the
        document changes it too.)
        """
        data = self._read(index)
        try:
            lean = _LEAN_DECODER.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise self._changed(index) from None
        if lean.userId != self.user_ids[index] or lean.lifecycle != "cancelled":
            raise self._changed(index)
        return data

    def _read(self, index: int) -> bytes:
        """The record's text as the document holds it now (or held it, for the run last read)."""
        offset, length = self.offsets[index], self.lengths[index]
        if length < 0 and self._run[0] != offset:
            if offset in self._runs_read:  # read in another order than the document's: place it
                self._place_run(index)
                return self._read(index)
            self._runs_read.add(offset)
            self._run = (offset, self._members(index)[1])
        if length < 0:
            found = self._run[1].get(self.names[index])
            if found is None:
                raise self._changed(index)
            return bytes(found)
        data = os.pread(self._fd, length, offset)
        if len(data) != length or _identity(self._fd) != self._identity:
            raise self._changed(index)
        return data

    def _members(self, index: int) -> tuple[bytes, dict[str, Raw]]:
        """The run of records ``index`` is in, as the JSON object decoded, and its records by name."""
        data = os.pread(self._fd, -self.lengths[index], self.offsets[index])
        if len(data) != -self.lengths[index] or _identity(self._fd) != self._identity:
            raise self._changed(index)
        text = b"{" + data + b"}"
        try:
            return text, _MEMBERS.decode(text)
        except msgspec.DecodeError:
            raise self._changed(index) from None

    def _place_run(self, index: int) -> None:
        """Note exactly where each record of the run ``index`` is in lies (then each is read alone)."""
        offset, length = self.offsets[index], self.lengths[index]
        first = last = index  # the run's cancelled users were noted together: their indexes follow
        while first > 0 and self.offsets[first - 1] == offset and self.lengths[first - 1] == length:
            first -= 1
        while last < len(self.offsets) and self.offsets[last] == offset and self.lengths[last] == length:
            last += 1
        text, members = self._members(index)
        position, at = 1, first
        for name, raw in members.items():  # in the document's order, each after the one before
            record = bytes(raw)
            position = text.find(record, position)  # (found: the text decoded from is searched)
            if at < last and self.names[at] == name:
                self.offsets[at], self.lengths[at] = offset + position - 1, len(record)
                at += 1
            position += len(record)
        if at != last:
            raise self._changed(index)

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


_new_lazy = object.__new__


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


def _user_id(self: LazyUser) -> int:
    return cast(CancelledSource, self.__pydantic_extra__).user_ids[cast(int, self.__pydantic_private__)]


LazyUser.userId = property(_user_id)  # type: ignore[assignment]  # at hand unread (the id checks ask every record)
LazyUser.__eq__ = _equal  # type: ignore[assignment,method-assign]
LazyUser.model_fields_set = property(lambda self: self.materialize().model_fields_set)  # type: ignore[assignment,method-assign]


def decode_document(raw: bytes, file: BinaryIO, where: str) -> State:
    """Read a state document (``raw``, the content of the open ``file``) the fast way.

    Raises :class:`Refused` for anything it cannot vouch for; the caller then lets pydantic read
    it (slower, and exact about what is wrong). ``file`` stays open while cancelled users read
    lazily from it may be used.
    """
    try:
        doc = _HEADER.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # (nested deeper than Python recurses: json says so)
        raise Refused from None
    return _state(doc, _users(_set(doc.users, {}), raw, file, where))


def _state(doc: _Document, users: dict[str, UserRecord]) -> State:
    binding = _set(doc.binding, None)
    values = {
        "format_version": _set(doc.format_version, 2),
        "lineage": doc.lineage,
        "serial": _set(doc.serial, 0),
        "environment": doc.environment,
        "binding": None if binding is None else StateBinding(**msgspec.structs.asdict(binding)),
        "users": users,
        "accounts": _accounts(doc.accounts),
    }
    present = {f for f in doc.__struct_fields__ if getattr(doc, f) is not UNSET}
    return _built(State, values, present)


_HEADER = msgspec.json.Decoder(_Document)
_MEMBERS = msgspec.json.Decoder(dict[str, Raw])
_LEANS = msgspec.json.Decoder(dict[str, _Lean])
PIECE = 1 << 20
"""Bytes of users read (and held) at a time by :func:`read_in_pieces`."""


class _Layout(NamedTuple):
    """Where a pretty-printed document keeps its users: the text around them, and their span."""

    header: bytes  # the document with its users left out: ``"users": {}``
    start: int
    end: int
    separator: bytes  # what ends one user's record and begins the next's, at the users' depth


def _layout(fd: int, size: int) -> _Layout:
    """Find the users of a document laid out as ``json.dumps(indent=N)`` and reconcile write it."""
    head = os.pread(fd, min(size, PIECE), 0)
    if not head.startswith(b"{\n ") or (quote := head.find(b'"')) < 0 or head[2:quote].strip(b" "):
        raise Refused
    indent = head[2:quote]
    opener = b"\n" + indent + b'"users": {'
    at = head.find(opener)
    while at < 0 and len(head) < size:  # accounts come first (sorted keys): read past them
        searched = len(head)
        block = os.pread(fd, PIECE, searched)
        if not block:
            raise Refused  # cut short while read
        head += block
        at = head.find(opener, max(0, searched - len(opener)))
    tail = os.pread(fd, min(size, 4096), max(0, size - 4096))
    close = tail.rfind(b"\n" + indent + b"}")
    start, end = at + len(opener), size - len(tail) + close
    if at < 0 or close < 0 or tail[close + len(indent) + 2 :].strip() != b"}" or end < start:
        raise Refused  # users are not the last key, or not laid out one record per block
    header = head[:start] + tail[close:]
    return _Layout(header, start, end, b"},\n" + indent * 2 + b'"')


def _pieces(fd: int, layout: _Layout) -> Iterator[tuple[int, int, memoryview, dict[str, _Lean], int]]:
    """Each run of whole records: its offset and length, its JSON object, its records' ids by name,
    and its ``"userId"`` keys."""
    offset = position = layout.start
    run = bytearray(b"{")  # the run read so far, as the JSON object of its records once closed
    while position < layout.end:
        block = os.pread(fd, min(PIECE, layout.end - position), position)
        if not block:
            raise Refused
        position += len(block)
        run += block
        found = _close(run, layout.separator, whole=position >= layout.end)
        if found is not None:
            end, leans = found
            if escapes_a_letter(run, 0, end):  # a key the count below may miss: the whole read checks
                raise Refused
            yield offset, end - 2, memoryview(run)[:end], leans, run.count(b'"userId"', 0, end)
            offset += end - 1  # the run and the comma after it
            run = bytearray(b"{") + run[end:]


def _close(run: bytearray, separator: bytes, *, whole: bool) -> tuple[int, dict[str, _Lean]] | None:
    """Close the longest run of whole records in ``run`` (all of it when ``whole``); decode it lean.

    Returns where the closed object ends and its records' ids, or None when no record is known
    to end in ``run`` yet. A record saved as read from a document of another indent can hold the
    separator (a nested object's entries at the users' indent): a run cut there is no JSON
    object, so more is read and the cut tried again further on.
    """
    if whole:
        run.append(0x7D)  # }
        try:
            return len(run), _LEANS.decode(run)
        except msgspec.DecodeError:
            raise Refused from None
    comma = run.rfind(separator, 1) + 1
    if comma <= 0:
        return None
    run[comma] = 0x7D  # the comma after the last record closes the object instead
    try:
        return comma + 1, _LEANS.decode(memoryview(run)[: comma + 1])
    except msgspec.DecodeError:
        run[comma] = 0x2C  # ,
        return None


def read_in_pieces(file: BinaryIO, where: str) -> State:
    """Read a state document as :func:`decode_document` does, a piece at a time (never all of it at once).

    Raises :class:`Refused` for a document not laid out one record per block, as reconcile and
    ``json.dumps(indent=N)`` write it, and for anything :func:`decode_document` refuses.
    """
    fd = file.fileno()
    layout = _layout(fd, os.fstat(fd).st_size)
    try:
        doc = _HEADER.decode(layout.header)
    except (msgspec.DecodeError, RecursionError):
        raise Refused from None
    if doc.users is UNSET or doc.users or escapes_a_letter(layout.header):  # (users written twice, or
        raise Refused  # not where looked for; or a key the counts below may miss)
    source = DocumentSource(file, where)
    try:
        users, keys = _users_in_pieces(fd, layout, source)
        state = _state(doc, users)
        keys += layout.header.count(b'"userId"')
        accounts = len(state.accounts)
        if keys != len(users) + accounts or layout.header.count(b'"accountId"') != accounts:
            raise Refused  # a name or an id repeated: the whole read says which
    except (Refused, RecursionError):  # (nested deeper than Python recurses: the whole read says so)
        source.forget()  # the whole read that follows reads the same open file
        raise Refused from None
    return state


def _users_in_pieces(fd: int, layout: _Layout, source: DocumentSource) -> tuple[dict[str, UserRecord], int]:
    """The users of the document, and how many ``"userId"`` keys their records hold."""
    builder = RecordBuilder()
    users: dict[str, UserRecord] = {}
    full = _USER_DECODER.decode
    keys = 0
    try:
        for offset, length, run, leans, counted in _pieces(fd, layout):
            keys += counted
            names = list(leans)
            cancelled = list(map(_CANCELLED, map(_LIFECYCLE, leans.values())))
            if not all(cancelled):  # (a run of cancelled users only is not decoded again)
                users.update(dict.fromkeys(names, _PLACE))  # each user's place, in the document's order
                for name, text in compress(_MEMBERS.decode(run).items(), map(not_, cancelled)):
                    users[name] = builder.user(full(text))
            gone = list(compress(names, cancelled))
            ids = list(compress(map(_USER_ID, leans.values()), cancelled))
            lazies = source.group(gone, ids, offset, length)
            users.update(zip(gone, lazies, strict=True))
    except (msgspec.DecodeError, OverflowError):  # bytes skipped by the lean decode; an id over 64 bits
        raise Refused from None
    return users, keys


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
    except (ValueError, OverflowError, RecursionError):  # (an id beyond 64 bits: pydantic reads it)
        raise Refused from None
    return users


def _accounts(text: Raw | UnsetType) -> dict[str, AccountRecord]:
    if text is UNSET:
        return {}
    try:
        accounts = _ACCOUNTS.validate_json(bytes(text))  # (pydantic takes no Raw: it refused them all)
    except ValidationError:
        raise Refused from None
    share_fields_sets(accounts.values())
    return accounts


_ACCOUNTS = TypeAdapter(dict[str, AccountRecord])
