"""The account executors (issue 14) against the in-process simulator: batches, request counts, errors."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from account_support import DAY, RISK, Desk, client, create, desk, made

from reconcile.api.models import EvaluationAccount
from reconcile.apply import RunStopped
from reconcile.apply.executor import execute
from reconcile.apply.intents import IntentJournal
from reconcile.apply.recovery import settle_journal
from reconcile.apply.run import ExecuteOptions
from reconcile.manifest.models import CancelFlags
from reconcile.planning.plan import (
    CancelEverything,
    CreateUser,
    FieldChange,
    ResetAccount,
    RevokeTrading,
    SetTrading,
    SwitchRiskCategory,
    UpdateRisk,
)
from reconcile.sim import admin
from reconcile.sim.app import SimApp
from reconcile.state.model import AccountRecord

__all__ = ["client", "desk"]  # the fixtures this module uses

# create_account -------------------------------------------------------------------------


def test_creates_go_in_batches_of_100_and_record_both_ids(desk: Desk) -> None:
    user_id = desk.trader("trader001")
    names = [f"EVAL{i:04d}" for i in range(250)]
    run, requests = desk.apply([create("trader001", n, user_id, resetTo=DAY) for n in names])
    assert run.result.ok and sorted(run.result.accounts_created) == names
    assert requests == 3, "ceil(250 / 100) create calls and nothing else"
    stored = desk.record("EVAL0123")
    sim = desk.sim("EVAL0123")
    assert (stored.accountId, stored.tradingPermissionId) == (sim["id"], sim["tradingPermissionId"])
    assert stored.user == "trader001" and stored.userId == user_id and stored.template == "eval50k"
    assert stored.risk == RISK and sim["autoLiq"]["dailyLossAutoLiq"] == 1000
    assert stored.lastReset == DAY and sim["resets"] == 0, "a new account records resetTo and is not reset"
    assert IntentJournal(desk.journal).unsettled() == []


def test_an_account_of_a_user_created_in_the_same_plan_takes_the_new_id(desk: Desk) -> None:
    new_user = CreateUser(
        user="trader002", email="trader002@example.com", firstName="T", lastName="T", password="literal"
    )
    passwords = {"trader002": "Trader-Pa55!"}
    run, _ = desk.apply([new_user, create("trader002", "EVAL1", None)], passwords=passwords)
    assert run.result.ok, run.result.failures
    assert desk.record("EVAL1").userId == run.state.users["trader002"].userId == desk.sim("EVAL1")["userId"]


def test_a_refused_account_fails_alone_and_its_batch_mates_are_recorded(desk: Desk) -> None:
    user_id = desk.trader("trader001")
    run, _ = desk.apply(
        [create("trader001", "EVAL1", user_id), create("trader001", "EVAL2", user_id, templateAccountId=4999)]
    )
    assert run.result.accounts_created == ["EVAL1"]
    [failure] = run.result.failures
    assert failure.user == "EVAL2" and "templateAccountId 4999" in failure.message
    assert "EVAL2" not in run.state.accounts


def test_an_account_whose_user_was_not_created_is_not_sent(desk: Desk) -> None:
    run, requests = desk.apply([create("ghost", "EVAL1", None)])
    assert requests == 0 and run.result.failures[0].message == "skipped: user ghost was not created"


def test_a_lost_create_answer_is_settled_by_name_without_a_second_account(
    desk: Desk, sim_app: SimApp
) -> None:
    user_id = desk.trader("trader001")
    admin.arm_fault(sim_app.store, "drop_after_apply", "/user/createevaluationaccounts")
    run, requests = desk.apply([create("trader001", "EVAL1", user_id), create("trader001", "EVAL2", user_id)])
    assert run.result.ok and sorted(run.result.accounts_created) == ["EVAL1", "EVAL2"]
    assert requests == 3, "the create, then one read of the accounts and one of the permissions"
    assert desk.record("EVAL2").tradingPermissionId == desk.sim("EVAL2")["tradingPermissionId"]
    state = desk.store.load("sim")
    del state.accounts["EVAL1"]  # as if the state write after the create had been lost
    desk.store.save(state)
    again, requests = desk.apply([create("trader001", "EVAL1", user_id)])
    # The API refuses the name; the account found under the same user is ours, recorded again.
    assert again.result.ok and requests == 3
    assert len(admin.dump_accounts(sim_app.store, sim_app.config)) == 2


def test_an_account_name_held_by_another_user_is_reported_not_recorded(desk: Desk) -> None:
    made(desk, "trader001", ["EVAL1"])
    other = desk.trader("trader002")
    desk.state.accounts.pop("EVAL1")
    desk.state = desk.store.save(desk.state)
    run, _ = desk.apply([create("trader002", "EVAL1", other)])
    [failure] = run.result.failures
    assert "already exists" in failure.message and "not trader002" in failure.message
    assert "EVAL1" not in run.state.accounts


def test_a_create_a_dead_run_announced_is_settled_from_the_account_list(desk: Desk) -> None:
    user_id = desk.trader("trader001")
    action = create("trader001", "EVAL1", user_id)
    IntentJournal(desk.journal).begin("create_account", [action])
    desk.client.create_evaluation_accounts(
        [EvaluationAccount(userId=user_id, name="EVAL1", templateAccountId=5001, initialBalance=50000)]
    )  # sent, then the run died before recording it
    run = desk.run()
    settle_journal(run)
    assert desk.record("EVAL1").accountId == desk.sim("EVAL1")["id"]
    assert IntentJournal(desk.journal).unsettled() == []


def test_an_unreadable_account_list_keeps_the_intent_and_stops(desk: Desk, sim_app: SimApp) -> None:
    user_id = desk.trader("trader001")
    admin.arm_fault(sim_app.store, "drop_after_apply", "/user/createevaluationaccounts")
    admin.arm_fault(sim_app.store, "http500", "/account/list", count=10)
    with pytest.raises(RunStopped, match="whether they exist is unknown"):
        desk.apply([create("trader001", "EVAL1", user_id)])
    assert [i.call for i in IntentJournal(desk.journal).unsettled()] == ["create_account"]


# update_risk, switch_risk_category, set_trading -------------------------------------------


def test_risk_goes_in_bulk_and_is_recorded(desk: Desk) -> None:
    accounts = made(desk, "trader001", [f"EVAL{i:03d}" for i in range(150)])
    risk = {**RISK, "dailyLossAutoLiq": 800.0}
    updates = [
        UpdateRisk(
            user="trader001", account=name, accountId=record.accountId, risk=risk,
            changes=(FieldChange(field="dailyLossAutoLiq", before=1000.0, after=800.0),),
        )
        for name, record in accounts.items()
    ]  # fmt: skip
    run, requests = desk.apply(updates)
    assert run.result.ok and len(run.result.risk_updated) == 150 and requests == 2
    assert desk.sim("EVAL149")["autoLiq"]["dailyLossAutoLiq"] == 800
    assert desk.record("EVAL149").risk == risk


def test_one_category_switch_per_category_and_new_accounts_take_the_recorded_id(desk: Desk) -> None:
    user_id = desk.trader("trader001")
    names = [f"EVAL{i}" for i in range(4)]
    switches = [
        SwitchRiskCategory(
            user="trader001", account=n, accountId=None, before=None,
            riskCategory="halted" if i % 2 else "standard", riskCategoryId=32 if i % 2 else 31,
        )
        for i, n in enumerate(names)
    ]  # fmt: skip
    before = desk.client.requests_sent
    run, _ = desk.apply([*(create("trader001", n, user_id) for n in names), *switches])
    assert run.result.ok and desk.client.requests_sent - before == 3, "one create, one switch per category"
    assert [desk.sim(n)["riskCategoryId"] for n in names] == [31, 32, 31, 32]
    assert desk.record("EVAL1").riskCategory == "halted"


def test_lock_and_unlock_set_the_admin_action_with_the_manifest_reason(desk: Desk) -> None:
    record = made(desk, "trader001", ["EVAL1"])["EVAL1"]
    lock = SetTrading(
        user="trader001", account="EVAL1", accountId=record.accountId, before="active", after="locked"
    )
    run, requests = desk.apply([lock])
    assert run.result.trading_set == ["EVAL1"] and requests == 1
    sim = desk.sim("EVAL1")
    assert (sim["adminAction"], sim["adminActionReason"]) == ("LockTradingImmediately", "reconcile: manifest")
    assert desk.record("EVAL1").trading == "locked"
    desk.apply([lock.model_copy(update={"before": "locked", "after": "active"})])
    assert desk.sim("EVAL1")["adminAction"] == "Normal" and desk.record("EVAL1").trading == "active"


def test_a_refused_bulk_call_fails_each_account_with_the_api_words(desk: Desk, sim_app: SimApp) -> None:
    made(desk, "trader001", ["EVAL1"])
    bad = UpdateRisk(user="trader001", account="EVAL1", accountId=999999, risk=RISK, changes=())
    run, _ = desk.apply([bad])
    [failure] = run.result.failures
    assert failure.user == "EVAL1" and "999999" in failure.message
    assert run.result.risk_updated == []


# reset_account ------------------------------------------------------------------------------


def reset(name: str, record: AccountRecord, day: date = DAY) -> ResetAccount:
    return ResetAccount(user=record.user, account=name, accountId=record.accountId, before=None, resetTo=day)


def test_resets_are_grouped_by_trade_date_and_restore_the_initial_balance(
    desk: Desk, sim_app: SimApp
) -> None:
    accounts = made(desk, "trader001", [f"EVAL{i}" for i in range(3)])
    admin.move_balance(sim_app.store, sim_app.config, {"name": "EVAL0", "amount": -1250})
    days = [DAY, DAY, date(2025, 6, 3)]
    run, requests = desk.apply([reset(n, r, d) for (n, r), d in zip(accounts.items(), days, strict=True)])
    assert run.result.ok and sorted(run.result.accounts_reset) == ["EVAL0", "EVAL1", "EVAL2"]
    assert requests == 2, "one reset call per trade date"
    assert desk.sim("EVAL0")["balance"] == 50000 and desk.sim("EVAL0")["resets"] == 1
    assert desk.record("EVAL2").lastReset == date(2025, 6, 3)
    assert IntentJournal(desk.journal).unsettled() == []


def test_a_lost_reset_answer_is_never_sent_again(desk: Desk, sim_app: SimApp) -> None:
    record = made(desk, "trader001", ["EVAL1"])["EVAL1"]
    admin.arm_fault(sim_app.store, "drop_after_apply", "/account/resetdemoaccountstate")
    run, _ = desk.apply([reset("EVAL1", record)])
    [failure] = run.result.failures
    assert "will not be sent again" in failure.message
    stored = desk.record("EVAL1")
    assert stored.lastReset == DAY and stored.resetUnsettled == DAY
    again, requests = desk.apply([reset("EVAL1", record)])  # a plan made before still holds it
    assert requests == 0 and "not sent" in again.result.failures[0].message
    assert desk.sim("EVAL1")["resets"] == 1
    later, _ = desk.apply([reset("EVAL1", record, date(2025, 6, 3))])
    assert later.result.ok and desk.record("EVAL1").resetUnsettled is None
    assert desk.sim("EVAL1")["resets"] == 2


def test_a_reset_a_dead_run_announced_is_recorded_unconfirmed_not_resent(desk: Desk) -> None:
    record = made(desk, "trader001", ["EVAL1"])["EVAL1"]
    IntentJournal(desk.journal).begin("reset", [reset("EVAL1", record)])
    run = desk.run()
    before = desk.client.requests_sent
    settle_journal(run)
    assert desk.client.requests_sent == before, "nothing is sent to settle a reset"
    assert desk.record("EVAL1").resetUnsettled == DAY and not run.result.ok
    assert IntentJournal(desk.journal).unsettled() == []


# revoke_trading -----------------------------------------------------------------------------


def revoke(name: str, record: AccountRecord, **fields: Any) -> RevokeTrading:
    values: dict[str, Any] = {
        "user": record.user, "userId": record.userId, "account": name, "accountId": record.accountId,
        "tradingPermissionId": record.tradingPermissionId, "reason": "trading_revoked",
    }  # fmt: skip
    return RevokeTrading(**(values | fields))


def test_revokes_are_confirmed_by_one_read_then_sent_in_bulk(desk: Desk) -> None:
    accounts = made(desk, "trader001", [f"EVAL{i:03d}" for i in range(120)])
    run, requests = desk.apply([revoke(n, r) for n, r in accounts.items()])
    assert run.result.ok and len(run.result.trading_revoked) == 120
    assert requests == 3, "one read of the permissions, then ceil(120 / 100) revocations"
    assert desk.sim("EVAL007")["permissionStatus"] == "Revoked"
    assert desk.record("EVAL007").permission == "revoked" and desk.record("EVAL007").revokedAt is not None


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        # EVAL1's record holds EVAL2's permission id: the read shows it is another account's.
        ({"tradingPermissionId": "EVAL2"}, "state is wrong about this account"),
        # Moved to trader002 with trader001's user id kept, which the read alone would confirm.
        ({"user": "trader002"}, "trader002's id is"),
    ],
)
def test_a_hand_edited_record_sends_no_revocation(desk: Desk, edit: dict[str, str], words: str) -> None:
    accounts = made(desk, "trader001", ["EVAL1", "EVAL2"])
    desk.trader("trader002")
    update = {
        k: (accounts[v].tradingPermissionId if k == "tradingPermissionId" else v) for k, v in edit.items()
    }
    run, requests = desk.apply([revoke("EVAL1", desk.edit("EVAL1", **update))])
    assert requests == 1, "the confirming read only"
    [failure] = run.result.failures
    assert failure.user == "EVAL1" and words in failure.message
    assert desk.sim("EVAL1")["permissionStatus"] != "Revoked"
    assert desk.sim("EVAL2")["permissionStatus"] != "Revoked"


def test_a_permission_revoked_outside_is_recorded_without_a_call(desk: Desk) -> None:
    record = made(desk, "trader001", ["EVAL1"])["EVAL1"]
    assert record.tradingPermissionId is not None
    desk.client.revoke_trading_permissions([record.tradingPermissionId])
    run, requests = desk.apply([revoke("EVAL1", record)])
    assert run.result.ok and requests == 1 and desk.record("EVAL1").permission == "revoked"


def test_a_stopped_run_sends_no_revocation(desk: Desk) -> None:
    record = made(desk, "trader001", ["EVAL1"])["EVAL1"]
    run = desk.run()
    run.stop.trip("a person must look")
    before = desk.client.requests_sent
    with pytest.raises(RunStopped):
        execute(run, [revoke("EVAL1", record)], ExecuteOptions())
    assert desk.client.requests_sent == before and desk.sim("EVAL1")["permissionStatus"] != "Revoked"


def test_cancel_everything_with_trading_permissions_records_the_accounts_revoked(desk: Desk) -> None:
    made(desk, "trader001", ["EVAL1", "EVAL2"])
    flags = CancelFlags(tradingPermissions=True)
    user_id = desk.state.users["trader001"].userId
    cancel = CancelEverything(user="trader001", userId=user_id, flags=flags, reason="removed_from_manifest")
    run, _ = desk.apply([cancel])
    assert run.result.ok and sorted(run.result.trading_revoked) == ["EVAL1", "EVAL2"]
    assert desk.record("EVAL2").permission == "revoked" and desk.sim("EVAL2")["permissionStatus"] == "Revoked"


def test_a_reset_refused_by_a_captcha_is_settled_as_not_sent_and_stops(desk: Desk, sim_app: SimApp) -> None:
    record = made(desk, "trader001", ["EVAL1"])["EVAL1"]
    admin.arm_fault(sim_app.store, "captcha", "/account/resetdemoaccountstate")
    with pytest.raises(RunStopped):
        desk.apply([reset("EVAL1", record)])
    assert IntentJournal(desk.journal).unsettled() == [], "nothing ran: nothing to settle"
    assert desk.sim("EVAL1")["resets"] == 0 and desk.record("EVAL1").lastReset is None
