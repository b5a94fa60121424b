"""The save of a create sent ahead, deferred until its contact updates are in flight, attacked.

Two promises must hold at every moment, whatever ends the run (``Run.settle_when_busy``): no create
intent is settled while a user it created is missing from the stored state (its id would be lost),
and no call that is not idempotent (an intent other than a create) names a user the stored state
does not hold yet. :class:`Promises` checks both on the thread that journals, as they happen.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_watch_loop
from account_support import Desk, client, create, desk
from apply_support import write_desk
from pg_fixtures import new_database
from test_apply_executor import (
    ANN,
    AheadApi,
    FakeApi,
    FakeUser,
    _creates_with_contacts,
    _handed_out,
    env,
    make_manifest,
    plan_for,
    run,
    settle_as_next_run,
)

from reconcile.api.models import UpdateContactInfo
from reconcile.apply import IntentJournal, RunStopped
from reconcile.apply.generated import pending_path_for
from reconcile.apply.intents import Intent
from reconcile.apply.run import Run
from reconcile.errors import ApiError, CaptchaRequired
from reconcile.operations.watch import CycleReport, Shutdown
from reconcile.planning.plan import CreateUser, GrantEntitlement, UpdateContact
from reconcile.state.audit import FileAuditLog
from reconcile.state.file import FileStateStore
from reconcile.state.postgres import PostgresStateStore

__all__ = ["client", "desk", "env"]  # the fixtures the tests here take

SECOND = ["trader002", "trader003"]
"""The second batch of two: its create goes ahead, beside the first batch's follow-ups."""


class Promises:
    """Record every create intent settled over a user state lacks, and every other intent begun
    for a user state lacks (``saved``: the users stored now; ``created``: those the API holds)."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, saved: Callable[[], set[str]], created: Callable[[], set[str]]
    ) -> None:
        self.broken: list[str] = []
        self.settled: list[list[str]] = []
        self.begun: list[str] = []
        real_begin, real_settle = IntentJournal.begin, IntentJournal.settle

        def begin(journal: IntentJournal, call: Any, actions: Iterable[Any], **kw: Any) -> Intent:
            actions = list(actions)
            if call != "create":
                self.begun.append(call)
                missing = {a.user for a in actions} - saved()
                if missing:
                    self.broken.append(f"{call} sent for {sorted(missing)} before they were saved")
            return real_begin(journal, call, actions, **kw)

        def settle(journal: IntentJournal, intent: Intent) -> None:
            if intent.call == "create":
                self.settled.append(intent.users)
                missing = (set(intent.users) & created()) - saved()
                if missing:
                    self.broken.append(f"create of {sorted(missing)} settled before they were saved")
            real_settle(journal, intent)

        monkeypatch.setattr(IntentJournal, "begin", begin)
        monkeypatch.setattr(IntentJournal, "settle", settle)


def _deferrals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], bool]]:
    """Record each create whose settle waits for the workers: (its users, whether its save waits too)."""
    seen: list[tuple[list[str], bool]] = []
    real = Run.settle_when_busy

    def settle_when_busy(self: Run, intent: Intent, *, unsaved: bool = False) -> None:
        seen.append((intent.users, unsaved))
        real(self, intent, unsaved=unsaved)

    monkeypatch.setattr(Run, "settle_when_busy", settle_when_busy)
    return seen


def test_no_call_that_is_not_idempotent_names_a_user_of_a_create_sent_ahead_before_it_is_saved(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the second batch has contact updates: its save waits for them; the third batch's
    first follow-up is a grant, so its users are saved before it. Every batch gets grants and
    accounts (journalled calls) after its contacts."""
    names = [f"trader{i:03d}" for i in range(6)]
    stored = FileStateStore(desk.store.path)
    promises = Promises(monkeypatch, saved=lambda: set(stored.load("sim").users), created=lambda: set(names))
    deferred = _deferrals(monkeypatch)
    new = [
        CreateUser(user=n, email=f"{n}@example.com", firstName="T", lastName="T", password="literal")
        for n in names
    ]
    contacts = [UpdateContact(user=n, userId=None, changes=(), contact=ANN) for n in SECOND]
    grants = [
        GrantEntitlement(
            user=n,
            userId=None,
            entitlement="tradingview",
            entitlementId=31,
            accountId=11111,
            agreement_gated=False,
        )
        for n in names
    ]
    accounts = [create(n, f"EVAL{i}", None) for i, n in enumerate(names)]
    done, _ = desk.apply(
        [*new, *contacts, *grants, *accounts], batch_size=2, passwords=dict.fromkeys(names, "Trader-Pa55!")
    )
    assert done.result.ok, done.result.failures
    assert deferred == [(SECOND, True), (names[4:], False)], "the creates did not go ahead as planned"
    assert promises.begun == ["grant", "create_account"] * 3
    assert promises.broken == []
    assert promises.settled == [names[:2], SECOND, names[4:]]
    assert IntentJournal(desk.journal).unsettled() == []


@pytest.fixture(params=["file", "postgresql"])
def stores(request: pytest.FixtureRequest, env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The state, journal and audit log of one apply: next to a state file, or in PostgreSQL.

    ``reader`` reads what is stored with a store object of its own: reading through the run's
    store would change what its next save writes.
    """
    if request.param == "file":
        yield {**env, "reader": FileStateStore(env["store"].path)}
        return
    dsn = new_database()
    with PostgresStateStore(dsn, "sim") as store, PostgresStateStore(dsn, "sim") as reader:
        journal, audit = store.journal("sim"), store.audit_log("sim")
        yield {"store": store, "journal": journal, "audit": audit, "api": FakeApi(), "reader": reader}


def _run_until_stopped(
    stores: dict[str, Any], api: FakeApi, monkeypatch: pytest.MonkeyPatch, out: Path, match: str
) -> tuple[Promises, list[tuple[list[str], bool]]]:
    """Create six traders with contacts in batches of two (passwords generated into ``out``)
    against ``api``, until the stop ``match`` says; return what was watched meanwhile."""
    stores["api"] = api
    reader = stores["reader"]
    promises = Promises(
        monkeypatch, saved=lambda: set(reader.load("sim").users), created=lambda: set(api.users)
    )
    deferred = _deferrals(monkeypatch)
    m = make_manifest(6, password={"generate": True})
    with pytest.raises(RunStopped, match=match):
        run(
            stores,
            plan_for(stores["store"], _creates_with_contacts(m)),
            m,
            batch_size=2,
            generated_passwords=out,
        )
    return promises, deferred


def test_a_captcha_met_before_the_deferred_save_keeps_the_created_users_and_sends_nothing_after(
    stores: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second batch's first contact update meets a captcha while its users wait for their save:
    they are saved, then its intent is settled (every outcome of it is known); the third create,
    due beside those updates, is never sent; every password set is handed out once."""
    store = stores["store"]

    class CaptchaOnTheSecondBatch(AheadApi):
        def update_contact_info(self, req: UpdateContactInfo, *, user: str | None = None) -> None:
            if user == SECOND[0]:
                self.calls.append(("captcha", req.userId))
                raise CaptchaRequired("captcha required")
            super().update_contact_info(req, user=user)

    waited: list[bool] = []
    real = Run.settle_recorded

    def settle_recorded(self: Run) -> None:
        if any(i.users == SECOND for i in self._recorded):  # the worker's stop comes first
            for _ in range(400):
                if self.stop.reason is not None:
                    break
                threading.Event().wait(0.005)
            waited.append(self.stop.reason is not None)
        real(self)

    monkeypatch.setattr(Run, "settle_recorded", settle_recorded)
    api = CaptchaOnTheSecondBatch(patience=0.5)
    out = tmp_path / "pw.txt"
    promises, deferred = _run_until_stopped(stores, api, monkeypatch, out, "captcha required")
    assert deferred == [(SECOND, True)] and waited == [True]
    assert api.count("create") == 2, "the create due beside the stopped updates was sent"
    captcha = next(i for i, call in enumerate(api.calls) if call[0] == "captcha")
    # Only the update beside the refused one may have gone (in flight when the stop came).
    after = [call for call in api.calls[captcha + 1 :] if call != ("contact", api.users[SECOND[1]].id)]
    assert after == [], "a call went after the stop"
    assert promises.broken == [] and SECOND in promises.settled
    state = store.load("sim")
    assert {n: r.userId for n, r in state.users.items()} == {n: u.id for n, u in api.users.items()}
    assert IntentJournal(stores["journal"]).unsettled() == []
    assert stores["audit"].read()[-1]["action"] == "stop"
    assert _handed_out(out) == api.passwords and not pending_path_for(out).exists()
    # The next run has nothing to look up: nobody is adopted, nobody is created twice.
    finds = api.count("find")
    settle_as_next_run(stores, tmp_path / "pw-2.txt")
    assert api.count("find") == finds and not (tmp_path / "pw-2.txt").exists()


def test_a_look_up_that_fails_while_a_create_sent_ahead_is_recorded_keeps_its_intent_open(
    stores: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second batch's create says its second user exists already, and looking it up fails: the
    run stops there. Its created user is saved, its intent stays open (an outcome is unknown), and
    the next run looks up only the one it could not."""

    class LookUpRefused(AheadApi):
        blocked: bool = True

        def find_user(self, name: str) -> Any:
            if self.blocked:
                self.calls.append(("find", name))
                raise ApiError("user/find: the API answered HTTP 429", call="find")
            return super().find_user(name)

    api = LookUpRefused(patience=0.5)
    api.users[SECOND[1]] = FakeUser(900, SECOND[1], f"{SECOND[1]}@example.com")  # made by another run
    out = tmp_path / "pw.txt"
    promises, deferred = _run_until_stopped(stores, api, monkeypatch, out, "looking the user up failed")
    reader = stores["reader"]
    # An outcome is unknown: its users are saved at once, and nothing of it waits for the workers.
    assert deferred == [] and api.count("create") == 2
    contacted = sorted(c[1] for c in api.calls if c[0] == "contact")
    assert contacted == [api.users[n].id for n in ("trader000", "trader001")], "a call went after the stop"
    assert promises.broken == [] and SECOND not in promises.settled
    state = reader.load("sim")
    assert {n: r.userId for n, r in state.users.items()} == {
        n: api.users[n].id for n in ("trader000", "trader001", SECOND[0])
    }
    assert [i.users for i in IntentJournal(stores["journal"]).unsettled()] == [SECOND]
    assert _handed_out(out) == {n: api.passwords[n] for n in ("trader000", "trader001", SECOND[0])}
    api.blocked = False
    finds = api.count("find")
    settled = settle_as_next_run(stores, tmp_path / "pw-2.txt")
    assert settled.adopted == [SECOND[1]] and api.count("find") == finds + 1
    assert reader.load("sim").users[SECOND[1]].userId == 900
    assert IntentJournal(stores["journal"]).unsettled() == []


def test_a_watch_stopped_before_the_deferred_save_keeps_its_traders_and_the_next_watch_converges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM lands while the second batch's users wait for their save: the cycle saves them and
    settles their create before it reports stopped. Each cycle has a Run and a journal of its own:
    the next watch, in the same process, creates only the trader left and adopts nobody."""
    monkeypatch.chdir(tmp_path)
    shutdowns: list[Shutdown] = []

    class Captured(Shutdown):
        def __init__(self) -> None:
            super().__init__()
            shutdowns.append(self)

    monkeypatch.setattr(test_watch_loop, "Shutdown", Captured)
    real = Run.settle_when_busy
    deferred: list[list[str]] = []

    def settle_when_busy(self: Run, intent: Intent, *, unsaved: bool = False) -> None:
        real(self, intent, unsaved=unsaved)
        if unsaved and not deferred:
            deferred.append(intent.users)
            shutdowns[-1].request("SIGTERM received: stopping after the call in flight")

    monkeypatch.setattr(Run, "settle_when_busy", settle_when_busy)
    names = {f"trader{i:04d}" for i in range(5)}
    stored = FileStateStore(tmp_path / "state" / "sim.json")
    promises = Promises(monkeypatch, saved=lambda: set(stored.load("sim").users), created=lambda: names)
    desk = write_desk(tmp_path / "first.yaml", 5, simplus=True, contact=True).read_text()

    def once(_report: CycleReport, _desk: Path) -> bool:
        return False

    stopped = test_watch_loop._run(tmp_path, desk, once, batch_size=2)
    assert [r.outcome for r in stopped] == ["stopped"], [r.message for r in stopped]
    assert deferred == [["trader0002", "trader0003"]]
    state = stored.load("sim")
    assert sorted(state.users) == [f"trader{i:04d}" for i in range(4)], "the third create went after the stop"
    assert [i.users for i in IntentJournal(stored.journal("sim")).unsettled()] == []
    assert promises.broken == [] and deferred[0] in promises.settled
    # The cycle settled its create itself: the settle after the stop found nothing left open.
    audit = FileAuditLog(tmp_path / "state" / "sim.audit.jsonl").read()
    assert [a["action"] for a in audit if a["action"] in ("stop", "settle")] == ["stop"]
    again = test_watch_loop._run(tmp_path, desk, once, batch_size=2)
    assert [r.outcome for r in again] == ["applied"], [r.message for r in again]
    assert again[0].applied.get("created") == 1 and "adopted" not in again[0].applied
    assert again[0].applied.get("contacts_updated") == 3  # the stopped cycle's second batch, and the last
    state = stored.load("sim")
    assert sorted(state.users) == sorted(names) and len({r.userId for r in state.users.values()}) == 5
    assert all(r.contact is not None for r in state.users.values())
    assert promises.broken == []
    with contextlib.suppress(FileNotFoundError):
        assert not (tmp_path / "state" / "sim.journal.jsonl").read_text().strip()
