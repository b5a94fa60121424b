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
    them shuts out "billion laughs" bombs. Nesting is bounded (:data:`MAX_DEPTH`), so is file size
    (:data:`MAX_FILE_BYTES`). One YAML document per file.

Speed
    The happy path parses with yaml-rs (Rust) and validates all users in one pydantic call with
    the cyclic GC paused. Positions cost a second, slower parse (PyYAML's composer, which keeps
    marks), so they are computed only when something must be located: a problem, a warning, or
    :attr:`LoadedManifest.locations` on first use.

Digest
    :attr:`LoadedManifest.digest` is a sha256 over the sorted sha256s of the files' bytes: any byte
    change (even a comment) changes it, while the order of ``-f`` options and the files' names do
    not. A saved plan is bound to it ("the manifest changed").
"""

from __future__ import annotations

import hashlib
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import yaml_rs
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from reconcile.bulk import gc_paused, share_fields_sets
from reconcile.errors import Location, ManifestError, Problem, counted, did_you_mean
from reconcile.manifest.models import (
    CROSS_CHECKS_BY_CALLER,
    PASSWORD_EXPECTED,
    Manifest,
    UserKeys,
    cross_reference_problems,
    dotted_path,
)

MAX_FILE_BYTES = 256 * 1024 * 1024
"""Largest manifest file read (a 100k-user manifest is about 35 MB)."""

MAX_DEPTH = 32
"""Deepest nesting allowed; a manifest needs 5 levels (users → user → contact → field)."""

MANIFEST_SUFFIXES = (".yaml", ".yml")

_Path = tuple[str | int, ...]

# yaml-rs recurses on the C stack and crashes on some deeply nested input (thousands of levels).
# A block collection starts at a column greater than its parent's, so without deep indentation or
# compact indicators stacked on one line ("- - - x", "? ? x") block nesting stays shallow; flow
# nesting ([[[...) yaml-rs bounds itself. Files that might nest deeper go through PyYAML's
# iterative event scanner first, which refuses them with a position. False alarms only cost speed.
# (Plain substring/regex checks with a literal start: a full-text scan of 35 MB takes ~0.1 s.)
_DEEP_INDENT = "\n" + " " * MAX_DEPTH
_STACKED_INDICATORS = re.compile(r"[-?][ \t]+[-?](?:[ \t]|$)", re.MULTILINE)


def _maybe_deep(text: str) -> bool:
    return (
        _DEEP_INDENT in text
        or text.startswith(_DEEP_INDENT[1:])
        or "\t" in text
        or _STACKED_INDICATORS.search(text) is not None
    )


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


def load_manifest(paths: Sequence[str | Path]) -> LoadedManifest:
    """Load, merge and validate manifest files and folders; raise ManifestError listing every problem."""
    problems: list[Problem] = []
    files = _expand(paths, problems)
    sources: list[_Source] = []
    for name in files:
        source = _read(name, problems)
        if source is not None:
            sources.append(source)
    if not sources and not problems:
        raise ManifestError([Problem(None, "", "no manifest files given")])

    with gc_paused():
        return _load(sources, problems, unreadable=bool(problems))


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

    def root(self) -> yaml.Node | None:
        """The composed node tree (with marks); parsed on first use; None if PyYAML cannot read it."""
        if self._root is None:
            try:
                self._root = yaml.compose(self.text, Loader=_SAFE_LOADER)
            except yaml.YAMLError:
                # yaml-rs read it but PyYAML cannot (e.g. a surrogate-pair escape such as
                # "\ud800\udc00"): problems then point at the file's start.
                return None
        return self._root

    def at(self, line: int, column: int) -> Location:
        return Location(self.name, line, column)


def _read(name: str, problems: list[Problem]) -> _Source | None:
    try:
        with open(name, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        problems.append(Problem(None, "", f"{name}: cannot read the file: {exc.strerror}"))
        return None
    if len(raw) > MAX_FILE_BYTES:
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
    if _maybe_deep(source.text):
        scanned = _scan_events(source)
        if scanned:
            return scanned
    try:
        data = yaml_rs.loads(
            source.text,
            parse_datetime=False,
            alias_limits=yaml_rs.AliasLimits(max_total_replayed_events=0),
            duplicate_key_policy=yaml_rs.DuplicateKeyPolicy.Error,
        )
    except (yaml_rs.YAMLDecodeError, ValueError, RecursionError) as exc:
        return _explain_parse_failure(source, str(exc))
    if data is None:
        return [Problem(source.at(1, 1), "", _EMPTY)]
    if not isinstance(data, dict):
        # yaml-rs answers a list both for a top-level sequence and for several documents.
        return _scan_events(source) or [Problem(source.at(1, 1), "", _not_mapping(data))]
    source.data = data
    return []


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
        source.data = yaml_rs.loads(
            source.text,
            parse_datetime=False,
            alias_limits=yaml_rs.AliasLimits(max_total_replayed_events=0),
            duplicate_key_policy=yaml_rs.DuplicateKeyPolicy.LastWins,
        )
        return found
    if found:
        return found
    # PyYAML accepted what yaml-rs refused (e.g. a tag yaml-rs does not know): report yaml-rs's
    # own words, without the source excerpt it appends (it may show a password line).
    position = _RS_POSITION.search(rs_message)
    where = source.at(int(position[1]), int(position[2])) if position else source.at(1, 1)
    lines = [ln for ln in rs_message.splitlines() if ln.strip() and "|" not in ln]
    reason = lines[-1] if lines else rs_message
    return [Problem(where, "", f"invalid YAML: {reason}")]


def _scan_events(source: _Source) -> list[Problem]:
    """Check one file with PyYAML's iterative event parser: syntax, depth, aliases, documents, keys."""
    depth = 0
    documents = 0
    try:
        for event in yaml.parse(source.text, Loader=_SAFE_LOADER):
            mark = event.start_mark
            assert mark is not None  # the parser marks every event
            if isinstance(event, yaml.AliasEvent):
                return [
                    Problem(
                        source.at(mark.line + 1, mark.column + 1),
                        "",
                        f"aliases (*{event.anchor}) are not allowed in manifests: write the value out "
                        "(refused so that no file can expand into a 'billion laughs' bomb)",
                    )
                ]
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    return [
                        Problem(
                            source.at(mark.line + 1, mark.column + 1),
                            "",
                            "a second YAML document (---): put one document in each file",
                        )
                    ]
            elif isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return [
                        Problem(
                            source.at(mark.line + 1, mark.column + 1),
                            "",
                            f"nested more than {MAX_DEPTH} levels deep: a manifest needs at most 5",
                        )
                    ]
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        return [_syntax_problem(source, exc)]
    except yaml.YAMLError as exc:
        return [Problem(source.at(1, 1), "", f"invalid YAML: {exc}")]
    try:
        root = yaml.compose(source.text, Loader=_SAFE_LOADER)
    except yaml.MarkedYAMLError as exc:  # the events parsed, so this is rare (bad escapes)
        mark = exc.problem_mark
        where = source.at(mark.line + 1, mark.column + 1) if mark else source.at(1, 1)
        return [Problem(where, "", f"invalid YAML: {exc.problem}")]
    source._root = root
    if root is None:
        return [Problem(source.at(1, 1), "", _EMPTY)]
    if not isinstance(root, yaml.MappingNode):
        mark = root.start_mark
        return [Problem(source.at(mark.line + 1, mark.column + 1), "", _not_mapping(_node_kind(root)))]
    return _duplicate_keys(source, root)


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


def _duplicate_keys(source: _Source, root: yaml.Node) -> list[Problem]:
    problems: list[Problem] = []
    stack: list[tuple[yaml.Node, _Path]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Node] = {}
            for key, value in node.value:
                label = key.value if isinstance(key, yaml.ScalarNode) else repr(key)
                if label in first:
                    m, f = key.start_mark, first[label].start_mark
                    problems.append(
                        Problem(
                            source.at(m.line + 1, m.column + 1),
                            dotted_path((*path, label)),
                            f"duplicate key {label!r} (first at line {f.line + 1}): "
                            "keep one (YAML would silently use the last)",
                        )
                    )
                else:
                    first[label] = key
                stack.append((value, (*path, label)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return problems


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
                users.extend(value)
                user_origin.extend((index, i) for i in range(len(value)))
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


def _load(sources: list[_Source], problems: list[Problem], *, unreadable: bool) -> LoadedManifest:
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

    def place(path: _Path) -> tuple[_Source, _Path]:
        if len(path) >= 2 and path[0] == "users" and isinstance(path[1], int):
            file_index, local = merged.user_origin[path[1]]
            return sources[file_index], ("users", local, *path[2:])
        key = path[0] if path else None
        return sources[merged.key_origin.get(str(key), 0)], path

    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(merged.data, context={CROSS_CHECKS_BY_CALLER: True})
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            source, path = place(tuple(error["loc"]))
            problems.append(_problem_for(source, path, error))
    if manifest is not None:
        keys = [UserKeys(u.name, u.email, u.entitlements) for u in manifest.users]
        known: Mapping[str, int] | None = manifest.partner.entitlements
    else:
        keys, known = _raw_user_keys(merged.data)
    if "partner" in conflicting:
        known = None
    for cross in cross_reference_problems(keys, known):
        source, path = place(cross.path)
        found = _locate(source, path)
        message = cross.message
        if cross.other is not None:
            other_source, other_path = place(cross.other)
            message += f" (first defined at {_locate(other_source, other_path).location})"
        problems.append(Problem(found.location, found.path, message))
    if problems or manifest is None:
        raise ManifestError(problems)
    share_fields_sets(_user_models(manifest))

    warnings: list[Problem] = []
    if manifest.environment != "sim":
        for index, user in enumerate(manifest.users):
            if user.has_literal_password:
                source, path = place(("users", index, "password"))
                found = _locate(source, path)
                warnings.append(
                    Problem(
                        found.location,
                        found.path,
                        f"a literal password in a {manifest.environment} manifest: literal passwords "
                        "belong in sim only; use {env: VAR} or {file: PATH} (or {generate: true})",
                    )
                )

    for source in sources:
        source.data = None  # validated: the parsed mappings (~100 MB at 100k users) can go
    digest = hashlib.sha256()
    for file_digest in sorted(s.sha256 for s in sources):
        digest.update(file_digest.encode())
    return LoadedManifest(
        manifest=manifest,
        digest=digest.hexdigest(),
        files=tuple(s.name for s in sources),
        warnings=tuple(warnings),
        locations=_UserLocations(manifest, sources, merged.user_origin),
    )


def _user_models(manifest: Manifest) -> Iterator[BaseModel]:
    for user in manifest.users:
        yield user
        if user.contact is not None:
            yield user.contact
        if isinstance(user.password, BaseModel):
            yield user.password


def _raw_user_keys(data: dict[str, Any]) -> tuple[list[UserKeys], Mapping[str, int] | None]:
    """Read the cross-user rules' inputs from data that failed validation, so they are reported too."""
    keys = []
    for user in data.get("users") or ():
        entry = user if isinstance(user, dict) else {}
        name, email, entitlements = entry.get("name"), entry.get("email"), entry.get("entitlements")
        keys.append(
            UserKeys(
                name if isinstance(name, str) else None,
                email if isinstance(email, str) else None,
                tuple(e for e in entitlements if isinstance(e, str))
                if isinstance(entitlements, list)
                else (),
            )
        )
    partner = data.get("partner")
    known = partner.get("entitlements") if isinstance(partner, dict) else None
    if not isinstance(known, dict):
        known = None if isinstance(partner, dict) and "entitlements" in partner else {}
    return keys, known


class _UserLocations(Mapping[str, Location]):
    """User name → position of the user's entry, computed on first access."""

    def __init__(self, manifest: Manifest, sources: list[_Source], origin: list[tuple[int, int]]) -> None:
        self._names = [u.name for u in manifest.users]
        self._sources = sources
        self._origin = origin
        self._table: dict[str, Location] | None = None

    def _build(self) -> dict[str, Location]:
        if self._table is None:
            table: dict[str, Location] = {}
            for name, (file_index, local) in zip(self._names, self._origin, strict=True):
                found = _locate(self._sources[file_index], ("users", local))
                if found.location is not None:
                    table[name] = found.location
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
    root = source.root()
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
    if kind in ("tuple_type", "list_type"):
        return f"expected a list{got}"
    if kind == "password_source":
        return PASSWORD_EXPECTED
    message = error["msg"]
    return message.removeprefix("Value error, ")


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
