"""PartnerClient's evaluation-account calls (issue 14) against the in-process simulator, contract-checked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest

from reconcile.api.auth import TokenAuth
from reconcile.api.client import PartnerClient
from reconcile.api.credentials import Credentials
from reconcile.api.models import (
    Account,
    EvaluationAccount,
    EvaluationUser,
    PostTradeRisk,
    UpdateUserAutoLiqItem,
    UserAccountAutoLiq,
)
from reconcile.contract import contract
from reconcile.errors import ApiError, OutcomeUnknown
from reconcile.sim import admin
from reconcile.sim.app import SimApp
from reconcile.sim.config import SimConfig
from reconcile.sim.testing import ContractCheckingTransport

BASE = "http://sim.test/v1"
RISK = PostTradeRisk(trailingMaxDrawdown=2500, trailingMaxDrawdownLimit=50100, dailyLossAutoLiq=1000)
RESET_DAY = date(2025, 6, 2)


@pytest.fixture
def client(sim_app: SimApp, sim_transport: ContractCheckingTransport) -> Iterator[PartnerClient]:
    creds = Credentials(username=sim_app.config.admin_name, password=sim_app.config.admin_password)
    auth = TokenAuth(creds, endpoint=BASE)
    # Retries wait on this no-op sleep: no test waits on the wall clock.
    with PartnerClient(BASE, transport=sim_transport, auth=auth, sleep=lambda _s: None) as partner:
        yield partner


def new_trader(client: PartnerClient, name: str = "trader001") -> int:
    user = EvaluationUser(
        name=name, email=f"{name}@example.com", password="Trader-Pa55!", firstName="Tess", lastName="Trader"
    )
    user_id = client.create_evaluation_users([user])[0].userId
    assert user_id is not None
    return user_id


def evaluation(user_id: int, name: str, **fields: Any) -> EvaluationAccount:
    defaults: dict[str, Any] = {"templateAccountId": 5001, "initialBalance": 50000}
    return EvaluationAccount(userId=user_id, name=name, **(defaults | fields))


def one_account(client: PartnerClient, name: str = "EVAL1") -> tuple[int, int]:
    """Create trader001 and one account; return (accountId, tradingPermissionId)."""
    (result,) = client.create_evaluation_accounts([evaluation(new_trader(client), name, postTradeRisk=RISK)])
    assert result.accountId is not None and result.tradingPermissionId is not None, result
    return result.accountId, result.tradingPermissionId


def sim_account(app: SimApp, name: str) -> dict[str, Any]:
    (found,) = [a for a in admin.dump_accounts(app.store, app.config) if a["name"] == name]
    return found


def test_create_returns_both_ids_per_account_and_errors_per_account(client: PartnerClient) -> None:
    trader = new_trader(client)
    results = client.create_evaluation_accounts(
        [evaluation(trader, "EVAL1", postTradeRisk=RISK), evaluation(trader, "EVAL2", templateAccountId=9)]
    )
    assert results[0].accountId is not None and results[0].tradingPermissionId is not None
    assert results[0].errorText is None
    assert results[1].accountId is None and "templateAccountId 9" in (results[1].errorText or "")

    (listed,) = client.list_accounts()
    assert (listed.id, listed.name, listed.userId, listed.riskCategoryId, listed.closed) == (
        results[0].accountId,
        "EVAL1",
        trader,
        31,
        False,
    )
    (permission,) = client.list_trading_permissions()
    assert (permission.id, permission.accountId, permission.status) == (
        results[0].tradingPermissionId,
        listed.id,
        "Approved",
    )
    (auto_liq,) = client.list_user_auto_liqs()
    assert auto_liq.id == listed.id and auto_liq.dailyLossAutoLiq == 1000 and auto_liq.doNotUnlock is None
    (status,) = client.list_account_risk_statuses()
    assert (status.id, status.adminAction) == (listed.id, "Normal")


BULK_CALLS: dict[str, Callable[[PartnerClient, int], object]] = {
    "createevaluationaccounts": lambda c, n: c.create_evaluation_accounts(
        [evaluation(1, f"E{i}") for i in range(n)]
    ),
    "revoketradingpermissions": lambda c, n: c.revoke_trading_permissions(list(range(n))),
    "resetdemoaccountstate": lambda c, n: c.reset_demo_account_state(list(range(n)), RESET_DAY),
    "switchriskcategory": lambda c, n: c.switch_risk_category(list(range(n)), 32),
    "updateuserautoliqs": lambda c, n: c.update_user_auto_liqs(
        [UpdateUserAutoLiqItem(accountId=i) for i in range(n)]
    ),
}


@pytest.mark.parametrize("call", sorted(BULK_CALLS))
@pytest.mark.parametrize("count", [0, 101])
def test_bulk_calls_refuse_an_empty_or_oversized_batch_before_sending(
    client: PartnerClient, sim_transport: ContractCheckingTransport, call: str, count: int
) -> None:
    with pytest.raises(ValueError, match=f"{call} takes 1 to 100 .*, got {count}"):
        BULK_CALLS[call](client, count)
    assert client.requests_sent == 0 and sim_transport.checked == 0


@pytest.mark.parametrize("sim_config", [SimConfig(max_accounts_per_request=1)])
def test_a_refused_create_request_is_an_api_error(client: PartnerClient) -> None:
    trader = new_trader(client)
    with pytest.raises(ApiError, match="refused the whole request: At most 1 accounts"):
        client.create_evaluation_accounts([evaluation(trader, "EVAL1"), evaluation(trader, "EVAL2")])
    assert client.list_accounts() == []


def test_a_lost_create_answer_is_an_unknown_outcome_and_not_resent(
    client: PartnerClient, sim_app: SimApp
) -> None:
    trader = new_trader(client)
    admin.arm_fault(sim_app.store, "drop_after_apply", "/user/createevaluationaccounts")
    with pytest.raises(OutcomeUnknown, match="createevaluationaccounts for EVAL1"):
        client.create_evaluation_accounts([evaluation(trader, "EVAL1")])
    assert [a.name for a in client.list_accounts()] == ["EVAL1"]  # created once, never resent


def test_reset_restores_the_initial_balance_after_trading(client: PartnerClient, sim_app: SimApp) -> None:
    account_id, _ = one_account(client)
    moved = admin.move_balance(sim_app.store, sim_app.config, {"name": "EVAL1", "amount": -2000})
    assert moved["balance"] == 48000
    client.reset_demo_account_state([account_id], RESET_DAY, accounts=["EVAL1"])
    after = sim_account(sim_app, "EVAL1")
    assert after["balance"] == 50000 and after["lastResetTradeDate"] == "2025-06-02"


def test_a_reset_that_fails_on_the_server_is_not_resent(client: PartnerClient, sim_app: SimApp) -> None:
    account_id, _ = one_account(client)
    admin.arm_fault(sim_app.store, "http500", "/account/resetdemoaccountstate")
    with pytest.raises(OutcomeUnknown, match="resetdemoaccountstate for EVAL1"):
        client.reset_demo_account_state([account_id], RESET_DAY, accounts=["EVAL1"])
    assert sim_account(sim_app, "EVAL1")["resets"] == 0


def test_a_switch_that_fails_on_the_server_is_retried(client: PartnerClient, sim_app: SimApp) -> None:
    account_id, _ = one_account(client)
    admin.arm_fault(sim_app.store, "http500", "/accountRiskStatus/switchriskcategory")
    client.switch_risk_category([account_id], 32)
    assert [a.riskCategoryId for a in client.list_accounts()] == [32]


def test_lock_unlock_update_and_revoke(client: PartnerClient, sim_app: SimApp) -> None:
    account_id, permission_id = one_account(client)
    locked = client.set_admin_auto_liq_action(
        account_id, "LockTradingImmediately", reason="reconcile: manifest"
    )
    assert locked.id == account_id and locked.adminAction == "LockTradingImmediately"
    assert sim_account(sim_app, "EVAL1")["adminActionReason"] == "reconcile: manifest"
    client.set_admin_auto_liq_action(account_id, "Normal", reason="reconcile: manifest")
    assert [s.adminAction for s in client.list_account_risk_statuses()] == ["Normal"]

    (updated,) = client.update_user_auto_liqs(
        [UpdateUserAutoLiqItem(accountId=account_id, dailyLossAutoLiq=800)]
    )
    assert (updated.id, updated.dailyLossAutoLiq, updated.trailingMaxDrawdown) == (account_id, 800, 2500)

    client.revoke_trading_permissions([permission_id], accounts=["EVAL1"])
    assert [p.status for p in client.list_trading_permissions()] == ["Revoked"]
    assert client.revoke_trading_permission(permission_id).status == "Revoked"


def test_refusals_are_api_errors_that_name_the_accounts(client: PartnerClient) -> None:
    account_id, _ = one_account(client)
    with pytest.raises(ApiError, match=r"revoketradingpermissions for trading permission 987654: .*987654"):
        client.revoke_trading_permissions([987654])
    with pytest.raises(ApiError, match=r"revoketradingpermission for trading permission 987654: .*not found"):
        client.revoke_trading_permission(987654)
    with pytest.raises(ApiError, match=r"resetdemoaccountstate for EVAL1: the API said: .*in the future"):
        client.reset_demo_account_state([account_id], date(2999, 1, 1), accounts=["EVAL1"])
    with pytest.raises(ApiError, match=rf"switchriskcategory for account id {account_id}: .*HTTP 404"):
        client.switch_risk_category([account_id], 99)
    with pytest.raises(ApiError, match=r"updateuserautoliqs for account id 31337: .*not found"):
        client.update_user_auto_liqs([UpdateUserAutoLiqItem(accountId=31337, dailyLossAutoLiq=1)])
    with pytest.raises(ValueError, match="reason_code Other needs a reason"):
        client.set_admin_auto_liq_action(account_id, "LockTradingImmediately")


# --- wire models ------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", ["PostTradeRisk", "UpdateUserAutoLiqItem", "UserAccountAutoLiq"])
def test_auto_liq_models_have_exactly_the_contracts_fields(schema: str) -> None:
    model = {"PostTradeRisk": PostTradeRisk, "UpdateUserAutoLiqItem": UpdateUserAutoLiqItem}.get(
        schema, UserAccountAutoLiq
    )
    assert set(model.model_fields) == set(contract()["components"]["schemas"][schema]["properties"])


def test_account_reads_the_documentations_active_as_well_as_the_contracts_closed() -> None:
    assert Account.model_validate({"id": 1, "name": "E", "userId": 2, "active": False}).closed is True
    assert Account.model_validate({"id": 1, "name": "E", "userId": 2, "closed": False}).closed is False
