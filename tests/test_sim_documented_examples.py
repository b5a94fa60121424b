"""The partner documentation's own example requests work against the simulator, as sent.

Each body below is copied from the partner's conformance page (Stage 3: User Management) and its
access-token example, with only ids filled in from earlier answers. Where the examples and the
contract differ (a number where the contract says text, `/contactinfo` for `/contactInfo`, a
different completealertsignal body), the simulator accepts both shapes, as the real API does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from reconcile.sim.app import create_app
from reconcile.sim.config import SimConfig
from reconcile.sim.transport import SimTransport


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert not answer.get("errorText"), answer
    return answer


def test_the_documented_access_token_example_sends_cid_as_a_number(sim_client: httpx.Client) -> None:
    config = SimConfig()
    body = {
        "name": config.admin_name,
        "password": config.admin_password,
        "appId": "Sample App",
        "appVersion": "1.0",
        "cid": 0,
        "sec": "f03741b6-f634-48d6-9308-c8fb871150c2",
    }
    assert "accessToken" in post(sim_client, "/auth/accesstokenrequest", body)
    # ... and the contract's shape (what reconcile itself sends) still works.
    assert "accessToken" in post(sim_client, "/auth/accesstokenrequest", body | {"cid": "0"})


def test_a_simulator_that_checks_cid_accepts_it_as_a_number_or_as_text(tmp_path: Path) -> None:
    config = SimConfig(cid="8")
    app = create_app(config, tmp_path / "sim.sqlite")
    with httpx.Client(transport=SimTransport(app), base_url="http://sim.test/v1") as client:
        login = {"name": config.admin_name, "password": config.admin_password}
        for cid in (8, "8"):
            assert "accessToken" in post(client, "/auth/accesstokenrequest", login | {"cid": cid})
        refused = client.post("/auth/accesstokenrequest", json=login | {"cid": 9}).json()
        assert "Incorrect username or password" in refused["errorText"]
        assert "is not of type" in client.post("/auth/accesstokenrequest", json=login | {"cid": True}).text
    app.store.close()


def test_the_stage_3_examples_run_in_order(sim_client: httpx.Client, sim_token: str) -> None:
    sim_client.headers["Authorization"] = f"Bearer {sim_token}"
    # 1. User creation: a single user, then the batch of ten.
    single = {
        "users": [
            {
                "name": "testuser1",
                "email": "testuser1@example.com",
                "password": "SecurePassword123!",
                "firstName": "Test",
                "lastName": "User",
            }
        ]
    }
    user_id = post(sim_client, "/user/createevaluationusers", single)["results"][0]["userId"]
    batch = {
        "users": [
            {
                "name": f"testuser{i + 1}",
                "email": f"testuser{i + 1}@example.com",
                "password": f"SecurePassword{i + 1}!",
                "firstName": "Test",
                "lastName": f"User{i + 1}",
            }
            for i in range(1, 10)  # testuser1 exists already: the page's batch starts there too
        ]
    }
    results = post(sim_client, "/user/createevaluationusers", batch)["results"]
    assert [("userId" in r) for r in results] == [True] * 9

    # 2. Contact information, on the page's lower-case path.
    contact = {
        "userId": user_id,
        "phone": "+1234567890",
        "firstName": "John",
        "lastName": "Doe",
        "streetAddress1": "123 Main St",
        "city": "New York",
        "state": "NY",
        "postCode": "12345",
        "country": "US",
    }
    assert post(sim_client, "/contactinfo/updatecontactinfo", contact)["contactInfo"]["city"] == "New York"

    # 3. Sim+: the trader signs, the agreement signals are read, the grant, then the page's
    # completealertsignal body {alertId, userId}.
    assert sim_client.post("/_sim/agreements", json={"name": "testuser1"}).status_code == 200
    alerts = sim_client.get("/adminAlertSignal/deps?masterid=68").json()
    pending = [alert for alert in alerts if not alert.get("completed")]
    assert [alert["relatedToUserId"] for alert in pending] == [user_id]
    data_account = SimConfig().data_account_id
    add = {"entitlementId": SimConfig().simplus_entitlement_id, "userId": user_id, "accountId": data_account}
    assert post(sim_client, "/userPlugin/addentitlementsubscription", add)["errorCode"] == "Success"
    for alert in pending:
        page_body = {"alertId": alert["id"], "userId": user_id}
        done = post(sim_client, "/adminAlertSignal/completealertsignal", page_body)
        assert done["adminAlertSignal"]["completed"]

    # Cancel everything, with the page's body.
    second = results[0]["userId"]
    cancel = {
        "userIds": [user_id, second],
        "tradovateSubscriptions": True,
        "tradingPermissions": True,
        "userPlugins": True,
        "marketDataSubscriptions": True,
    }
    answer = post(sim_client, "/user/canceleverything", cancel)
    assert set(answer) >= {"tradovateSubscriptionIds", "userPluginIds", "tradingPermissionIds"}, answer
