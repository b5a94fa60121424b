"""Load manifest files into a validated :class:`Manifest`, with FILE:LINE:COL for every problem.

How files combine
    ``load_manifest`` takes files and folders (``-f`` may be repeated). A folder stands for every
    ``*.yaml`` / ``*.yml`` file below it, recursively, sorted by path; names starting with ``.``
    are skipped. Each file holds one YAML mapping. ``users`` lists are concatenated in that order.
    Any other top-level key (apiVersion, environment, partner, defaults, policy, backend) may be
    written in several files only with the same value; different values are an error naming both
    places. A user name or email (ignoring case) defined twice is an error naming both places.

Strict YAML
    Scalars follow YAML 1.2's core schema: ``country: NO`` is the string ``"NO"`` (Norway), ``yes``
    and ``on`` are strings. ``postCode: 01234`` is the number 1234, and a number where a string is
    expected is an error asking to quote it. Duplicate keys are errors (PyYAML keeps the last one
    silently). Aliases (``*name``) are refused outright: manifests do not need them, and refusing
    them shuts out "billion laughs" bombs. One YAML document per file.

Limits
    File size (:data:`MAX_FILE_BYTES`), users (:data:`MAX_USERS`), items of any other collection
    (:data:`MAX_ITEMS`), values per user entry (:data:`MAX_USER_VALUES`), value length
    (:data:`MAX_SCALAR_CHARS`) and depth (:data:`MAX_DEPTH`). A file that might break one is
    checked first by :func:`_scan_events`, in constant memory, which stops at the first excess;
    the others are small or sparse enough that parsing them is cheap, and the users limit is
    checked on the result. At most :data:`MAX_PROBLEMS` problems are listed. Under a memory cap
    (``ulimit -v``) a file goes to yaml-rs only if it fits (:func:`_fits_in_memory`: a failed
    allocation there aborts the process); running out of memory later (a Python MemoryError) is
    reported too, at the largest file.

Speed
    The fast path (:func:`_load_fast`) parses a block-style users list with yaml-rs (Rust) a piece
    of whole items at a time (:mod:`reconcile.manifest.chunks`) and validates each piece with the
    cyclic GC paused, so the raw parse of a big desk (~11 bytes per byte of YAML) never lives
    whole. At the first sign of a problem, or of anything it cannot judge, it gives way to the
    slow path, which parses each file whole and reports every problem as described here; a valid
    manifest comes out the same either way (tests/test_loader_fast.py). Positions cost a second,
    slower parse (PyYAML's composer, which keeps marks), so they are computed only when
    something must be located: a problem, a warning, or :attr:`LoadedManifest.locations` on
    first use.

Digest
    :attr:`LoadedManifest.digest` is a sha256 over the sorted sha256s of the files' bytes: any byte
    change (even a comment) changes it, while the order of ``-f`` options and the files' names do
    not. A saved plan is bound to it ("the manifest changed").
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import os
import re
import resource
import types
import typing
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import yaml_rs
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from reconcile.bulk import gc_paused, share_fields_sets
from reconcile.errors import Location, ManifestError, Problem, counted, did_you_mean
from reconcile.manifest import models as manifest_module
from reconcile.manifest.chunks import UsersBlock, pieces, users_block
from reconcile.manifest.models import (
    CROSS_CHECKS_BY_CALLER,
    NAME_PATTERN,
    PASSWORD_EXPECTED,
    TEXT_PATTERN,
    UNSAFE_IN_NAMES,
    UNSAFE_IN_TEXT,
    AccountKeys,
    CrossCheck,
    CrossProblem,
    KnownNames,
    Manifest,
    User,
    UserKeys,
    cross_reference_problems,
    dotted_path,
)

MAX_FILE_BYTES = 128 * 1024 * 1024
"""Largest manifest file read (a 100k-user manifest is about 35 MB: more users go in more files)."""

MAX_DEPTH = 32
"""Deepest nesting allowed; a manifest needs 5 levels (users → user → contact → field)."""

MAX_USERS = 1_000_000
"""Most users one manifest file may list (and all files together hold).

What ``plan`` of a new desk fits in 4 GB, measured by bench/plan.py: 1,000,000 users of the
README's shape (ten files of 100k) peak at 3.9 GB and take 0.92x the time of ten 100k plans."""

MAX_ITEMS = manifest_module.MAX_ITEMS
"""Most items in any other list or mapping (entitlements, a user's keys, …)."""

MAX_USER_VALUES = 1_000
"""Most values (keys included) in one user entry; a user needs about 30."""

MAX_SCALAR_CHARS = 4_096
"""Longest single value; the longest a model accepts is 64 characters."""

MAX_LINE_CHARS = 64 * 1024
"""Longest line (a user written on one line takes a few hundred characters).

Checked before any parser runs: yaml-rs grows a buffer as long as a token (a comment, a value, a
whole flow list on one line), and a failed allocation there aborts the process."""

MANIFEST_SUFFIXES = (".yaml", ".yml")

_Path = tuple[str | int, ...]

# yaml-rs recurses on the C stack and crashes on some deeply nested input (thousands of levels).
# A block collection starts at a column greater than its parent's, so without deep indentation or
# compact indicators stacked on one line ("- - - x", "? ? x") block nesting stays shallow; flow
# nesting ([[[...) yaml-rs bounds itself. Files that might nest deeper go through PyYAML's
# iterative event scanner first, which refuses them with a position. False alarms only cost speed.
# (Plain substring/regex checks with a literal start: a full-text scan of 35 MB takes ~0.03 s.)
_DEEP_INDENT = "\n" + " " * MAX_DEPTH
# One pattern per indicator: a literal first character lets the regex engine skip to it (5x faster
# over a big desk than one pattern starting with [-?]).
_STACKED_INDICATORS = tuple(
    re.compile(rf"{first}[ \t]+[-?](?:[ \t]|$)", re.MULTILINE) for first in ("-", r"\?")
)


def _maybe_deep(text: str) -> bool:
    return (
        _DEEP_INDENT in text
        or text.startswith(_DEEP_INDENT[1:])
        or "\t" in text
        or any(stacked.search(text) is not None for stacked in _STACKED_INDICATORS)
    )


# The limits (items, value length, …) are checked by the event scan, which costs ~1 s per million
# values: too slow for every big desk. A file goes through it when it might break one: a very
# long line (a giant value, or `users: [1,1,1,…]` on one line), or, past a size where building it
# could cost hundreds of MB, density: more than one line or comma per 16 characters (a real desk
# spends ~25 characters per line; `- 1` lines spend 4). A smaller file is parsed at once: its
# size bounds what it can build, and the users limit is checked on the result.
_DENSE_FROM_CHARS = 8 * 1024 * 1024
_DENSE_AFTER = 100_000
_DENSE_CHARS = 16
_LONG_LINE_WINDOW = MAX_SCALAR_CHARS // 2
"""A line longer than MAX_SCALAR_CHARS fills one whole window of this size without a newline."""


def _maybe_over_limits(text: str) -> bool:
    if len(text) > _DENSE_FROM_CHARS:
        separators = text.count("\n") + text.count(",")
        if separators > _DENSE_AFTER and len(text) < _DENSE_CHARS * separators:
            return True
    window = _LONG_LINE_WINDOW
    return any(text.find("\n", i, i + window) == -1 for i in range(0, len(text) - window + 1, window))


_RS_POSITION = re.compile(r"at line (\d+), column (\d+)")

_SAFE_LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class LoadedManifest:
    """A validated manifest and what it was made from."""

    manifest: Manifest
    digest: str
    files: tuple[str, ...]
    warnings: tuple[Problem, ...]
    locations: Mapping[str, Location] = field(repr=False, compare=False)
    """User name → where the user's entry starts. Computed on first use (re-parses with marks)."""


def _digest(file_sha256s: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for file_digest in sorted(file_sha256s):
        digest.update(file_digest.encode())
    return digest.hexdigest()


def files_digest(loaded: LoadedManifest) -> str | None:
    """The digest of ``loaded``'s files as they are now (None: one is gone or unreadable).

    Equal to ``loaded.digest`` when they still hold what was loaded.
    """
    try:
        return _digest(hashlib.sha256(Path(name).read_bytes()).hexdigest() for name in loaded.files)
    except OSError:
        return None


def load_manifest(paths: Sequence[str | Path], *, today: datetime.date | None = None) -> LoadedManifest:
    """Load, merge and validate manifest files and folders; raise ManifestError listing every problem.

    ``today`` (UTC, from the caller's clock) refuses a ``resetTo`` in the future; None skips that
    rule (a manifest read only for its environment or backend).
    """
    problems: list[Problem] = []
    files = _expand(paths, problems)
    try:
        sources: list[_Source] = []
        for name in files:
            source = _read(name, problems)
            if source is not None:
                sources.append(source)
        if not sources and not problems:
            raise ManifestError([Problem(None, "", "no manifest files given")])

        with gc_paused():
            return _load(sources, problems, unreadable=bool(problems), today=today)
    except MemoryError:
        # Python's allocations fail cleanly; by the time this runs, what they built is gone.
        raise _too_large(files) from None


def manifest_schema() -> dict[str, Any]:
    """Return the manifest's JSON Schema, generated from the models."""
    schema = Manifest.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "reconcile manifest (apiVersion: reconcile/v1)"
    return schema


# ---------------------------------------------------------------------------------------- files


def _expand(paths: Sequence[str | Path], problems: list[Problem]) -> list[str]:
    seen: set[Path] = set()
    out: list[str] = []

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(str(path))

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                (
                    p
                    for p in path.rglob("*")
                    if p.suffix in MANIFEST_SUFFIXES
                    and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                ),
                key=lambda p: p.relative_to(path).as_posix(),
            )
            if not found:
                problems.append(Problem(None, "", f"{path}: folder holds no *.yaml or *.yml files"))
            for p in found:
                add(p)
        elif path.is_file():
            add(path)
        elif path.exists():
            problems.append(Problem(None, "", f"{path}: not a regular file or folder"))
        else:
            problems.append(Problem(None, "", f"{path}: no such file or folder"))
    return out


@dataclass
class _Source:
    """One manifest file: its text, its data once parsed, and its nodes when positions are needed."""

    name: str
    sha256: str
    """Of the file's bytes (the bytes themselves are not kept: 35 MB on a 100k-user desk)."""
    text: str
    data: Any = None
    _root: yaml.Node | None = None
    _wanted: set[_Path] = field(default_factory=set)
    _covered: frozenset[_Path] | None = None

    def want(self, paths: Iterable[_Path]) -> None:
        """Announce paths about to be located, so a big file is walked once for all of them."""
        covered = self._covered or frozenset()
        self._wanted.update(p for p in paths if p not in covered)

    def root(self, path: _Path = ()) -> yaml.Node | None:
        """The node tree (with marks) holding at least ``path``; None if PyYAML cannot read it.

        A small file is composed whole, once. A big one is composed only along the wanted paths
        (:func:`_compose_pruned`): composing 500k users takes seconds and hundreds of MB.
        """
        if len(self.text) <= _PRUNE_FROM:
            if self._root is None:
                self._root = _compose(self.text)
            return self._root
        if self._covered is None or path not in self._covered:
            self._wanted.add(path)
        if self._wanted:  # paths not composed yet: one walk for all of them
            self._covered = (self._covered or frozenset()) | self._wanted
            self._wanted = set()
            self._root = _compose(self.text, self._covered)
        return self._root

    def at(self, line: int, column: int) -> Location:
        return Location(self.name, line, column)


_PRUNE_FROM = 1024 * 1024
"""Files larger than this (in characters) are composed only along the paths to locate."""


def _compose(text: str, wanted: frozenset[_Path] | None = None) -> yaml.Node | None:
    try:
        if wanted is None:
            return yaml.compose(text, Loader=_SAFE_LOADER)
        return _compose_pruned(text, wanted)
    except yaml.YAMLError:
        # yaml-rs read it but PyYAML cannot (e.g. a surrogate-pair escape such as
        # "\ud800\udc00"): problems then point at the file's start.
        return None


def _without_union_tags(path: _Path) -> _Path:
    return tuple(p for p in path if p not in _UNION_TAGS)


def _stub(event: Any) -> yaml.Node:
    """A node for ``event`` with its marks; a collection's items are added by the caller."""
    tag: str = event.tag or ""
    start: Any = event.start_mark
    end: Any = event.end_mark
    if isinstance(event, yaml.ScalarEvent):
        return yaml.ScalarNode(tag, event.value, start, end, event.style)
    if isinstance(event, yaml.MappingStartEvent):
        return yaml.MappingNode(tag, [], start, None)
    return yaml.SequenceNode(tag, [], start, None)


def _compose_pruned(text: str, wanted: frozenset[_Path]) -> yaml.Node | None:
    """Compose only the nodes on ``wanted`` paths (and their keys); stop once all are seen.

    A list on the way keeps its length (``None`` for items not built), so indices still work in
    :func:`_locate`. Pydantic's union tags (``from-file``…) are not in the data: paths are also
    wanted without them, as :func:`_locate` skips them.
    """
    prefixes, below, remaining = _pruning_index(wanted)
    root: yaml.Node | None = None
    # Open built collections: (path, node, pending key label, pending key node).
    stack: list[list[Any]] = []
    skipping = 0  # depth inside a collection that is not built
    event: Any
    for event in yaml.parse(text, Loader=_SAFE_LOADER):
        if skipping:
            if isinstance(event, yaml.CollectionStartEvent):
                skipping += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                skipping -= 1
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            # Closed: what was wanted below it and not seen is not in the file (a missing key).
            remaining.difference_update(below.get(stack.pop()[0], ()))
            if not remaining:
                break
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        path, key_event = _event_path(stack, event)
        build = path is not None and path in prefixes
        if key_event:
            frame = stack[-1]
            frame[2] = path[-1] if path is not None else None
            frame[3] = _stub(event) if build else False
            if isinstance(event, yaml.CollectionStartEvent):
                skipping = 1
            continue
        node: yaml.Node | None = None
        if build:
            node = _stub(event)
            remaining.discard(path)
        if stack:
            _attach(stack[-1], node)
        else:
            root = node
        if isinstance(event, yaml.CollectionStartEvent):
            if node is None:
                skipping = 1
            else:
                stack.append([path, node, None, None])
        if not remaining:
            break
    return root


def _pruning_index(wanted: frozenset[_Path]) -> tuple[set[_Path], dict[_Path, list[_Path]], set[_Path]]:
    """Return the paths to build, the leaves under each inner path, and the leaves still to see."""
    paths = wanted | {_without_union_tags(p) for p in wanted}
    prefixes = {p[:i] for p in paths for i in range(len(p) + 1)}
    below: dict[_Path, list[_Path]] = {}  # inner path → the leaves under it
    for leaf in paths:
        for i in range(len(leaf)):
            below.setdefault(leaf[:i], []).append(leaf)
    remaining = prefixes - below.keys()  # the leaves: found when they start
    return prefixes, below, remaining


def _event_path(stack: list[list[Any]], event: Any) -> tuple[_Path | None, bool]:
    """Return the path of the node ``event`` starts (None: under a key not built), and if it is a key."""
    if not stack:
        return (), False
    parent, container, pending_label, pending_key = stack[-1]
    if isinstance(container, yaml.SequenceNode):
        return (*parent, len(container.value)), False
    if pending_label is None and pending_key is None:  # a key
        label = event.value if isinstance(event, yaml.ScalarEvent) else None
        return ((*parent, label) if label is not None else None), True
    return ((*parent, pending_label) if pending_label is not None else None), False


def _attach(frame: list[Any], node: yaml.Node | None) -> None:
    """Add ``node`` to the open collection ``frame``: to a mapping only when its key was built."""
    if isinstance(frame[1], yaml.SequenceNode):
        frame[1].value.append(node)
        return
    if node is not None and frame[3]:
        frame[1].value.append((frame[3], node))
    frame[2], frame[3] = None, None


def _read(name: str, problems: list[Problem]) -> _Source | None:
    try:
        with open(name, "rb") as handle:
            # The size first: a file far over the limit is refused without reading it.
            size = os.fstat(handle.fileno()).st_size
            too_big = size > MAX_FILE_BYTES
            # As much as fstat says (+1 to notice growth): a buffer of MAX_FILE_BYTES for a small
            # file would count against a memory cap.
            raw = b"" if too_big else handle.read(size + 1)
            if len(raw) > size:  # grown since, or a special file that reports no size
                raw += handle.read(MAX_FILE_BYTES + 1 - len(raw))
    except OSError as exc:
        problems.append(Problem(None, "", f"{name}: cannot read the file: {exc.strerror}"))
        return None
    if too_big or len(raw) > MAX_FILE_BYTES:
        problems.append(
            Problem(
                Location(name, 1, 1),
                "",
                f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: "
                "split the users over several files in a folder",
            )
        )
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        problems.append(
            Problem(
                Location(name, line, column),
                "",
                f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}; binary data?): "
                "a manifest is a UTF-8 YAML file",
            )
        )
        return None
    if "\x00" in text:
        offset = text.index("\x00")
        line = text.count("\n", 0, offset) + 1
        problems.append(
            Problem(
                Location(name, line, offset - (text.rfind("\n", 0, offset) + 1) + 1),
                "",
                "contains a NUL character (binary data?): a manifest is a UTF-8 YAML file",
            )
        )
        return None
    return _Source(name, hashlib.sha256(raw).hexdigest(), text.removeprefix("\ufeff"))


# --------------------------------------------------------------------------------------- parsing


def _parse(source: _Source) -> list[Problem]:
    """Parse one file into ``source.data``; return its problems (syntax, shape, duplicates, aliases)."""
    long_line = _first_long_line(source.text)
    if long_line is not None:
        return [Problem(source.at(long_line, MAX_LINE_CHARS + 1), "", _too_long_line())]
    if _may_break_limits(source.text):
        scanned = _scan_events(source)
        if scanned:
            return scanned
    if not _fits_in_memory(source.text):
        raise MemoryError  # before yaml-rs: its failed allocations abort the process
    try:
        data = _rs_loads(source.text)
    except _RS_ERRORS as exc:
        return _explain_parse_failure(source, str(exc))
    if data is None:
        return [Problem(source.at(1, 1), "", _EMPTY)]
    if not isinstance(data, dict):
        # yaml-rs answers a list both for a top-level sequence and for several documents.
        return _scan_events(source) or [Problem(source.at(1, 1), "", _not_mapping(data))]
    source.data = data
    return []


def _may_break_limits(text: str) -> bool:
    """Whether ``text`` must go through :func:`_scan_events` before yaml-rs (see Limits above)."""
    return _maybe_deep(text) or _maybe_over_limits(text)


# TypeError: a complex key (``? {a: b}``) that Python cannot hash (found by test_loader_fuzz).
_RS_ERRORS = (yaml_rs.YAMLDecodeError, ValueError, RecursionError, TypeError)


def _rs_loads(text: str, duplicates: yaml_rs.DuplicateKeyPolicy = yaml_rs.DuplicateKeyPolicy.Error) -> Any:
    """Parse YAML text with yaml-rs as manifests are read: no dates, no aliases, duplicate keys refused."""
    return yaml_rs.loads(
        text,
        parse_datetime=False,
        alias_limits=yaml_rs.AliasLimits(max_total_replayed_events=0),
        duplicate_key_policy=duplicates,
    )


def _too_large(files: Sequence[str]) -> ManifestError:
    """Refuse a manifest that does not fit in the memory this process may use, at its largest file."""
    sizes = {name: _size(name) for name in files}
    largest = max(files, key=sizes.__getitem__)
    return ManifestError(
        [
            Problem(
                Location(largest, 1, 1),
                "",
                f"the manifest is too large to load in the memory available "
                f"({sum(sizes.values()) / 1e6:,.0f} MB in {counted(len(files), 'file')}): "
                "split the users into manifests with their own "
                f"state (at most {MAX_USERS:,} users each; see Limits in the README), or allow "
                "the process more memory",
            )
        ]
    )


def _size(name: str) -> int:
    try:
        return os.stat(name).st_size
    except OSError:
        return 0


# What yaml-rs needs (measured, with margin): its copies of the text (it reserves 3 bytes a
# character, more while a token grows: hence MAX_LINE_CHARS) and the nodes it builds, ~100 bytes
# each once in Python. A node is a key, a value, a list item or a flow collection: each needs a
# ':', '-', ',', '[', '{' or '?', so counting those bounds them from above (comments and quoted
# text only make the estimate safer).
_RS_BYTES_PER_CHAR = 6
_RS_BYTES_PER_NODE = 128


def _fits_in_memory(text: str) -> bool:
    """Whether yaml-rs can parse ``text`` within the address-space limit (``ulimit -v``), if any."""
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit == resource.RLIM_INFINITY:
        return True  # no cap to stay under: past the machine's memory, the OS decides
    try:
        with open("/proc/self/statm") as statm:
            used = int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return True  # not Linux: cannot tell, parse as before
    nodes = 2 * (text.count(":") + text.count("?")) + sum(text.count(c) for c in "-,[{") + 1
    return used + _RS_BYTES_PER_CHAR * len(text) + _RS_BYTES_PER_NODE * nodes < limit


_EMPTY = (
    "the file is empty: expected a mapping with apiVersion, environment, partner and users "
    "(or a users list when other files set the rest)"
)


def _not_mapping(data: Any) -> str:
    return f"expected a mapping (apiVersion:, environment:, partner:, users:), got {_kind(data)}"


def _explain_parse_failure(source: _Source, rs_message: str) -> list[Problem]:
    found = _scan_events(source)
    if found and all(p.message.startswith("duplicate key") for p in found):
        # Duplicates are reported, and the rest of the file is still checked (with the last value).
        try:
            source.data = _rs_loads(source.text, yaml_rs.DuplicateKeyPolicy.LastWins)
        except _RS_ERRORS as exc:  # yaml-rs refuses more than the duplicates: say that too
            return [*found, _rs_problem(source, str(exc))]
        return found
    if found:
        return found
    return [_rs_problem(source, rs_message)]


def _rs_problem(source: _Source, rs_message: str) -> Problem:
    """What yaml-rs refused, in its own words, where it says."""
    # PyYAML accepted what yaml-rs refused (e.g. a tag yaml-rs does not know): report yaml-rs's
    # own words, without the source excerpt it appends (it may show a password line).
    position = _RS_POSITION.search(rs_message)
    where = source.at(int(position[1]), int(position[2])) if position else source.at(1, 1)
    lines = [ln for ln in rs_message.splitlines() if ln.strip() and "|" not in ln]
    reason = lines[-1] if lines else rs_message
    return Problem(where, "", f"invalid YAML: {reason}")


class _Frame:
    """One open collection during :func:`_scan_events`: its path and what it holds so far."""

    __slots__ = ("current", "items", "key", "keys", "limit", "mapping", "path")

    def __init__(self, path: _Path, mapping: bool) -> None:
        self.path = path
        self.mapping = mapping
        self.items = 0
        self.limit = MAX_USERS if path == ("users",) else MAX_ITEMS
        self.key: str | None = None
        """In a mapping: the key whose value comes next (None: a key comes next)."""
        self.current = ""
        """In a mapping: the key of the node just counted (a key's path is the key's own)."""
        self.keys: dict[str, int] = {}
        """In a mapping: each scalar key → its line (for duplicates)."""

    def child(self) -> _Path:
        """The path of the node just counted into this collection."""
        if not self.mapping:
            return (*self.path, self.items - 1)
        return (*self.path, self.current)


_SCALAR = yaml.ScalarEvent
_STARTS = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_ENDS = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _scan_events(source: _Source) -> list[Problem]:
    """Check one file with PyYAML's event parser, in constant memory, stopping at the first excess.

    Syntax, aliases, documents, duplicate keys, the top-level kind, and the limits: depth
    (:data:`MAX_DEPTH`), value length (:data:`MAX_SCALAR_CHARS`), items per list or mapping
    (:data:`MAX_USERS` in ``users``, :data:`MAX_ITEMS` elsewhere) and values per user entry
    (:data:`MAX_USER_VALUES`). Nothing is built, so a hostile file costs time, not memory.
    """
    try:
        return _scan(source)
    except yaml.MarkedYAMLError as exc:
        return [_syntax_problem(source, exc)]
    except yaml.YAMLError as exc:
        return [Problem(source.at(1, 1), "", f"invalid YAML: {exc}")]


def _scan(source: _Source) -> list[Problem]:
    """Run the loop of :func:`_scan_events` (PyYAML's errors pass through).

    It calls helpers only on the way out: it runs once per value, a million times on a big desk.
    """
    documents = user_values = 0
    stack: list[_Frame] = []
    users_at = -1  # index in ``stack`` of the open ``users`` list, if any
    first: Any = None  # the top-level node's event
    duplicates: list[Problem] = []
    event: Any
    for event in yaml.parse(source.text, Loader=_SAFE_LOADER):
        kind = type(event)
        if kind in _ENDS:
            if len(stack) - 1 == users_at:
                users_at = -1
            stack.pop()
            continue
        is_scalar = kind is _SCALAR
        if not is_scalar and kind not in _STARTS:
            documents += kind is yaml.DocumentStartEvent
            if kind is yaml.AliasEvent or documents > 1:
                return [_stream_problem(source, event)]
            continue
        if stack:
            parent = stack[-1]
            if not parent.mapping:
                parent.items += 1
            elif parent.key is not None:
                parent.current, parent.key = parent.key, None  # this is the pending key's value
            else:
                parent.items += 1
                label = event.value if is_scalar else f"(key {parent.items})"
                if is_scalar and label in parent.keys:
                    duplicates.append(_duplicate_key(source, parent, label, event.start_mark))
                elif is_scalar:
                    parent.keys[label] = event.start_mark.line + 1
                parent.key = parent.current = label
            if parent.items > parent.limit:
                return [_excess(source, event.start_mark, parent.path, _too_many(parent))]
            if users_at >= 0:
                user_values = 1 if len(stack) - 1 == users_at else user_values + 1
                if user_values > MAX_USER_VALUES:
                    return [_excess(source, event.start_mark, stack[users_at + 1].path, _too_many_values())]
        elif first is None:
            first = event
        if is_scalar:
            if len(event.value) > MAX_SCALAR_CHARS:
                return [_excess(source, event.start_mark, stack[-1].child() if stack else (), _too_long())]
            continue
        if len(stack) >= MAX_DEPTH:
            return [_excess(source, event.start_mark, (), _too_deep())]
        path = stack[-1].child() if stack else ()
        stack.append(_Frame(path, kind is yaml.MappingStartEvent))
        if path == ("users",):
            users_at = len(stack) - 1
    return _top_level_problem(source, first) or duplicates


def _top_level_problem(source: _Source, first: Any) -> list[Problem]:
    """Refuse a file with no document, or whose top level is not a mapping."""
    if first is None:
        return [Problem(source.at(1, 1), "", _EMPTY)]
    if isinstance(first, yaml.MappingStartEvent):
        return []
    data = first.value if isinstance(first, yaml.ScalarEvent) else []
    return [Problem(_at(source, first.start_mark), "", _not_mapping(data))]


def _too_many_values() -> str:
    return f"a user entry with more than {MAX_USER_VALUES:,} values: a user needs a few dozen"


def _first_long_line(text: str) -> int | None:
    """Return the number of the first line longer than :data:`MAX_LINE_CHARS`, if any.

    Such a line holds a whole window of half that size with no newline: only those are measured.
    """
    step = MAX_LINE_CHARS // 2
    for i in range(0, len(text) - step + 1, step):
        if text.find("\n", i, i + step) == -1:
            start = text.rfind("\n", 0, i) + 1
            end = text.find("\n", i)
            if (len(text) if end == -1 else end) - start > MAX_LINE_CHARS:
                return text.count("\n", 0, start) + 1
    return None


def _too_long_line() -> str:
    return (
        f"a line longer than {MAX_LINE_CHARS:,} characters: break it (a [list] or {{mapping}} "
        "may span lines; write one user per line at most)"
    )


def _too_long() -> str:
    return f"a value longer than {MAX_SCALAR_CHARS:,} characters: no manifest value is"


def _too_deep() -> str:
    return f"nested more than {MAX_DEPTH} levels deep: a manifest needs at most 5"


def _at(source: _Source, mark: Any) -> Location:
    return source.at(mark.line + 1, mark.column + 1)


def _excess(source: _Source, mark: Any, path: _Path, message: str) -> Problem:
    return Problem(_at(source, mark), dotted_path(path), message)


def _stream_problem(source: _Source, event: Any) -> Problem:
    """Refuse an alias or a second document."""
    if isinstance(event, yaml.AliasEvent):
        return _excess(
            source,
            event.start_mark,
            (),
            f"aliases (*{event.anchor}) are not allowed in manifests: write the value out "
            "(refused so that no file can expand into a 'billion laughs' bomb)",
        )
    return _excess(
        source, event.start_mark, (), "a second YAML document (---): put one document in each file"
    )


def _duplicate_key(source: _Source, parent: _Frame, label: str, mark: Any) -> Problem:
    return Problem(
        _at(source, mark),
        dotted_path((*parent.path, label)),
        f"duplicate key {label!r} (first at line {parent.keys[label]}): "
        "keep one (YAML would silently use the last)",
    )


def _syntax_problem(source: _Source, exc: yaml.MarkedYAMLError) -> Problem:
    """A YAML syntax error in plain words, at the place to fix, with the likely fix.

    The parser's own words ("while parsing a flow sequence did not find expected ','") name its
    internals; the common mistakes are recognised here, anything else keeps the parser's words.
    """
    problem, context = exc.problem or "", exc.context or ""
    mark, start = exc.problem_mark, exc.context_mark
    began = f"at line {start.line + 1}, column {start.column + 1}" if start else ""
    line = source.text.splitlines()[mark.line] if mark and mark.line < len(source.text.splitlines()) else ""
    found = line[mark.column] if mark and mark.column < len(line) else ""
    reason = ""
    if ("cannot start any token" in problem and found == "\t") or "tab character" in problem:
        reason = "a tab character: YAML indents with spaces; replace the tab with spaces"
    elif "cannot start any token" in problem:
        reason = f"{found!r} cannot start a value: quote the value"
    elif "flow sequence" in context:
        reason = f"the list in [brackets] opened {began} is not closed: add the missing ']', or a ','"
    elif "flow mapping" in context:
        reason = f"the mapping in {{braces}} opened {began} is not closed: add the missing '}}', or a ','"
    elif "quoted scalar" in context and "end of stream" in problem:
        reason = "a quoted value is never closed: add the closing quote"
        mark = start or mark
    elif "unknown escape character" in problem:
        reason = "an unknown backslash escape in double-quoted text: write \\\\ for a backslash, or use '…'"
    elif "mapping values are not allowed" in problem:
        reason = "a ': ' inside a value: quote the value (\"a: b\"), or indent the line under its key"
    elif "block mapping" in context or "block collection" in context:
        reason = (
            f"the indentation does not line up with the block that starts {began}: the keys of a "
            "mapping, and the '- ' items of a list, start in the same column"
        )
    elif "simple key" in context:
        reason = "this line is neither 'key: value' nor a '- ' item: add ': ' after the key, or quote it"
        mark = start or mark
    where = source.at(mark.line + 1, mark.column + 1) if mark else source.at(1, 1)
    return Problem(where, "", f"invalid YAML: {reason or ' '.join(p for p in (context, problem) if p)}")


def _too_many(frame: _Frame) -> str:
    if frame.limit == MAX_USERS:
        return (
            f"more than {MAX_USERS:,} users in one file, the most a manifest may hold; "
            "split the desk into manifests with their own state"
        )
    return f"more than {MAX_ITEMS:,} items in one list or mapping: only users may hold that many"


# --------------------------------------------------------------------------------------- merging


@dataclass
class _Merged:
    data: dict[str, Any]
    key_origin: dict[str, int]
    user_origin: list[tuple[int, int]]


def _merge(sources: list[_Source], problems: list[Problem]) -> _Merged:
    merged: dict[str, Any] = {}
    key_origin: dict[str, int] = {}
    users: list[Any] = []
    user_origin: list[tuple[int, int]] = []
    for index, source in enumerate(sources):
        for key, value in source.data.items():
            if key == "users":
                if value is None:
                    continue
                if not isinstance(value, list):
                    problems.append(
                        Problem(
                            _locate(source, ("users",)).location,
                            "users",
                            f"expected a list of users (lines starting with '- name:'), got {_kind(value)}",
                        )
                    )
                    continue
                if len(users) + len(value) > MAX_USERS:
                    problems.append(
                        Problem(
                            _locate(source, ("users",), key_node=True).location,
                            "users",
                            f"the files together list more than {MAX_USERS:,} users, the most a "
                            "manifest may hold; split the desk into manifests with their own state",
                        )
                    )
                    break
                users.extend(value)
                user_origin.extend(zip(itertools.repeat(index), range(len(value)), strict=False))
                key_origin.setdefault(key, index)
            elif key in merged:
                if merged[key] != value:
                    other = sources[key_origin[key]]
                    here = _locate(source, (key,), key_node=True).location
                    there = _locate(other, (key,), key_node=True).location
                    problems.append(
                        Problem(
                            here,
                            str(key),
                            f"also set at {there} with a different value: set each top-level "
                            "section in one file (or identically in every file that sets it)",
                        )
                    )
            else:
                merged[key] = value
                key_origin[key] = index
    if users or "users" in key_origin:
        merged["users"] = users
    return _Merged(merged, key_origin, user_origin)


# ------------------------------------------------------------------------------------ validating


def _load(
    sources: list[_Source], problems: list[Problem], *, unreadable: bool, today: datetime.date | None
) -> LoadedManifest:
    if not unreadable:
        fast = _load_fast(sources, today)
        if fast is not None:
            return fast
    for source in sources:
        problems.extend(_parse(source))
    # Validating a partial set would add noise (a missing partner: because its file was unreadable).
    if unreadable or any(source.data is None for source in sources):
        raise ManifestError(problems)
    parse_problems = len(problems)
    merged = _merge(sources, problems)
    # Sections set differently in two files: the rest is still checked (with the first value), so
    # every problem is reported at once; only entitlement references wait for one partner section.
    conflicting = {p.path for p in problems[parse_problems:]}
    place = _placer(sources, merged)
    manifest, errors, total = _validate(merged.data)
    located = [(*place(tuple(error["loc"])), error) for error in errors]
    for source, path, _ in located:
        source.want([path])
    problems.extend(_problem_for(source, path, error) for source, path, error in located)
    crosses, total_crosses = _cross_problems(
        manifest,
        merged.data,
        room=MAX_PROBLEMS - len(problems),
        page_full=len(errors) >= MAX_PROBLEMS,
        partner_conflict="partner" in conflicting,
        today=today,
    )
    problems.extend(_located_crosses(crosses, place))
    if problems or manifest is None:
        raise ManifestError(problems, omitted=total + total_crosses - len(errors) - len(crosses))
    share_fields_sets(_user_models(manifest.users))
    for source in sources:
        source.data = None  # validated: the parsed mappings (~100 MB at 100k users) can go
    return _loaded(manifest, sources, merged)


def _loaded(manifest: Manifest, sources: list[_Source], merged: _Merged) -> LoadedManifest:
    """Return the valid ``manifest`` with its warnings, digest and user locations."""
    place = _placer(sources, merged)
    warnings = _literal_password_warnings(manifest, place) if manifest.environment != "sim" else []
    return LoadedManifest(
        manifest=manifest,
        digest=_digest(s.sha256 for s in sources),
        files=tuple(s.name for s in sources),
        warnings=tuple(warnings),
        locations=_UserLocations(manifest, sources, merged.user_origin),
    )


# ------------------------------------------------------------------------------------ fast path


class _Declined(Exception):
    """The fast path gives way: something is wrong or unusual, and the slow path will say what."""


@dataclass
class _Split:
    """One file for the fast path: its top-level keys but users, and its users list or pieces."""

    top: dict[str, Any]
    users: list[Any] | None
    """The users list when it was parsed with the rest of the file (no block list found)."""
    block: UsersBlock | None


def _load_fast(sources: list[_Source], today: datetime.date | None) -> LoadedManifest | None:
    """Load a valid manifest without ever holding the whole raw parse; None: the slow path must look.

    A block-style users list is parsed and validated a piece of whole items at a time
    (:mod:`reconcile.manifest.chunks`), and each piece's raw data goes before the next is read.
    Anything amiss (a parse error, a validation error, a rule across users, sections set twice,
    a file the limits scan would read) declines, and the slow path then reports every problem
    exactly as it always has. A valid manifest comes out equal to the slow path's
    (tests/test_loader_fast.py).
    """
    try:
        splits = [_split(source) for source in sources]
        top, merged = _merge_tops(splits)
        manifest = Manifest.model_validate(top, context=_CONTEXT)
        check = CrossCheck()
        manifest = manifest.model_copy(update={"users": _fast_users(sources, splits, merged, check)})
        if check.possible(KnownNames.of(manifest.partner), today=today):
            raise _Declined
    except (_Declined, ValidationError, *_RS_ERRORS):
        return None
    return _loaded(manifest, sources, merged)


def _split(source: _Source) -> _Split:
    text = source.text
    if _first_long_line(text) is not None or _may_break_limits(text):
        raise _Declined
    block = users_block(text)
    if block is None:
        data = _fast_loads(text)
        if not isinstance(data, dict):
            raise _Declined
        users = data.pop("users", None)
        if users is not None and not isinstance(users, list):
            raise _Declined
        return _Split(data, users, None)
    head = _fast_loads(text[: block.start])
    tail = _fast_loads(text[block.end :]) if block.end < len(text) else None
    # The users line is a key of the top-level mapping only if the head ends with it, unfinished.
    if not isinstance(head, dict) or list(head)[-1:] != ["users"] or head["users"] is not None:
        raise _Declined
    if tail is not None and (not isinstance(tail, dict) or head.keys() & tail.keys()):
        raise _Declined  # a key set twice (users too): the whole-file parse refuses it
    del head["users"]
    return _Split({**head, **(tail or {})}, None, block)


def _fast_loads(text: str) -> Any:
    if not _fits_in_memory(text):
        raise _Declined  # the slow path refuses the file as too large
    return _rs_loads(text)


def _merge_tops(splits: list[_Split]) -> tuple[dict[str, Any], _Merged]:
    """Merge the files' top-level keys as :func:`_merge` does; a section set differently declines."""
    top: dict[str, Any] = {}
    key_origin: dict[str, int] = {}
    for index, split in enumerate(splits):
        if split.block is not None or split.users is not None:
            key_origin.setdefault("users", index)
        for key, value in split.top.items():
            if key not in top:
                top[key], key_origin[key] = value, index
            elif top[key] != value:
                raise _Declined
    return top, _Merged(top, key_origin, [])


def _fast_users(
    sources: list[_Source], splits: list[_Split], merged: _Merged, check: CrossCheck
) -> tuple[User, ...]:
    """Validate every file's users, piece by piece, into ``check``; note where each is from in ``merged``."""
    users: list[User] = []
    shared: dict[frozenset[str], set[str]] = {}
    for index, (source, split) in enumerate(zip(sources, splits, strict=True)):
        listed = len(users)
        parts = [split.users] if split.block is None else _parsed_pieces(source.text, split.block)
        for part in parts:
            if part is None:
                continue
            if len(users) + len(part) > MAX_USERS:
                raise _Declined
            validated = _USERS.validate_python(part, context=_CONTEXT)
            share_fields_sets(_user_models(validated), shared)
            check.add(validated)
            users.extend(validated)
        merged.user_origin.extend(zip(itertools.repeat(index), range(len(users) - listed), strict=False))
    return tuple(users)


def _parsed_pieces(text: str, block: UsersBlock) -> Iterator[list[Any]]:
    for piece in pieces(text, block):
        data = _fast_loads(piece)
        if not isinstance(data, list):
            raise _Declined
        yield data


_Place = Callable[[_Path], tuple[_Source, _Path]]


def _placer(sources: list[_Source], merged: _Merged) -> _Place:
    """Return where a path of the merged manifest is: its file, and the path in that file."""

    def place(path: _Path) -> tuple[_Source, _Path]:
        if len(path) >= 2 and path[0] == "users" and isinstance(path[1], int):
            file_index, local = merged.user_origin[path[1]]
            return sources[file_index], ("users", local, *path[2:])
        key = path[0] if path else None
        return sources[merged.key_origin.get(str(key), 0)], path

    return place


def _cross_problems(
    manifest: Manifest | None,
    data: dict[str, Any],
    *,
    room: int,
    page_full: bool,
    partner_conflict: bool,
    today: datetime.date | None,
) -> tuple[list[CrossProblem], int]:
    """Return the first ``room`` problems across users, and how many there are."""
    nothing_known = KnownNames(None, None, None)
    if manifest is not None:
        keys = [UserKeys.of(u) for u in manifest.users]
        known = KnownNames.of(manifest.partner)
    elif not page_full:
        keys, known = _raw_user_keys(data), _raw_known_names(data)
    else:
        keys, known = [], nothing_known  # the page is full: rules across users wait for the next run
    if partner_conflict:
        known = nothing_known
    crosses: list[CrossProblem] = []
    total = 0
    for cross in cross_reference_problems(keys, known, today=today):
        total += 1
        if len(crosses) < room:
            crosses.append(cross)
    return crosses, total


def _located_crosses(crosses: list[CrossProblem], place: _Place) -> list[Problem]:
    """Return each problem across users where it stands, naming the place it clashes with."""
    for cross in crosses:
        for part in (cross.path, cross.other):
            if part is not None:
                source, path = place(part)
                source.want([path])
    problems: list[Problem] = []
    for cross in crosses:
        source, path = place(cross.path)
        found = _locate(source, path)
        message = cross.message
        if cross.other is not None:
            other_source, other_path = place(cross.other)
            message += f" (first defined at {_locate(other_source, other_path).location})"
        problems.append(Problem(found.location, found.path, message))
    return problems


def _literal_password_warnings(manifest: Manifest, place: _Place) -> list[Problem]:
    """Warn of each literal password outside sim, where it is written."""
    paths = [
        place(("users", i, "password")) for i, user in enumerate(manifest.users) if user.has_literal_password
    ]
    for source, path in paths:
        source.want([path])
    warnings: list[Problem] = []
    for source, path in paths:
        found = _locate(source, path)
        warnings.append(
            Problem(
                found.location,
                found.path,
                f"a literal password in a {manifest.environment} manifest: literal passwords "
                "belong in sim only; use {env: VAR} or {file: PATH} (or {generate: true})",
            )
        )
    return warnings


MAX_PROBLEMS = 100
"""Most problems reported at once (the rest are counted): a broken 500k-user file gets a page."""

_CHUNK = 10_000
_CONTEXT = {CROSS_CHECKS_BY_CALLER: True}
_USERS: TypeAdapter[tuple[User, ...]] = TypeAdapter(tuple[User, ...])


def _validate(data: dict[str, Any]) -> tuple[Manifest | None, list[ErrorDetails], int]:
    """Validate merged data: the manifest, or its first :data:`MAX_PROBLEMS` errors and their total.

    Users are validated in chunks, so a file of a million broken entries never holds all their
    errors at once.
    """
    context = _CONTEXT
    errors: list[ErrorDetails] = []
    total = 0

    def collect(exc: ValidationError, users_from: int | None) -> None:
        nonlocal total
        total += exc.error_count()
        if len(errors) >= MAX_PROBLEMS:
            return  # counted only: listing them would cost a dict per error
        for error in exc.errors(include_url=False)[: MAX_PROBLEMS - len(errors)]:
            if users_from is not None:  # an index within the chunk → within the whole list
                index, *rest = error["loc"]
                error["loc"] = ("users", users_from + int(index), *rest)
            errors.append(error)

    top: Manifest | None = None
    try:
        top = Manifest.model_validate({k: v for k, v in data.items() if k != "users"}, context=context)
    except ValidationError as exc:
        collect(exc, None)
    users: list[Any] = data.get("users") or []
    validated: list[User] = []
    for start in range(0, len(users), _CHUNK):
        try:
            validated.extend(_USERS.validate_python(users[start : start + _CHUNK], context=context))
        except ValidationError as exc:
            collect(exc, start)
    if errors or top is None:
        return None, errors, total
    return top.model_copy(update={"users": tuple(validated)}), errors, total


def _user_models(users: Iterable[User]) -> Iterator[BaseModel]:
    for user in users:
        yield user
        if user.contact is not None:
            yield user.contact
        if isinstance(user.password, BaseModel):
            yield user.password


def _raw_user_keys(data: dict[str, Any]) -> list[UserKeys]:
    """Read the cross-user rules' inputs from data that failed validation, so they are reported too."""
    keys = []
    for user in data.get("users") or ():
        entry = user if isinstance(user, dict) else {}
        name, email, entitlements = entry.get("name"), entry.get("email"), entry.get("entitlements")
        accounts = entry.get("accounts")
        keys.append(
            UserKeys(
                _text(name),
                _text(email),
                tuple(e for e in entitlements if isinstance(e, str))
                if isinstance(entitlements, list)
                else (),
                tuple(_raw_account_keys(a) for a in accounts) if isinstance(accounts, list) else (),
                entry.get("status") == "cancelled",
            )
        )
    return keys


def _raw_account_keys(entry: Any) -> AccountKeys:
    """An account entry's names (a wrong date is its own error: no future check on it here)."""
    entry = entry if isinstance(entry, dict) else {}
    return AccountKeys(
        _text(entry.get("name")), _text(entry.get("template")), _text(entry.get("riskCategory"))
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _raw_known_names(data: dict[str, Any]) -> KnownNames:
    """The names a partner section that failed validation defines (None: that part is broken)."""
    partner = data.get("partner")

    def names(key: str) -> Mapping[str, Any] | None:
        if not isinstance(partner, dict):
            return {}
        found = partner.get(key, {})
        return found if isinstance(found, dict) else None

    return KnownNames(names("entitlements"), names("accountTemplates"), names("riskCategories"))


class _UserLocations(Mapping[str, Location]):
    """User name → position of the user's entry, computed on first access."""

    def __init__(self, manifest: Manifest, sources: list[_Source], origin: list[tuple[int, int]]) -> None:
        self._users = manifest.users
        self._sources = sources
        self._origin = origin
        self._table: dict[str, Location] | None = None

    def _build(self) -> dict[str, Location]:
        if self._table is None:
            table: dict[str, Location] = {}
            for file_index, local in self._origin:
                self._sources[file_index].want([("users", local)])
            for user, (file_index, local) in zip(self._users, self._origin, strict=True):
                found = _locate(self._sources[file_index], ("users", local))
                if found.location is not None:
                    table[user.name] = found.location
            self._table = table
        return self._table

    def __getitem__(self, name: str) -> Location:
        return self._build()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())


@dataclass(frozen=True)
class _Found:
    location: Location | None
    path: str
    node: yaml.Node | None
    walked: _Path


def _locate(source: _Source, path: _Path, *, key_node: bool = False) -> _Found:
    """Walk ``path`` through the file's nodes; parts that are not in the data (union tags) are skipped."""
    root = source.root(path)
    if root is None:
        return _Found(source.at(1, 1), dotted_path(path), None, ())
    node: yaml.Node | None = root
    key: yaml.Node | None = None
    walked: list[str | int] = []
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next(
                ((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)),
                None,
            )
            if match is not None:
                key, node = match
                walked.append(part)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            key, node = None, node.value[part]
            walked.append(part)
    target = key if key_node and key is not None else node
    location = (
        source.at(target.start_mark.line + 1, target.start_mark.column + 1) if target is not None else None
    )
    return _Found(location, dotted_path(tuple(walked)), node, tuple(walked))


# -------------------------------------------------------------------------------------- messages

_UNION_TAGS = frozenset({"from-env", "from-file", "literal", "generate"})


def _problem_for(source: _Source, path: _Path, error: ErrorDetails) -> Problem:
    kind = error["type"]
    found = _locate(source, path, key_node=kind == "extra_forbidden")
    secret = "password" in found.walked or "password" in path
    # The data path people read: what was found, plus a missing key's own name.
    shown = found.path
    if kind == "missing" and path:
        shown = dotted_path((*found.walked, path[-1]))
    message = _message(kind, error, found, path, secret)
    return Problem(found.location, shown, message)


def _message(kind: str, error: ErrorDetails, found: _Found, path: _Path, secret: bool) -> str:
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    got = "" if secret else f", got {_shown(found.node, value)}"
    if kind == "missing":
        return f"missing required key {path[-1]!r}"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(found.walked[:-1])
        key = str(path[-1])
        return f"unknown key {key!r} (expected one of: {', '.join(allowed)}{did_you_mean(key, allowed)})"
    if kind == "string_type":
        quote = ""
        if found.node is not None and isinstance(found.node, yaml.ScalarNode) and not secret:
            quote = f': quote it, e.g. "{found.node.value}"'
        return f"expected a string{got}{quote}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number{got}" + (": remove the quotes" if isinstance(value, str) else "")
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false{got}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number{got}"
    if kind == "string_too_short":
        length = "" if secret else f" (has {len(value)})"
        return f"too short: expected at least {counted(ctx['min_length'], 'character')}{length}"
    if kind == "string_too_long":
        length = "" if secret else f" (has {len(value)})"
        return f"too long: expected at most {counted(ctx['max_length'], 'character')}{length}"
    if kind == "string_pattern_mismatch" and ctx["pattern"] in _UNSAFE_BY_PATTERN:
        return _unsafe_character(str(value), _UNSAFE_BY_PATTERN[ctx["pattern"]], secret)
    if kind == "string_pattern_mismatch":
        return f"expected text matching {ctx['pattern']}{got}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {
            "greater_than": "greater than",
            "greater_than_equal": "at least",
            "less_than": "less than",
            "less_than_equal": "at most",
        }[kind]
        bound = next(iter(ctx.values()))
        return f"expected a number {words} {bound}{got}"
    if kind == "literal_error":
        expected = "true" if ctx["expected"] == "True" else ctx["expected"]
        return f"expected {expected}{got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value lines){got}"
    if kind == "too_long":
        return f"more than {ctx['max_length']:,} items in one list or mapping: only users may hold that many"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list{got}"
    if kind == "password_source":
        return PASSWORD_EXPECTED
    message = error["msg"]
    return message.removeprefix("Value error, ")


_UNSAFE_BY_PATTERN = {
    NAME_PATTERN: re.compile(f"[{UNSAFE_IN_NAMES}]"),
    TEXT_PATTERN: re.compile(f"[{UNSAFE_IN_TEXT}]"),
}


def _unsafe_character(value: str, unsafe: re.Pattern[str], secret: bool) -> str:
    """Name the first invisible or control character of ``value`` and where it is (never the value)."""
    found = unsafe.search(value)
    if found is None:  # pragma: no cover - the pattern refused it, so one is there
        return "contains a control or invisible character: remove it"
    char = found.group()
    what = f"U+{ord(char):04X} {unicodedata.name(char, 'control character')}"
    where = "" if secret else f" at character {found.start() + 1}"
    return (
        f"contains {what}{where}: remove it (control, invisible and bidirectional characters "
        "are refused: they change what a terminal or a review shows)"
    )


def _allowed_keys(path: _Path) -> list[str]:
    """The keys the models allow at ``path`` (a mapping inside the manifest)."""
    models: list[type[BaseModel]] = [Manifest]
    for part in path:
        if isinstance(part, int) or part in _UNION_TAGS:
            continue
        nxt: list[type[BaseModel]] = []
        for model in models:
            info = model.model_fields.get(str(part))
            if info is not None:
                nxt.extend(_models_in(info.annotation))
        models = nxt
    return sorted({name for model in models for name in model.model_fields})


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return []
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _type_word(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    if value is None or isinstance(value, dict | list | tuple):
        return _type_word(value)
    return f"{value!r} ({_type_word(value)})"


def _node_kind(node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return []
    if isinstance(node, yaml.MappingNode):
        return {}
    return str(node.value)


def _shown(node: yaml.Node | None, value: Any) -> str:
    """Show a wrong value as it is written in the file, and what YAML read it as."""
    if isinstance(node, yaml.ScalarNode) and not isinstance(value, str):
        text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
        return f"{text or '(nothing)'} (read as {_type_word(value)})"
    return _kind(value)
