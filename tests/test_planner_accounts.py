"""The planner's account rules, one by one (partner Stage 4)."""

from __future__ import annotations

from datetime import date
from typing import Literal

import pytest
from test_planner_support import (
    BINDING,
    EVAL50K_RISK,
    account,
    account_record,
    manifest,
    record,
    state,
    user,
)

from reconcile.manifest.models import Manifest
from reconcile.planning.plan import (
    CancelEverything,
    CreateAccount,
    FieldChange,
    Plan,
    ResetAccount,
    RevokeTrading,
    SetTrading,
    SwitchRiskCategory,
    UpdateRisk,
)
from reconcile.planning.planner import make_plan
from reconcile.state.model import State

NOV20 = date(2026, 11, 20)


def plan(m: Manifest, s: State, **options: list[str]) -> Plan:
    return make_plan(m, s, binding=BINDING, **options)


def one_account(**fields: object) -> Manifest:
    return manifest(user("trader001", accounts=[account("EVAL1", **fields)]))


def recorded(**overrides: object) -> State:
    return state(
        {"EVAL1": account_record(7001, "trader001", 1001, **overrides)},
        trader001=record(1001, "trader001"),
    )


def revoke(reason: Literal["removed_from_manifest", "trading_revoked"]) -> RevokeTrading:
    """The revocation of the account :func:`recorded` holds."""
    return RevokeTrading(
        user="trader001",
        userId=1001,
        account="EVAL1",
        accountId=7001,
        tradingPermissionId=57001,
        reason=reason,
    )


def messages(p: Plan) -> list[tuple[str, str]]:
    return [(d.severity, d.message) for d in p.diagnostics]


def test_new_user_and_new_account_create_both_with_the_merged_risk_then_category_and_lock() -> None:
    m = one_account(
        risk={"dailyLossAutoLiq": 800}, riskCategory="halted", trading="locked", resetTo="2026-11-20"
    )
    p = plan(m, state())
    assert [a.action.value for a in p.actions] == [
        "create",
        "create_account",
        "switch_risk_category",
        "set_trading",
    ]
    create = p.actions[1]
    assert create == CreateAccount(
        user="trader001",
        userId=None,
        account="EVAL1",
        template="eval50k",
        templateAccountId=5001,
        initialBalance=50000,
        risk={"dailyLossAutoLiq": 800.0, "trailingMaxDrawdown": 2500.0, "doNotUnlock": True},
        resetTo=NOV20,
    )
    assert p.actions[2] == SwitchRiskCategory(
        user="trader001",
        account="EVAL1",
        accountId=None,
        before=None,
        riskCategory="halted",
        riskCategoryId=32,
    )
    assert p.actions[3] == SetTrading(
        user="trader001", account="EVAL1", accountId=None, before="active", after="locked"
    )


def test_a_new_account_of_a_managed_user_carries_the_user_id_and_needs_no_reset() -> None:
    p = plan(one_account(resetTo="2026-11-20"), state(trader001=record(1001, "trader001")))
    assert [(a.action.value, getattr(a, "userId", None)) for a in p.actions] == [("create_account", 1001)]


def test_a_template_without_risk_creates_with_only_the_overrides() -> None:
    m = manifest(user("trader001", accounts=[account("EVAL1", "eval100k", risk={"weeklyLossAutoLiq": 3000})]))
    (create,) = plan(m, state(trader001=record(1001, "trader001"))).actions
    assert isinstance(create, CreateAccount) and create.risk == {"weeklyLossAutoLiq": 3000.0}


def test_revoked_account_never_created_plans_nothing_with_a_note() -> None:
    p = plan(one_account(trading="revoked"), state(trader001=record(1001, "trader001")))
    assert p.actions == ()
    assert messages(p) == [
        ("info", "account EVAL1 is marked trading: revoked but was never created: nothing to do")
    ]


def test_an_account_in_sync_plans_nothing() -> None:
    p = plan(one_account(), recorded())
    assert p.actions == () and p.diagnostics == ()


def test_state_names_match_ignoring_case() -> None:
    p = plan(manifest(user("trader001", accounts=[account("eval1", trading="locked")])), recorded())
    assert p.actions == (
        SetTrading(user="trader001", account="EVAL1", accountId=7001, before="active", after="locked"),
    )


def test_risk_changes_are_field_level_and_only_for_fields_the_manifest_sets() -> None:
    s = recorded(risk={**EVAL50K_RISK, "dailyLossAutoLiq": 900, "weeklyLossAutoLiq": 5000.0})
    (update,) = plan(one_account(risk={"dailyLossAutoLiq": 800}), s).actions
    assert update == UpdateRisk(
        user="trader001",
        account="EVAL1",
        accountId=7001,
        changes=(FieldChange(field="dailyLossAutoLiq", before=900, after=800.0),),
        risk={**EVAL50K_RISK, "dailyLossAutoLiq": 800.0},
    )


def test_whole_numbers_and_floats_of_one_value_are_no_change_but_booleans_are() -> None:
    assert plan(one_account(), recorded(risk={**EVAL50K_RISK, "dailyLossAutoLiq": 1000})).actions == ()
    (update,) = plan(
        one_account(risk={"doNotUnlock": False}), recorded(risk={**EVAL50K_RISK, "doNotUnlock": 0})
    ).actions
    assert isinstance(update, UpdateRisk) and [c.field for c in update.changes] == ["doNotUnlock"]


def test_category_switch_unlock_and_reset_forward() -> None:
    s = recorded(riskCategory="standard", trading="locked", lastReset=date(2026, 11, 1))
    p = plan(one_account(riskCategory="halted", resetTo="2026-11-20"), s)
    assert p.actions == (
        SwitchRiskCategory(
            user="trader001",
            account="EVAL1",
            accountId=7001,
            before="standard",
            riskCategory="halted",
            riskCategoryId=32,
        ),
        SetTrading(user="trader001", account="EVAL1", accountId=7001, before="locked", after="active"),
        ResetAccount(
            user="trader001", account="EVAL1", accountId=7001, before=date(2026, 11, 1), resetTo=NOV20
        ),
    )


def test_first_reset_of_an_account_never_reset() -> None:
    (reset,) = plan(one_account(resetTo="2026-11-20"), recorded()).actions
    assert reset == ResetAccount(
        user="trader001", account="EVAL1", accountId=7001, before=None, resetTo=NOV20
    )


def test_a_reset_date_before_the_last_reset_is_a_warning_not_a_reset() -> None:
    p = plan(one_account(resetTo="2026-11-01"), recorded(lastReset=NOV20))
    assert p.actions == ()
    assert messages(p) == [
        (
            "warning",
            "account EVAL1: resetTo 2026-11-01 is before its last reset (2026-11-20): not reset (a reset "
            "never goes back); set a later date to reset it again",
        )
    ]


def test_no_category_in_the_manifest_is_not_governed() -> None:
    assert plan(one_account(), recorded(riskCategory="halted")).actions == ()


def test_trading_revoked_revokes_only() -> None:
    p = plan(one_account(trading="revoked", riskCategory="halted", resetTo="2026-11-20"), recorded())
    assert p.actions == (revoke("trading_revoked"),)


def test_a_revoked_permission_cannot_come_back() -> None:
    p = plan(one_account(), recorded(permission="revoked"))
    assert p.actions == () and p.has_errors
    assert "its trading permission was revoked, which cannot be undone" in p.diagnostics[0].message
    assert plan(one_account(trading="revoked"), recorded(permission="revoked")).diagnostics == ()


def test_template_change_is_a_warning_not_an_action() -> None:
    p = plan(one_account(template="eval100k"), recorded(risk={}))
    assert p.actions == ()
    assert messages(p) == [
        (
            "warning",
            "account EVAL1: template eval50k → eval100k is not applied: the template "
            "(and its initialBalance) is used only when an account is created",
        )
    ]


def test_an_account_recorded_for_another_user_is_an_error() -> None:
    m = manifest(user("trader001"), user("trader002", accounts=[account("EVAL1")]))
    s = state(
        {"EVAL1": account_record(7001, "trader001", 1001)},
        trader001=record(1001, "trader001"),
        trader002=record(1002, "trader002"),
    )
    p = plan(m, s)
    assert p.actions == ()
    assert p.has_errors and p.diagnostics[0].user == "trader002"
    assert "account EVAL1 is recorded for user trader001" in p.diagnostics[0].message


def test_an_account_removed_from_the_manifest_is_revoked_while_its_user_stays() -> None:
    p = plan(manifest(user("trader001")), recorded())
    assert p.actions == (revoke("removed_from_manifest"),)
    assert plan(manifest(user("trader001")), recorded(permission="revoked")).actions == ()


def test_a_removed_account_without_a_permission_id_is_a_warning() -> None:
    p = plan(manifest(user("trader001")), recorded(tradingPermissionId=None))
    assert p.actions == () and p.diagnostics[0].severity == "warning"


@pytest.mark.parametrize("trading_permissions", [True, False])
def test_a_cancelled_user_gets_no_revoke_for_its_accounts(trading_permissions: bool) -> None:
    defaults = {"cancel": {"tradingPermissions": trading_permissions}}
    for m in (
        manifest(user("trader002"), defaults=defaults),
        manifest({"name": "trader001", "status": "cancelled"}, user("trader002"), defaults=defaults),
    ):
        s = state(
            {"EVAL1": account_record(7001, "trader001", 1001)},
            trader001=record(1001, "trader001"),
            trader002=record(1002, "trader002"),
        )
        assert [type(a) for a in plan(m, s).actions] == [CancelEverything]


def test_unmanaged_users_accounts_are_never_touched() -> None:
    s = state({"EVAL1": account_record(7001, "stranger", 999)}, trader001=record(1001, "trader001"))
    assert plan(manifest(user("trader001")), s).actions == ()


def test_account_actions_follow_target_and_exclude() -> None:
    m = manifest(
        user("trader001", accounts=[account("EVAL1", trading="locked")]),
        user("trader002", accounts=[account("EVAL2")]),
    )
    s = state(
        {"EVAL1": account_record(7001, "trader001", 1001)},
        trader001=record(1001, "trader001"),
        trader002=record(1002, "trader002"),
    )
    assert {a.user for a in plan(m, s).actions} == {"trader001", "trader002"}
    assert {a.user for a in plan(m, s, targets=["trader002"]).actions} == {"trader002"}
    assert {a.user for a in plan(m, s, excludes=["trader002"]).actions} == {"trader001"}


def test_actions_are_ordered_by_kind_user_then_account() -> None:
    m = manifest(
        user("trader001", accounts=[account("ZED01"), account("ALPHA", trading="locked")]),
        user("trader000", accounts=[account("MID01")]),
    )
    p = plan(m, state(trader001=record(1001, "trader001"), trader000=record(1000, "trader000")))
    assert [(a.action.value, a.user, getattr(a, "account", "")) for a in p.actions] == [
        ("create_account", "trader000", "MID01"),
        ("create_account", "trader001", "ALPHA"),
        ("create_account", "trader001", "ZED01"),
        ("set_trading", "trader001", "ALPHA"),
    ]


def test_an_account_listed_under_another_user_blocks_a_plan_targeting_its_owner() -> None:
    # trader001 is removed (its cancel revokes EVAL1) while the manifest lists EVAL1 under trader002.
    m = manifest(user("trader002", accounts=[account("EVAL1")]), user("trader003"))
    s = state(
        {"EVAL1": account_record(7001, "trader001", 1001)},
        trader001=record(1001, "trader001"),
        trader002=record(1002, "trader002"),
        trader003=record(1003, "trader003"),
    )
    p = plan(m, s, targets=["trader001"])
    assert p.has_errors and "account EVAL1 is recorded for user trader001" in p.diagnostics[0].message


def test_an_account_renamed_in_the_manifest_is_a_revoke_and_a_create_and_the_plan_says_so() -> None:
    p = plan(manifest(user("trader001", accounts=[account("EVAL1B")])), recorded())
    assert [a.action.value for a in p.actions] == ["create_account", "revoke_trading"]
    warnings = [m for severity, m in messages(p) if severity == "warning"]
    assert len(warnings) == 1
    assert "EVAL1 is revoked" in warnings[0] and "EVAL1B is created" in warnings[0]
    assert "cannot be renamed" in warnings[0]


def test_a_removed_account_alone_or_a_new_one_alone_is_no_rename() -> None:
    alone = plan(manifest(user("trader001")), recorded())
    assert [a.action.value for a in alone.actions] == ["revoke_trading"]
    assert not any("renamed" in m for _, m in messages(alone))
    both = manifest(user("trader001", accounts=[account("EVAL1"), account("EVAL2")]))
    assert not any("renamed" in m for _, m in messages(plan(both, recorded())))
