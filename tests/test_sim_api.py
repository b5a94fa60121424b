"""The simulator enforces the partner API's rules (issue 3), seen through HTTP like a client sees them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sim_support import trader
from test_planner_support import CONTACT_NY

from reconcile.sim.app import SimApp
from reconcile.sim.config import SimConfig


def create(api: httpx.Client, *users: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/user/createevaluationusers", json={"users": list(users)})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def created_id(api: httpx.Client, user: dict[str, Any]) -> int:
    result = create(api, user)["results"][0]
    assert "userId" in result, result
    user_id: int = result["userId"]
    return user_id


def sign(api: httpx.Client, name: str) -> dict[str, Any]:
    response = api.post("/_sim/agreements", json={"name": name})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- createevaluationusers ------------------------------------------------------------------------


def test_batch_gives_one_result_per_user_in_order_and_failures_stay_per_user(api: httpx.Client) -> None:
    users = [
        trader(1),
        trader(2, name="ab"),  # name too short
        trader(3, email="not-an-email"),
        trader(4, password="short"),
        trader(5, firstName="F" * 30, lastName="L" * 31),  # 61 together
        trader(6, email="x" * 60 + "@example.com"),  # > 64
        trader(7, name="TRADER001", email="other@example.com"),  # duplicate name (case-insensitive)
        trader(8, email="trader001@example.com"),  # duplicate email
        trader(9, tradovateSubscriptionPlanId=99),
        trader(10, entitlementIds=[12345]),  # Sim+ at creation
        trader(11, entitlementIds=[777]),
        trader(12, tradovateSubscriptionPlanId=7, entitlementIds=[31]),
    ]
    results = create(api, *users)["results"]
    assert len(results) == len(users)
    ok = [i for i, r in enumerate(results) if "userId" in r]
    assert ok == [0, 11]
    errors = {i: r["errorText"] for i, r in enumerate(results) if "userId" not in r}
    assert "3 to 64 characters" in errors[1]
    assert "not a valid email" in errors[2]
    assert "password" in errors[3]
    assert "60 characters together" in errors[4]
    assert "longer than 64" in errors[5]
    assert "already exists" in errors[6]
    assert "already used" in errors[7]
    assert "tradovateSubscriptionPlanId 99" in errors[8]
    assert "Sim+" in errors[9] and "Market Data Agreement" in errors[9]
    assert "777" in errors[10]
    listed = {u["name"] for u in api.get("/user/list").json()}
    assert listed == {"trader001", "trader012"}
    ids = [results[0]["userId"], results[11]["userId"]]
    assert ids == sorted(ids) and ids[0] >= 100001


def test_duplicates_inside_one_batch_fail_the_later_user(api: httpx.Client) -> None:
    results = create(api, trader(1), trader(2, name="trader001"), trader(3, email="TRADER001@example.com"))
    assert "userId" in results["results"][0]
    assert "already exists" in results["results"][1]["errorText"]
    assert "already used" in results["results"][2]["errorText"]


def test_more_than_100_users_fail_the_whole_request(api: httpx.Client) -> None:
    body = create(api, *[trader(i) for i in range(101)])
    assert "At most 100" in body["errorText"]
    assert body["results"] == []
    assert api.get("/user/list").json() == []


def test_entitlement_22_fails_the_whole_request(api: httpx.Client) -> None:
    body = create(api, trader(1), trader(2, entitlementIds=[22]))
    assert "Entitlement 22" in body["errorText"]
    assert api.get("/user/list").json() == []


def test_created_user_has_plan_and_entitlements(api: httpx.Client) -> None:
    user_id = created_id(api, trader(1, tradovateSubscriptionPlanId=8, entitlementIds=[31]))
    plugins = api.get(f"/userPlugin/deps?masterid={user_id}").json()
    assert [(p["entitlementId"], p["pluginName"]) for p in plugins] == [(31, "TradingView")]
    everything = api.get("/_sim/users").json()[0]
    kinds = sorted((r["kind"], r["refId"]) for r in everything["records"])
    assert ("tradovateSubscription", 8) in kinds
    assert "Passw0rd" not in str(everything)
    assert not [key for key in everything if "password" in key.lower()]


def test_body_that_is_not_the_contract_shape_is_a_400(api: httpx.Client) -> None:
    response = api.post("/user/createevaluationusers", json={"users": [{"name": "x"}]})
    assert response.status_code == 400
    assert "'email' is a required property" in response.json()["errorText"]
    response = api.post(
        "/user/createevaluationusers", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


# --- reads and organization isolation -------------------------------------------------------------


def test_reads_see_only_the_admins_organization(api: httpx.Client) -> None:
    mine = created_id(api, trader(1))
    outside = api.post(
        "/_sim/users", json={"name": "elsewhere", "email": "e@example.com", "organizationId": 9}
    )
    assert outside.status_code == 200
    theirs = outside.json()["id"]
    assert [u["name"] for u in api.get("/user/list").json()] == ["trader001"]
    assert api.get(f"/user/item?id={mine}").json()["name"] == "trader001"
    assert api.get(f"/user/item?id={theirs}").status_code == 404
    assert api.get("/user/find?name=elsewhere").status_code == 404
    assert api.get("/user/find?name=trader001").json()["id"] == mine
    assert [u["id"] for u in api.get(f"/user/items?ids={mine},{theirs}").json()] == [mine]
    assert [u["id"] for u in api.get(f"/user/items?ids={mine}&ids={mine}").json()] == [mine, mine]


def test_paths_match_case_insensitively(api: httpx.Client) -> None:
    assert api.get("/USER/LIST").status_code == 200
    assert api.get("/contactinfo/deps?masterid=1").json() == []
    assert api.get("/contactInfo/deps?masterid=1").json() == []
    assert api.get("/user/nosuch").status_code == 404


def test_user_added_outside_the_tool_is_visible_and_blocks_its_name(api: httpx.Client) -> None:
    api.post("/_sim/users", json={"name": "trader001", "email": "legacy@example.com"})
    assert api.get("/user/find?name=trader001").json()["email"] == "legacy@example.com"
    assert "already exists" in create(api, trader(1))["results"][0]["errorText"]


def test_entitlement_list_is_the_catalogue(api: httpx.Client) -> None:
    ids = {e["id"]: e["name"] for e in api.get("/entitlement/list").json()}
    assert ids[12345] == "Sim+" and ids[31] == "TradingView" and 22 in ids


# --- modifyemailaddress ---------------------------------------------------------------------------


def test_modify_email(api: httpx.Client) -> None:
    first = created_id(api, trader(1))
    created_id(api, trader(2))
    ok = api.post("/user/modifyemailaddress", json={"userId": first, "email": "new@example.com"}).json()
    assert ok == {"status": "Active"}
    assert api.get(f"/user/item?id={first}").json()["email"] == "new@example.com"
    taken = api.post(
        "/user/modifyemailaddress", json={"userId": first, "email": "trader002@example.com"}
    ).json()
    assert "already used" in taken["errorText"]
    bad = api.post("/user/modifyemailaddress", json={"userId": first, "email": "nope"}).json()
    assert "not a valid email" in bad["errorText"]
    unknown = api.post("/user/modifyemailaddress", json={"userId": 999, "email": "a@example.com"}).json()
    assert "not found" in unknown["errorText"]
    assert api.get(f"/user/item?id={first}").json()["email"] == "new@example.com"


# --- contact info ---------------------------------------------------------------------------------

CONTACT = {"firstName": "Ada", "lastName": "Lovelace", **CONTACT_NY}


def test_update_contact_info_then_read_it_back(api: httpx.Client) -> None:
    user_id = created_id(api, trader(1))
    body = api.post("/contactInfo/updatecontactinfo", json={"userId": user_id, **CONTACT}).json()
    assert body["contactInfo"]["city"] == "New York"
    deps = api.get(f"/contactInfo/deps?masterid={user_id}").json()
    assert len(deps) == 1 and deps[0]["phone"] == "+12125550100"
    assert api.get(f"/contactInfo/item?id={deps[0]['id']}").json()["userId"] == user_id
    moved = api.post(
        "/contactinfo/updatecontactinfo",
        json={"userId": user_id, **CONTACT, "city": "London", "country": "GB", "state": None}
        | {"postCode": "SW1A 2AA"},
    )
    # state: null is not a string: the contract refuses it; leaving it out is the way.
    assert moved.status_code == 400
    gb = {k: v for k, v in CONTACT.items() if k != "state"} | {"city": "London", "country": "GB"}
    assert (
        api.post("/contactinfo/updatecontactinfo", json={"userId": user_id, **gb}).json()["contactInfo"][
            "country"
        ]
        == "GB"
    )
    assert len(api.get(f"/contactInfo/deps?masterid={user_id}").json()) == 1


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"state": ""}, "state is required when country is US"),
        ({"country": "XX"}, "not a 2-letter ISO 3166"),
        ({"phone": "12125550100"}, "international form"),
        ({"phone": "+1"}, "phone must have 10 to 21"),
        ({"city": "A"}, "city must have 2 to 35"),
        ({"streetAddress1": "x" * 62}, "streetAddress1 must have 3 to 61"),
        ({"postCode": "123"}, "postCode must have 4 to 11"),
        ({"firstName": "F" * 40, "lastName": "L" * 21}, "60 characters together"),
        ({"userId": 424242}, "not found"),
    ],
)
def test_update_contact_info_refusals(api: httpx.Client, change: dict[str, Any], expected: str) -> None:
    user_id = created_id(api, trader(1))
    body = api.post("/contactInfo/updatecontactinfo", json={"userId": user_id, **CONTACT, **change}).json()
    assert expected in body["errorText"]
    assert api.get(f"/contactInfo/deps?masterid={user_id}").json() == []


def test_update_contact_info_missing_required_field_is_a_400(api: httpx.Client) -> None:
    user_id = created_id(api, trader(1))
    partial = {k: v for k, v in CONTACT.items() if k != "phone"}
    response = api.post("/contactInfo/updatecontactinfo", json={"userId": user_id, **partial})
    assert response.status_code == 400 and "'phone' is a required property" in response.json()["errorText"]


# --- the Market Data Agreement and Sim+ -----------------------------------------------------------


def grant(
    api: httpx.Client, user_id: int, entitlement_id: int = 12345, account_id: int = 11111
) -> dict[str, Any]:
    body: dict[str, Any] = api.post(
        "/userPlugin/addentitlementsubscription",
        json={"entitlementId": entitlement_id, "userId": user_id, "accountId": account_id},
    ).json()
    return body


def test_simplus_needs_the_signed_agreement_then_conflicts_on_a_second_grant(api: httpx.Client) -> None:
    user_id = created_id(api, trader(1))
    refused = grant(api, user_id)
    assert refused["errorCode"] != "Success" and "has not signed" in refused["errorText"]
    assert api.get("/adminAlertSignal/deps?masterid=68").json() == []

    signal = sign(api, "trader001")
    assert signal["relatedToUserId"] == user_id and signal["adminAlertId"] == 68 and "completed" not in signal
    pending = api.get("/adminAlertSignal/deps?masterid=68").json()
    assert [s["id"] for s in pending] == [signal["id"]] and "completed" not in pending[0]

    granted = grant(api, user_id)
    assert granted["errorCode"] == "Success"
    assert granted["entitlementSubscription"]["entitlementId"] == 12345
    assert granted["entitlementSubscription"]["accountId"] == 11111
    assert grant(api, user_id)["errorCode"] == "ConflictWithExisting"
    assert [p["entitlementId"] for p in api.get(f"/userPlugin/deps?masterid={user_id}").json()] == [12345]

    done = api.post("/adminAlertSignal/completealertsignal", json={"adminAlertSignalId": signal["id"]}).json()
    assert "completed" in done["adminAlertSignal"]
    assert "completed" in api.get(f"/adminAlertSignal/item?id={signal['id']}").json()
    # completing twice is harmless
    again = api.post(
        "/adminAlertSignal/completealertsignal", json={"adminAlertSignalId": signal["id"]}
    ).json()
    assert again["adminAlertSignal"]["completed"] == done["adminAlertSignal"]["completed"]


def test_complete_accepts_the_conformance_page_shape_for_the_right_user_only(api: httpx.Client) -> None:
    first = created_id(api, trader(1))
    second = created_id(api, trader(2))
    signal = sign(api, "trader001")
    wrong = api.post(
        "/adminAlertSignal/completealertsignal", json={"alertId": signal["id"], "userId": second}
    )
    assert "does not belong" in wrong.json()["errorText"]
    right = api.post("/adminAlertSignal/completealertsignal", json={"alertId": signal["id"], "userId": first})
    assert "completed" in right.json()["adminAlertSignal"]
    unknown = api.post("/adminAlertSignal/completealertsignal", json={"adminAlertSignalId": 987654})
    assert "not found" in unknown.json()["errorText"]


def test_simplus_grant_refuses_a_foreign_account(api: httpx.Client) -> None:
    user_id = created_id(api, trader(1))
    sign(api, "trader001")
    assert grant(api, user_id, account_id=5)["errorCode"] == "IncorrectPaymentMethod"
    assert grant(api, 424242)["errorText"].endswith("not found in this organization")
    assert grant(api, user_id, entitlement_id=31)["errorCode"] == "Success"  # no agreement needed


def test_signing_an_unknown_user_says_so(api: httpx.Client) -> None:
    response = api.post("/_sim/agreements", json={"name": "ghost"})
    assert response.status_code == 404 and "ghost" in response.json()["errorText"]


@pytest.mark.parametrize("sim_config", [SimConfig(environment="staging")])
def test_staging_files_agreements_under_alert_70(api: httpx.Client) -> None:
    created_id(api, trader(1))
    sign(api, "trader001")
    assert len(api.get("/adminAlertSignal/deps?masterid=70").json()) == 1
    assert api.get("/adminAlertSignal/deps?masterid=68").json() == []


# --- canceleverything -----------------------------------------------------------------------------


def test_cancel_everything_honours_each_flag_and_is_repeatable(api: httpx.Client, sim_app: SimApp) -> None:
    first = created_id(api, trader(1, tradovateSubscriptionPlanId=7, entitlementIds=[31]))
    second = created_id(api, trader(2, tradovateSubscriptionPlanId=7))
    sign(api, "trader001")
    assert grant(api, first)["errorCode"] == "Success"

    only_plugins = {"userIds": [first], "userPlugins": True}
    body = api.post("/user/canceleverything", json=only_plugins).json()
    assert len(body["userPluginIds"]) == 2  # TradingView + Sim+
    assert (
        body["tradovateSubscriptionIds"]
        == body["tradingPermissionIds"]
        == body["marketDataSubscriptionIds"]
        == []
    )
    assert api.get(f"/userPlugin/deps?masterid={first}").json() == []
    assert api.get(f"/user/item?id={first}").json()["status"] == "Closed"

    flags = {
        "tradovateSubscriptions": True,
        "tradingPermissions": True,
        "userPlugins": True,
        "marketDataSubscriptions": True,
    }
    body = api.post("/user/canceleverything", json={"userIds": [first, second], **flags}).json()
    assert len(body["tradovateSubscriptionIds"]) == 2
    assert len(body["tradingPermissionIds"]) == 2
    assert len(body["marketDataSubscriptionIds"]) == 1  # came with Sim+
    assert body["userPluginIds"] == []  # already cancelled above
    assert {u["status"] for u in api.get("/user/list").json()} == {"Closed"}

    again = api.post("/user/canceleverything", json={"userIds": [first, second], **flags}).json()
    assert again == {
        "tradovateSubscriptionIds": [],
        "userPluginIds": [],
        "marketDataSubscriptionIds": [],
        "tradingPermissionIds": [],
    }
    records = [r for u in api.get("/_sim/users").json() for r in u["records"]]
    assert records and [r for r in records if not r["cancelled"]] == []


def test_cancel_everything_never_touches_another_organization(api: httpx.Client) -> None:
    theirs = api.post(
        "/_sim/users", json={"name": "elsewhere", "email": "e@example.com", "organizationId": 9}
    ).json()
    body = api.post(
        "/user/canceleverything", json={"userIds": [theirs["id"]], "tradingPermissions": True}
    ).json()
    assert body["tradingPermissionIds"] == []
    assert api.get("/_sim/users").json()[0]["status"] == "Active"


def test_default_organization_matches_the_example_desk() -> None:
    import yaml

    desk = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples/desk.yaml").read_text())
    config = SimConfig()
    assert config.data_account_id == desk["partner"]["dataAccountId"]
    assert config.simplus_entitlement_id == desk["partner"]["entitlements"]["simplus"]
    assert set(desk["partner"]["entitlements"].values()) <= set(config.entitlements)
    plans = {desk["defaults"]["tradovateSubscriptionPlanId"]}
    plans |= {u["tradovateSubscriptionPlanId"] for u in desk["users"] if "tradovateSubscriptionPlanId" in u}
    assert plans <= config.subscription_plans
    assert config.agreement_alert == 68
