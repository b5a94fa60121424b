"""The file store's change log: the records each save changed, appended beside the state document.

``state/sim.json`` (the *base*) is the whole state as of some serial; ``state/sim.changes.jsonl``
holds what later saves changed. Its first line names the base it builds on; every other line is
one save: the header fields of the state it made and, per record mapping of :class:`State`
(``users``, and any other ``dict[str, Record]`` field), each changed record, or ``null`` for a
removed one. Reading folds the lines into the base in order. The file store rewrites the base and
removes the log (*compaction*) when the log grows as large as the base, on ``replace``, and when
an exclusive lock is released, so between runs the base alone is the state. See
``docs/internals.md`` ("The file store's change log") for why this is crash safe.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from reconcile.bulk import share_fields_sets
from reconcile.errors import StateError, first_invalid
from reconcile.fsutil import append_whole, atomic_write_text, fsync_dir
from reconcile.state.decode import LazyUser
from reconcile.state.model import State, StateBinding

_ADVICE = "restore the state folder from version control or a backup"


def _record_models() -> dict[str, type[BaseModel]]:
    fields = {}
    for name, field in State.model_fields.items():
        args = get_args(field.annotation)
        if get_origin(field.annotation) is dict and len(args) == 2 and issubclass(args[1], BaseModel):
            fields[name] = args[1]
    return fields


RECORD_MODELS: dict[str, type[BaseModel]] = _record_models()
"""The record mappings of :class:`State` (field name -> record model): what a save may change."""

_Entry: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "_Entry",
    __config__=ConfigDict(extra="forbid"),
    format_version=(Literal[1, 2], ...),
    lineage=(str, ...),
    serial=(int, ...),
    binding=(StateBinding | None, None),
    **{field: (dict[str, model | None], {}) for field, model in RECORD_MODELS.items()},  # type: ignore[valid-type]
)


class LogHead(NamedTuple):
    """The base a change log builds on."""

    lineage: str
    serial: int


def changes_path_for(state_path: Path) -> Path:
    """``state/sim.json`` -> ``state/sim.changes.jsonl``."""
    return state_path.with_name(state_path.stem + ".changes.jsonl")


def _head_line(head: LogHead) -> str:
    return json.dumps({"base": {"lineage": head.lineage, "serial": head.serial}}) + "\n"


def _parse_head(line: bytes, where: str, path: Path) -> LogHead:
    try:
        base = json.loads(line)["base"]
        return LogHead(str(base["lineage"]), int(base["serial"]))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise StateError(
            f"state {where}: line 1 of its change log {path} does not name the state it builds on; {_ADVICE}"
        ) from None


def fold_changes(path: Path, state: State, where: str) -> int:
    """Apply the change log at ``path`` to ``state`` (in place); return the bytes of it that count.

    A log built on another base (left by a compaction or ``state push`` interrupted after its
    rename) counts for nothing: 0. A last line without its newline is an append that never
    finished (its save never returned), so it is left out too.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StateError(f"state {where}: cannot read its change log {path}: {exc.strerror}") from None
    end = raw.rfind(b"\n") + 1
    lines = raw[:end].splitlines()
    if not lines or _parse_head(lines[0], where, path) != (state.lineage, state.serial):
        return 0
    for number, line in enumerate(lines[1:], start=2):
        try:
            entry = _Entry.model_validate_json(line)
        except ValidationError as exc:
            raise StateError(
                f"state {where}: line {number} of its change log {path} is not a valid change "
                f"({first_invalid(exc)}); {_ADVICE}"
            ) from None
        _apply(entry, state, f"state {where}: change {path}:{number}")
    return end


def record_models(users: Mapping[str, Any], accounts: Mapping[str, Any]) -> Iterator[BaseModel]:
    """Every model of these records (users with their contact and grants, then accounts)."""
    for record in users.values():
        if record is None or isinstance(record, LazyUser):
            continue  # a LazyUser shares its sets once read whole
        yield record
        if record.contact is not None:
            yield record.contact
        yield from record.entitlements.values()
    yield from (record for record in accounts.values() if record is not None)


def _apply(entry: Any, state: State, where: str) -> None:
    if entry.lineage != state.lineage or entry.serial != state.serial + 1:
        raise StateError(
            f"{where} follows lineage {entry.lineage} serial {entry.serial - 1}, "
            f"not lineage {state.lineage} serial {state.serial}; {_ADVICE}"
        )
    share_fields_sets(record_models(entry.users, entry.accounts), _SHARED)
    state.format_version = entry.format_version
    state.serial = entry.serial
    state.binding = entry.binding
    for field in RECORD_MODELS:
        records = getattr(state, field)
        for name, record in getattr(entry, field).items():
            if record is None:
                records.pop(name, None)
            else:
                records[name] = record


_SHARED: dict[frozenset[str], set[str]] = {}
"""The fields sets records read from change logs share (:func:`reconcile.bulk.share_fields_sets`)."""

_LAYOUT = re.compile(r"\n *")


def entry_line(state: State, changes: dict[str, dict[str, str | None]]) -> str:
    """One log line: ``state``'s header and the changed records (pretty JSON, or None = removed)."""
    parts = [
        f'"format_version":{state.format_version}',
        f'"lineage":{json.dumps(state.lineage)}',
        f'"serial":{state.serial}',
        '"binding":' + ("null" if state.binding is None else state.binding.model_dump_json()),
    ]
    for field, records in changes.items():
        body = ",".join(
            f"{json.dumps(name)}:{'null' if text is None else _LAYOUT.sub('', text)}"
            for name, text in records.items()
        )
        parts.append(f'"{field}":{{{body}}}')
    return "{" + ",".join(parts) + "}\n"


def append_entry(path: Path, line: str, *, start: LogHead | None, keep: int) -> int:
    """Append ``line`` durably; return the log's size after it.

    ``start`` set: begin a new log on that base (atomically replacing any log there). Otherwise
    the log's first ``keep`` bytes are what counts, and a torn append after them is cut first.
    """
    if start is not None:
        text = _head_line(start) + line
        atomic_write_text(path, text)
        return len(text.encode())
    fd = os.open(path, os.O_WRONLY)
    try:
        if os.fstat(fd).st_size != keep:
            os.ftruncate(fd, keep)
        data = line.encode()
        os.lseek(fd, keep, os.SEEK_SET)
        append_whole(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return keep + len(data)


def remove_log(path: Path) -> None:
    """Remove the change log (after its content reached the base), durably."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
