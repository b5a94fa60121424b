"""The simulator's evaluation accounts (issue 14, Stage 4), seen through HTTP like a client sees them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sim_support import trader

from reconcile.contract import contract
from reconcile.sim.app import SimApp, create_app
from reconcile.sim.config import RateLimit, SimConfig
from reconcile.sim.testing import ContractCheckingTransport, login

RISK = {"trailingMaxDrawdown": 2500, "trailingMaxDrawdownLimit": 50100, "dailyLossAutoLiq": 1000}


def new_trader(api: httpx.Client, n: int) -> int:
    result = api.post("/user/createevaluationusers", json={"users": [trader(n)]}).json()["results"][0]
    user_id: int = result["userId"]
    return user_id


def account(user_id: int, name: str, **overrides: Any) -> dict[str, Any]:
    return {"userId": user_id, "name": name, "templateAccountId": 5001, "initialBalance": 50000} | overrides


def post(api: httpx.Client, path: str, body: Any, status: int = 200) -> Any:
    response = api.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


def create(api: httpx.Client, *accounts: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = post(api, "/user/createevaluationaccounts", {"accounts": list(accounts)})[
        "results"
    ]
    return results


def created(api: httpx.Client, *accounts: dict[str, Any]) -> list[dict[str, Any]]:
    results = create(api, *accounts)
    assert all("accountId" in r for r in results), results
    return results


def sim_account(api: httpx.Client, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [a for a in api.get("/_sim/accounts").json() if a["name"] == name]
    assert len(found) == 1, found
    return found[0]


def trade_date(year: int, month: int, day: int) -> dict[str, int]:
    return {"year": year, "month": month, "day": day}


# --- createevaluationaccounts ----------------------------------------------------------------------


def test_create_gives_account_and_permission_per_item_in_order_failures_stay_per_item(
    api: httpx.Client,
) -> None:
    trader = new_trader(api, 1)
    closed = new_trader(api, 2)
    post(api, "/user/canceleverything", {"userIds": [closed], "tradingPermissions": True})
    theirs = api.post("/_sim/users", json={"name": "elsewhere", "email": "e@x.com", "organizationId": 9})
    created(api, account(trader, "FIRMEVAL00001"))
    results = create(
        api,
        account(trader, "FIRMEVAL00002", postTradeRisk=RISK | {"doNotUnlock": True}),
        account(trader, "FIRMEVAL00003", templateAccountId=9999),
        account(424242, "FIRMEVAL00004"),
        account(theirs.json()["id"], "FIRMEVAL00005"),
        account(closed, "FIRMEVAL00006"),
        account(trader, "firmeval00001"),  # taken before, case-insensitively
        account(trader, "FIRMEVAL00007", templateAccountId=5003, initialBalance=150000),
        account(trader, "FirmEval00007"),  # taken earlier in the same request
        account(trader, "FIRMEVAL00008", initialBalance=0),
    )
    assert [i for i, r in enumerate(results) if "accountId" in r] == [0, 6]
    errors = {i: r["errorText"] for i, r in enumerate(results) if "accountId" not in r}
    assert "templateAccountId 9999 is not a template account" in errors[1]
    assert "user 424242 not found" in errors[2]
    assert "not found in this organization" in errors[3]
    assert "'trader002' is not active (Closed)" in errors[4]
    assert "already exists" in errors[5] and "already exists" in errors[7]
    assert "initialBalance must be greater than 0" in errors[8]

    accounts = {a["name"]: a for a in api.get("/account/list").json()}
    assert sorted(accounts) == ["FIRMEVAL00001", "FIRMEVAL00002", "FIRMEVAL00007"]
    second = accounts["FIRMEVAL00002"]
    assert second["id"] == results[0]["accountId"] and second["userId"] == trader
    assert second["riskCategoryId"] == 31 and second["closed"] is False
    assert accounts["FIRMEVAL00007"]["evaluationSize"] == 150000
    permissions = {p["accountId"]: p for p in api.get("/tradingPermission/list").json()}
    assert permissions[second["id"]]["id"] == results[0]["tradingPermissionId"]
    assert permissions[second["id"]]["status"] == "Approved"
    assert permissions[second["id"]]["userId"] == trader
    auto_liq = {a["id"]: a for a in api.get("/userAccountAutoLiq/list").json()}
    assert auto_liq[second["id"]] == {"id": second["id"], **RISK, "doNotUnlock": True}
    statuses = api.get("/accountRiskStatus/list").json()
    assert {s["id"]: s["adminAction"] for s in statuses} == {a["id"]: "Normal" for a in accounts.values()}


def test_more_than_100_accounts_fail_the_whole_request(api: httpx.Client) -> None:
    trader = new_trader(api, 1)
    body = post(
        api,
        "/user/createevaluationaccounts",
        {"accounts": [account(trader, f"FIRMEVAL{i:05d}") for i in range(101)]},
    )
    assert "At most 100 accounts" in body["errorText"] and body["results"] == []
    assert api.get("/account/list").json() == []


def test_an_account_body_outside_the_contract_is_a_400(api: httpx.Client) -> None:
    body = post(api, "/user/createevaluationaccounts", {"accounts": [{"name": "X"}]}, status=400)
    assert "'userId' is a required property" in body["errorText"]


# --- trading permissions ---------------------------------------------------------------------------


def test_bulk_revoke_is_all_or_nothing_and_repeatable(api: httpx.Client) -> None:
    trader = new_trader(api, 1)
    first, second = created(api, account(trader, "EVAL1"), account(trader, "EVAL2"))
    ids = [first["tradingPermissionId"], second["tradingPermissionId"]]
    path = "/user/revoketradingpermissions"
    assert post(api, path, {"tradingPermissionIds": []}) == {
        "ok": False,
        "errorText": "Empty tradingPermissionIds",
    }
    refused = post(api, path, {"tradingPermissionIds": [ids[0], 987654]})
    assert refused["ok"] is False and "987654" in refused["errorText"]
    assert {p["status"] for p in api.get("/tradingPermission/list").json()} == {"Approved"}

    assert post(api, path, {"tradingPermissionIds": ids}) == {"ok": True}
    assert post(api, path, {"tradingPermissionIds": ids}) == {"ok": True}
    assert {p["status"] for p in api.get("/tradingPermission/list").json()} == {"Revoked"}
    assert sim_account(api, "EVAL1")["permissionStatus"] == "Revoked"


def test_a_users_own_permission_row_is_not_a_trading_permission(api: httpx.Client) -> None:
    trader = new_trader(api, 1)
    (own,) = [r["id"] for r in api.get("/_sim/users").json()[0]["records"]]
    body = post(api, "/user/revoketradingpermissions", {"tradingPermissionIds": [own]})
    assert body["ok"] is False and str(own) in body["errorText"]
    assert api.get(f"/tradingPermission/deps?masterid={trader}").json() == []


def test_single_revoke_answers_the_revoked_permission(api: httpx.Client) -> None:
    trader = new_trader(api, 1)
    (result,) = created(api, account(trader, "EVAL1"))
    path = "/user/revoketradingpermission"
    assert post(api, path, {"tradingPermissionId": 987654}) == {
        "errorText": "Trading permission 987654 not found"
    }
    answer = post(api, path, {"tradingPermissionId": result["tradingPermissionId"]})["tradingPermission"]
    assert answer["status"] == "Revoked" and answer["accountId"] == result["accountId"]
    assert answer["userId"] == trader


def test_cancel_everything_revokes_the_users_account_permissions(api: httpx.Client) -> None:
    trader, other = new_trader(api, 1), new_trader(api, 2)
    mine = created(api, account(trader, "EVAL1"), account(trader, "EVAL2"))
    created(api, account(other, "EVAL3"))
    body = post(api, "/user/canceleverything", {"userIds": [trader], "tradingPermissions": True})
    assert {r["tradingPermissionId"] for r in mine} <= set(body["tradingPermissionIds"])
    statuses = {a["name"]: a["permissionStatus"] for a in api.get("/_sim/accounts").json()}
    assert statuses == {"EVAL1": "Revoked", "EVAL2": "Revoked", "EVAL3": "Approved"}


def test_cancel_everything_without_the_flag_leaves_account_permissions(api: httpx.Client) -> None:
    trader = new_trader(api, 1)
    created(api, account(trader, "EVAL1"))
    post(api, "/user/canceleverything", {"userIds": [trader], "userPlugins": True})
    assert sim_account(api, "EVAL1")["permissionStatus"] == "Approved"


# --- resets and balances ---------------------------------------------------------------------------


def test_reset_restores_the_initial_balance_after_trading(api: httpx.Client) -> None:
    trader = new_trader(api, 1)
    created(api, account(trader, "EVAL1"), account(trader, "EVAL2", initialBalance=100000))
    loss = post(api, "/_sim/accounts/pnl", {"name": "eval1", "amount": -1250.5})
    assert loss["balance"] == 48749.5 and loss["initialBalance"] == 50000
    post(api, "/_sim/accounts/pnl", {"name": "EVAL2", "amount": 300})
    ids = [a["id"] for a in api.get("/account/list").json()]
    assert post(
        api, "/account/resetdemoaccountstate", {"accountIds": ids, "resetTradeDate": trade_date(2025, 6, 2)}
    ) == {"ok": True}
    after = {a["name"]: a for a in api.get("/_sim/accounts").json()}
    assert after["EVAL1"]["balance"] == 50000 and after["EVAL2"]["balance"] == 100000
    assert after["EVAL1"]["resets"] == 1 and after["EVAL1"]["lastResetTradeDate"] == "2025-06-02"


@pytest.mark.parametrize(
    ("ids", "day", "expected"),
    [
        ([], trade_date(2025, 6, 2), "Empty accountIds"),
        (None, trade_date(2026, 2, 30), "resetTradeDate 2026-2-30 is not a date"),
        (None, trade_date(2999, 1, 1), "resetTradeDate 2999-01-01 is in the future"),
    ],
)
def test_reset_refusals_change_nothing(
    api: httpx.Client, ids: list[int] | None, day: dict[str, int], expected: str
) -> None:
    trader = new_trader(api, 1)
    (result,) = created(api, account(trader, "EVAL1"))
    post(api, "/_sim/accounts/pnl", {"name": "EVAL1", "amount": -10})
    body = {"accountIds": [result["accountId"]] if ids is None else ids, "resetTradeDate": day}
    answer = post(api, "/account/resetdemoaccountstate", body)
    assert answer["ok"] is False and expected in answer["errorText"]
    assert sim_account(api, "EVAL1")["balance"] == 49990 and sim_account(api, "EVAL1")["resets"] == 0


def test_reset_of_an_unknown_account_is_a_404_and_resets_none(api: httpx.Client) -> None:
    trader = new_trader(api, 1)
    (result,) = created(api, account(trader, "EVAL1"))
    body = {"accountIds": [result["accountId"], 31337], "resetTradeDate": trade_date(2025, 6, 2)}
    assert "31337" in post(api, "/account/resetdemoaccountstate", body, status=404)["errorText"]
    assert sim_account(api, "EVAL1")["resets"] == 0


def test_pnl_refuses_an_unknown_account_and_a_bad_amount(api: httpx.Client) -> None:
    assert api.post("/_sim/accounts/pnl", json={"name": "ghost", "amount": 1}).status_code == 404
    for bad in ({"name": "x"}, {"name": "x", "amount": True}, {"name": "x", "amount": "5"}):
        response = api.post("/_sim/accounts/pnl", json=bad)
        assert response.status_code == 400 and '"amount"' in response.json()["errorText"]


# --- risk categories, locks and auto-liquidation settings ------------------------------------------


def test_switch_risk_category_moves_accounts_and_refuses_unknown_ids(api: httpx.Client) -> None:
    trader = new_trader(api, 1)
    ids = [r["accountId"] for r in created(api, account(trader, "EVAL1"), account(trader, "EVAL2"))]
    path = "/accountRiskStatus/switchriskcategory"
    assert post(api, path, {"accountIds": [], "riskCategoryId": 32}) == {
        "ok": False,
        "errorText": "Empty accountIds",
    }
    assert "risk category 99" in post(api, path, {"accountIds": ids, "riskCategoryId": 99}, 404)["errorText"]
    assert "31337" in post(api, path, {"accountIds": [*ids, 31337], "riskCategoryId": 32}, 404)["errorText"]
    too_many = post(api, path, {"accountIds": list(range(1, 10_002)), "riskCategoryId": 32})
    assert too_many == {"ok": False, "errorText": "Only 10000 accounts are allowed in single operation"}
    assert {a["riskCategoryId"] for a in api.get("/account/list").json()} == {31}

    assert post(api, path, {"accountIds": ids[:1], "riskCategoryId": 32}) == {"ok": True}
    assert post(api, path, {"accountIds": ids, "riskCategoryId": 32}) == {"ok": True}  # one already there
    assert {a["riskCategory"] for a in api.get("/_sim/accounts").json()} == {"halted"}


def test_lock_and_unlock_with_the_admin_auto_liq_action(api: httpx.Client) -> None:
    trader = new_trader(api, 1)
    (result,) = created(api, account(trader, "EVAL1"))
    path = "/accountRiskStatus/setadminautoliqaction"
    lock = {
        "accountId": result["accountId"],
        "adminAction": "LockTradingImmediately",
        "adminActionReasonCode": "Other",
        "adminActionReason": "reconcile: manifest",
    }
    status = post(api, path, lock)["accountRiskStatus"]
    assert status["id"] == result["accountId"] and status["adminAction"] == "LockTradingImmediately"
    assert "adminTimestamp" in status
    assert sim_account(api, "EVAL1")["adminAction"] == "LockTradingImmediately"
    post(api, path, lock | {"adminAction": "Normal"})
    assert api.get("/accountRiskStatus/list").json()[0]["adminAction"] == "Normal"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"accountId": 0}, "Account Id should be greater than 0"),
        ({"adminActionReason": None}, "Admin Action Reason should be specified"),
        ({"adminActionReason": "x" * 8193}, "Admin Action Reason should be no longer than 8192"),
    ],
)
def test_admin_auto_liq_action_refusals(api: httpx.Client, change: dict[str, Any], expected: str) -> None:
    trader = new_trader(api, 1)
    (result,) = created(api, account(trader, "EVAL1"))
    body = {
        "accountId": result["accountId"],
        "adminAction": "LockTradingImmediately",
        "adminActionReasonCode": "Other",
        "adminActionReason": "reconcile: manifest",
    } | change
    body = {k: v for k, v in body.items() if v is not None}
    assert post(api, "/accountRiskStatus/setadminautoliqaction", body) == {"errorText": expected}
    assert sim_account(api, "EVAL1")["adminAction"] == "Normal"


def test_admin_auto_liq_action_on_an_unknown_account_or_action(api: httpx.Client) -> None:
    body = {
        "accountId": 31337,
        "adminAction": "Normal",
        "adminActionReasonCode": "Other",
        "adminActionReason": "r",
    }
    assert "31337" in post(api, "/accountRiskStatus/setadminautoliqaction", body, 404)["errorText"]
    bad = post(api, "/accountRiskStatus/setadminautoliqaction", body | {"adminAction": "Freeze"}, 400)
    assert "'Freeze' is not one of" in bad["errorText"]


def test_update_auto_liqs_changes_the_given_fields_only(api: httpx.Client) -> None:
    trader = new_trader(api, 1)
    first, second = (
        r["accountId"] for r in created(api, *(account(trader, n, postTradeRisk=RISK) for n in ("E1", "E2")))
    )
    items = [
        {"accountId": first, "dailyLossAutoLiq": 800, "trailingMaxDrawdownMode": "EOD"},
        {"accountId": second, "doNotUnlock": False},
    ]
    answer = post(api, "/userAccountAutoLiq/updateuserautoliqs", {"items": items})
    assert [a["userAccountAutoLiq"] for a in answer["userAutoLiqs"]] == [
        {"id": first, **RISK, "dailyLossAutoLiq": 800, "trailingMaxDrawdownMode": "EOD"},
        {"id": second, **RISK, "doNotUnlock": False},
    ]
    assert api.get(f"/userAccountAutoLiq/deps?masterid={first}").json()[0]["dailyLossAutoLiq"] == 800
    assert sim_account(api, "E2")["autoLiq"] == RISK | {"doNotUnlock": False}


def test_update_auto_liqs_refusals_change_nothing(api: httpx.Client) -> None:
    trader = new_trader(api, 1)
    (result,) = created(api, account(trader, "E1", postTradeRisk=RISK))
    path = "/userAccountAutoLiq/updateuserautoliqs"
    ok = {"accountId": result["accountId"], "dailyLossAutoLiq": 1}
    unknown = post(api, path, {"items": [ok, {"accountId": 31337, "dailyLossAutoLiq": 1}]})
    assert unknown == {"errorText": "accounts not found: 31337", "userAutoLiqs": []}
    too_many = post(api, path, {"items": [ok] * 101})
    assert "At most 100 items" in too_many["errorText"] and too_many["userAutoLiqs"] == []
    assert sim_account(api, "E1")["autoLiq"] == RISK


# --- reads -----------------------------------------------------------------------------------------


def test_deps_and_ldeps_read_by_user_or_by_account(api: httpx.Client) -> None:
    one, two, three = new_trader(api, 1), new_trader(api, 2), new_trader(api, 3)
    a1, a2, a3 = (
        r["accountId"] for r in created(api, account(one, "E1"), account(two, "E2"), account(three, "E3"))
    )

    def ids(path: str, key: str = "id") -> list[int]:
        response = api.get(path)
        assert response.status_code == 200, response.text
        return [item[key] for item in response.json()]

    assert ids(f"/account/deps?masterid={two}") == [a2]
    assert ids(f"/account/ldeps?masterids={one},{three}") == [a1, a3]
    assert ids(f"/tradingPermission/ldeps?masterids={one}&masterids={two}", "accountId") == [a1, a2]
    assert ids(f"/tradingPermission/deps?masterid={three}", "accountId") == [a3]
    assert ids(f"/userAccountAutoLiq/ldeps?masterids={a2},{a3}") == [a2, a3]
    assert ids(f"/accountRiskStatus/deps?masterid={a1}") == [a1]
    assert ids(f"/accountRiskStatus/ldeps?masterids={a3}") == [a3]
    assert ids("/account/deps?masterid=424242") == []
    assert api.get("/account/ldeps?masterids=abc").status_code == 400


# --- the machinery every path shares ---------------------------------------------------------------

NEW_PATHS = {
    "/user/createevaluationaccounts",
    "/user/revoketradingpermission",
    "/user/revoketradingpermissions",
    "/account/resetdemoaccountstate",
    "/accountriskstatus/switchriskcategory",
    "/accountriskstatus/setadminautoliqaction",
    "/useraccountautoliq/updateuserautoliqs",
    *(
        f"/{entity}/{form}"
        for entity in ("account", "tradingpermission", "useraccountautoliq", "accountriskstatus")
        for form in ("list", "deps", "ldeps")
    ),
}


class Recording(ContractCheckingTransport):
    """The contract-checking transport, remembering which paths it checked."""

    def __init__(self, app: SimApp) -> None:
        super().__init__(app)
        self.paths: set[str] = set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.paths.add(request.url.path.removeprefix("/v1").lower())
        return response


def test_every_new_path_is_in_the_contract_copy_and_its_answers_pass_the_contract(tmp_path: Path) -> None:
    assert not NEW_PATHS - {p.lower() for p in contract()["paths"]}
    app = create_app(db_path=tmp_path / "sim.sqlite")
    transport = Recording(app)
    with httpx.Client(transport=transport, base_url="http://sim.test/v1") as api:
        api.headers["Authorization"] = f"Bearer {login(api, app.config)}"
        trader = new_trader(api, 1)
        (result,) = created(api, account(trader, "E1", postTradeRisk=RISK))
        account_id, permission_id = result["accountId"], result["tradingPermissionId"]
        create(api, account(trader, "E1"))
        post(
            api,
            "/account/resetdemoaccountstate",
            {"accountIds": [account_id], "resetTradeDate": trade_date(2025, 6, 2)},
        )
        post(
            api,
            "/account/resetdemoaccountstate",
            {"accountIds": [], "resetTradeDate": trade_date(2025, 6, 2)},
        )
        post(api, "/accountRiskStatus/switchriskcategory", {"accountIds": [account_id], "riskCategoryId": 32})
        lock = {
            "accountId": account_id,
            "adminAction": "LockTradingImmediately",
            "adminActionReasonCode": "Other",
        }
        post(api, "/accountRiskStatus/setadminautoliqaction", lock | {"adminActionReason": "r"})
        post(api, "/accountRiskStatus/setadminautoliqaction", lock)
        post(
            api,
            "/userAccountAutoLiq/updateuserautoliqs",
            {"items": [{"accountId": account_id, "weeklyLossAutoLiq": 5}]},
        )
        for entity, master in (
            ("account", trader),
            ("tradingPermission", trader),
            ("userAccountAutoLiq", account_id),
            ("accountRiskStatus", account_id),
        ):
            for query in ("list", f"deps?masterid={master}", f"ldeps?masterids={master}"):
                assert api.get(f"/{entity}/{query}").json(), f"{entity}/{query} answered nothing"
        post(api, "/user/revoketradingpermission", {"tradingPermissionId": permission_id})
        post(api, "/user/revoketradingpermission", {"tradingPermissionId": 987654})
        post(api, "/user/revoketradingpermissions", {"tradingPermissionIds": [permission_id]})
        post(api, "/user/revoketradingpermissions", {"tradingPermissionIds": []})
    app.store.close()
    assert transport.violations == []
    assert not NEW_PATHS - transport.paths, "paths this test never called"


def test_faults_apply_to_the_account_paths(api: httpx.Client) -> None:
    trader = new_trader(api, 1)
    path = "/user/createevaluationaccounts"
    api.post("/_sim/faults", json={"kind": "http500", "path": path})
    assert api.post(path, json={"accounts": [account(trader, "E1")]}).status_code == 500
    assert api.get("/account/list").json() == []  # an HTTP 500 fault applies nothing
    api.post("/_sim/faults", json={"kind": "drop_after_apply", "path": path})
    with pytest.raises(httpx.RemoteProtocolError):
        api.post(path, json={"accounts": [account(trader, "E1")]})
    assert [a["name"] for a in api.get("/account/list").json()] == ["E1"]  # applied, answer lost


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[httpx.Client]:
    config = SimConfig(rate_limits={"/accountriskstatus/switchriskcategory": RateLimit(per_hour=1)})
    app = create_app(config, tmp_path / "sim.sqlite")
    with httpx.Client(transport=ContractCheckingTransport(app), base_url="http://sim.test/v1") as client:
        client.headers["Authorization"] = f"Bearer {login(client, config)}"
        yield client
    app.store.close()


def test_switch_risk_category_has_an_hourly_limit(limited: httpx.Client) -> None:
    body = {"accountIds": [], "riskCategoryId": 32}
    assert limited.post("/accountRiskStatus/switchriskcategory", json=body).status_code == 200
    over = limited.post("/accountRiskStatus/switchriskcategory", json=body)
    assert over.status_code == 429 and "Retry-After" in over.headers


def test_default_organization_has_the_example_templates_and_categories() -> None:
    config = SimConfig()
    assert {i: t.size for i, t in config.account_templates.items()} == {
        5001: 50000,
        5002: 100000,
        5003: 150000,
    }
    assert {i: c.name for i, c in config.risk_categories.items()} == {31: "standard", 32: "halted"}
    assert SimConfig().rate_limits["/accountriskstatus/switchriskcategory"].per_hour == 5000


def test_reset_forgets_the_accounts(api: httpx.Client) -> None:
    created(api, account(new_trader(api, 1), "EVAL1"))
    assert api.post("/_sim/reset").status_code == 200
    assert api.get("/_sim/accounts").json() == []
