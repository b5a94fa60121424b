"""Full revocation (DESIGN §7): every cancel goes to the endpoint and to its companion host."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_apply_executor import SECRET, FakeApi, Loaded, creates, make_manifest, plan_for

from reconcile import __version__
from reconcile.api.endpoints import HOSTS, STAGING_DEMO, resolve_companion
from reconcile.apply import IntentJournal, apply_plan, check_plan_current, settle, side_files
from reconcile.errors import ApiError, PlanError, ReconcileError
from reconcile.manifest.models import CancelFlags, Manifest
from reconcile.operations.settings import Settings
from reconcile.planning.plan import CancelEverything, Plan, PlanBinding
from reconcile.planning.planner import make_plan
from reconcile.state.file import FileStateStore

PRIMARY = "http://127.0.0.1:1/v1"
COMPANION = "http://127.0.0.1:2/v1"


@dataclass
class FakeCompanion:
    """A companion host: it only takes cancel-everything, and can be told to refuse it."""

    endpoint_label: str = COMPANION
    last_request_id: str | None = None
    refuse: bool = False
    calls: list[list[int]] = field(default_factory=list)

    def cancel_everything(
        self, user_ids: list[int], flags: CancelFlags, *, users: Any = ()
    ) -> dict[str, Any]:
        if self.refuse:
            raise ApiError("canceleverything: the API answered HTTP 500", call="canceleverything")
        self.calls.append(list(user_ids))
        return {}


@pytest.fixture
def desk(tmp_path: Path) -> dict[str, Any]:
    store = FileStateStore(tmp_path / "state" / "sim.json")
    journal, audit = side_files(store.path, "sim")
    api = FakeApi()
    api.endpoint_label = PRIMARY
    return {"store": store, "journal": journal, "audit": audit, "api": api, "companion": FakeCompanion()}


def _apply(desk: dict[str, Any], plan: Plan, manifest: Manifest) -> Any:
    return apply_plan(
        plan,
        loaded=Loaded(manifest),
        store=desk["store"],
        client=desk["api"],
        journal=desk["journal"],
        audit=desk["audit"],
        endpoint=PRIMARY,
        companion=desk["companion"],
        environ={"TRADER_PW": SECRET},
    )


def _bound(store: FileStateStore, actions: list[Any]) -> Plan:
    plan = plan_for(store, actions)
    binding = plan.binding.model_copy(update={"endpoint": PRIMARY, "companion": COMPANION})
    return plan.model_copy(update={"binding": binding})


def _cancel_all(desk: dict[str, Any]) -> Plan:
    state = desk["store"].load("sim")
    acts = [
        CancelEverything(user=n, userId=r.userId, flags=CancelFlags(), reason="removed_from_manifest")
        for n, r in sorted(state.users.items())
        if r.lifecycle == "active"
    ]
    return _bound(desk["store"], acts)


def _created(desk: dict[str, Any], n: int) -> Manifest:
    m = make_manifest(n)
    assert _apply(desk, _bound(desk["store"], creates(m)), m).ok
    return m


def _audit(desk: dict[str, Any]) -> list[dict[str, Any]]:
    lines = (desk["store"].path.parent / "sim.audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_companions_pair_live_with_demo_and_staging_hosts_with_each_other(monkeypatch: Any) -> None:
    monkeypatch.delenv("RECONCILE_COMPANION_ENDPOINT", raising=False)
    assert resolve_companion(HOSTS["live"]) == HOSTS["demo"]
    assert resolve_companion(HOSTS["demo"]) == HOSTS["live"]
    assert resolve_companion(HOSTS["staging"]) == STAGING_DEMO
    assert resolve_companion("sim:embedded") is None
    assert resolve_companion(PRIMARY) is None  # an overridden endpoint has none unless given
    assert resolve_companion(PRIMARY, COMPANION + "/") == COMPANION
    # The edge reads the variable once and passes it as the override.
    configured = Settings.from_environ({"RECONCILE_COMPANION_ENDPOINT": COMPANION}).companion_endpoint
    assert resolve_companion(PRIMARY, configured) == COMPANION
    with pytest.raises(ReconcileError, match="needs --endpoint too"):
        resolve_companion("sim:embedded", configured)
    with pytest.raises(ReconcileError, match="is the endpoint itself"):
        resolve_companion(PRIMARY, PRIMARY)
    with pytest.raises(ReconcileError, match="plain http on a non-loopback host"):
        resolve_companion(PRIMARY, "http://demo.example.com/v1")


def test_cancel_reaches_both_hosts_and_is_audited_per_host(desk: dict[str, Any]) -> None:
    m = _created(desk, 3)
    result = _apply(desk, _cancel_all(desk), m)
    assert result.ok and sorted(result.cancelled) == ["trader000", "trader001", "trader002"]
    ids = sorted(u.id for u in desk["api"].users.values())
    assert [sorted(c) for c in desk["companion"].calls] == [ids]
    assert [u.status for u in desk["api"].users.values()] == ["Closed"] * 3
    records = desk["store"].load("sim").users.values()
    both = sorted([PRIMARY, COMPANION])
    assert [(r.lifecycle, r.cancelledOn) for r in records] == [("cancelled", both)] * 3
    hosts = [a["detail"]["host"] for a in _audit(desk) if a["action"] == "cancel_everything"]
    assert hosts == [PRIMARY, COMPANION]


def test_companion_failure_fails_the_user_naming_the_host_and_the_retry_finishes_it(
    desk: dict[str, Any],
) -> None:
    m = _created(desk, 2)
    desk["companion"].refuse = True
    first = _apply(desk, _cancel_all(desk), m)
    assert first.exit_code == 1 and first.cancelled == []
    assert [str(f) for f in first.failures] == [
        f"trader00{i}: cancel_everything: on {COMPANION}: canceleverything: the API answered HTTP 500"
        for i in range(2)
    ]
    state = desk["store"].load("sim")
    assert {r.lifecycle for r in state.users.values()} == {"active"}
    assert {tuple(r.cancelledOn) for r in state.users.values()} == {(PRIMARY,)}

    # The next plan still cancels them and says the cancel is half done.
    binding = _cancel_all(desk).binding
    replan = make_plan(make_manifest(0).model_copy(update={"environment": "sim"}), state, binding=binding)
    assert [a.user for a in replan.actions] == ["trader000", "trader001"]
    half_done = (
        f"cancel still to finish: already cancelled on {PRIMARY}; "
        "apply sends it only to the host still missing"
    )
    assert [(d.user, d.message) for d in replan.diagnostics if d.message.startswith("cancel still")] == [
        ("trader000", half_done),
        ("trader001", half_done),
    ]

    desk["companion"].refuse = False
    primary_cancels = desk["api"].count("cancel")
    second = _apply(desk, replan, m)
    assert second.ok and sorted(second.cancelled) == ["trader000", "trader001"]
    assert desk["api"].count("cancel") == primary_cancels  # the primary is not asked again
    assert len(desk["companion"].calls) == 1
    assert {r.lifecycle for r in desk["store"].load("sim").users.values()} == {"cancelled"}


def test_a_half_cancelled_user_cannot_be_kept_active(desk: dict[str, Any]) -> None:
    m = _created(desk, 1)
    desk["companion"].refuse = True
    _apply(desk, _cancel_all(desk), m)
    state = desk["store"].load("sim")
    plan = make_plan(m, state, binding=_cancel_all(desk).binding)
    assert plan.has_errors and not plan.actions
    assert [(d.severity, d.user, d.message) for d in plan.diagnostics] == [
        (
            "error",
            "trader000",
            f"was cancelled on {PRIMARY} by an apply that did not finish (cancel-everything cannot be "
            "undone): set status: cancelled (or remove it) so the next apply finishes the cancel on the "
            "other host",
        )
    ]


def test_settling_an_interrupted_cancel_finishes_it_on_the_companion(desk: dict[str, Any]) -> None:
    _created(desk, 2)
    plan = _cancel_all(desk)
    # A run died after the primary's answer and before recording it: the intent is still open.
    journal = IntentJournal(desk["journal"])
    intent = journal.begin("cancel", list(plan.actions))
    desk["api"].cancel_everything(
        [a.userId for a in plan.actions if isinstance(a, CancelEverything)], CancelFlags()
    )
    assert journal.unsettled() == [intent]
    result = settle(
        store=desk["store"],
        environment="sim",
        client=desk["api"],
        journal=desk["journal"],
        audit=desk["audit"],
        companion=desk["companion"],
    )
    assert result.settled_intents == 1 and sorted(result.cancelled) == ["trader000", "trader001"]
    assert len(desk["companion"].calls) == 1
    assert desk["journal"].unsettled() == []


def test_a_plan_bound_to_another_companion_is_refused(desk: dict[str, Any]) -> None:
    _created(desk, 1)
    plan = _bound(desk["store"], [])
    state = desk["store"].load("sim")
    common = {"manifest_digest": "digest-1", "state": state, "environment": "sim", "endpoint": PRIMARY}
    check_plan_current(plan, **common, companion=COMPANION)
    with pytest.raises(
        PlanError, match=f"the companion host changed \\({COMPANION} when planned, none now\\)"
    ):
        check_plan_current(plan, **common, companion=None)


def test_plan_json_carries_the_companion_only_when_there_is_one() -> None:
    binding = PlanBinding(
        manifest_digest="d",
        state_lineage="l",
        state_serial=0,
        environment="live",
        endpoint=HOSTS["live"],
        tool_version=__version__,
    )
    assert "companion" not in Plan(binding=binding).to_json_dict()["binding"]
    with_companion = binding.model_copy(update={"companion": HOSTS["demo"]})
    assert Plan(binding=with_companion).to_json_dict()["binding"]["companion"] == HOSTS["demo"]
