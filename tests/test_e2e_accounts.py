"""Evaluation accounts end to end (issue 14): the CLI against `reconcile sim serve` on 127.0.0.1.

Create, lock, reset and revoke through manifest edits; the budget refuses too many revocations;
drift made outside is seen and repaired; SIGKILL during account creation and during resets never
duplicates an account, loses an id or resets twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from account_support import account_desk_yaml, accounts_for
from apply_support import served_sim, served_sim_env
from apply_support import sim_admin as admin

pytestmark = pytest.mark.slow

ACCOUNTS = 12  # per trader, three traders: batches of 10 make four create calls


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with served_sim(tmp_path) as url:
        yield url


def reconcile(
    tmp_path: Path, url: str, *args: str, crash: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = served_sim_env(tmp_path)
    env.pop("RECONCILE_TEST_CRASH_AT", None)
    if crash:
        env["RECONCILE_TEST_CRASH_AT"] = crash
    command = [sys.executable, "-m", "reconcile", *args, "-f", "desk.yaml", "--endpoint", url]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, check=False)


def apply(
    tmp_path: Path, url: str, *extra: str, crash: str | None = None
) -> subprocess.CompletedProcess[str]:
    return reconcile(tmp_path, url, "apply", "--auto-approve", "--batch-size", "10", *extra, crash=crash)


def write(tmp_path: Path, users: dict[str, list[dict[str, Any]]]) -> None:
    (tmp_path / "desk.yaml").write_text(account_desk_yaml(users))


def desk(**changes: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Three traders with :data:`ACCOUNTS` accounts each; ``changes`` updates accounts by name."""
    users = {f"trader{u:03d}": accounts_for(u, ACCOUNTS) for u in range(1, 4)}
    for accounts in users.values():
        for account in accounts:
            account.update(changes.get(account["name"], {}))
    return users


def sim_accounts(url: str) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in admin(url, "GET", "accounts")}


def state(tmp_path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((tmp_path / "state" / "sim.json").read_text())
    return document


def plan_is_empty(tmp_path: Path, url: str) -> bool:
    return reconcile(tmp_path, url, "plan", "--detailed-exitcode").returncode == 0


def assert_recorded_as_served(tmp_path: Path, url: str) -> None:
    """Every served account recorded once, under its name, with both ids; nothing else recorded."""
    served = sim_accounts(url)
    recorded = state(tmp_path).get("accounts", {})
    assert sorted(recorded) == sorted(served), "no duplicate, no lost account"
    for name, record in recorded.items():
        assert (record["accountId"], record["tradingPermissionId"]) == (
            served[name]["id"],
            served[name]["tradingPermissionId"],
        )


def test_accounts_are_created_locked_reset_and_revoked_through_the_manifest(
    tmp_path: Path, server: str
) -> None:
    write(
        tmp_path,
        desk(FIRM001000={"riskCategory": "halted", "trading": "locked", "risk": {"dailyLossAutoLiq": 700}}),
    )
    first = apply(tmp_path, server)
    assert first.returncode == 0, first.stderr
    served = sim_accounts(server)
    assert len(served) == 3 * ACCOUNTS
    one = served["FIRM001000"]
    assert (one["riskCategoryId"], one["adminAction"], one["autoLiq"]["dailyLossAutoLiq"]) == (
        32,
        "LockTradingImmediately",
        700,
    )
    assert_recorded_as_served(tmp_path, server)
    assert plan_is_empty(tmp_path, server)

    admin(server, "POST", "accounts/pnl", {"name": "FIRM002001", "amount": -1250})
    assert sim_accounts(server)["FIRM002001"]["balance"] == 48750
    write(
        tmp_path,
        desk(
            FIRM001000={"riskCategory": "halted", "trading": "active", "risk": {"dailyLossAutoLiq": 700}},
            FIRM002001={"resetTo": "2025-06-02"},
            FIRM003002={"trading": "revoked"},
        ),
    )
    review = reconcile(tmp_path, server, "plan", "--format", "markdown")
    assert review.returncode == 0 and "FIRM003002" in review.stdout and "FIRM002001" in review.stdout
    second = apply(tmp_path, server)
    assert second.returncode == 0, second.stderr
    served = sim_accounts(server)
    assert served["FIRM001000"]["adminAction"] == "Normal"
    assert served["FIRM002001"]["balance"] == 50000 and served["FIRM002001"]["resets"] == 1
    assert served["FIRM003002"]["permissionStatus"] == "Revoked"
    assert state(tmp_path)["accounts"]["FIRM003002"]["permission"] == "revoked"
    assert plan_is_empty(tmp_path, server), "a reset runs once per new resetTo"


def test_revocations_past_the_budget_are_refused_and_nothing_is_revoked(tmp_path: Path, server: str) -> None:
    write(tmp_path, desk())
    assert apply(tmp_path, server).returncode == 0
    users = desk()
    users["trader001"] = users["trader001"][:-3]  # three accounts leave the manifest; budget is 2
    write(tmp_path, users)
    refused = apply(tmp_path, server)
    assert refused.returncode == 3, refused.stderr
    assert all(a["permissionStatus"] != "Revoked" for a in sim_accounts(server).values())
    allowed = apply(tmp_path, server, "--allow-cancellations", "3")
    assert allowed.returncode == 0, allowed.stderr
    revoked = sorted(n for n, a in sim_accounts(server).items() if a["permissionStatus"] == "Revoked")
    assert revoked == ["FIRM001009", "FIRM001010", "FIRM001011"]


def test_drift_made_outside_is_reported_and_repaired(tmp_path: Path, server: str) -> None:
    from reconcile.api.auth import TokenAuth
    from reconcile.api.client import PartnerClient
    from reconcile.api.credentials import Credentials

    write(tmp_path, desk())
    assert apply(tmp_path, server).returncode == 0
    recorded = state(tmp_path)["accounts"]
    auth = TokenAuth(Credentials(username="partner-admin", password="sim-admin-password"), endpoint=server)
    with PartnerClient(server, auth=auth) as client:
        client.set_admin_auto_liq_action(
            recorded["FIRM001001"]["accountId"], "LockTradingImmediately", reason="x"
        )
        client.revoke_trading_permissions([recorded["FIRM002002"]["tradingPermissionId"]])
    drifted = reconcile(tmp_path, server, "plan", "--refresh")
    assert drifted.returncode == 1, "a permission revoked outside cannot come back: the manifest must say so"
    assert "FIRM001001 was locked outside reconcile" in drifted.stdout
    assert "FIRM002002 had its trading permission revoked outside reconcile" in drifted.stdout
    assert "FIRM002002: its trading permission was revoked" in drifted.stdout + drifted.stderr
    write(tmp_path, desk(FIRM002002={"trading": "revoked"}))
    refreshed = reconcile(tmp_path, server, "refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    assert state(tmp_path)["accounts"]["FIRM002002"]["permission"] == "revoked"
    assert state(tmp_path)["accounts"]["FIRM001001"]["trading"] == "locked"
    repaired = apply(tmp_path, server)
    assert repaired.returncode == 0, repaired.stderr
    assert sim_accounts(server)["FIRM001001"]["adminAction"] == "Normal"
    assert plan_is_empty(tmp_path, server)


@pytest.mark.parametrize(
    "crash",
    ["before_account_create_call", "after_account_create_call:3"],
)
def test_a_kill_during_account_creation_loses_no_id_and_duplicates_no_account(
    tmp_path: Path, server: str, crash: str
) -> None:
    write(tmp_path, desk())
    killed = apply(tmp_path, server, crash=crash)
    assert killed.returncode == -9, killed.stderr
    again = apply(tmp_path, server)
    assert again.returncode == 0, again.stderr
    assert len(sim_accounts(server)) == 3 * ACCOUNTS
    assert_recorded_as_served(tmp_path, server)
    assert plan_is_empty(tmp_path, server)


@pytest.mark.parametrize("crash", ["before_reset_call", "after_reset_call"])
def test_a_kill_during_resets_never_resets_twice(tmp_path: Path, server: str, crash: str) -> None:
    write(tmp_path, desk())
    assert apply(tmp_path, server).returncode == 0
    write(tmp_path, desk(FIRM001001={"resetTo": "2025-06-02"}, FIRM002002={"resetTo": "2025-06-02"}))
    killed = apply(tmp_path, server, crash=crash)
    assert killed.returncode == -9, killed.stderr
    sent = crash == "after_reset_call"
    served = sim_accounts(server)
    assert [served[n]["resets"] for n in ("FIRM001001", "FIRM002002")] == [int(sent)] * 2
    again = apply(tmp_path, server)
    assert again.returncode == 1, "the unknown outcome is reported"
    assert "will not be sent again" in again.stderr
    served = sim_accounts(server)
    assert [served[n]["resets"] for n in ("FIRM001001", "FIRM002002")] == [int(sent)] * 2, "never resent"
    record = state(tmp_path)["accounts"]["FIRM001001"]
    assert record["lastReset"] == record["resetUnsettled"] == "2025-06-02"
    assert plan_is_empty(tmp_path, server)
    reminded = reconcile(tmp_path, server, "plan")
    assert "account FIRM001001: a reset to 2025-06-02 was sent and its answer lost" in reminded.stdout
    write(tmp_path, desk(FIRM001001={"resetTo": "2025-06-03"}, FIRM002002={"resetTo": "2025-06-02"}))
    later = apply(tmp_path, server)
    assert later.returncode == 0, later.stderr
    assert sim_accounts(server)["FIRM001001"]["resets"] == int(sent) + 1
    assert "resetUnsettled" not in state(tmp_path)["accounts"]["FIRM001001"]


def test_a_kill_during_account_creation_with_state_in_postgresql(tmp_path: Path, server: str) -> None:
    from pg_fixtures import new_database

    from reconcile.state.open import open_store

    dsn = new_database()
    write(tmp_path, desk())
    killed = apply(tmp_path, server, "--backend", dsn, crash="after_account_create_call:2")
    assert killed.returncode == -9, killed.stderr
    store = open_store("sim", backend_url=dsn)
    assert [e.call for e in store.journal("sim").unsettled()] == ["create_account"]
    again = apply(tmp_path, server, "--backend", dsn)
    assert again.returncode == 0, again.stderr
    recorded = store.load("sim").accounts
    served = sim_accounts(server)
    assert len(served) == 3 * ACCOUNTS and sorted(recorded) == sorted(served)
    assert all(recorded[n].tradingPermissionId == served[n]["tradingPermissionId"] for n in served)
    assert store.journal("sim").unsettled() == []
