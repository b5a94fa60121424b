"""Adversarial probes of the account appliers: hand-edited state, lost answers, a second apply."""

from __future__ import annotations

import pytest
from account_support import Desk, client, create, desk, made
from test_apply_accounts import revoke

from reconcile.sim import admin
from reconcile.sim.app import SimApp

__all__ = ["client", "desk"]  # the fixtures this module uses


def test_two_records_sharing_a_permission_id_send_only_the_owners(desk: Desk) -> None:
    accounts = made(desk, "trader001", ["EVAL1", "EVAL2"])
    edited = desk.edit("EVAL2", tradingPermissionId=accounts["EVAL1"].tradingPermissionId)
    run, requests = desk.apply([revoke("EVAL1", accounts["EVAL1"]), revoke("EVAL2", edited)])
    assert requests == 2, "one read, one revocation"
    assert [f.user for f in run.result.failures] == ["EVAL2"]
    assert run.result.trading_revoked == ["EVAL1"]
    assert desk.sim("EVAL2")["permissionStatus"] != "Revoked"


def test_a_lost_revoke_answer_is_confirmed_not_resent_by_the_next_apply(desk: Desk, sim_app: SimApp) -> None:
    record = made(desk, "trader001", ["EVAL1"])["EVAL1"]
    admin.arm_fault(sim_app.store, "drop_after_apply", "/user/revoketradingpermissions")
    _, requests = desk.apply([revoke("EVAL1", record)])
    # Revoking is idempotent: the client may resend it at once, or leave it to the next apply.
    assert requests in (2, 3), requests
    again, requests = desk.apply([revoke("EVAL1", record)])
    assert again.result.ok and requests == 1, "the read finds it revoked: nothing sent"
    assert desk.record("EVAL1").permission == "revoked"


def test_a_lost_create_found_with_a_revoked_permission_is_recorded_revoked(
    desk: Desk, sim_app: SimApp
) -> None:
    user_id = desk.trader("trader001")
    admin.arm_fault(sim_app.store, "drop_after_apply", "/user/createevaluationaccounts")
    desk.apply([create("trader001", "EVAL1", user_id)])
    permission = desk.record("EVAL1").tradingPermissionId
    assert permission is not None
    state = desk.store.load("sim")
    del state.accounts["EVAL1"]  # the state write was lost, and someone revoked it meanwhile
    desk.store.save(state)
    desk.client.revoke_trading_permissions([permission])
    desk.apply([create("trader001", "EVAL1", user_id)])
    assert desk.record("EVAL1").permission == "revoked"
    assert len(admin.dump_accounts(sim_app.store, sim_app.config)) == 1


def test_import_does_not_adopt_a_case_variant_of_a_recorded_account_twice(desk: Desk) -> None:
    from test_drift_accounts import desk_manifest

    from reconcile.operations.adopt import import_users

    made(desk, "trader001", ["EVAL1"])
    the_manifest = desk_manifest({"trader001": [{"name": "eval1", "template": "eval50k"}]})
    result = import_users(the_manifest, desk.store, desk.client, None)
    saved = desk.store.read()
    assert saved is not None and list(saved.accounts) == ["EVAL1"], "one record per account"
    assert result.accounts_adopted == []


@pytest.mark.parametrize("owner", ["stranger", "trader001"])
def test_plan_refresh_blocks_an_account_whose_recorded_id_is_another_account(desk: Desk, owner: str) -> None:
    from test_drift_accounts import NOW, desk_manifest
    from test_planner_support import BINDING

    from reconcile.api.models import EvaluationAccount, EvaluationUser
    from reconcile.operations.read_live import read_live
    from reconcile.planning.drift import compare
    from reconcile.planning.plan import ResetAccount
    from reconcile.planning.planner import make_plan

    made(desk, "trader001", ["EVAL1"])
    stranger = EvaluationUser(
        name="stranger", email="s@example.com", password="Trader-Pa55!", firstName="S", lastName="S"
    )
    stranger_id = desk.client.create_evaluation_users([stranger])[0].userId
    owner_id = stranger_id if owner == "stranger" else desk.store.load("sim").users["trader001"].userId
    assert owner_id is not None
    theirs = EvaluationAccount(userId=owner_id, name="THEIRS", templateAccountId=5001, initialBalance=1)
    desk.client.create_evaluation_accounts([theirs])
    state = desk.store.load("sim")
    # Hand-edited: EVAL1's ids now name account THEIRS (an unmanaged trader's, or an unrecorded
    # one of the same trader).
    state.accounts["EVAL1"] = state.accounts["EVAL1"].model_copy(
        update={
            "accountId": desk.sim("THEIRS")["id"],
            "tradingPermissionId": desk.sim("THEIRS")["tradingPermissionId"],
        }
    )
    the_manifest = desk_manifest(
        {"trader001": [{"name": "EVAL1", "template": "eval50k", "resetTo": "2025-06-02"}]}
    )
    live = read_live(desk.client, agreement_alert_id=68, contacts_of=(), read_at=NOW, accounts=True)
    plan = make_plan(the_manifest, state, binding=BINDING, live=live)
    assert [a for a in plan.actions if isinstance(a, ResetAccount)], "shown, but the error blocks apply"
    [error] = [d for d in plan.diagnostics if d.severity == "error"]
    assert "state records account id" in error.message and f"THEIRS of {owner}" in error.message
    assert plan.refresh is not None and any(d.account == "EVAL1" for d in plan.refresh.drift)
    assert compare(state, live, {}).observed.accounts == state.accounts, "nothing recorded on a guess"


def test_refresh_reads_a_permission_id_state_lost_so_the_account_can_be_revoked(desk: Desk) -> None:
    from test_drift_accounts import NOW, desk_manifest

    from reconcile.operations.adopt import refresh_state

    made(desk, "trader001", ["EVAL1"])
    state = desk.store.load("sim")
    state.accounts["EVAL1"] = state.accounts["EVAL1"].model_copy(update={"tradingPermissionId": None})
    desk.store.save(state, changed=(), changed_accounts=["EVAL1"])
    the_manifest = desk_manifest({"trader001": [{"name": "EVAL1", "template": "eval50k"}]})
    result = refresh_state(the_manifest, desk.store, desk.client, clock=lambda: NOW)
    assert result.changed_accounts == ("EVAL1",), "the warning's advice: refresh reads it"
    assert desk.record("EVAL1").tradingPermissionId == desk.sim("EVAL1")["tradingPermissionId"]


def test_a_plan_file_naming_one_account_with_anothers_ids_sends_no_revoke_or_reset(desk: Desk) -> None:
    from test_apply_accounts import reset

    accounts = made(desk, "trader001", ["EVAL1", "EVAL2"])
    # Edited after its review: the review says EVAL1, the ids are EVAL2's (consistent at the API).
    run, requests = desk.apply([revoke("EVAL1", accounts["EVAL2"]), reset("EVAL1", accounts["EVAL2"])])
    assert requests == 1, "the confirming read only"
    assert sorted((f.user, f.action) for f in run.result.failures) == [
        ("EVAL1", "reset_account"),
        ("EVAL1", "revoke_trading"),
    ]
    assert all("not the ones state records" in f.message for f in run.result.failures)
    assert desk.sim("EVAL2")["permissionStatus"] != "Revoked" and desk.sim("EVAL2")["resets"] == 0


def test_a_revoked_permission_is_not_recorded_while_the_account_holds_another_live_one(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_drift_accounts import NOW, desk_manifest

    from reconcile.operations.adopt import refresh_state

    record = made(desk, "trader001", ["EVAL1"])["EVAL1"]
    assert record.tradingPermissionId is not None
    desk.client.revoke_trading_permissions([record.tradingPermissionId])
    listed = desk.client.list_trading_permissions
    # Then granted again outside reconcile: a new permission, which the simulator cannot make.
    granted = listed()[0].model_copy(update={"id": 999_001, "status": "Approved"})
    monkeypatch.setattr(desk.client, "list_trading_permissions", lambda: [*listed(), granted])
    run, requests = desk.apply([revoke("EVAL1", record)])
    [failure] = run.result.failures
    assert "holds another, 999001" in failure.message and requests == 1
    assert desk.record("EVAL1").permission == "active", "the trader can still trade"
    the_manifest = desk_manifest({"trader001": [{"name": "EVAL1", "template": "eval50k"}]})
    refresh_state(the_manifest, desk.store, desk.client, clock=lambda: NOW)
    assert desk.record("EVAL1").tradingPermissionId == 999_001, "the next plan revokes the live one"
