"""The intent journal: open intents survive a crash, settled ones disappear, torn tails are ignored."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconcile.apply.intents import IntentJournal, hold_unsettled
from reconcile.errors import StateError
from reconcile.planning.plan import CreateUser
from reconcile.state.journal import FileJournal


def create(name: str) -> CreateUser:
    return CreateUser(
        user=name, email=f"{name}@example.com", firstName="A", lastName="B", password={"env": "PW"}
    )


def test_open_intents_are_read_back_and_settling_compacts(tmp_path: Path) -> None:
    log = FileJournal(tmp_path / "sim.journal.jsonl")
    journal = IntentJournal(log)
    first = journal.begin("create", [create("ann"), create("bob")])
    second = journal.begin("create", [create("cat")])
    reopened = IntentJournal(FileJournal(log.path))  # as the next run sees it
    assert [(i.id, i.users) for i in reopened.unsettled()] == [
        (first.id, ["ann", "bob"]),
        (second.id, ["cat"]),
    ]
    journal.settle(first)
    assert [i.id for i in reopened.unsettled()] == [second.id]
    journal.settle(second)
    assert reopened.unsettled() == [] and log.path.read_text() == ""


def test_a_settle_reads_the_file_only_when_this_journal_has_nothing_else_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An apply settles group k while group k+1's intent is open: no read of the growing file."""
    log = FileJournal(tmp_path / "sim.journal.jsonl")
    journal = IntentJournal(log)
    reads: list[int] = []
    unsettled = FileJournal.unsettled
    monkeypatch.setattr(FileJournal, "unsettled", lambda self: reads.append(1) or unsettled(self))
    intents = [journal.begin("grant", [create(f"u{i}")]) for i in range(2)]
    for i in range(2, 50):
        intents.append(journal.begin("grant", [create(f"u{i}")]))
        journal.settle(intents[i - 2])
    assert reads == []
    journal.settle(intents[48])
    journal.settle(intents[49])
    assert reads == [1] and log.path.read_text() == ""


def test_once_a_journal_emptied_the_file_its_settles_read_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An apply begins and settles one create intent per batch: the first settle reads the file
    (an intent of an earlier run may be in it); after it emptied the file, every line is its own."""
    log = FileJournal(tmp_path / "sim.journal.jsonl")
    journal = IntentJournal(log)
    reads: list[int] = []
    unsettled = FileJournal.unsettled
    monkeypatch.setattr(FileJournal, "unsettled", lambda self: reads.append(1) or unsettled(self))
    for i in range(20):
        journal.settle(journal.begin("create", [create(f"u{i}")]))
        assert log.path.read_text() == ""
    assert reads == [1]


def test_an_intent_another_run_wrote_after_this_journal_emptied_the_file_is_kept(tmp_path: Path) -> None:
    """Between two cycles of ``watch`` the lock is free: another run's intent may be in the file,
    and the read at the next cycle's start shows it; no settle may empty the file over it."""
    path = tmp_path / "sim.journal.jsonl"
    mine, other = IntentJournal(FileJournal(path)), IntentJournal(FileJournal(path))
    mine.settle(mine.begin("create", [create("bob")]))  # emptied by mine
    kept = other.begin("create", [create("ann")])
    assert [i.id for i in mine.unsettled()] == [kept.id]
    mine.settle(mine.begin("create", [create("cy")]))
    assert [i.id for i in IntentJournal(FileJournal(path)).unsettled()] == [kept.id]


def test_a_settle_never_empties_a_journal_holding_an_intent_another_object_wrote(tmp_path: Path) -> None:
    path = tmp_path / "sim.journal.jsonl"
    mine, other = IntentJournal(FileJournal(path)), IntentJournal(FileJournal(path))
    kept = other.begin("create", [create("ann")])
    done = mine.begin("create", [create("bob")])
    mine.settle(done)
    assert [i.id for i in IntentJournal(FileJournal(path)).unsettled()] == [kept.id]


class _DiskFilling:
    """``os.write`` that writes ``first`` bytes of the first call, then fails (``fail``) or goes on."""

    def __init__(self, first: int, *, fail: bool) -> None:
        self.first, self.fail, self.calls = first, fail, 0
        self.real = os.write

    def __call__(self, fd: int, data: bytes) -> int:
        self.calls += 1
        if self.calls == 1:
            return self.real(fd, bytes(data)[: self.first])
        if self.fail:
            raise OSError(28, "No space left on device")
        return self.real(fd, data)


def test_an_intent_written_only_in_part_is_finished_before_its_call_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # os.write may write part of a line (a disk filling up): the intent must still be whole when
    # begin() returns, or the next run would read it as torn, that is, never sent.
    journal = IntentJournal(FileJournal(tmp_path / "sim.journal.jsonl"))
    with monkeypatch.context() as patched:
        patched.setattr(os, "write", _DiskFilling(10, fail=False))
        intent = journal.begin("create", [create("ann"), create("bob")])
    assert [(i.id, i.users) for i in journal.unsettled()] == [(intent.id, ["ann", "bob"])]


def test_an_intent_the_disk_has_no_room_for_is_refused_and_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = IntentJournal(FileJournal(tmp_path / "sim.journal.jsonl"))
    first = journal.begin("create", [create("ann")])
    size = (tmp_path / "sim.journal.jsonl").stat().st_size
    with monkeypatch.context() as patched:
        patched.setattr(os, "write", _DiskFilling(10, fail=True))
        with pytest.raises(OSError, match="No space"):
            journal.begin("create", [create("bob")])  # so its call is never sent
    assert (tmp_path / "sim.journal.jsonl").stat().st_size == size
    later = journal.begin("create", [create("cat")])  # the next line follows a whole one
    assert [i.id for i in journal.unsettled()] == [first.id, later.id]


def test_a_password_candidate_written_only_in_part_is_finished_before_the_create_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconcile.apply.generated import PasswordLedger

    ledger = PasswordLedger(tmp_path / "pw.txt")
    with monkeypatch.context() as patched:
        patched.setattr(os, "write", _DiskFilling(7, fail=False))
        ledger.hold("intent-1", {"ann": "Generated-Pw-1", "bob": "Generated-Pw-2"})
    ledger.resolve(ledger.pending, "intent-1", set_for=["ann", "bob"])
    written = (tmp_path / "pw.txt").read_text()
    assert "Generated-Pw-1" in written and "Generated-Pw-2" in written


def test_a_torn_last_line_is_ignored_but_a_torn_middle_is_an_error(tmp_path: Path) -> None:
    log = FileJournal(tmp_path / "sim.journal.jsonl")
    journal = IntentJournal(log)
    intent = journal.begin("create", [create("ann")])
    with log.path.open("a") as fh:
        fh.write('{"kind": "intent", "id": "x", "call": "cre')
    assert [i.id for i in journal.unsettled()] == [intent.id]
    with log.path.open("a") as fh:
        fh.write("\n" + log.path.read_text().splitlines()[0] + "\n")
    with pytest.raises(StateError) as caught:
        journal.unsettled()
    assert str(caught.value) == (
        f"journal {log.path} line 2 is not JSON; it is written only by reconcile: "
        "inspect it, then remove it if no run is in progress"
    )


def test_a_journal_written_before_entries_were_opaque_still_loads(tmp_path: Path) -> None:
    """Intent lines keep their layout: the actions and alert id sit beside the journal's own keys."""
    path = tmp_path / "sim.journal.jsonl"
    written = (  # as reconcile 0.1.0 wrote them, byte for byte
        '{"kind":"intent","id":"4f1c","call":"grant","time":"2026-11-01T10:00:00Z","actions":[{"action":'
        '"grant_entitlement","user":"ann","userId":7,"entitlement":"simplus","entitlementId":12345,'
        '"accountId":11111,"agreement_gated":true,"recheck":false}],"agreement_alert_id":68,"passwords":null}\n'
        '{"kind":"intent","id":"9a2b","call":"create","time":"2026-11-01T10:00:01Z","actions":[],'
        '"agreement_alert_id":null,"passwords":"/tmp/pw.txt.pending"}\n'
        '{"kind":"settled","id":"9a2b"}\n'
    )
    path.write_text(written)
    [intent] = IntentJournal(FileJournal(path)).unsettled()
    assert (intent.id, intent.call, intent.users, intent.agreement_alert_id) == ("4f1c", "grant", ["ann"], 68)
    again = IntentJournal(FileJournal(tmp_path / "again.jsonl"))
    again.journal.append(intent.to_entry())
    assert (tmp_path / "again.jsonl").read_text() == written.splitlines(keepends=True)[0]


def test_an_intent_line_with_a_key_nobody_wrote_is_refused(tmp_path: Path) -> None:
    log = FileJournal(tmp_path / "sim.journal.jsonl")
    IntentJournal(log).begin("create", [create("ann")])
    line = log.path.read_text().replace('"actions"', '"surprise":1,"actions"')
    log.path.write_text(line)
    assert [e.payload["surprise"] for e in log.unsettled()] == [1]
    with pytest.raises(StateError, match="is not a valid entry"):
        IntentJournal(log).unsettled()


def test_an_entry_of_the_wrong_shape_is_an_error_naming_its_line(tmp_path: Path) -> None:
    log = FileJournal(tmp_path / "sim.journal.jsonl")
    journal = IntentJournal(log)
    journal.begin("create", [create("ann")])
    with log.path.open("a") as fh:
        fh.write('{"kind": "intent", "call": "launch", "actions": []}\n')
    with pytest.raises(StateError) as caught:
        journal.unsettled()
    assert re.fullmatch(
        r"journal intent \w+ is not a valid entry \(call: Input should be 'create', 'grant', 'cancel', "
        r"'create_account' or 'reset'\); "
        r"it is written only by reconcile: inspect it, then remove it if no run is in progress",
        str(caught.value),
    )


def test_an_intent_is_recorded_as_plain_json_and_read_back_as_the_same_record(tmp_path: Path) -> None:
    """The next run reads exactly the record this run wrote: lists, not tuples; strings, not enums."""
    log = FileJournal(tmp_path / "sim.journal.jsonl")
    intent = IntentJournal(log).begin(
        "create", [create("ann").model_copy(update={"entitlementIds": (12, 34)})]
    )
    assert FileJournal(log.path).unsettled() == [intent.to_entry()]
    [again] = IntentJournal(FileJournal(log.path)).unsettled()
    assert again == intent


ADVICE = "it is written only by reconcile: inspect it, then remove it if no run is in progress"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"kind":"launch","id":"x","call":"create"}', f" (kind 'launch' is not 'intent'); {ADVICE}"),
        ('{"kind":"settled"}', f" (id: Field required); {ADVICE}"),
        ("[1, 2]", ": not a JSON object"),
    ],
    ids=["unknown-kind", "settled-without-id", "not-an-object"],
)
def test_a_line_that_is_no_journal_entry_is_an_error_naming_its_line(
    tmp_path: Path, line: str, why: str
) -> None:
    log = FileJournal(tmp_path / "sim.journal.jsonl")
    IntentJournal(log).begin("create", [create("ann")])
    with log.path.open("a") as fh:
        fh.write(line + "\n")
    with pytest.raises(StateError) as caught:
        log.unsettled()
    assert str(caught.value) == f"journal {log.path} line 2 is not a valid entry{why}"


def test_an_intent_line_without_a_kind_is_still_an_intent(tmp_path: Path) -> None:
    """``kind`` has always defaulted to ``intent`` when reading, so such a line is not refused."""
    log = FileJournal(tmp_path / "sim.journal.jsonl")
    log.path.write_text('{"id":"4f1c","call":"cancel","time":"2026-11-01T10:00:00Z","actions":[]}\n')
    assert [(e.id, e.call, e.payload) for e in log.unsettled()] == [("4f1c", "cancel", {"actions": []})]


def test_blank_lines_and_a_repeated_settle_are_harmless(tmp_path: Path) -> None:
    log = FileJournal(tmp_path / "sim.journal.jsonl")
    journal = IntentJournal(log)
    first = journal.begin("create", [create("ann")])
    with log.path.open("a") as fh:
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
    log = FileJournal(tmp_path / "deep" / "state" / "sim.journal.jsonl")
    journal = IntentJournal(log)
    journal.begin("create", [create("ann")])
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700
    cleared = FileJournal(tmp_path / "cleared.journal.jsonl")
    cleared.clear()
    assert cleared.path.read_text() == "" and stat.S_IMODE(cleared.path.stat().st_mode) == 0o600


def test_users_of_unsettled_intents_are_held_out_of_a_plan_with_one_warning_per_intent(
    tmp_path: Path,
) -> None:
    from test_planner_support import BINDING

    from reconcile.planning.plan import Diagnostic, Plan

    log = FileJournal(tmp_path / "sim.journal.jsonl")
    journal = IntentJournal(log)
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

    log = FileJournal(tmp_path / "sim.journal.jsonl")
    journal = IntentJournal(log)
    intent = journal.begin("create", [create(f"u{i}") for i in range(count)])
    (note,) = hold_unsettled(Plan(binding=BINDING), [intent]).diagnostics
    assert note.message.startswith(f"waiting to be settled: the create of {shown} (intent {intent.id})")
