"""The contract every intent journal backend passes: the state file's and PostgreSQL's.

A journal keeps opaque records (:class:`JournalEntry`); what an entry says is the applier's
business, so a payload comes back exactly as it went in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from reconcile.state.file import FileStateStore
from reconcile.state.journal import Journal, JournalEntry
from reconcile.state.store import StateStore


def _file_stores(tmp_path: Path) -> Callable[[], StateStore]:
    return lambda: FileStateStore(tmp_path / "state" / "sim.json")


def _postgres_stores(tmp_path: Path) -> Callable[[], StateStore]:
    from pg_fixtures import new_database

    from reconcile.state.postgres import PostgresStateStore

    dsn = new_database()
    return lambda: PostgresStateStore(dsn, "sim")


STORES: dict[str, Callable[[Path], Callable[[], StateStore]]] = {
    "file": _file_stores,
    "postgres": _postgres_stores,
}


@pytest.fixture(params=sorted(STORES))
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Journal]]:
    """Each call is the journal as a new run sees it (a new store object, a new connection)."""
    new_store = STORES[request.param](tmp_path)
    opened: list[StateStore] = []

    def journal() -> Journal:
        opened.append(new_store())
        return opened[-1].journal("sim")

    yield journal
    for store in opened:
        if isinstance(store, contextlib.AbstractContextManager):  # PostgreSQL stores hold a connection
            store.__exit__(None, None, None)


def entry(call: str, **payload: Any) -> JournalEntry:
    return JournalEntry(call=call, time=datetime(2026, 11, 30, 12, 0, tzinfo=UTC), payload=payload)


def test_entries_come_back_oldest_first_exactly_as_appended(reopen: Callable[[], Journal]) -> None:
    journal = reopen()
    first = entry("create", actions=[{"user": "ann", "nested": {"n": [1, 2.5, None, True]}}])
    second = entry("cancel", actions=[], note="ünïcode")
    third = JournalEntry(call="create", passwords="/secure/pw.txt.pending")
    for e in (first, second, third):
        journal.append(e)
    assert reopen().unsettled() == [first, second, third]


def test_settling_removes_only_that_entry_and_clear_removes_all(reopen: Callable[[], Journal]) -> None:
    journal = reopen()
    first, second, third = entry("create"), entry("grant", agreement_alert_id=68), entry("cancel")
    for e in (first, second, third):
        journal.append(e)
    journal.settle(second.id)
    assert [e.id for e in reopen().unsettled()] == [first.id, third.id]
    reopen().settle(first.id)
    reopen().settle("never-appended")
    assert [e.id for e in journal.unsettled()] == [third.id]
    journal.clear()
    assert reopen().unsettled() == []


def test_a_payload_cannot_take_the_journals_own_keys() -> None:
    for key in ("kind", "id", "call", "time", "passwords"):
        with pytest.raises(ValidationError, match="journal's own"):
            JournalEntry(call="create", payload={key: "x"})
