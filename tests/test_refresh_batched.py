"""Refresh reads contacts many users a request (``/contactInfo/ldeps``), well inside URL limits."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from api_support import Script, make_client
from hypothesis import given
from hypothesis import strategies as st
from sim_support import trader
from test_planner_support import CONTACT_NY

from reconcile.api.client import IDS_PER_LDEPS_READ, id_chunks
from reconcile.operations.read_live import read_live

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@given(st.lists(st.integers(0, 10**12), max_size=800))
def test_id_chunks_keep_every_id_in_order_in_short_queries(ids: list[int]) -> None:
    chunks = list(id_chunks(ids))
    assert [int(i) for chunk in chunks for i in chunk.split(",")] == ids
    assert all(len(chunk) <= 2000 and chunk.count(",") < IDS_PER_LDEPS_READ for chunk in chunks)


def _ldeps_answer(request: httpx.Request) -> httpx.Response:
    ids = [int(i) for i in request.url.params["masterids"].split(",")]
    return httpx.Response(200, json=[{"id": i, "userId": i, "city": f"City{i}"} for i in ids if i % 2])


def test_a_snapshot_of_a_thousand_users_costs_seven_requests() -> None:
    users = [{"id": i, "name": f"trader{i:04d}", "email": f"t{i}@example.com"} for i in range(1, 1001)]
    script = Script(
        {
            "/user/list": [httpx.Response(200, json=users)],
            "/userPlugin/list": [httpx.Response(200, json=[])],
            "/adminAlertSignal/deps": [httpx.Response(200, json=[])],
            "/contactInfo/ldeps": [_ldeps_answer],
        }
    )
    client, _ = make_client(script)
    snapshot = read_live(client, agreement_alert_id=68, contacts_of=range(1, 1001), read_at=NOW)
    assert snapshot.requests == 3 + 4 == len(script.sent) - 1  # and one login
    assert len(script.calls("/contactInfo/ldeps")) == 4
    by_id = {u.userId: u for u in snapshot.users}
    assert all(u.contact_read for u in snapshot.users)
    assert by_id[7].contact is not None and by_id[7].contact.city == "City7"
    assert by_id[8].contact is None, "no contact on file reads as none"


def test_the_simulator_serves_ldeps_for_the_users_named(api: httpx.Client) -> None:
    ids = [
        api.post("/user/createevaluationusers", json={"users": [trader(n)]}).json()["results"][0]["userId"]
        for n in (1, 2, 3)
    ]
    for user_id in ids[:2]:
        contact = {"userId": user_id, "firstName": "A", "lastName": "B", **CONTACT_NY, "city": f"C{user_id}"}
        assert api.post("/contactInfo/updatecontactinfo", json=contact).status_code == 200
    found = api.get(f"/contactInfo/ldeps?masterids={ids[0]},{ids[2]},424242").json()
    assert [(c["userId"], c["city"]) for c in found] == [(ids[0], f"C{ids[0]}")]
    assert [
        c["userId"] for c in api.get(f"/contactInfo/ldeps?masterids={ids[0]}&masterids={ids[1]}").json()
    ] == ids[:2]
    assert api.get("/contactInfo/ldeps?masterids=abc").status_code == 400
    assert api.get(f"/userPlugin/ldeps?masterids={ids[0]},{ids[1]}").json() == []
    assert api.get("/userPlugin/ldeps").status_code == 400
