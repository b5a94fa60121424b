"""`reconcile sim ...`: serve as a subprocess, and drive the simulator by --url and by --db."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_support import run as cli_run
from cli_support import run_child
from click.testing import CliRunner
from sim_support import USER

from reconcile.cli.sim import command
from reconcile.sim.app import create_app
from reconcile.sim.testing import login
from reconcile.sim.transport import SimTransport


def run(*args: str) -> str:
    result = CliRunner().invoke(command, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    db = tmp_path / "sim.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconcile", "sim", "serve", "--port", "0", "--db", str(db), "--no-limits"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on http://127.0.0.1:"), first
        yield first.removeprefix("listening on "), db
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_then_sign_by_url_and_read_by_db(served: tuple[str, Path]) -> None:
    url, db = served
    with httpx.Client(base_url=url) as client:
        client.headers["Authorization"] = f"Bearer {login(client)}"
        assert (
            "userId"
            in client.post("/user/createevaluationusers", json={"users": [USER]}).json()["results"][0]
        )
        signal = json.loads(run("sign", "trader001", "--url", url))
        assert signal["adminAlertId"] == 68
        assert [s["id"] for s in client.get("/adminAlertSignal/deps?masterid=68").json()] == [signal["id"]]
    dumped = json.loads(run("users", "--db", str(db)))
    assert [u["name"] for u in dumped] == ["trader001"]
    assert len(dumped[0]["agreementSignals"]) == 1


def test_commands_work_on_the_file_without_a_server(tmp_path: Path) -> None:
    db = str(tmp_path / "sim.sqlite")
    added = json.loads(run("add-user", "legacy01", "--email", "legacy@example.com", "--db", db))
    assert added["status"] == "Active"
    assert json.loads(run("sign", "legacy01", "--db", db))["relatedToUserId"] == added["id"]
    told = CliRunner().invoke(command, ["sign", "legacy01", "--db", db]).stderr
    assert "legacy01 signed the Market Data Agreement" in told and "grants Sim+" in told
    assert (
        json.loads(run("fault", "http500", "--path", "/user/list", "--count", "2", "--db", db))["count"] == 2
    )
    settings = json.loads(run("config", "--no-limits", "--time-scale", "60", "--db", db))
    assert settings["limits_enabled"] is False and settings["time_scale"] == 60
    assert json.loads(run("config", "--db", db))["limits_enabled"] is False  # it sticks
    run("reset", "--yes", "--db", db)
    assert json.loads(run("users", "--db", db)) == []


def test_errors_say_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(command, ["sign", "ghost", "--db", str(tmp_path / "s.sqlite")])
    assert result.exit_code != 0 and "no user named 'ghost'" in str(result.exception)
    result = CliRunner().invoke(command, ["users", "--url", "http://127.0.0.1:9/v1"])
    assert "reconcile sim serve" in str(result.exception)


def test_every_command_has_help() -> None:
    assert {"serve", "sign", "users"} <= set(command.commands)  # type: ignore[attr-defined]
    for name in command.commands:  # type: ignore[attr-defined]
        assert "Usage:" in run(name, "--help")


def _with_account(db: Path, name: str = "FIRMEVAL00001") -> None:
    """Create trader001 and an evaluation account for it in the simulator file ``db``."""
    app = create_app(db_path=db)
    try:
        with httpx.Client(transport=SimTransport(app), base_url="http://sim.test/v1") as client:
            client.headers["Authorization"] = f"Bearer {login(client)}"
            users = client.post("/user/createevaluationusers", json={"users": [USER]}).json()
            item = {"userId": users["results"][0]["userId"], "name": name}
            item |= {"templateAccountId": 5001, "initialBalance": 50000}
            answer = client.post("/user/createevaluationaccounts", json={"accounts": [item]}).json()
            assert "accountId" in answer["results"][0], answer
    finally:
        app.store.close()


def test_accounts_and_pnl_on_the_file(tmp_path: Path) -> None:
    db = tmp_path / "sim.sqlite"
    _with_account(db)
    result = CliRunner().invoke(command, ["pnl", "firmeval00001", "-1250.5", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["balance"] == 48749.5
    assert "FIRMEVAL00001: balance 48,749.50 (-1,250.50); initial balance 50,000.00." in result.stderr
    listed = CliRunner().invoke(command, ["accounts", "--db", str(db)])
    (only,) = json.loads(listed.stdout)
    assert (only["userName"], only["template"], only["balance"]) == ("trader001", "Evaluation 50K", 48749.5)
    assert (only["riskCategory"], only["permissionStatus"], only["adminAction"]) == (
        "standard",
        "Approved",
        "Normal",
    )
    assert "1 account in the simulator." in listed.stderr


def test_accounts_and_pnl_by_url(served: tuple[str, Path]) -> None:
    url, db = served
    _with_account(db)
    assert json.loads(run("pnl", "FIRMEVAL00001", "300", "--url", url))["balance"] == 50300
    assert [a["balance"] for a in json.loads(run("accounts", "--url", url))] == [50300]


def test_pnl_of_an_unknown_account_says_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(command, ["pnl", "ghost", "-5", "--db", str(tmp_path / "s.sqlite")])
    assert result.exit_code != 0 and "no account named 'ghost'" in str(result.exception)


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_serve_refuses_a_port_out_of_range(tmp_path: Path, port: str) -> None:
    # In a child with a timeout: a regression would listen (on port % 65536) instead of failing.
    result = run_child("sim", "serve", "--port", port, "--db", tmp_path / "sim.sqlite", timeout=60)
    assert result.returncode == 1, result.stdout
    assert f"Invalid value for '--port': {port} is not in the range 0<=x<=65535" in result.stderr
    assert "listening" not in result.stdout


@pytest.mark.parametrize("by", ["db", "url"])
def test_a_fault_on_a_path_the_simulator_never_serves_is_refused(
    tmp_path: Path, served: tuple[str, Path], by: str
) -> None:
    # /user/addentitlementsubscription is not a path: a fault armed there would never fire.
    url, _ = served
    target = ["--db", str(tmp_path / "other.sqlite")] if by == "db" else ["--url", url]
    wrong = cli_run("sim", "fault", "captcha", "--path", "/user/addentitlementsubscription", *target)
    assert wrong.exit_code == 1
    assert "no such path '/user/addentitlementsubscription'" in wrong.stderr
    assert "did you mean '/userplugin/addentitlementsubscription'?" in wrong.stderr
    right = cli_run("sim", "fault", "captcha", "--path", "/userPlugin/addEntitlementSubscription", *target)
    assert right.exit_code == 0, right.output
    assert json.loads(right.stdout)["path"] == "/userplugin/addentitlementsubscription"
    anywhere = cli_run("sim", "fault", "http500", "--path", "*", *target)
    assert anywhere.exit_code == 0, anywhere.output
    assert json.loads(anywhere.stdout)["path"] == "*"
