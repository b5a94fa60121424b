"""What the applier does while a batch's follow-ups are in flight: deferred settles and saves,
the look-ahead create, and every way a run can end meanwhile (see ``Run.when_busy``)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from apply_support import write_desk
from pg_fixtures import new_database
from test_apply_executor import (
    AheadApi,
    Signal,
    SlowSlotsApi,
    _creates_with_contacts,
    _handed_out,
    creates,
    env,
    make_manifest,
    plan_for,
    run,
    settle_as_next_run,
    simplus_grants,
    stopped_by_captcha,
)
from test_watch_loop import _run as watch_cycles

from reconcile.api.models import UpdateContactInfo
from reconcile.apply import IntentJournal, RunStopped, update
from reconcile.apply.generated import pending_path_for
from reconcile.apply.intents import Intent
from reconcile.apply.result import PhaseTally
from reconcile.apply.run import Run
from reconcile.apply.stop import Stop
from reconcile.errors import CaptchaRequired, StateError
from reconcile.operations.watch import CycleReport
from reconcile.state.file import FileStateStore
from reconcile.state.postgres import PostgresStateStore

__all__ = ["env"]  # the fixture the tests here take


def test_a_stop_met_while_the_look_ahead_create_is_announced_leaves_nothing_open(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker meets a captcha while the next create's intent is written: that create is never
    sent, so its intent and candidates must not be left for the next run to look up."""
    stop = Stop()
    begun = threading.Event()

    class CaptchaWhileAnnounced(AheadApi):
        def update_contact_info(self, req: UpdateContactInfo, *, user: str | None = None) -> None:
            if user == "trader000":
                begun.wait(2.0)
                raise CaptchaRequired("captcha required")
            super().update_contact_info(req, user=user)

    real_begin = IntentJournal.begin

    def begin(self: IntentJournal, call: Any, *args: Any, **kwargs: Any) -> Intent:
        intent = real_begin(self, call, *args, **kwargs)
        if call == "create" and intent.users == ["trader002", "trader003"]:
            begun.set()
            for _ in range(200):  # until the worker's captcha tripped the stop
                if stop.reason is not None:
                    break
                threading.Event().wait(0.01)
        return intent

    monkeypatch.setattr(IntentJournal, "begin", begin)
    env["api"] = api = CaptchaWhileAnnounced(patience=0.05)  # trader001 waits for no second create
    out = tmp_path / "pw.txt"
    stopped_by_captcha(env, out, stop)
    assert api.count("create") == 1, "the create after the stop was sent"
    assert IntentJournal(env["journal"]).unsettled() == [], "an intent of a create never sent was left open"
    assert not pending_path_for(out).exists(), "candidates of a create never sent were left pending"
    assert _handed_out(out) == {n: api.passwords[n] for n in ("trader000", "trader001")}


# --- a run that ends at each piece of the deferred bookkeeping ------------------------------------

SECOND = ["trader002", "trader003"]
"""The second batch: its create goes ahead, beside the first batch's contact updates."""
FIRST = ["trader000", "trader001"]
"""The first batch: its contact updates are answered beside the second create."""


def _interrupt_at(where: str, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> list[str]:
    """Make the run raise ``error`` once, at ``where``; return where it was raised (for the test)."""
    raised: list[str] = []

    def once() -> bool:
        if raised:
            return False
        raised.append(where)
        return True

    if where in ("settle", "announce", "announced"):
        name = "settle" if where == "settle" else "begin"
        real = getattr(IntentJournal, name)

        def wrapped(self: IntentJournal, *args: Any, **kwargs: Any) -> Any:
            users = args[0].users if where == "settle" else [a.user for a in args[1]]
            if where == "announced":
                out = real(self, *args, **kwargs)
                if args[0] == "create" and users == SECOND and once():
                    raise error
                return out
            if users == SECOND and (where == "settle" or args[0] == "create") and once():
                raise error
            return real(self, *args, **kwargs)

        monkeypatch.setattr(IntentJournal, name, wrapped)
    elif where.startswith("create's save"):
        real_save = FileStateStore.save

        def save(self: FileStateStore, state: Any, changed: Any = None, **kw: Any) -> Any:
            theirs = changed is not None and set(SECOND) <= set(changed)
            if theirs and where == "create's save, disk stays full":
                raised[:] = [where]  # every save of them fails, the run's last ones too
                raise error
            if theirs and where == "create's save" and once():
                raise error
            out = real_save(self, state, changed, **kw)
            if theirs and where == "create's save written" and once():
                raise error
            return out

        monkeypatch.setattr(FileStateStore, "save", save)
    else:
        assert where == "last save"
        real_left = Run.save_left

        def save_left(self: Run) -> None:
            if self._unsaved and not self.saving_later and once():
                raise error
            real_left(self)

        monkeypatch.setattr(Run, "save_left", save_left)
    return raised


WHERE = {
    # where the run ends → the intents it leaves open (every call's outcome reaches state anyway)
    "settle": [],  # the second create is recorded: the run's end settles it
    "announce": [],  # before its intent was written: nothing of it exists
    "announced": SECOND,  # written, not sent: the next run finds nobody
    # The second create's users are saved once its follow-ups are in flight (the first batch's
    # contacts are recorded after it): when that save fails, the run's end saves them, and what
    # every contact update did, before it settles...
    "create's save": [],
    # ...and when that fails too, the intent stays open: the next run looks them up.
    "create's save, disk stays full": SECOND,
    # Saved, then failed: the run's end cannot save again over the serial it did not see (state
    # changed under it), so it does not settle: the next run finds them in state.
    "create's save written": SECOND,
    "last save": [],
}


@pytest.mark.parametrize(
    "error", [KeyboardInterrupt(), OSError(28, "No space left on device")], ids=["ctrl-c", "disk"]
)
@pytest.mark.parametrize("where", WHERE)
def test_a_run_ended_at_any_piece_of_the_deferred_bookkeeping_keeps_every_promise(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, error: BaseException
) -> None:
    raised = _interrupt_at(where, monkeypatch, error)
    env["api"] = api = AheadApi(patience=0.2)
    m = make_manifest(4, password={"generate": True})
    out = tmp_path / "pw.txt"
    with pytest.raises(BaseException) as ended:
        run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2, generated_passwords=out)
    assert raised == [where], ended.value
    assert [i.users for i in IntentJournal(env["journal"]).unsettled()] == (
        [WHERE[where]] if WHERE[where] else []
    )
    assert type(ended.value) is type(error) or "No space" in str(ended.value), ended.value
    created = [name for kind, names in api.calls if kind == "create" for name in names]
    assert len(created) == len(set(created)) == len(api.users)
    state = env["store"].load("sim")
    open_users = {n for i in IntentJournal(env["journal"]).unsettled() for n in i.users}
    # Every trader the API holds is recorded, or named by an open intent the next run settles.
    for name, user in api.users.items():
        assert (name in state.users and state.users[name].userId == user.id) or name in open_users, name
    unknown = open_users - set(state.users)  # what the next run must look up
    # The audit log is no older than state.
    audit = [json.loads(x) for x in env["audit"].path.read_text().splitlines()]
    logged = {n for a in audit if a["action"] == "create" for n in a["users"]}
    assert set(state.users) <= logged
    ids = {u.id: n for n, u in api.users.items()}
    contacted = {ids[uid] for kind, uid in api.calls if kind == "contact"}
    assert {n for a in audit if a["action"] == "update_contact" for n in a["users"]} == contacted
    # What the contact updates did is saved all the same: the run's end saves what waited. When
    # it cannot save (the disk stays full, state moved under it), the next plan sends them again.
    saved = {n for n, r in state.users.items() if r.contact is not None}
    unsaved = {"create's save, disk stays full": contacted, "create's save written": contacted}
    assert saved == contacted - unsaved.get(where, set())
    # The next run settles what was left; every password that was set is handed out once.
    monkeypatch.undo()
    finds = api.count("find")
    settle_as_next_run(env, tmp_path / "pw-2.txt")
    assert IntentJournal(env["journal"]).unsettled() == []
    assert api.count("find") - finds == len(unknown)
    assert not pending_path_for(out).exists()
    assert _handed_out(out) == api.passwords
    state = env["store"].load("sim")
    assert {n: r.userId for n, r in state.users.items()} == {n: u.id for n, u in api.users.items()}


def test_a_batchs_follow_ups_are_saved_before_the_next_create_waits_for_its_slot(env: dict[str, Any]) -> None:
    """The wait may be an hour: a run killed in it must not send the batch's updates again, nor
    lose that its traders await the agreement; and a trader who signed meanwhile is granted."""
    stored: list[tuple[bool, str | None]] = []

    class Watched(SlowSlotsApi):
        def await_create_slot(self) -> float:
            if self.waits == 1:  # the second create's wait: what does the stored state say?
                first = env["store"].load("sim").users["trader001"]
                grant = first.entitlements.get("simplus")
                stored.append((first.contact is not None, grant.status if grant else None))
            return super().await_create_slot()

    env["api"] = api = Watched()
    m = make_manifest(4)
    ids = dict.fromkeys((u.name for u in m.users), None)
    acts = [*_creates_with_contacts(m), *simplus_grants(ids)]  # type: ignore[arg-type]
    result = run(env, plan_for(env["store"], acts), m, batch_size=2)
    assert result.ok, result.failures
    assert stored == [(True, "awaiting_agreement")]
    assert result.granted == ["trader000"] and api.count("grant") == 1
    state = env["store"].load("sim")
    assert state.users["trader000"].entitlements["simplus"].status == "granted"
    assert all(r.contact is not None for r in state.users.values())
    assert IntentJournal(env["journal"]).unsettled() == []


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "a create's save fails"])
def test_merged_saves_reach_postgresql_whole(fail: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch's contacts ride on a later save into the rows (they are recorded once the next
    batch's follow-ups are in flight); a failed save keeps what waited for the save the run's
    end makes, with what every contact update did."""
    with PostgresStateStore(new_database(), "sim") as store:
        if fail:
            real = PostgresStateStore._write
            failed: list[int] = []

            def write(self: PostgresStateStore, state: Any, changed: Any, accounts: Any = None) -> None:
                if changed is not None and set(SECOND) <= set(changed) and not failed:
                    failed.append(1)
                    raise StateError("state: the database refused the write")
                real(self, state, changed, accounts)

            monkeypatch.setattr(PostgresStateStore, "_write", write)
        pg = {"store": store, "journal": store.journal("sim"), "audit": store.audit_log("sim")}
        pg["api"] = api = AheadApi(patience=0.5)
        m = make_manifest(5)
        plan = plan_for(store, _creates_with_contacts(m))  # type: ignore[arg-type]
        if fail:
            with pytest.raises(StateError, match="refused the write"):
                run(pg, plan, m, batch_size=2)
        else:
            assert run(pg, plan, m, batch_size=2).ok
        state = store.load("sim")
        recorded = {n for n, r in state.users.items() if r.contact is not None}
        contacted = {n for n, u in api.users.items() if ("contact", u.id) in api.calls}
        assert recorded == contacted and len(recorded) == (4 if fail else 5)
        assert state.serial == (2 if fail else 4)
        # Saved by the run's end after the failed save, so settled: nothing is left to look up.
        assert IntentJournal(pg["journal"]).unsettled() == []
        actions = [line["action"] for line in pg["audit"].read()]
        assert actions.count("update_contact") == len(contacted) and actions.count("create") == api.count(
            "create"
        )


def test_a_watch_runs_cycle_after_cycle_with_nothing_left_of_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every cycle's apply sends creates ahead and defers settles and saves: none of it, nor a
    thread it started, outlives its cycle."""
    monkeypatch.chdir(tmp_path)
    runs: list[Run] = []
    submitted: list[int] = []
    real_init, real_submit = Run.__init__, Run.submit
    monkeypatch.setattr(Run, "__init__", lambda self, **kw: runs.append(self) or real_init(self, **kw))
    monkeypatch.setattr(Run, "submit", lambda self, *a: submitted.append(1) or real_submit(self, *a))
    alive: list[list[object]] = []

    def then(report: CycleReport, desk: Path) -> bool:
        left = [
            (r._when_busy, r._recorded, r._unsaved, r.saving_later, r._pool, r._caller, r._carried)
            for r in runs
            if (r._when_busy, r._recorded, r._unsaved, r.saving_later, r._pool, r._caller, r._carried)
            != ([], [], set(), False, None, None, [])
        ]
        alive.append([*left, *(t.name for t in threading.enumerate() if t.name.startswith("apply"))])
        if report.cycle == 1:
            write_desk(desk, 9, simplus=True, contact=True)
        return report.cycle < 3

    first = write_desk(tmp_path / "first.yaml", 5, simplus=True, contact=True).read_text()
    reports = watch_cycles(tmp_path, first, then, batch_size=2)
    assert [r.outcome for r in reports] == ["applied", "applied", "in_sync"], [r.message for r in reports]
    assert [(r.applied.get("created"), r.applied.get("contacts_updated")) for r in reports[:2]] == [
        (5, 5),
        (4, 4),
    ]
    assert [r.awaiting_agreement for r in reports[:2]] == [5, 9]
    assert alive == [[], [], []]
    assert len(submitted) == 3 + 2  # one create call per batch of two: the cycles did send creates
    journal = tmp_path / "state" / "sim.journal.jsonl"
    assert not journal.exists() or not journal.read_text().strip()


def test_a_lost_answer_of_a_create_sent_ahead_is_settled_by_looking_its_users_up(
    env: dict[str, Any], tmp_path: Path
) -> None:
    class LosingTheSecond(AheadApi):
        def create_evaluation_users(self, users: list[Any]) -> list[Any]:
            self.drop_next_create = self.count("create") == 1
            return super().create_evaluation_users(users)

    env["api"] = api = LosingTheSecond(patience=0.05)  # the second create's answer never comes
    m = make_manifest(5, password={"generate": True})
    out = tmp_path / "pw.txt"
    result = run(
        env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2, generated_passwords=out
    )
    assert result.ok, result.failures
    assert sorted(result.adopted) == ["trader002", "trader003"] and api.count("create") == 3
    assert [c[1] for c in api.calls if c[0] == "find"] == ["trader002", "trader003"]
    state = env["store"].load("sim")
    assert {n: r.userId for n, r in state.users.items()} == {n: u.id for n, u in api.users.items()}
    assert all(r.contact is not None for r in state.users.values())
    assert IntentJournal(env["journal"]).unsettled() == []
    assert _handed_out(out) == api.passwords and not pending_path_for(out).exists()


def test_no_intent_stays_open_while_a_create_waits_for_its_slot(env: dict[str, Any]) -> None:
    """The wait may be an hour: a create sent ahead and recorded, whose batch needs no follow-up,
    is settled before the next create waits (a run killed meanwhile leaves nothing to settle), and
    the first batch's contact updates, carried beside it, are recorded and saved before it too."""
    open_at_wait: list[int] = []
    recorded_at_wait: list[tuple[int, int]] = []  # (update_contact lines, contacts saved)

    class Paced(AheadApi):
        def await_create_slot(self) -> float:
            open_at_wait.append(len(env["journal"].unsettled()))
            audit = env["audit"].path
            lines = audit.read_text().count('"update_contact"') if audit.exists() else 0
            saved = FileStateStore(env["store"].path).load("sim").users.values()
            recorded_at_wait.append((lines, sum(r.contact is not None for r in saved)))
            return 0.0

    env["api"] = api = Paced(patience=0.5)
    m = make_manifest(6)
    contacts = [a for a in _creates_with_contacts(m) if a not in creates(m)][:2]  # the first batch's
    result = run(env, plan_for(env["store"], [*creates(m), *contacts]), m, batch_size=2)
    assert result.ok, result.failures
    assert api.waited == [True, True]  # the second create went ahead, beside the first batch's updates
    assert open_at_wait == [0, 0]  # the first create's wait, and the third's
    assert recorded_at_wait == [(0, 0), (2, 2)]


def test_a_stop_from_outside_while_a_create_is_announced_leaves_nothing_open(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``watch`` trips the stop on SIGTERM, wherever the main thread is: here, writing the intent."""
    stop = Stop()
    real_begin = IntentJournal.begin

    def begin(self: IntentJournal, *args: Any, **kwargs: Any) -> Intent:
        intent = real_begin(self, *args, **kwargs)
        stop.trip("SIGTERM: the watch is ending")
        return intent

    monkeypatch.setattr(IntentJournal, "begin", begin)
    m = make_manifest(2, password={"generate": True})
    out = tmp_path / "pw.txt"
    with pytest.raises(RunStopped, match="SIGTERM"):
        run(env, plan_for(env["store"], _creates_with_contacts(m)), m, generated_passwords=out, stop=stop)
    assert env["api"].calls == []
    assert IntentJournal(env["journal"]).unsettled() == [] and not pending_path_for(out).exists()


# --- when the users of a create sent ahead are saved ----------------------------------------------


def _holds(env: dict[str, Any], names: list[str]) -> bool:
    """Whether the state on disk records every user of ``names``.

    Read by a store of its own: a load through the run's store would reset what that store
    compares its next save with, and could hide a save it missed.
    """
    return set(names) <= set(FileStateStore(env["store"].path).load("sim").users)


def test_a_batchs_last_contact_updates_are_answered_while_the_next_batchs_go_out(
    env: dict[str, Any],
) -> None:
    """The workers no longer drain at each batch's end: the last group of a batch's follow-ups is
    recorded once the next batch's are handed out (contact updates are idempotent: a run killed
    before it sends them again). Here the first batch's last update is answered only once the
    second batch's first one has gone out: recording it before would wait in vain."""
    second_sent = threading.Event()
    waited: list[bool] = []

    class Watched(AheadApi):
        def update_contact_info(self, req: UpdateContactInfo, *, user: str | None = None) -> None:
            if user == "trader001":
                waited.append(second_sent.wait(3.0))
            elif user == SECOND[0]:
                second_sent.set()
            super().update_contact_info(req, user=user)

    env["api"] = api = Watched(patience=0.5)
    m = make_manifest(6)
    result = run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2)
    assert result.ok, result.failures
    assert waited == [True]
    state = FileStateStore(env["store"].path).load("sim")
    assert {n for n, r in state.users.items() if r.contact is not None} == set(api.users)
    audit = [json.loads(x) for x in env["audit"].path.read_text().splitlines()]
    contacts = [a["users"][0] for a in audit if a["action"] == "update_contact"]
    assert sorted(contacts) == sorted(api.users) and len(contacts) == 6
    assert IntentJournal(env["journal"]).unsettled() == []


def test_the_users_of_a_create_sent_ahead_are_saved_once_their_contact_updates_are_in_flight(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Contact updates are idempotent: the workers need not idle while the create's users are
    saved. The save still comes before its intent is settled (a kill in between adopts them)."""
    updating = threading.Event()
    seen: dict[str, bool] = {}

    class Watched(AheadApi):
        def update_contact_info(self, req: UpdateContactInfo, *, user: str | None = None) -> None:
            if user in SECOND:
                updating.set()
            super().update_contact_info(req, user=user)

    real_save = FileStateStore.save

    def save(self: FileStateStore, state: Any, changed: Any = None, **kw: Any) -> Any:
        if changed is not None and set(SECOND) <= set(changed) and "save" not in seen:
            # Waits for the updates: a save made before they are handed out times out here.
            seen["save"] = updating.wait(5.0)
        return real_save(self, state, changed, **kw)

    real_settle = IntentJournal.settle

    def settle(self: IntentJournal, intent: Intent) -> None:
        if intent.users == SECOND:
            seen["settled after the save"] = _holds(env, SECOND)
        real_settle(self, intent)

    monkeypatch.setattr(FileStateStore, "save", save)
    monkeypatch.setattr(IntentJournal, "settle", settle)
    env["api"] = api = Watched(patience=0.5)
    m = make_manifest(4)
    result = run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2)
    assert result.ok, result.failures
    assert api.waited == [True, True], "the second create did not go ahead"
    assert seen == {"save": True, "settled after the save": True}
    state = env["store"].load("sim")
    assert all(r.contact is not None for r in state.users.values())
    assert IntentJournal(env["journal"]).unsettled() == []


def test_the_users_of_a_create_sent_ahead_are_saved_before_a_call_that_is_not_idempotent(
    env: dict[str, Any],
) -> None:
    """A grant has an intent of its own: its trader is in state before it is sent, so nothing
    the next run settles ever names a user that state does not hold."""
    on_disk: dict[str, bool] = {}

    class Granting(AheadApi):
        def add_entitlement_subscription(
            self, entitlement_id: int, user_id: int, account_id: int, *, user: str | None = None
        ) -> Any:
            name = next(n for n, u in self.users.items() if u.id == user_id)
            on_disk[name] = _holds(env, [name])
            return super().add_entitlement_subscription(entitlement_id, user_id, account_id, user=user)

    # Every trader has signed as soon as it exists (the fake's ids are 500, 501, ...): the one
    # read of the signals, before the second create, already shows the second batch's.
    env["api"] = api = Granting(signals=[Signal(100 + i, 500 + i) for i in range(4)])
    m = make_manifest(4)
    ids = dict.fromkeys((u.name for u in m.users), None)
    result = run(env, plan_for(env["store"], [*creates(m), *simplus_grants(ids)]), m, batch_size=2)  # type: ignore[arg-type]
    assert result.ok, result.failures
    assert api.count("create") == 2
    assert on_disk == {name: True for name in ids}


def test_a_stop_met_between_the_look_ups_of_a_lost_create_loses_no_password(
    env: dict[str, Any], tmp_path: Path
) -> None:
    """A captcha in the follow-ups still in flight beside the create sent ahead (the batch's last
    contact updates are carried) trips the stop between two look-ups of its lost answer: the user
    found first is adopted, the next look-up is refused. The adopted user's password must be handed
    out, and the other left open for the next run (it was created: its password too)."""
    stop = Stop()

    class StoppedBetweenLookUps(AheadApi):
        def create_evaluation_users(self, users: list[Any]) -> list[Any]:
            self.drop_next_create = self.count("create") == 1
            return super().create_evaluation_users(users)

        def find_user(self, name: str) -> Any:
            found = super().find_user(name)
            if name == SECOND[0]:
                stop.trip("captcha required")  # a worker's answer, right after this look-up
            return found

    env["api"] = api = StoppedBetweenLookUps(patience=0.05)
    out, out2 = tmp_path / "pw.txt", tmp_path / "pw-2.txt"
    stopped_by_captcha(env, out, stop)
    assert [c[1] for c in api.calls if c[0] == "find"] == [SECOND[0]], "a look-up went after the stop"
    assert [i.users for i in IntentJournal(env["journal"]).unsettled()] == [SECOND]
    # The first batch's carried contact updates reached the audit log and state all the same.
    audit = [json.loads(x) for x in env["audit"].path.read_text().splitlines()]
    assert sorted(a["users"][0] for a in audit if a["action"] == "update_contact") == FIRST
    assert audit[-1]["action"] == "stop"
    saved = FileStateStore(env["store"].path).load("sim").users
    assert sorted(n for n, r in saved.items() if r.contact is not None) == FIRST
    settle_as_next_run(env, out2)
    assert IntentJournal(env["journal"]).unsettled() == [] and not pending_path_for(out).exists()
    first, second = _handed_out(out), _handed_out(out2) if out2.exists() else {}
    assert not set(first) & set(second), "a password was handed out twice"
    assert {**first, **second} == api.passwords


def test_the_progress_of_carried_contact_updates_never_goes_back_nor_past_the_total(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's last group of contact updates is recorded during a later step (another phase's,
    or the next batch's updates): it must not advance the display a second time, nor with its own
    step's count."""
    shown: list[tuple[str, int, int]] = []  # (phase, count, total) as the display got them

    class Display:
        name, total = "", 0

        def phase(self, name: str, total: int) -> None:
            self.name, self.total = name, total

        def advance(self, done: int) -> None:
            shown.append((self.name, done, self.total))

    real_init = PhaseTally.__init__
    monkeypatch.setattr(PhaseTally, "__init__", lambda self, display: real_init(self, Display()))
    monkeypatch.setattr(update, "GROUP", 1)  # two groups a batch: the carried one counts 2 in its step
    env["api"] = api = AheadApi(patience=0.05)
    m = make_manifest(6)
    result = run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2)
    assert result.ok, result.failures
    assert api.waited == [True, True]  # the second create went ahead, beside the first batch's updates
    updates = [(count, total) for name, count, total in shown if name == "update"]
    assert [c for c, _ in updates] == [1, 2, 3, 4, 5, 6] and {t for _, t in updates} == {6}, shown


def test_a_captcha_in_the_next_batchs_updates_while_the_carried_ones_are_recorded_loses_no_line(
    env: dict[str, Any],
) -> None:
    """The first batch's last updates are recorded once the second batch's are handed out; a
    captcha there stops the run while that record waits: both groups reach the audit log and
    state, the stop is its last line, and nothing goes out after it."""
    stop = Stop()

    class CaptchaInTheNext(AheadApi):
        def update_contact_info(self, req: UpdateContactInfo, *, user: str | None = None) -> None:
            if user == "trader001":  # answered only once the second batch's captcha stopped the run
                for _ in range(300):
                    if stop.reason is not None:
                        break
                    threading.Event().wait(0.01)
            if user == SECOND[0]:
                self.calls.append(("contact", req.userId))
                raise CaptchaRequired("captcha required")
            super().update_contact_info(req, user=user)

    env["api"] = api = CaptchaInTheNext(patience=0.05)
    m = make_manifest(6)
    with pytest.raises(RunStopped, match="captcha required"):
        run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2, stop=stop)
    ids = {u.id: n for n, u in api.users.items()}
    contacted = {ids[uid] for kind, uid in api.calls if kind == "contact"}
    assert {"trader000", "trader001", SECOND[0]} <= contacted and api.count("create") == 2
    audit = [json.loads(x) for x in env["audit"].path.read_text().splitlines()]
    assert {a["users"][0] for a in audit if a["action"] == "update_contact"} == contacted
    assert audit[-1]["action"] == "stop"
    saved = FileStateStore(env["store"].path).load("sim").users
    assert {n for n, r in saved.items() if r.contact is not None} == contacted - {SECOND[0]}
    assert IntentJournal(env["journal"]).unsettled() == []


def test_contact_updates_carried_past_the_last_create_are_recorded_at_the_runs_end(
    env: dict[str, Any],
) -> None:
    """Only the first batch has follow-ups: its last updates are carried beside the second create,
    which no follow-up step comes after. The run's end records them."""
    env["api"] = api = AheadApi(patience=0.5)
    m = make_manifest(4)
    contacts = [a for a in _creates_with_contacts(m) if a not in creates(m)][:2]  # the first batch's
    result = run(env, plan_for(env["store"], [*creates(m), *contacts]), m, batch_size=2)
    assert result.ok, result.failures
    assert api.waited == [True, True]  # the second create went ahead, beside those updates
    assert sorted(result.contacts_updated) == FIRST
    audit = [json.loads(x) for x in env["audit"].path.read_text().splitlines()]
    assert sorted(a["users"][0] for a in audit if a["action"] == "update_contact") == FIRST
    assert audit[-1]["action"] == "apply"
    saved = FileStateStore(env["store"].path).load("sim").users
    assert sorted(n for n, r in saved.items() if r.contact is not None) == FIRST
