"""`reconcile plan --refresh`, `reconcile refresh` and `reconcile import` against the embedded simulator.

Changes "outside the tool" are made the way a person in the partner's web console would: through
the simulator's partner API as the organization's admin, or its ``/_sim/`` admin operations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cli_support import call
from test_planner_support import CONTACT_NY as CONTACT

from reconcile.sim import admin
from reconcile.sim.app import create_app
from reconcile.sim.testing import login
from reconcile.sim.transport import SimTransport
from reconcile.state.lock import state_lock

PASSWORD = "Pw-for-tests-only-1"

Run = Callable[..., tuple[int, str, str]]


def entry(name: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "email": f"{name}@example.com",
        "password": {"env": "TRADER_PASSWORD"},
        "firstName": "Test",
        "lastName": "User",
    }
    data.update(overrides)
    return data


def write_manifest(path: Path, *users: dict[str, Any]) -> Path:
    data = {
        "apiVersion": "reconcile/v1",
        "environment": "sim",
        "partner": {"dataAccountId": 11111, "entitlements": {"simplus": 12345, "tradingview": 31}},
        "defaults": {"tradovateSubscriptionPlanId": 7},
        "users": list(users),
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADER_PASSWORD", PASSWORD)
    for name in ("TRADOVATE_USERNAME", "TRADOVATE_PASSWORD", "RECONCILE_ENDPOINT", "RECONCILE_BACKEND"):
        monkeypatch.delenv(name, raising=False)

    def invoke(*args: str) -> tuple[int, str, str]:
        code, out, err = call(capsys, *args)
        assert PASSWORD not in out + err
        return code, out, err

    return invoke


@contextmanager
def console(tmp_path: Path) -> Iterator[httpx.Client]:
    """The partner's web console: the admin on the embedded simulator's database."""
    app = create_app(db_path=tmp_path / "state" / "sim.sqlite")
    try:
        with httpx.Client(transport=SimTransport(app), base_url="http://sim.console/v1") as client:
            client.headers["Authorization"] = f"Bearer {login(client)}"
            yield client
    finally:
        app.store.close()


def add_outside(tmp_path: Path, name: str, **fields: Any) -> int:
    """A user created outside reconcile (the console); returns its id."""
    app = create_app(db_path=tmp_path / "state" / "sim.sqlite")
    try:
        user = admin.add_user(app.store, app.config, {"name": name, "email": f"{name}@example.com", **fields})
    finally:
        app.store.close()
    return int(user["id"])


def state_users(tmp_path: Path) -> dict[str, Any]:
    users: dict[str, Any] = json.loads((tmp_path / "state" / "sim.json").read_text())["users"]
    return users


def test_drift_check_exits_2_then_refresh_records_it_and_apply_repairs_it(tmp_path: Path, run: Run) -> None:
    desk = write_manifest(tmp_path / "desk.yaml", entry("trader001", contact=CONTACT), entry("trader002"))
    assert run("apply", "-f", str(desk), "--auto-approve")[0] == 0
    code, out, _ = run("plan", "-f", str(desk), "--refresh", "--detailed-exitcode")
    assert code == 0, out
    assert "No drift: the API matches recorded state." in out

    ids = {name: rec["userId"] for name, rec in state_users(tmp_path).items()}
    with console(tmp_path) as web:
        web.post("/user/modifyemailaddress", json={"userId": ids["trader001"], "email": "hand@example.com"})
        web.post(
            "/contactInfo/updatecontactinfo",
            json={
                "userId": ids["trader001"],
                "firstName": "Test",
                "lastName": "User",
                **CONTACT,
                "city": "Boston",
            },
        )

    # The dry run (no refresh) cannot know: recorded state says all is applied.
    assert run("plan", "-f", str(desk), "--detailed-exitcode")[0] == 0

    code, out, err = run("plan", "-f", str(desk), "--refresh", "--detailed-exitcode")
    assert code == 2, out + err
    assert "Drift: 1 difference between recorded state and the API." in out
    assert (
        'city: "New York" → "Boston"' in out and 'email: "trader001@example.com" → "hand@example.com"' in out
    )
    assert '~ trader001  email: "hand@example.com" → "trader001@example.com"' in out
    assert 'city: "Boston" → "New York"' in out
    assert "Read 2 users of the organization at sim:embedded (4 requests)." in err

    serial = json.loads((tmp_path / "state" / "sim.json").read_text())["serial"]
    code, out, _ = run("refresh", "-f", str(desk))
    assert code == 0
    assert f"Refreshed 1 user in state/sim.json (state serial {serial + 1}): trader001" in out
    recorded = state_users(tmp_path)["trader001"]
    assert recorded["email"] == "hand@example.com" and recorded["contact"]["city"] == "Boston"

    # Now the plain plan (no credentials) sees what the manifest wants back, and apply repairs it.
    code, out, _ = run("plan", "-f", str(desk), "--detailed-exitcode")
    assert code == 2 and "Plan: 1 email change, 1 contact update." in out
    assert run("apply", "-f", str(desk), "--auto-approve")[0] == 0
    code, out, _ = run("plan", "-f", str(desk), "--refresh", "--detailed-exitcode")
    assert code == 0, out
    assert run("refresh", "-f", str(desk))[1].startswith("Recorded state matches the API")


def test_user_created_outside_is_listed_unmanaged_and_never_touched(tmp_path: Path, run: Run) -> None:
    desk = write_manifest(tmp_path / "desk.yaml", entry("trader001"))
    assert run("apply", "-f", str(desk), "--auto-approve")[0] == 0
    add_outside(tmp_path, "outsider")

    code, out, _ = run("plan", "-f", str(desk), "--refresh", "--detailed-exitcode", "--format", "json")
    assert code == 2
    plan = json.loads(out)
    assert plan["refresh"]["unmanaged"] == ["outsider"]
    assert [(d["user"], d["kind"]) for d in plan["refresh"]["drift"]] == [("outsider", "created_outside")]
    assert plan["actions"] == []

    # Removing every managed user from the manifest still never cancels the unmanaged one.
    empty = write_manifest(tmp_path / "empty.yaml", entry("trader001", status="cancelled"))
    code, out, _ = run("plan", "-f", str(empty), "--refresh", "--format", "json")
    assert [a["user"] for a in json.loads(out)["actions"]] == ["trader001"]


def test_user_closed_outside_is_reported_and_refresh_records_it_cancelled(tmp_path: Path, run: Run) -> None:
    desk = write_manifest(tmp_path / "desk.yaml", entry("trader001"), entry("trader002"))
    assert run("apply", "-f", str(desk), "--auto-approve")[0] == 0
    user_id = state_users(tmp_path)["trader002"]["userId"]
    flags = dict.fromkeys(
        ("tradovateSubscriptions", "tradingPermissions", "userPlugins", "marketDataSubscriptions"), True
    )
    with console(tmp_path) as web:
        web.post("/user/canceleverything", json={"userIds": [user_id], **flags})

    code, out, _ = run("plan", "-f", str(desk), "--refresh", "--detailed-exitcode")
    assert code == 2
    assert "trader002  was closed outside reconcile" in out
    assert "Warning: trader002: was closed outside reconcile and cannot be reactivated" in out

    assert run("refresh", "-f", str(desk))[0] == 0
    assert state_users(tmp_path)["trader002"]["lifecycle"] == "cancelled"


def test_import_adopts_existing_users_and_the_next_plan_is_empty(tmp_path: Path, run: Run) -> None:
    first = add_outside(tmp_path, "trader001")
    add_outside(tmp_path, "trader002", firstName="Grace", lastName="Hopper")
    add_outside(tmp_path, "legacy01")
    with console(tmp_path) as web:
        web.post(
            "/contactInfo/updatecontactinfo",
            json={"userId": first, "firstName": "Ada", "lastName": "Lovelace", **CONTACT},
        )
        web.post(
            "/userPlugin/addentitlementsubscription",
            json={"entitlementId": 31, "userId": first, "accountId": 11111},
        )
    desk = write_manifest(
        tmp_path / "desk.yaml",
        entry(
            "trader001", firstName="Ada", lastName="Lovelace", contact=CONTACT, entitlements=["tradingview"]
        ),
        entry("trader002", firstName="Grace", lastName="Hopper"),
        entry("trader003"),
    )
    # Before the import, a refreshed plan refuses to create the existing users again.
    code, out, _ = run("plan", "-f", str(desk), "--refresh")
    assert "already exists in the organization" in out and "reconcile import trader001" in out
    assert "Plan: 1 to create." in out

    code, out, err = run("import", "nobody", "trader001", "-f", str(desk))
    assert code == 1
    assert "nobody: not in the manifest" in err
    assert not (tmp_path / "state" / "sim.json").exists()

    code, out, err = run("import", "--all", "-f", str(desk))
    assert code == 0, err
    assert "Left unmanaged, the manifest does not name them (1): legacy01" in out
    assert "Adopted 2 users into state/sim.json (state serial 1): trader001, trader002" in out
    users = state_users(tmp_path)
    assert users["trader001"]["origin"] == "adopted" and users["trader001"]["userId"] == first
    assert users["trader001"]["contact"]["city"] == "New York"
    assert users["trader001"]["entitlements"]["tradingview"]["status"] == "granted"

    adopted_only = write_manifest(
        tmp_path / "adopted.yaml",
        entry(
            "trader001", firstName="Ada", lastName="Lovelace", contact=CONTACT, entitlements=["tradingview"]
        ),
        entry("trader002", firstName="Grace", lastName="Hopper"),
    )
    code, out, _ = run("plan", "-f", str(adopted_only), "--detailed-exitcode")
    assert code == 0 and "No changes." in out
    code, out, _ = run("plan", "-f", str(adopted_only), "--refresh", "--format", "json")
    refreshed = json.loads(out)
    assert refreshed["actions"] == [] and refreshed["refresh"]["unmanaged"] == ["legacy01"]

    code, out, _ = run("import", "trader002", "-f", str(desk))
    assert code == 0 and "Already managed (left as recorded): trader002" in out


@pytest.mark.parametrize("command", [("refresh",), ("import", "trader001")])
def test_refresh_and_import_write_state_only_under_the_lock(
    tmp_path: Path, run: Run, command: tuple[str, ...]
) -> None:
    desk = write_manifest(tmp_path / "desk.yaml", entry("trader001"))
    add_outside(tmp_path, "trader001")
    state = tmp_path / "state" / "sim.json"
    with state_lock(state, purpose="apply"):
        code, _, err = run(*command, "-f", str(desk))
    assert code == 1
    assert "is locked: lock" in err and "(apply)" in err
    assert not state.exists()
    # Once the lock is free the same command goes through.
    code, _, err = run(*command, "-f", str(desk))
    assert code == 0, err
