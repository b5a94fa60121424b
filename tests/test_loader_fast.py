"""The loader's fast path (users read a piece at a time) gives the slow path's answer, or gives way.

Every manifest here is loaded twice: through ``load_manifest`` as it runs (fast path first) and
with the fast path turned off (the whole-file parse, the reference). A manifest the fast path
accepts must come out identical; one it declines is loaded the slow way, so its problems are
reported exactly as before. Pieces are cut tiny, so every item boundary is a cut.
"""

from __future__ import annotations

import datetime
import re
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from reconcile.errors import ManifestError
from reconcile.manifest import chunks, loader
from reconcile.manifest.loader import LoadedManifest, load_manifest
from reconcile.manifest.models import (
    Account,
    KnownNames,
    User,
    UserKeys,
    cross_problems_possible,
    cross_reference_problems,
)

TODAY = datetime.date(2026, 6, 1)
SAME = settings(max_examples=150, deadline=None)

HEAD = """\
# a desk
apiVersion: reconcile/v1
environment: {environment}
partner:
  dataAccountId: 11111
  entitlements: {{simplus: 12345, tradingview: 31}}
  accountTemplates:
    eval50k: {{templateAccountId: 5001, initialBalance: 50000}}
"""
VALID_USER = (
    "  - {{name: trader{number:03d}, email: t{number}@example.com, password: {{generate: true}}, "
    "firstName: A, lastName: B}}\n"
)
AFTER = ["defaults:\n  tradovateSubscriptionPlanId: 7\n", "policy: {maxCancellations: 3}\n"]

# Lines dropped between items: what the cutter must see through, or refuse.
NOISE = [
    "---",
    "...",
    "%YAML 1.2",
    "\t# a tab",
    "users:",
    "x: 1",
    " - name: colone",
    "-",
    "  -",
    "  - &anchor {name: anchored}",
    "  - *anchor",
    "- - nested",
    '  - name: "open',
    'close"',
    "#   - name: commented",
    "policy: {maxCancellations: 3}",
    "  key: value",
    "\r",
]


@st.composite
def _value(draw: st.DrawFn, text: str, indent: str) -> str:
    """``text`` written plain, quoted, quoted across lines, or as a block scalar."""
    style = draw(st.sampled_from(["plain", "single", "double", "multiline", "literal", "folded"]))
    if style == "plain":
        return text
    if style == "single":
        return f"'{text}'"
    if style == "double":
        return f'"{text}"'
    if style == "multiline":  # a line break in a quoted value folds into a space
        head, _, tail = text.partition(" ")
        return f'"{head}\n{indent}  {tail}"' if tail else f'"{text}"'
    return f"{'|-' if style == 'literal' else '>-'}\n{indent}  {text}"


FLOW = {
    "firstName": "Ada Mary",
    "lastName": "Love lace",
    "entitlements": "[tradingview]",
    "contact": "{phone: '+12125550100', streetAddress1: 1 Main St, city: London, country: GB}",
}
"""One-line forms of the values an item in {braces} cannot write across lines here."""


def _pick(draw: st.DrawFn, good: str, *bad: str) -> str:
    """``good`` most of the time, one of ``bad`` (an invalid or clashing value) now and then."""
    return draw(st.sampled_from(bad)) if bad and draw(st.integers(0, 14)) == 0 else good


@st.composite
def _user(draw: st.DrawFn, number: int, indent: int) -> str:
    """One users item at ``indent``, most often valid."""
    pad = " " * (indent + 2)
    name = _pick(draw, f"trader{number:03d}", "trader001", f"Trader{number:03d}", "tr")
    fields: dict[str, str] = {"name": name}
    cancelled = draw(st.integers(0, 4)) == 0
    if cancelled:
        fields["status"] = "cancelled"
    if not cancelled or draw(st.booleans()):
        fields["email"] = _pick(draw, f"{name}@example.com", "same@example.com", "not-an-email")
        fields["password"] = draw(
            st.sampled_from(["{generate: true}", "{env: PW}", "Secret123!", "{file: pw.txt}"])
        )
        fields["password"] = _pick(draw, fields["password"], "short", "{env: PW, file: x}")
        fields["firstName"] = draw(_value("Ada Mary", pad))
        fields["lastName"] = draw(_value("Love lace", pad))
    if draw(st.booleans()):
        listed = draw(st.sampled_from(["[tradingview]", "[simplus, tradingview]", f"\n{pad}- tradingview"]))
        fields["entitlements"] = _pick(draw, listed, "[unknown]", "[tradingview, tradingview]")
    if draw(st.booleans()):
        street = draw(_value("1 Main St", pad + "  "))
        country = _pick(draw, draw(st.sampled_from(["US", "GB"])), "XX", "us")
        fields["contact"] = (
            f"\n{pad}  phone: '+12125550100'\n{pad}  streetAddress1: {street}\n"
            f"{pad}  city: New York\n{pad}  state: NY\n{pad}  country: {country}"
        )
    if not cancelled and draw(st.integers(0, 3)) == 0:
        account = _pick(draw, f"ACC{number:05d}", "ACC00001")
        reset = _pick(draw, draw(st.sampled_from(["", ", resetTo: 2026-01-02"])), ", resetTo: 2027-01-02")
        fields["accounts"] = f"[{{name: {account}, template: eval50k{reset}}}]"
    if draw(st.integers(0, 3)) == 0:  # the whole item in {braces}, on one line
        flow = {k: FLOW.get(k, v) if "\n" in v else v for k, v in fields.items()}
        return " " * indent + "- {" + ", ".join(f"{k}: {v}" for k, v in flow.items()) + "}\n"
    lines = [f"{key}: {value}" for key, value in fields.items()]
    if draw(st.integers(0, 14)) == 0:
        del lines[draw(st.integers(0, len(lines) - 1))]
    return " " * indent + "- " + f"\n{pad}".join(lines) + "\n"


@st.composite
def _users_block(draw: st.DrawFn, indent: int, first: int) -> str:
    items = []
    for number in range(first, first + draw(st.integers(0, 6))):
        before = draw(
            st.sampled_from(["", "\n", "# comment\n", " " * indent + "# comment\n", "      # deep\n"])
        )
        items.append(before + draw(_user(number, indent)))
    return "".join(items)


@st.composite
def manifest_texts(draw: st.DrawFn, first: int = 1) -> tuple[str, bool]:
    """A manifest's text, and whether noise was dropped into it (then the fast path may give way)."""
    indent = draw(st.sampled_from([0, 2, 4]))
    environment = draw(st.sampled_from(["sim", "sim", "demo"]))
    users_line = draw(st.sampled_from(["users:\n", "users:   # the desk\n", "users:\n\n# first\n"]))
    after = draw(st.lists(st.sampled_from(AFTER), unique=True))
    text = HEAD.format(environment=environment) + users_line + draw(_users_block(indent, first))
    text += draw(st.sampled_from(["", "# the end\n", "\n"])) + "".join(after)
    noisy = draw(st.booleans()) and draw(st.booleans())
    if noisy:
        lines = text.split("\n")
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(st.sampled_from(NOISE)))
        text = "\n".join(lines)
    return text, noisy


def _slow(paths: list[Path]) -> LoadedManifest | ManifestError:
    with mock.patch.object(loader, "_load_fast", lambda sources, today: None):
        return _outcome(paths)


def _outcome(paths: list[Path]) -> LoadedManifest | ManifestError:
    try:
        return load_manifest(paths, today=TODAY)
    except ManifestError as exc:
        return exc


def _fast(paths: list[Path]) -> LoadedManifest | None:
    """The fast path's own answer (None: it gave way)."""
    answers: list[LoadedManifest | None] = []
    real = loader._load_fast

    def spy(sources: Any, today: Any) -> LoadedManifest | None:
        answers.append(real(sources, today))
        return answers[-1]

    with mock.patch.object(loader, "_load_fast", spy), mock.patch.object(chunks, "PIECE_CHARS", 1):
        _outcome(paths)
    return answers[0] if answers else None


def _unset_fields(model: Any) -> Any:
    """Everything a model holds, as set (``==`` on pydantic models ignores which fields were set)."""
    if isinstance(model, BaseModel):
        return (type(model), {k: _unset_fields(getattr(model, k)) for k in sorted(model.model_fields_set)})
    if isinstance(model, tuple | list):
        return [_unset_fields(item) for item in model]
    if isinstance(model, dict):
        return {k: _unset_fields(v) for k, v in model.items()}
    return model


def assert_same_or_declined(paths: list[Path], *, must_take: bool) -> None:
    slow = _slow(paths)
    fast = _fast(paths)
    if fast is None:
        assert not (must_take and isinstance(slow, LoadedManifest)), "a clean, valid manifest was declined"
        return
    assert isinstance(slow, LoadedManifest), f"the fast path accepted what the slow path refuses: {slow}"
    assert fast.manifest == slow.manifest
    assert _unset_fields(fast.manifest) == _unset_fields(slow.manifest)
    assert (fast.digest, fast.files, fast.warnings) == (slow.digest, slow.files, slow.warnings)
    assert dict(fast.locations) == dict(slow.locations)


@SAME
@given(manifest=manifest_texts())
def test_one_file_loads_the_same_through_the_fast_path(manifest: tuple[str, bool]) -> None:
    text, noisy = manifest
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "desk.yaml"
        path.write_text(text)
        assert_same_or_declined([path], must_take=not noisy)


@SAME
@given(first=manifest_texts(), second=manifest_texts(first=50), partner_apart=st.booleans())
def test_several_files_load_the_same_through_the_fast_path(
    first: tuple[str, bool], second: tuple[str, bool], partner_apart: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "a.yaml").write_text(first[0])
        (folder / "b.yaml").write_text(second[0])
        if partner_apart:
            (folder / "0-partner.yaml").write_text(HEAD.format(environment="sim"))
        # Two files that set environment or policy differently are refused by both paths.
        assert_same_or_declined([folder], must_take=False)


def test_a_big_desk_is_taken_by_the_fast_path_in_many_pieces(tmp_path: Path) -> None:
    users = "".join(VALID_USER.format(number=number) for number in range(400))
    path = tmp_path / "desk.yaml"
    path.write_text(HEAD.format(environment="sim") + "users:\n" + users + AFTER[1])
    parsed: list[int] = []
    real = loader._rs_loads

    def recorded(text: str, *args: Any) -> Any:
        parsed.append(len(text))
        return real(text, *args)

    with mock.patch.object(chunks, "PIECE_CHARS", 1000), mock.patch.object(loader, "_rs_loads", recorded):
        load_manifest([path])
    # Never the whole file at once: the head, the tail, and pieces of a few items each.
    assert len(parsed) > 20 and max(parsed) < 2000
    assert_same_or_declined([path], must_take=True)


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        ("---\npolicy: {maxCancellations: 3}\n", "a second document after the list"),
        ("...\npolicy: {maxCancellations: 3}\n", "a document end, then more"),
        (f"users:\n{VALID_USER.format(number=2)}", "users set twice"),
        ("partner: {dataAccountId: 11111}\n", "a section set twice"),
        # Alone, the tail is a document whose root these would tag, anchor or be; not so after a list.
        ("!!map\npolicy: {maxCancellations: 3}\n", "a tag on a line of its own"),
        ("&a\npolicy: {maxCancellations: 3}\n", "an anchor on a line of its own"),
        ("{policy: {maxCancellations: 3}}\n", "a flow mapping in the first column"),
    ],
)
def test_the_fast_path_gives_way_where_the_whole_file_reads_otherwise(
    tmp_path: Path, tail: str, reason: str
) -> None:
    valid = tmp_path / "valid.yaml"
    valid.write_text(HEAD.format(environment="sim") + "users:\n" + VALID_USER.format(number=1))
    assert _fast([valid]) is not None  # so it is the tail that makes it give way
    path = tmp_path / "desk.yaml"
    path.write_text(valid.read_text() + tail)
    assert _fast([path]) is None, reason
    assert isinstance(_slow([path]), ManifestError), reason


@st.composite
def _users_for_rules(draw: st.DrawFn) -> list[User]:
    users = []
    for _ in range(draw(st.integers(0, 6))):
        accounts = tuple(
            Account.model_construct(
                name=draw(st.sampled_from(["ACC001", "acc001", "ACC002", "Acc003"])),
                template=draw(st.sampled_from(["eval50k", "unknown"])),
                riskCategory=draw(st.sampled_from([None, "standard", "nope"])),
                resetTo=draw(st.sampled_from([None, TODAY, TODAY + datetime.timedelta(days=1)])),
            )
            for _ in range(draw(st.integers(0, 2)))
        )
        users.append(
            User.model_construct(
                name=draw(
                    st.sampled_from(["trader001", "TRADER001", "trader00l", "tr\u0430der001", "ada", "bob"])
                ),
                email=draw(
                    st.sampled_from([None, "a@example.com", "A@Example.com", "b@example.com", "\u00c9@x.fr"])
                ),
                entitlements=tuple(
                    draw(st.lists(st.sampled_from(["simplus", "tradingview", "other"]), max_size=2))
                ),
                accounts=accounts,
                status=draw(st.sampled_from(["active", "cancelled"])),
            )
        )
    return users


@settings(max_examples=300, deadline=None)
@given(
    users=_users_for_rules(),
    entitlements=st.sampled_from([None, {"simplus": 1, "tradingview": 2}]),
    templates=st.sampled_from([None, {"eval50k": 1}]),
    categories=st.sampled_from([None, {"standard": 1}]),
    today=st.sampled_from([None, TODAY]),
)
def test_the_quick_check_across_users_agrees_with_the_rules(
    users: list[User], entitlements: Any, templates: Any, categories: Any, today: Any
) -> None:
    known = KnownNames(entitlements, templates, categories)
    problems = list(cross_reference_problems([UserKeys.of(u) for u in users], known, today=today))
    assert cross_problems_possible(users, known, today=today) == bool(problems)


_ONE_PATTERN = re.compile(r"[-?][ \t]+[-?](?:[ \t]|$)", re.MULTILINE)
"""What the stacked-indicator check was before it became one pattern per indicator."""


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("-? \t\nx:")), max_size=40))
def test_the_stacked_indicator_check_finds_what_one_pattern_found(text: str) -> None:
    split = any(pattern.search(text) is not None for pattern in loader._STACKED_INDICATORS)
    assert split == (_ONE_PATTERN.search(text) is not None)
