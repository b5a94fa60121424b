"""The intent journal: open intents survive a crash, settled ones disappear, torn tails are ignored."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconcile.errors import StateError
from reconcile.planning.plan import CreateUser
from reconcile.state.journal import Journal, hold_unsettled


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
    with pytest.raises(StateError) as caught:
        journal.unsettled()
    assert str(caught.value) == (
        f"journal {journal.path} line 2 is not JSON; it is written only by reconcile: "
        "inspect it, then remove it if no run is in progress"
    )


def test_an_entry_of_the_wrong_shape_is_an_error_naming_its_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "sim.journal.jsonl")
    journal.begin("create", [create("ann")])
    with journal.path.open("a") as fh:
        fh.write('{"kind": "intent", "call": "launch", "actions": []}\n')
    with pytest.raises(StateError) as caught:
        journal.unsettled()
    assert str(caught.value) == (
        f"journal {journal.path} line 2 is not a valid entry (call: Input should be 'create', 'grant' "
        "or 'cancel'); it is written only by reconcile: inspect it, then remove it if no run is in progress"
    )


def test_blank_lines_and_a_repeated_settle_are_harmless(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "sim.journal.jsonl")
    first = journal.begin("create", [create("ann")])
    with journal.path.open("a") as fh:
        fh.write("\n   \n")
    second = journal.begin("create", [create("bob")])
    assert [i.id for i in journal.unsettled()] == [first.id, second.id]
    journal.settle(first)
    journal.settle(first)  # a settled line for an intent no longer open
    assert [i.id for i in journal.unsettled()] == [second.id]


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("umask_022")
def test_the_journal_and_its_new_folders_are_private(tmp_path: Path) -> None:
    """Intents name users and their password sources: only the owner may read them."""
    journal = Journal(tmp_path / "deep" / "state" / "sim.journal.jsonl")
    journal.begin("create", [create("ann")])
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal.path.parent.stat().st_mode) == 0o700
    cleared = Journal(tmp_path / "cleared.journal.jsonl")
    cleared.clear()
    assert cleared.path.read_text() == "" and stat.S_IMODE(cleared.path.stat().st_mode) == 0o600


def test_users_of_unsettled_intents_are_held_out_of_a_plan_with_one_warning_per_intent(
    tmp_path: Path,
) -> None:
    from test_planner_support import BINDING

    from reconcile.planning.plan import Diagnostic, Plan

    journal = Journal(tmp_path / "sim.journal.jsonl")
    seven = journal.begin("create", [create(f"u{i}") for i in range(7)])
    one = journal.begin("cancel", [create("solo")])
    kept = create("other")
    earlier = Diagnostic(severity="info", message="already there")
    plan = Plan(
        binding=BINDING, actions=(create("u0"), create("solo"), kept, create("u6")), diagnostics=(earlier,)
    )

    held = hold_unsettled(plan, journal.unsettled())

    assert held.actions == (kept,)
    assert [(d.severity, d.message) for d in held.diagnostics] == [
        ("info", "already there"),
        *[
            (
                "warning",
                f"waiting to be settled: the {intent.call} of {shown} (intent {intent.id}) was sent by an "
                "apply that did not finish; whether it happened is unknown until an apply looks these users "
                "up, so they are left out of this plan. The next apply settles them first, then plans them",
            )
            for intent, shown in ((seven, "u0, u1, u2, u3, u4 and 2 more"), (one, "solo"))
        ],
    ]
    assert hold_unsettled(plan, []) is plan


@pytest.mark.parametrize(
    ("count", "shown"), [(5, "u0, u1, u2, u3, u4"), (6, "u0, u1, u2, u3, u4 and 1 more")]
)
def test_an_intent_names_five_users_and_counts_the_rest(tmp_path: Path, count: int, shown: str) -> None:
    from test_planner_support import BINDING

    from reconcile.planning.plan import Plan

    journal = Journal(tmp_path / "sim.journal.jsonl")
    intent = journal.begin("create", [create(f"u{i}") for i in range(count)])
    (note,) = hold_unsettled(Plan(binding=BINDING), [intent]).diagnostics
    assert note.message.startswith(f"waiting to be settled: the create of {shown} (intent {intent.id})")
