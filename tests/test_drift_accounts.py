"""Accounts in drift, refresh and import (issue 14): four list calls, drift per account, adoption by name."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from account_support import RISK, Desk, client, create, desk, made
from test_planner_support import manifest

from reconcile.api.models import UpdateUserAutoLiqItem
from reconcile.manifest.models import Manifest
from reconcile.operations.adopt import import_users, refresh_state
from reconcile.operations.read_live import read_live
from reconcile.planning.drift import compare
from reconcile.planning.plan import DriftKind

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CATEGORIES = {"standard": 31, "halted": 32}
__all__ = ["client", "desk"]  # the fixtures this module uses


def desk_manifest(accounts: dict[str, list[dict[str, Any]]]) -> Manifest:
    users = [
        {"name": n, "email": f"{n}@example.com", "password": {"generate": True}, "firstName": "T",
         "lastName": "T", "accounts": a}
        for n, a in accounts.items()
    ]  # fmt: skip
    partner = {
        "dataAccountId": 11111,
        "entitlements": {"simplus": 12345},
        "accountTemplates": {"eval50k": {"templateAccountId": 5001, "initialBalance": 50000, "risk": RISK}},
        "riskCategories": CATEGORIES,
    }
    return manifest(*users, partner=partner)


def test_drift_reads_four_lists_and_reports_each_change_made_outside(desk: Desk) -> None:
    records = made(desk, "trader001", ["EVAL1", "EVAL2", "EVAL3"])
    state = desk.store.load("sim")
    state.accounts["EVAL2"] = state.accounts["EVAL2"].model_copy(update={"riskCategory": "standard"})
    state = desk.store.save(state, changed=(), changed_accounts=["EVAL2"])
    client = desk.client
    ids = {name: record.accountId for name, record in records.items()}
    client.update_user_auto_liqs([UpdateUserAutoLiqItem(accountId=ids["EVAL1"], dailyLossAutoLiq=5000)])
    client.switch_risk_category([ids["EVAL2"]], 32)
    client.set_admin_auto_liq_action(ids["EVAL2"], "LockTradingImmediately", reason="by hand")
    assert records["EVAL3"].tradingPermissionId is not None
    client.revoke_trading_permissions([records["EVAL3"].tradingPermissionId])
    desk.client.create_evaluation_accounts([_wire(state, "STRAY1")])
    before = client.requests_sent
    live = read_live(client, agreement_alert_id=68, contacts_of=(), read_at=NOW, accounts=True)
    assert client.requests_sent - before == live.requests == 7, "3 user reads and 4 account lists"
    found = compare(state, live, {}, CATEGORIES)
    kinds = {(d.account, d.kind) for d in found.drift}
    assert kinds == {
        ("EVAL1", DriftKind.account_risk_changed),
        ("EVAL2", DriftKind.account_risk_changed),
        ("EVAL2", DriftKind.account_trading_changed),
        ("EVAL3", DriftKind.account_revoked),
        ("STRAY1", DriftKind.account_outside),
    }
    observed = found.observed.accounts
    assert observed["EVAL1"].risk["dailyLossAutoLiq"] == 5000
    assert (observed["EVAL2"].riskCategory, observed["EVAL2"].trading) == ("halted", "locked")
    assert observed["EVAL3"].permission == "revoked" and observed["EVAL3"].revokedAt == NOW
    assert found.changed_accounts == ("EVAL1", "EVAL2", "EVAL3") and "STRAY1" not in observed


def _wire(state: Any, name: str) -> Any:
    from reconcile.api.models import EvaluationAccount

    user_id = state.users["trader001"].userId
    return EvaluationAccount(userId=user_id, name=name, templateAccountId=5001, initialBalance=1)


def test_refresh_records_what_the_api_shows_and_a_second_finds_nothing(desk: Desk) -> None:
    records = made(desk, "trader001", ["EVAL1"])
    account_id = records["EVAL1"].accountId
    desk.client.set_admin_auto_liq_action(account_id, "LockTradingImmediately", reason="by hand")
    the_manifest = desk_manifest({"trader001": [{"name": "EVAL1", "template": "eval50k"}]})
    first = refresh_state(the_manifest, desk.store, desk.client, clock=lambda: NOW)
    assert first.changed_accounts == ("EVAL1",) and desk.record("EVAL1").trading == "locked"
    again = refresh_state(the_manifest, desk.store, desk.client, clock=lambda: NOW)
    assert again.drift == () and again.changed_accounts == () and again.serial == first.serial


def test_import_adopts_the_manifest_accounts_of_managed_users_by_name(desk: Desk) -> None:
    made(desk, "trader001", ["EVAL1"])
    other = desk.trader("trader002")
    state = desk.store.load("sim")
    del state.accounts["EVAL1"]  # made outside reconcile, as far as state knows
    desk.store.save(state, changed=(), changed_accounts=["EVAL1"])
    desk.client.create_evaluation_accounts([_wire(state, "EVAL9")])
    desk.apply([create("trader002", "EVAL5", other)])
    state = desk.store.load("sim")
    del state.accounts["EVAL5"]
    desk.store.save(state, changed=(), changed_accounts=["EVAL5"])
    the_manifest = desk_manifest(
        {
            "trader001": [{"name": "eval1", "template": "eval50k", "resetTo": "2025-06-02"}],
            "trader002": [{"name": "EVAL9", "template": "eval50k"}],  # held by trader001
        }
    )
    result = import_users(the_manifest, desk.store, desk.client, ["trader001"], clock=lambda: NOW)
    assert result.accounts_adopted == ["eval1"] and result.accounts_elsewhere == ["EVAL9"]
    adopted = desk.record("eval1")
    assert adopted.origin == "adopted" and adopted.accountId == desk.sim("EVAL1")["id"]
    assert adopted.tradingPermissionId == desk.sim("EVAL1")["tradingPermissionId"]
    assert adopted.risk == RISK and adopted.lastReset == date(2025, 6, 2), "no reset on a guess"
