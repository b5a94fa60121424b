"""The intent journal: open intents survive a crash, settled ones disappear, torn tails are ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconcile.errors import StateError
from reconcile.planning.plan import CreateUser
from reconcile.state.journal import Journal


def create(name: str) -> CreateUser:
    return CreateUser(
        user=name, email=f"{name}@example.com", firstName="A", lastName="B", password={"env": "PW"}
    )


def test_open_intents_are_read_back_and_settling_compacts(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "sim.journal.jsonl")
    first = journal.begin("create", [create("ann"), create("bob")])
    second = journal.begin("create", [create("cat")])
    reopened = Journal(journal.path)  # as the next run sees it
    assert [(i.id, i.users) for i in reopened.unsettled()] == [
        (first.id, ["ann", "bob"]),
        (second.id, ["cat"]),
    ]
    journal.settle(first)
    assert [i.id for i in reopened.unsettled()] == [second.id]
    journal.settle(second)
    assert reopened.unsettled() == [] and journal.path.read_text() == ""


def test_a_torn_last_line_is_ignored_but_a_torn_middle_is_an_error(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "sim.journal.jsonl")
    intent = journal.begin("create", [create("ann")])
    with journal.path.open("a") as fh:
        fh.write('{"kind": "intent", "id": "x", "call": "cre')
    assert [i.id for i in journal.unsettled()] == [intent.id]
    with journal.path.open("a") as fh:
        fh.write("\n" + journal.path.read_text().splitlines()[0] + "\n")
    with pytest.raises(StateError, match="line 2 is not JSON"):
        journal.unsettled()

