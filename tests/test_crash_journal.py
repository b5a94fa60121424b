"""The intent journal: open intents survive a crash, settled ones disappear, torn tails are ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconcile.apply.intents import IntentJournal
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


def test_a_torn_last_line_is_ignored_but_a_torn_middle_is_an_error(tmp_path: Path) -> None:
    log = FileJournal(tmp_path / "sim.journal.jsonl")
    journal = IntentJournal(log)
    intent = journal.begin("create", [create("ann")])
    with log.path.open("a") as fh:
        fh.write('{"kind": "intent", "id": "x", "call": "cre')
    assert [i.id for i in journal.unsettled()] == [intent.id]
    with log.path.open("a") as fh:
        fh.write("\n" + log.path.read_text().splitlines()[0] + "\n")
    with pytest.raises(StateError, match="line 2 is not JSON"):
        journal.unsettled()



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
