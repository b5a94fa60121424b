"""The simulator checks its own answers against the contract when asked (always, under pytest)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from reconcile.sim import app as sim_app_module
from reconcile.sim.app import CHECK_CONTRACT_ENV, create_app
from reconcile.sim.testing import login
from reconcile.sim.transport import SimTransport


def test_the_suite_runs_every_simulator_with_the_self_check_on() -> None:
    assert os.environ.get(CHECK_CONTRACT_ENV) == "1"


def _list_users_answered_off_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> httpx.Response:
    """GET /user/list from a simulator whose handler answers an object (the contract says an array)."""
    app = create_app(db_path=tmp_path / "sim.sqlite")
    handler = sim_app_module._OPERATIONS[("GET", "/user/list")]
    monkeypatch.setitem(sim_app_module._HANDLERS, handler, lambda _app, _call: {"not": "a list"})
    with httpx.Client(transport=SimTransport(app), base_url="http://sim.test/v1") as client:
        token = login(client, app.config)
        return client.get("/user/list", headers={"Authorization": f"Bearer {token}"})


def test_an_answer_outside_the_contract_becomes_a_500_naming_the_violation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    response = _list_users_answered_off_contract(tmp_path, monkeypatch)
    assert response.status_code == 500
    assert "simulator contract violation" in response.json()["errorText"]
    assert "contract violation: GET /user/list" in capsys.readouterr().err


def test_without_the_switch_the_answer_goes_out_unchecked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CHECK_CONTRACT_ENV)
    response = _list_users_answered_off_contract(tmp_path, monkeypatch)
    assert response.status_code == 200 and response.json() == {"not": "a list"}
