"""The applier against a small in-memory partner API: order, batching, partial failure, settling."""

from __future__ import annotations

import itertools
import json
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from reconcile import __version__
from reconcile.api.models import EvaluationUser, UpdateContactInfo
from reconcile.apply import IntentJournal, RunStopped, apply_plan, settle, side_files
from reconcile.apply import cancel as cancel_module
from reconcile.apply import create as create_module
from reconcile.apply import executor as executor_module
from reconcile.apply import run as run_module
from reconcile.apply.crashpoints import CHECKPOINTS
from reconcile.apply.generated import PasswordLedger, pending_path_for
from reconcile.apply.stop import Stop
from reconcile.errors import (
    ApiError,
    AuthError,
    CaptchaRequired,
    OutcomeUnknown,
    PlanError,
    StateError,
    TransportError,
)
from reconcile.manifest.models import CancelFlags, Manifest, PasswordGenerate
from reconcile.manifest.passwords import PasswordError
from reconcile.planning.plan import (
    CancelEverything,
    ContactPayload,
    CreateUser,
    FieldChange,
    GrantEntitlement,
    Plan,
    PlanBinding,
    UpdateContact,
    UpdateEmail,
)
from reconcile.state import changelog
from reconcile.state.file import FileStateStore
from reconcile.state.model import State

SECRET = "S3cret-Password!"


@dataclass
class FakeUser:
    id: int
    name: str
    email: str
    status: str = "Active"


@dataclass
class Result:
    userId: int | None = None
    errorText: str | None = None


@dataclass
class GrantResult:
    errorCode: str
    errorText: str | None = None


@dataclass
class Signal:
    id: int
    relatedToUserId: int
    completed: str | None = None


@dataclass
class Plugin:
    userId: int
    entitlementId: int


@dataclass
class FakeApi:
    """Just enough of the partner API to tell what the applier did."""

    users: dict[str, FakeUser] = field(default_factory=dict)
    plugins: dict[int, set[int]] = field(default_factory=dict)
    signals: list[Signal] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    drop_next_create: bool = False
    calls: list[tuple[str, Any]] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)
    person_needed_at: dict[str, tuple[int, ApiError]] = field(default_factory=dict)
    """Call kind → (which call of that kind, the error that needs a person it raises)."""
    lookups_fail: bool = False
    endpoint_label: str = "endpoint"
    last_request_id: str | None = None
    cancel_flags: list[CancelFlags] = field(default_factory=list)
    """The flags of each cancel call, in order."""
    _ids: Any = field(default_factory=lambda: itertools.count(500))

    def create_evaluation_users(self, users: list[EvaluationUser]) -> list[Result]:
        self.calls.append(("create", [u.name for u in users]))
        self.last_request_id = f"req-create-{self.count('create')}"
        out = []
        for u in users:
            if u.name in self.refuse:
                out.append(Result(errorText=self.refuse[u.name]))
            elif u.name in self.users:
                out.append(Result(errorText=f"a user named {u.name!r} already exists"))
            else:
                user = FakeUser(next(self._ids), u.name, u.email)
                self.users[u.name] = user
                self.passwords[u.name] = u.password
                out.append(Result(userId=user.id))
        if self.drop_next_create:
            self.drop_next_create = False
            raise OutcomeUnknown("connection dropped after the request was sent", call="create")
        return out

    def modify_email_address(self, user_id: int, email: str, *, user: str | None = None) -> None:
        self.calls.append(("email", user_id))

    def update_contact_info(self, req: UpdateContactInfo, *, user: str | None = None) -> None:
        self.calls.append(("contact", req.userId))
        nth, error = self.person_needed_at.get("contact", (0, ApiError("")))
        if self.count("contact") == nth:
            raise error

    def agreement_signals(self, alert_id: int) -> list[Signal]:
        self.calls.append(("signals", alert_id))
        return list(self.signals)

    def add_entitlement_subscription(
        self, entitlement_id: int, user_id: int, account_id: int, *, user: str | None = None
    ) -> GrantResult:
        self.calls.append(("grant", user_id))
        have = self.plugins.setdefault(user_id, set())
        if entitlement_id in have:
            return GrantResult("ConflictWithExisting", "already has it")
        have.add(entitlement_id)
        return GrantResult("Success")

    def complete_alert_signal(self, signal_id: int, *, user: str | None = None) -> None:
        self.calls.append(("complete", signal_id))
        for s in self.signals:
            if s.id == signal_id:
                s.completed = "2026-01-01T00:00:00Z"

    def cancel_everything(
        self, user_ids: list[int], flags: CancelFlags, *, users: Any = ()
    ) -> dict[str, Any]:
        self.calls.append(("cancel", list(user_ids)))
        self.cancel_flags.append(flags)
        for u in self.users.values():
            if u.id in user_ids:
                u.status = "Closed"
        if self.lookups_fail:
            raise OutcomeUnknown("canceleverything: the connection failed", call="cancel")
        return {}

    def find_user(self, name: str) -> FakeUser | None:
        self.calls.append(("find", name))
        return self.users.get(name)

    def user_items(self, ids: list[int]) -> list[FakeUser]:
        self.calls.append(("items", list(ids)))
        if self.lookups_fail and self.count("cancel"):
            raise TransportError("user/items: the API answered HTTP 500", call="items")
        return [u for u in self.users.values() if u.id in ids]

    def user_plugins_of(self, user_ids: list[int]) -> list[Plugin]:
        self.calls.append(("plugins", list(user_ids)))
        return [Plugin(u, e) for u in user_ids for e in sorted(self.plugins.get(u, ()))]

    def count(self, kind: str) -> int:
        return sum(1 for c in self.calls if c[0] == kind)


@dataclass
class Loaded:
    manifest: Manifest
    digest: str = "digest-1"
    locations: dict[str, Any] = field(default_factory=dict)


def make_manifest(n: int, password: Any = None) -> Manifest:
    return Manifest.model_validate(
        {
            "apiVersion": "reconcile/v1",
            "environment": "sim",
            "partner": {"dataAccountId": 11111, "entitlements": {"simplus": 12345}},
            "users": [
                {
                    "name": f"trader{i:03d}",
                    "email": f"trader{i:03d}@example.com",
                    "password": password if password is not None else {"env": "TRADER_PW"},
                    "firstName": "Test",
                    "lastName": "User",
                }
                for i in range(n)
            ],
        }
    )


def creates(m: Manifest) -> list[CreateUser]:
    return [
        CreateUser(
            user=u.name,
            email=u.email or "",
            firstName="Test",
            lastName="User",
            password=u.password if isinstance(u.password, PasswordGenerate) else {"env": "TRADER_PW"},
        )
        for u in m.users
    ]


def simplus_grants(ids: dict[str, int]) -> list[GrantEntitlement]:
    """Grant Sim+ (agreement-gated) to each user of ``ids``, by name."""
    return [
        GrantEntitlement(
            user=n,
            userId=ids[n],
            entitlement="simplus",
            entitlementId=12345,
            accountId=11111,
            agreement_gated=True,
        )
        for n in sorted(ids)
    ]


def cancel_all(store: FileStateStore) -> list[CancelEverything]:
    """Cancel everything of every recorded user, as for users removed from the manifest."""
    return [
        CancelEverything(user=n, userId=r.userId, flags=CancelFlags(), reason="removed_from_manifest")
        for n, r in sorted(store.load("sim").users.items())
    ]


def plan_for(store: FileStateStore, actions: list[Any], digest: str = "digest-1") -> Plan:
    state = store.load("sim")
    return Plan(
        binding=PlanBinding(
            manifest_digest=digest,
            state_lineage=state.lineage,
            state_serial=state.serial,
            environment="sim",
            endpoint="sim:embedded",
            tool_version=__version__,
        ),
        actions=tuple(actions),
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    store = FileStateStore(tmp_path / "state" / "sim.json")
    journal, audit = side_files(store.path, "sim")
    return {"store": store, "journal": journal, "audit": audit, "api": FakeApi()}


def run(env: dict[str, Any], plan: Plan, manifest: Manifest, **kw: Any) -> Any:
    kw.setdefault("environ", {"TRADER_PW": SECRET})
    return apply_plan(
        plan,
        loaded=Loaded(manifest),
        store=env["store"],
        client=env["api"],
        journal=env["journal"],
        audit=env["audit"],
        endpoint="sim:embedded",
        **kw,
    )


def test_250_creates_take_three_calls_and_are_all_recorded(env: dict[str, Any]) -> None:
    m = make_manifest(250)
    result = run(env, plan_for(env["store"], creates(m)), m)
    assert result.ok and len(result.created) == 250
    assert call_sizes(env, "create") == [100, 100, 50]  # batches of 99 would also make 3 calls
    state = env["store"].load("sim")
    assert {n: r.userId for n, r in state.users.items()} == {n: u.id for n, u in env["api"].users.items()}
    assert state.serial == 3  # saved after every batch


ANN = ContactPayload(
    firstName="Ann",
    lastName="Lee",
    phone="+12125550100",
    streetAddress1="1 Main",
    city="New York",
    state="NY",
    postCode="10001",
    country="US",
)
"""Contact info for the tests that send an update."""


def test_the_worker_threads_serve_every_group_and_end_with_the_run(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = make_manifest(30)
    follow = [UpdateContact(user=u.name, userId=None, changes=(), contact=ANN) for u in m.users]
    threads: set[threading.Thread] = set()
    send = env["api"].update_contact_info

    def noting(req: UpdateContactInfo, *, user: str | None = None) -> None:
        threads.add(threading.current_thread())
        send(req, user=user)

    monkeypatch.setattr(env["api"], "update_contact_info", noting)
    result = run(env, plan_for(env["store"], [*creates(m), *follow]), m, batch_size=10, concurrency=2)
    assert result.ok and env["api"].count("contact") == 30  # three create batches, each with its updates
    assert 0 < len(threads) <= 2  # not a new pair of threads per batch
    assert not any(t.is_alive() for t in threads)


def test_apply_works_on_the_state_it_is_given_without_reading_it_again(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = make_manifest(3)
    plan = plan_for(env["store"], creates(m))
    state = env["store"].load("sim")
    monkeypatch.setattr(env["store"], "load", lambda _environment: pytest.fail("state read again"))
    result = run(env, plan, m, state=state)
    assert result.ok and sorted(state.users) == ["trader000", "trader001", "trader002"]


def call_sizes(env: dict[str, Any], kind: str) -> list[int]:
    return [len(c[1]) for c in env["api"].calls if c[0] == kind]


@pytest.mark.parametrize(("batch_size", "sizes"), [(10, [10, 10, 5]), (1, [1] * 25)])
def test_batch_size_lowers_the_calls_size(env: dict[str, Any], batch_size: int, sizes: list[int]) -> None:
    m = make_manifest(25)
    run(env, plan_for(env["store"], creates(m)), m, batch_size=batch_size)
    assert call_sizes(env, "create") == sizes


def test_a_batch_size_above_100_still_sends_at_most_100_users_per_call(env: dict[str, Any]) -> None:
    m = make_manifest(250)
    run(env, plan_for(env["store"], creates(m)), m, batch_size=500)
    assert call_sizes(env, "create") == [100, 100, 50]
    state = env["store"].load("sim")
    acts = [
        CancelEverything(user=n, userId=r.userId, flags=CancelFlags(), reason="removed_from_manifest")
        for n, r in sorted(state.users.items())
    ]
    run(env, plan_for(env["store"], acts), m, batch_size=500)
    assert call_sizes(env, "cancel") == [100, 100, 50]


def test_one_bad_user_fails_alone_with_the_apis_words(env: dict[str, Any]) -> None:
    m = make_manifest(5)
    env["api"].refuse["trader002"] = "email is not valid for this organization"
    result = run(env, plan_for(env["store"], creates(m)), m)
    assert not result.ok and result.exit_code == 1
    assert [str(f) for f in result.failures] == [
        "trader002: create: email is not valid for this organization"
    ]
    assert sorted(env["store"].load("sim").users) == ["trader000", "trader001", "trader003", "trader004"]


def test_lost_answer_is_settled_by_lookup_and_nothing_is_created_twice(env: dict[str, Any]) -> None:
    m = make_manifest(3)
    env["api"].drop_next_create = True
    result = run(env, plan_for(env["store"], creates(m)), m)
    assert result.ok, result.failures
    assert sorted(result.adopted) == ["trader000", "trader001", "trader002"]
    assert env["api"].count("create") == 1
    assert {n: r.userId for n, r in env["store"].load("sim").users.items()} == {
        n: u.id for n, u in env["api"].users.items()
    }
    assert env["journal"].unsettled() == []


def test_existing_name_is_adopted_when_the_email_matches_and_reported_otherwise(env: dict[str, Any]) -> None:
    m = make_manifest(2)
    env["api"].users["trader000"] = FakeUser(42, "trader000", "trader000@example.com")
    env["api"].users["trader001"] = FakeUser(43, "trader001", "someone.else@example.com")
    result = run(env, plan_for(env["store"], creates(m)), m)
    assert result.adopted == ["trader000"]
    assert env["store"].load("sim").users["trader000"].userId == 42
    assert len(result.failures) == 1 and result.failures[0].user == "trader001"
    assert "another email" in result.failures[0].message
    assert "trader001" not in env["store"].load("sim").users


def test_unsettled_create_intent_is_adopted_before_anything_else(env: dict[str, Any]) -> None:
    m = make_manifest(2)
    acts = creates(m)
    IntentJournal(env["journal"]).begin("create", acts)  # a run died after announcing the call
    env["api"].users["trader000"] = FakeUser(77, "trader000", "trader000@example.com")
    result = settle(
        store=env["store"], environment="sim", client=env["api"], journal=env["journal"], audit=env["audit"]
    )
    assert result.settled_intents == 1 and result.adopted == ["trader000"]
    assert sorted(env["store"].load("sim").users) == ["trader000"]
    assert env["journal"].unsettled() == []


def test_settling_an_empty_journal_does_not_read_the_state(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan that follows reads it: a second read of a large desk was a tenth of a second."""
    m = make_manifest(2)
    run(env, plan_for(env["store"], creates(m)), m)
    reads: list[str] = []
    load = FileStateStore.load
    monkeypatch.setattr(FileStateStore, "load", lambda self, e: reads.append(e) or load(self, e))
    result = settle(
        store=env["store"], environment="sim", client=env["api"], journal=env["journal"], audit=env["audit"]
    )
    assert reads == [] and result.settled_intents == 0 and result.counts()["failed"] == 0
    IntentJournal(env["journal"]).begin("create", creates(make_manifest(3))[2:])
    assert (
        settle(
            store=env["store"],
            environment="sim",
            client=env["api"],
            journal=env["journal"],
            audit=env["audit"],
        ).settled_intents
        == 1
    )
    assert reads == ["sim"]


def test_grants_read_signals_once_and_complete_only_signers(env: dict[str, Any]) -> None:
    m = make_manifest(3)
    run(env, plan_for(env["store"], creates(m)), m)
    ids = {n: u.id for n, u in env["api"].users.items()}
    env["api"].signals = [Signal(1, ids["trader000"]), Signal(2, ids["trader002"], completed="earlier")]
    grants = simplus_grants(ids)
    env["api"].calls.clear()
    result = run(env, plan_for(env["store"], grants), m)
    assert result.ok
    assert env["api"].count("signals") == 1
    assert result.granted == ["trader000"]
    assert sorted(result.awaiting_agreement) == ["trader001", "trader002"]
    assert [c for c in env["api"].calls if c[0] == "complete"] == [("complete", 1)]
    users = env["store"].load("sim").users
    assert users["trader000"].entitlements["simplus"].status == "granted"
    assert users["trader001"].entitlements["simplus"].status == "awaiting_agreement"


def test_contact_for_a_user_created_in_the_same_apply_takes_the_new_id(env: dict[str, Any]) -> None:
    m = make_manifest(1)
    acts = [*creates(m), UpdateContact(user="trader000", userId=None, changes=(), contact=ANN)]
    result = run(env, plan_for(env["store"], acts), m)
    assert result.ok
    assert ("contact", env["api"].users["trader000"].id) in env["api"].calls
    record = env["store"].load("sim").users["trader000"]
    assert record.contact is not None and record.contact.city == "New York" and record.firstName == "Ann"


def test_cancels_go_in_batches_and_are_recorded(env: dict[str, Any]) -> None:
    m = make_manifest(150)
    run(env, plan_for(env["store"], creates(m)), m)
    acts = cancel_all(env["store"])
    result = run(env, plan_for(env["store"], acts), m)
    assert len(result.cancelled) == 150
    assert call_sizes(env, "cancel") == [100, 50]
    assert [r.lifecycle for r in env["store"].load("sim").users.values()] == ["cancelled"] * 150


def test_cancels_with_other_flags_go_in_a_call_of_their_own(env: dict[str, Any]) -> None:
    """One canceleverything call carries one set of flags, so a user's own flags are never lost."""
    m = make_manifest(3)
    run(env, plan_for(env["store"], creates(m)), m)
    keep_plugins = CancelFlags(userPlugins=False)
    acts = [
        a.model_copy(update={"flags": keep_plugins}) if a.user == "trader001" else a
        for a in cancel_all(env["store"])
    ]
    run(env, plan_for(env["store"], acts), m)
    ids = {n: u.id for n, u in env["api"].users.items()}
    assert [c[1] for c in env["api"].calls if c[0] == "cancel"] == [
        [ids["trader000"], ids["trader002"]],
        [ids["trader001"]],
    ]
    assert env["api"].cancel_flags == [CancelFlags(), keep_plugins]


@pytest.fixture
def crash_points(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str | None]]]:
    """Each crash point a create or cancel passes, with the password file each open intent names there."""
    reached: list[tuple[str, list[str | None]]] = []

    def checkpoint(point: str) -> None:
        reached.append((point, [i.passwords for i in IntentJournal(env["journal"]).unsettled()]))

    for module in (create_module, cancel_module, run_module):
        monkeypatch.setattr(module, "checkpoint", checkpoint)
    return reached


def test_creates_and_cancels_pass_the_crash_points_in_order_with_their_intent_open(
    env: dict[str, Any], crash_points: list[tuple[str, list[str | None]]]
) -> None:
    """The crash tests kill a run at these points by name; each batch's intent is open at each."""
    m = make_manifest(3)
    run(env, plan_for(env["store"], creates(m)), m, batch_size=2)
    run(env, plan_for(env["store"], cancel_all(env["store"])), m, batch_size=2)
    one_create = ["before_create_call", "after_create_call", "before_create_save", "after_create_save"]
    one_cancel = ["before_cancel_call", "after_cancel_call"]
    assert crash_points == [(point, [None]) for point in [*one_create, *one_create, *one_cancel, *one_cancel]]
    assert {point for point, _ in crash_points} <= set(CHECKPOINTS)


def test_an_open_create_intent_names_the_pending_file_only_for_generated_passwords(
    env: dict[str, Any], tmp_path: Path, crash_points: list[tuple[str, list[str | None]]]
) -> None:
    out = tmp_path / "pw.txt"
    generated = make_manifest(1, password={"generate": True})
    run(env, plan_for(env["store"], creates(generated)), generated, generated_passwords=out)
    m = make_manifest(2)
    run(env, plan_for(env["store"], creates(m)[1:]), m, generated_passwords=out)
    assert [names for point, names in crash_points if point == "before_create_call"] == [
        [str(pending_path_for(out))],
        [None],
    ]


def test_stale_plan_is_refused_saying_what_changed(env: dict[str, Any]) -> None:
    m = make_manifest(1)
    plan = plan_for(env["store"], creates(m), digest="old-digest")
    with pytest.raises(PlanError, match="the manifest changed"):
        run(env, plan, m)
    assert env["api"].calls == []


def test_missing_password_variable_stops_before_any_call(env: dict[str, Any]) -> None:
    m = make_manifest(2)
    with pytest.raises(PasswordError, match="trader000: environment variable TRADER_PW is not set"):
        run(env, plan_for(env["store"], creates(m)), m, environ={})
    assert env["api"].calls == []


def test_generated_passwords_need_a_file_and_land_only_there(env: dict[str, Any], tmp_path: Path) -> None:
    m = make_manifest(2, password={"generate": True})
    plan = plan_for(env["store"], creates(m))
    with pytest.raises(PasswordError, match="--generated-passwords"):
        run(env, plan, m)
    assert env["api"].calls == []
    out = tmp_path / "pw.txt"
    result = run(env, plan, m, generated_passwords=out)
    assert result.ok
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    lines = dict(line.split("\t") for line in out.read_text().splitlines() if not line.startswith("#"))
    assert lines == env["api"].passwords and len(lines) == 2
    for pw in lines.values():
        assert 8 <= len(pw) <= 64
        assert pw not in env["store"].path.read_text()
        assert pw not in env["audit"].path.read_text()


def test_audit_log_has_one_line_per_call_and_no_secret(env: dict[str, Any]) -> None:
    m = make_manifest(3)
    run(env, plan_for(env["store"], creates(m)), m)
    lines = [json.loads(x) for x in env["audit"].path.read_text().splitlines()]
    assert [ln["action"] for ln in lines] == ["create", "apply"]
    assert lines[0]["users"] == ["trader000", "trader001", "trader002"]
    assert (lines[0]["outcome"], lines[0]["request_id"]) == ("created 3, failed 0", "req-create-1")
    assert SECRET not in env["audit"].path.read_text()
    assert stat.S_IMODE(os.stat(env["audit"].path).st_mode) == 0o600
    assert env["journal"].unsettled() == []
    assert State.model_validate_json(env["store"].path.read_text()).serial == 1


def test_grant_interrupted_before_its_signal_was_completed_is_settled(env: dict[str, Any]) -> None:
    m = make_manifest(2)
    run(env, plan_for(env["store"], creates(m)), m)
    ids = {n: u.id for n, u in env["api"].users.items()}
    grants = simplus_grants(ids)
    env["api"].signals = [Signal(7, ids["trader000"]), Signal(8, ids["trader001"])]
    IntentJournal(env["journal"]).begin("grant", grants, agreement_alert_id=68)
    env["api"].plugins[ids["trader000"]] = {12345}  # the dead run granted trader000 only
    result = settle(
        store=env["store"], environment="sim", client=env["api"], journal=env["journal"], audit=env["audit"]
    )
    assert result.granted == ["trader000"]
    assert [c for c in env["api"].calls if c[0] == "plugins"] == [("plugins", list(ids.values()))], "one read"
    assert [c for c in env["api"].calls if c[0] == "complete"] == [("complete", 7)]
    users = env["store"].load("sim").users
    assert users["trader000"].entitlements["simplus"].status == "granted"
    assert "simplus" not in users["trader001"].entitlements


def _contact(i: int) -> ContactPayload:
    return ContactPayload(
        firstName="Ann", lastName=f"Lee{i}", phone="+12125550100", streetAddress1="1 Main",
        city="New York", state="NY", postCode="10001", country="US",
    )  # fmt: skip


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(CaptchaRequired("updatecontactinfo: the partner API demands a captcha"), id="captcha"),
        pytest.param(AuthError("login as partner-admin failed: the account is locked"), id="account-locked"),
        pytest.param(
            AuthError("updatecontactinfo: the API refused the access token"), id="credentials-refused"
        ),
    ],
)
def test_a_condition_that_needs_a_person_in_one_worker_stops_every_later_call(
    env: dict[str, Any], error: ApiError
) -> None:
    m = make_manifest(250)
    run(env, plan_for(env["store"], creates(m)), m)
    state = env["store"].load("sim")
    names = sorted(state.users)
    acts: list[Any] = [
        UpdateContact(user=n, userId=state.users[n].userId, changes=(), contact=_contact(i))
        for i, n in enumerate(names[:200])
    ]
    # Grants come after updates (cancellations come first of all, so they cannot show it).
    acts += simplus_grants({n: state.users[n].userId for n in names[200:]})
    env["api"].person_needed_at["contact"] = (3, error)
    with pytest.raises(RunStopped, match=str(error)):
        run(env, plan_for(env["store"], acts), m, concurrency=4)
    # At most the calls already in flight on the other three workers went out after the captcha.
    assert 3 <= env["api"].count("contact") <= 3 + 3
    assert env["api"].count("signals") == 0 and env["api"].count("grant") == 0
    audit = [json.loads(x) for x in env["audit"].path.read_text().splitlines()]
    assert audit[-1]["action"] == "stop"


def test_a_cancel_whose_outcome_stays_unknown_keeps_its_intent_and_stops(env: dict[str, Any]) -> None:
    m = make_manifest(3)
    run(env, plan_for(env["store"], creates(m)), m)
    acts = cancel_all(env["store"])
    env["api"].lookups_fail = True
    with pytest.raises(RunStopped, match="whether they are cancelled is unknown"):
        run(env, plan_for(env["store"], acts), m)
    assert [i.call for i in env["journal"].unsettled()] == ["cancel"]
    assert all(r.lifecycle == "active" for r in env["store"].load("sim").users.values())
    env["api"].lookups_fail = False
    result = settle(
        store=env["store"], environment="sim", client=env["api"], journal=env["journal"], audit=env["audit"]
    )
    assert sorted(result.cancelled) == sorted(a.user for a in acts) and env["journal"].unsettled() == []


@dataclass
class RecordedProgress:
    events: list[tuple[str, int]] = field(default_factory=list)

    def phase(self, name: str, total: int) -> None:
        self.events.append((name, total))

    def advance(self, done: int) -> None:
        self.events.append(("done", done))


def test_progress_counts_each_batch_of_creates_and_cancels(env: dict[str, Any]) -> None:
    m = make_manifest(250)
    progress = RecordedProgress()
    run(env, plan_for(env["store"], creates(m)), m, progress=progress)
    assert [e for e in progress.events if e[0] in ("create", "done")] == [
        ("create", 250), ("done", 100), ("done", 200), ("done", 250)
    ]  # fmt: skip
    state = env["store"].load("sim")
    acts = [
        CancelEverything(user=n, userId=r.userId, flags=CancelFlags(), reason="removed_from_manifest")
        for n, r in sorted(state.users.items())[:150]
    ]
    progress = RecordedProgress()
    run(env, plan_for(env["store"], acts), m, progress=progress)
    assert [e for e in progress.events if e[0] in ("cancel", "done")] == [
        ("cancel", 150),
        ("done", 100),
        ("done", 150),
    ]


def test_the_apply_audit_line_says_how_it_ended_with_the_counts(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([100.0, 102.12345, 200.0, 200.5])  # each apply reads it when it starts and ends
    monkeypatch.setattr(executor_module, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    m = make_manifest(3)
    env["api"].refuse["trader001"] = "email is not valid for this organization"
    run(env, plan_for(env["store"], creates(m)), m)
    run(env, plan_for(env["store"], []), m)
    failed, ok = [json.loads(x) for x in env["audit"].path.read_text().splitlines() if '"apply"' in x]
    assert (failed["action"], failed["outcome"]) == ("apply", "failed")
    assert (ok["action"], ok["outcome"]) == ("apply", "ok")
    assert failed["detail"]["created"] == 2 and failed["detail"]["failed"] == 1
    assert ok["detail"]["created"] == 0 and ok["detail"]["failed"] == 0
    assert (failed["detail"]["seconds"], ok["detail"]["seconds"]) == (2.123, 0.5)


def test_email_updates_are_sent_with_the_recorded_id(env: dict[str, Any]) -> None:
    m = make_manifest(2)
    run(env, plan_for(env["store"], creates(m)), m)
    ids = {n: u.id for n, u in env["api"].users.items()}
    change = UpdateEmail(
        user="trader001",
        userId=ids["trader001"],
        email="new@example.com",
        changes=(FieldChange(field="email", before="trader001@example.com", after="new@example.com"),),
    )
    result = run(env, plan_for(env["store"], [change]), m)
    assert result.ok and ("email", ids["trader001"]) in env["api"].calls
    assert env["store"].load("sim").users["trader001"].email == "new@example.com"


@dataclass
class NoFreeSlotApi(FakeApi):
    """A client that paces creates and never has a slot free at once (each create waits for one)."""

    def create_slot_free(self) -> bool:
        return False

    def await_create_slot(self) -> float:
        return 0.0


def test_nothing_waits_behind_the_creates_and_each_batch_is_completed_before_the_next(
    env: dict[str, Any],
) -> None:
    m = make_manifest(7)
    run(env, plan_for(env["store"], creates(m)[:3]), m)
    state = env["store"].load("sim")
    # Each create waits for its slot here (when it need not, the next one is sent beside the
    # follow-ups: test_the_next_create_is_sent_while_the_batch_before_it_is_followed_up).
    env["api"] = NoFreeSlotApi(users=env["api"].users, _ids=env["api"]._ids)
    old = {n: state.users[n].userId for n in ("trader000", "trader001", "trader002")}
    new = [a.user for a in creates(m)[3:]]
    acts: list[Any] = [
        *creates(m)[3:],
        *[UpdateContact(user=n, userId=None, changes=(), contact=_contact(i)) for i, n in enumerate(new)],
        *simplus_grants(dict.fromkeys(new, None)),  # type: ignore[arg-type]
        UpdateContact(user="trader001", userId=old["trader001"], changes=(), contact=_contact(9)),
        CancelEverything(
            user="trader002", userId=old["trader002"], flags=CancelFlags(), reason="removed_from_manifest"
        ),
    ]
    progress = RecordedProgress()
    result = run(env, plan_for(env["store"], acts), m, batch_size=2, progress=progress)
    assert result.ok, result.failures
    ids = {u.id: n for n, u in env["api"].users.items()}

    def said(call: tuple[str, Any]) -> str:
        kind, arg = call
        who = ",".join(arg) if kind == "create" else ids.get(arg, "") if kind == "contact" else ""
        return f"{kind} {who}".strip()

    assert [said(c) for c in env["api"].calls if c[0] != "items"] == [
        "cancel",  # first of all: revocations never wait for anything
        "contact trader001",  # an existing user's update: no create to wait for
        "create trader003,trader004",
        "contact trader003", "contact trader004", "signals",  # the batch's own follow-ups, at once
        "create trader005,trader006",
        "contact trader005", "contact trader006",  # the agreement signals are read once a run
    ]  # fmt: skip
    # The display's lines count over the whole run, not per batch.
    assert {e for e in progress.events if e[0] in ("create", "update")} == {("update", 5), ("create", 4)}
    assert progress.events[-4:] == [("create", 4), ("done", 4), ("update", 5), ("done", 5)]


@dataclass
class PacedApi(FakeApi):
    """A client that paces its creates: records how many intents were open at each slot's wait."""

    journal: Any = None
    open_at_wait: list[int] = field(default_factory=list)

    def await_create_slot(self) -> float:
        self.open_at_wait.append(len(self.journal.unsettled()))
        return 0.0


def test_a_create_waits_for_its_slot_before_it_is_announced(env: dict[str, Any]) -> None:
    # Most of a paced onboarding is waiting: a run killed then must leave nothing to settle.
    env["api"] = PacedApi(journal=env["journal"])
    m = make_manifest(250)
    run(env, plan_for(env["store"], creates(m)), m)
    assert env["api"].open_at_wait == [0, 0, 0]


@dataclass
class SlowSlotsApi(FakeApi):
    """Every create waits for its hourly slot; trader000 signs while the second create waits."""

    waits: int = 0

    def await_create_slot(self) -> float:
        self.waits += 1
        if self.waits == 2:
            self.signals.append(Signal(7, self.users["trader000"].id))
        return 36.0


def test_a_trader_who_signs_while_creates_wait_for_their_slot_gets_simplus_in_the_same_run(
    env: dict[str, Any],
) -> None:
    # At the published limit a 20k onboarding takes hours: its first traders must not wait for
    # the last batch (or the next run) to get Sim+ once they sign.
    env["api"] = SlowSlotsApi()
    m = make_manifest(4)
    acts: list[Any] = [*creates(m), *simplus_grants(_unknown_ids(m))]
    result = run(env, plan_for(env["store"], acts), m, batch_size=2)
    assert result.ok, result.failures
    ids = {n: u.id for n, u in env["api"].users.items()}
    assert [c for c in env["api"].calls if c[0] in ("create", "signals", "grant", "complete")] == [
        ("create", ["trader000", "trader001"]),
        ("signals", m.agreement_alert_id),
        ("create", ["trader002", "trader003"]),
        ("signals", m.agreement_alert_id),  # one more read, because the slot was waited for
        ("grant", ids["trader000"]),
        ("complete", 7),
    ]
    assert result.granted == ["trader000"]
    assert sorted(result.awaiting_agreement) == ["trader001", "trader002", "trader003"]
    state = env["store"].load("sim")
    assert state.users["trader000"].entitlements["simplus"].status == "granted"
    assert state.users["trader001"].entitlements["simplus"].status == "awaiting_agreement"


def test_an_unpaced_run_reads_the_signals_once(env: dict[str, Any]) -> None:
    m = make_manifest(4)
    acts: list[Any] = [*creates(m), *simplus_grants(_unknown_ids(m))]
    assert run(env, plan_for(env["store"], acts), m, batch_size=2).ok
    assert sum(1 for c in env["api"].calls if c[0] == "signals") == 1


def _unknown_ids(m: Manifest) -> dict[str, int]:
    """Each user's id as a plan has it for a user it creates: not known yet (None)."""
    return dict.fromkeys((u.name for u in m.users), None)  # type: ignore[arg-type]


# --- groups overlap: the next is sent while the last is recorded -------------------------------


def test_the_next_group_is_sent_before_the_last_one_is_recorded() -> None:
    from reconcile.apply.run import overlapped
    from reconcile.apply.stop import Stop

    events: list[str] = []
    run: Any = SimpleNamespace(stop=Stop(), busy=lambda: None, record_carried=lambda: None)
    overlapped(
        run,
        ["a", "b", "c"],
        lambda group: events.append(f"send {group}") or group.upper(),
        lambda group, sent: events.append(f"record {group} {sent}"),
    )
    assert events == ["send a", "send b", "record a A", "send c", "record b B", "record c C"]


def test_no_group_is_sent_once_the_run_stopped_and_the_stop_ends_it() -> None:
    from reconcile.apply.run import overlapped
    from reconcile.apply.stop import Stop

    events: list[str] = []
    run: Any = SimpleNamespace(stop=Stop(), busy=lambda: None, record_carried=lambda: None)

    def record(group: str, _sent: object) -> None:
        events.append(f"record {group}")
        run.stop.trip("a person must act")

    with pytest.raises(RunStopped):
        overlapped(run, ["a", "b", "c"], lambda group: events.append(f"send {group}") or group, record)
    # b was on its way when a was recorded: it is recorded too (its calls may have been made).
    assert events == ["send a", "send b", "record a", "record b"]


def test_a_stop_while_a_group_is_recorded_still_records_the_group_on_its_way() -> None:
    from reconcile.apply.run import overlapped
    from reconcile.apply.stop import Stop

    events: list[str] = []
    run: Any = SimpleNamespace(stop=Stop(), busy=lambda: None, record_carried=lambda: None)

    def record(group: str, _sent: object) -> None:
        if group == "a":
            run.stop.trip("SIGTERM")  # arrives while a is saved and b's calls are being made
        events.append(f"record {group}")
        run.stop.check()  # as the executors' own record functions end

    with pytest.raises(RunStopped, match="SIGTERM"):
        overlapped(run, ["a", "b", "c"], lambda group: events.append(f"send {group}") or group, record)
    # b's calls made before the stop reached its workers are audited and saved, not lost.
    assert events == ["send a", "send b", "record a", "record b"]


def test_a_failed_save_stops_the_group_on_its_way_and_records_what_it_sent() -> None:
    from reconcile.apply.run import overlapped
    from reconcile.apply.stop import Stop

    events: list[str] = []
    run: Any = SimpleNamespace(stop=Stop(), busy=lambda: None, record_carried=lambda: None)

    def record(group: str, _sent: object) -> None:
        events.append(f"record {group}, stopped: {run.stop.reason is not None}")
        if group == "a":
            raise StateError("state: no space left on device")

    with pytest.raises(StateError, match="no space left"):
        overlapped(run, ["a", "b", "c"], lambda group: events.append(f"send {group}") or group, record)
    # b's workers see the stop (calls not yet made are not sent); what they made is recorded.
    assert events == ["send a", "send b", "record a, stopped: False", "record b, stopped: True"]


@dataclass
class AheadApi(FakeApi):
    """Each contact update of the first batch waits (``patience`` s) for the second create's answer.

    Sent one after the other, the update gives up waiting; sent beside each other, it does not.
    ``refuse_after_wait``: the first update then raises that error (one that needs a person).
    ``slot_free``: what the client says when asked whether a create may go now.
    """

    answered: threading.Event = field(default_factory=threading.Event)
    waited: list[bool] = field(default_factory=list)
    refuse_after_wait: ApiError | None = None
    slot_free: bool = True
    patience: float = 2.0

    def create_evaluation_users(self, users: list[EvaluationUser]) -> list[Result]:
        out = super().create_evaluation_users(users)
        if self.count("create") == 2:
            self.answered.set()
        return out

    def create_slot_free(self) -> bool:
        return self.slot_free

    def await_create_slot(self) -> float:
        return 0.0

    def update_contact_info(self, req: UpdateContactInfo, *, user: str | None = None) -> None:
        if user in ("trader000", "trader001"):
            self.waited.append(self.answered.wait(self.patience))
            if self.refuse_after_wait is not None and user == "trader000":
                self.calls.append(("contact", req.userId))
                raise self.refuse_after_wait
        super().update_contact_info(req, user=user)


def _creates_with_contacts(m: Manifest) -> list[Any]:
    return [
        *creates(m),
        *(UpdateContact(user=a.user, userId=None, changes=(), contact=ANN) for a in creates(m)),
    ]


def stopped_by_captcha(env: dict[str, Any], out: Path, stop: Stop) -> None:
    """Create four traders (generated passwords, contacts) in batches of two: the captcha stops the run."""
    m = make_manifest(4, password={"generate": True})
    with pytest.raises(RunStopped, match="captcha required"):
        run(
            env,
            plan_for(env["store"], _creates_with_contacts(m)),
            m,
            batch_size=2,
            generated_passwords=out,
            stop=stop,
        )


def test_the_next_create_is_sent_while_the_batch_before_it_is_followed_up(env: dict[str, Any]) -> None:
    env["api"] = api = AheadApi()
    m = make_manifest(5)
    result = run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2)
    assert result.ok, result.failures
    assert api.waited == [True, True], "the second create was answered while the first batch's updates waited"
    assert call_sizes(env, "create") == [2, 2, 1] and api.count("contact") == 5
    state = env["store"].load("sim")
    assert {n: r.userId for n, r in state.users.items()} == {n: u.id for n, u in api.users.items()}
    assert all(r.contact is not None and r.contact.city == "New York" for r in state.users.values())
    assert env["journal"].unsettled() == [] and not env["journal"].path.read_text()
    audit = [json.loads(x) for x in env["audit"].path.read_text().splitlines()]
    creates_logged = [line["users"] for line in audit if line["action"] == "create"]
    assert creates_logged == [["trader000", "trader001"], ["trader002", "trader003"], ["trader004"]]


def test_a_create_whose_slot_is_not_free_now_waits_until_the_batch_before_it_is_followed_up(
    env: dict[str, Any],
) -> None:
    # At the hourly limit the next create waits for its slot: the traders already created must
    # get their contact details (and Sim+) first, not an hour later.
    env["api"] = api = AheadApi(slot_free=False, patience=0.2)
    m = make_manifest(4)
    result = run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2)
    assert result.ok, result.failures
    assert api.waited == [False, False]
    kinds = [c[0] for c in api.calls if c[0] in ("create", "contact")]
    assert kinds == ["create", "contact", "contact", "create", "contact", "contact"]


def test_a_stop_in_the_follow_ups_still_records_the_create_sent_beside_them(env: dict[str, Any]) -> None:
    env["api"] = api = AheadApi(refuse_after_wait=CaptchaRequired("captcha required"))
    m = make_manifest(4)
    with pytest.raises(RunStopped, match="captcha required"):
        run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2)
    assert api.count("create") == 2
    state = env["store"].load("sim")
    # The second batch was created while the first batch's update met the captcha: its traders
    # are recorded, not left for the next run to look up.
    assert {n: r.userId for n, r in state.users.items()} == {n: u.id for n, u in api.users.items()}
    assert sorted(state.users) == ["trader000", "trader001", "trader002", "trader003"]
    # Every outcome of that create is known: its intent is settled, so the next plan holds nobody out.
    assert IntentJournal(env["journal"]).unsettled() == []
    audit = [json.loads(x) for x in env["audit"].path.read_text().splitlines()]
    assert audit[-1]["action"] == "stop"
    assert [line["users"] for line in audit if line["action"] == "create"][-1] == ["trader002", "trader003"]
    # The next run creates nobody twice and finishes the updates.
    api.refuse_after_wait, api.slot_free = None, False
    api.calls.clear()
    again = run(
        env,
        plan_for(
            env["store"],
            [
                UpdateContact(user=n, userId=state.users[n].userId, changes=(), contact=ANN)
                for n in sorted(state.users)
            ],
        ),
        m,
    )
    assert again.ok, again.failures
    assert api.count("create") == 0 and len(api.users) == 4
    assert env["journal"].unsettled() == []


def test_the_calls_run_with_the_desk_loaded_before_them_left_out_of_collections(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full collection walked the whole loaded desk, holding the GIL: every worker waited.
    import gc

    import reconcile.apply as apply_module

    frozen: list[int] = []
    execute = apply_module.execute
    monkeypatch.setattr(
        apply_module, "execute", lambda *a: frozen.append(gc.get_freeze_count()) or execute(*a)
    )
    m = make_manifest(3)
    assert run(env, plan_for(env["store"], creates(m)), m).ok
    assert frozen and frozen[0] > 0 and gc.get_freeze_count() == 0


def _handed_out(path: Path) -> dict[str, str]:
    """The ``name<TAB>password`` lines of a generated-passwords file."""
    return dict(line.split("\t") for line in path.read_text().splitlines() if "\t" in line)


def settle_as_next_run(env: dict[str, Any], passwords: Path) -> Any:
    """Settle what a run left in the journal, as the next apply does first (its own passwords file)."""
    return settle(
        store=env["store"],
        environment="sim",
        client=env["api"],
        journal=env["journal"],
        audit=env["audit"],
        ledger=PasswordLedger(passwords),
    )


def test_a_lost_answer_of_the_create_sent_beside_stopped_follow_ups_waits_for_the_next_run(
    env: dict[str, Any], tmp_path: Path
) -> None:
    """Its users may exist: nothing is looked up after the stop, and no password is lost or doubled."""
    env["api"] = api = AheadApi(refuse_after_wait=CaptchaRequired("captcha required"))
    create = api.create_evaluation_users
    stop = Stop()

    def losing_the_second(users: list[EvaluationUser]) -> list[Result]:
        out = create(users)
        if api.count("create") == 2:
            # Lost once the update beside it met the captcha (its answer lets that update go on).
            for _ in range(200):
                if stop.reason is not None:
                    break
                threading.Event().wait(0.01)
            raise OutcomeUnknown("connection dropped after the request was sent", call="create")
        return out

    api.create_evaluation_users = losing_the_second  # type: ignore[method-assign]
    out = tmp_path / "pw.txt"
    stopped_by_captcha(env, out, stop)
    assert api.count("create") == 2 and api.count("find") == 0, "nothing is sent after the stop"
    assert sorted(env["store"].load("sim").users) == ["trader000", "trader001"]
    [left] = IntentJournal(env["journal"]).unsettled()
    assert left.users == ["trader002", "trader003"] and pending_path_for(out).exists()
    assert _handed_out(out) == {n: api.passwords[n] for n in ("trader000", "trader001")}
    audit = [json.loads(x) for x in env["audit"].path.read_text().splitlines()]
    assert audit[-1]["action"] == "stop"
    assert [(a["users"], a["outcome"]) for a in audit if a["action"] == "create"][-1] == (
        ["trader002", "trader003"],
        "unknown",
    )
    # The next run looks them up, adopts them, and hands their passwords out in the first run's file.
    api.refuse_after_wait = None
    settled = settle_as_next_run(env, tmp_path / "pw-2.txt")
    assert sorted(settled.adopted) == ["trader002", "trader003"] and api.count("create") == 2
    assert _handed_out(out) == api.passwords and not pending_path_for(out).exists()
    state = env["store"].load("sim")
    assert {n: r.userId for n, r in state.users.items()} == {n: u.id for n, u in api.users.items()}
    assert env["journal"].unsettled() == []


def test_a_failed_state_write_in_the_follow_ups_still_records_the_create_sent_beside_them(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk refuses one append (the first batch's contacts): the run ends with that error, the
    second batch's traders and passwords are kept, and the next run creates nobody twice."""
    env["api"] = api = AheadApi(patience=0.5)
    failed: list[int] = []

    def full_once(*args: Any, **kwargs: Any) -> int:
        if not failed:
            failed.append(1)
            raise OSError(28, "No space left on device")
        return changelog.append_entry(*args, **kwargs)

    monkeypatch.setattr("reconcile.state.file.append_entry", full_once)
    m = make_manifest(4, password={"generate": True})
    out = tmp_path / "pw.txt"
    with pytest.raises(StateError, match="No space left on device"):
        run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2, generated_passwords=out)
    assert failed and api.count("create") == 2
    state = env["store"].load("sim")
    assert {n: r.userId for n, r in state.users.items()} == {n: u.id for n, u in api.users.items()}
    assert len(state.users) == 4 and _handed_out(out) == api.passwords
    assert not pending_path_for(out).exists()
    api.calls.clear()
    again = run(env, plan_for(env["store"], creates(make_manifest(5))[4:]), make_manifest(5))
    assert again.ok and api.count("create") == 1 and api.count("find") == 0
    assert env["journal"].unsettled() == [] and len(api.users) == 5


def test_the_next_create_is_not_queued_behind_a_group_that_holds_every_worker(env: dict[str, Any]) -> None:
    # With one worker, the first batch's updates hold it while they wait for the second create's
    # answer: a create queued for a worker would only go once they gave up waiting.
    env["api"] = api = AheadApi(patience=5.0)
    m = make_manifest(4)
    result = run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2, concurrency=1)
    assert result.ok, result.failures
    assert api.waited == [True, True]


def test_a_batchs_follow_ups_are_saved_with_the_next_batchs_create(env: dict[str, Any]) -> None:
    m = make_manifest(5)
    result = run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2)
    assert result.ok, result.failures
    state = env["store"].load("sim")
    assert all(r.contact is not None and r.contact.city == "New York" for r in state.users.values())
    # One save per create batch (it carries the batch before it's contacts), and one for the last
    # batch's contacts: 4, where a save per group of calls made 6.
    assert state.serial == 4


def test_follow_ups_left_for_a_later_save_are_saved_when_the_run_stops(env: dict[str, Any]) -> None:
    # No create goes beside the follow-ups (its slot is not free): nothing else saves them.
    env["api"] = api = AheadApi(slot_free=False, patience=0.05, refuse_after_wait=CaptchaRequired("captcha"))
    m = make_manifest(2)
    with pytest.raises(RunStopped, match="captcha"):
        run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2)
    state = env["store"].load("sim")
    assert state.users["trader000"].contact is None  # met the captcha
    assert state.users["trader001"].contact is not None and api.count("contact") == 2
    assert IntentJournal(env["journal"]).unsettled() == []


def test_a_recorded_create_is_settled_when_the_follow_ups_fail_before_its_settle_came(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its intent is settled once the follow-ups are in flight; a failure before that must not
    # leave a batch whose outcomes are all recorded open for the next run to look up.
    import reconcile.apply.update as update_module

    env["api"] = api = AheadApi()
    real = update_module.overlapped
    groups: list[object] = []

    def refusing_the_second(run: Any, *args: Any, **kwargs: Any) -> None:
        groups.append(args)
        if len(groups) == 2:  # the second batch's updates, before anything of them is sent
            raise StateError("state: no space left on device")
        real(run, *args, **kwargs)

    monkeypatch.setattr(update_module, "overlapped", refusing_the_second)
    m = make_manifest(4)
    with pytest.raises(StateError, match="no space left"):
        run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2)
    assert api.count("create") == 2 and api.count("contact") == 2
    assert sorted(env["store"].load("sim").users) == ["trader000", "trader001", "trader002", "trader003"]
    assert IntentJournal(env["journal"]).unsettled() == []
