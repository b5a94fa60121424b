"""Names and text that would disguise what a terminal or a review shows are refused, located."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run
from test_loader_rules import problems, user, write
from test_planner_support import record

from reconcile.state.file import FileStateStore
from reconcile.state.model import State

ESC = "\x1b"
RLO = "\u202e"


@pytest.mark.parametrize(
    ("field", "value", "line", "column", "shown"),
    [
        ("name", '"trader\\e[31m001"', 7, 11, "U+001B control character at character 7"),
        ("name", f'"trader{RLO}100"', 7, 11, "U+202E RIGHT-TO-LEFT OVERRIDE at character 7"),
        ("name", '"trader\\u200b001"', 7, 11, "U+200B ZERO WIDTH SPACE at character 7"),
        ("email", f'"a{RLO}@example.com"', 8, 12, "U+202E RIGHT-TO-LEFT OVERRIDE at character 2"),
        ("firstName", '"Ada\\u2066x"', 10, 16, "U+2066 LEFT-TO-RIGHT ISOLATE at character 4"),
        ("lastName", '"Love\\nlace"', 11, 15, "U+000A control character at character 5"),
        ("entitlements", '["sim\\eplus"]', 12, 20, "U+001B control character at character 4"),
    ],
    ids=[
        "ansi-name",
        "bidi-name",
        "zero-width-name",
        "bidi-email",
        "isolate-first",
        "newline-last",
        "ansi-ent",
    ],
)
def test_control_and_bidi_characters_are_refused_with_their_place(
    tmp_path: Path, field: str, value: str, line: int, column: int, shown: str
) -> None:
    path = write(tmp_path, user(**{field: value}))
    found = problems(path)
    assert any(
        p.startswith(f"{path}:{line}:{column}: users[0].{field}") and f"contains {shown}: remove it" in p
        for p in found
    ), found
    assert all(ESC not in p and RLO not in p for p in found)  # the message never carries them


def test_joiners_stay_allowed_in_personal_names(tmp_path: Path) -> None:
    path = write(tmp_path, user(firstName='"Mohammad\\u200cReza"'))  # ZWNJ, as Persian writes it
    from reconcile.manifest.loader import load_manifest

    assert load_manifest([path]).manifest.users[0].firstName == "Mohammad\u200cReza"


@pytest.mark.parametrize(
    ("first", "look_alike"),
    [
        ("trader001", "tr\u0430der001"),
        ("trader001", "TRADER001"),
        ("trader001", "\uff54rader001"),
        ("trader001", "\u03c4rader001"),
        ("trader001", "trader00l"),
        ("trader001", "trader00I"),
        ("trader001", "traderOO1"),
        ("trader0O1", "traderOO1"),
        ("trader001", "trader00i"),
        ("trader0l1", "trader0\u04c01"),  # Cyrillic palochka, drawn as l
    ],
    ids=[
        "cyrillic-a", "case", "full-width-t", "greek-tau", "one-ell", "one-capital-i", "zero-oh",
        "oh-zero", "one-i", "ell-palochka",
    ],
)  # fmt: skip
def test_names_that_look_alike_are_refused(tmp_path: Path, first: str, look_alike: str) -> None:
    path = write(tmp_path, user(name=f'"{first}"') + user(name=f'"{look_alike}"', email="other@example.com"))
    found = problems(path)
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}:12:11: users[1].name: user {look_alike!a} looks like user {first!a}")
    assert found[0].endswith(f"rename one (first defined at {path}:7:5)")


@pytest.mark.parametrize(
    ("first", "second"), [("trader001", "trader00l"), ("trader0O1", "traderOO1")], ids=["1-l", "0-O"]
)
def test_validate_names_both_places_of_digit_letter_look_alikes(
    tmp_path: Path, first: str, second: str
) -> None:
    path = write(tmp_path, user(name=first) + user(name=second, email="other@example.com"))
    result = run("validate", "-f", path)
    assert result.exit_code == 1, result.output
    assert (
        f"{path}:12:11: users[1].name: user {second!r} looks like user {first!r}: the names differ "
        "only in case or look-alike characters (0/O, 1/l/I, Cyrillic, Greek, full-width…); "
        f"rename one (first defined at {path}:7:5)"
    ) in result.stderr


def test_names_that_differ_in_digits_stay_distinct(tmp_path: Path) -> None:
    names = ["trader001", "trader010", "trader100", "trader011", "trader110", "trader111", "trader000"]
    path = write(tmp_path, "".join(user(name=n, email=f"{n}@example.com") for n in names))
    result = run("validate", "-f", path)
    assert result.exit_code == 0, result.output


def test_state_list_escapes_names_from_state(tmp_path: Path) -> None:
    state = tmp_path / "sim.json"
    hostile = f"trader{ESC}[31m{RLO}001"
    FileStateStore(state).save(State(environment="sim", users={hostile: record(7, "x")}))
    result = run("state", "list", "--state", state)
    assert result.exit_code == 0, result.output
    assert ESC not in result.stdout and RLO not in result.stdout
    assert "trader\\x1b[31m\\u202e001\t7" in result.stdout
