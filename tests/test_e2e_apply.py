"""`reconcile apply` end to end against the embedded simulator (state and sim DB in tmp_path)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("reconcile.manifest.loader")
pytest.importorskip("reconcile.api.connect")

from apply_support import PASSWORD, write_desk
from cli_support import call, run_child


@pytest.fixture
def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("TRADER_PASSWORD", PASSWORD)
    monkeypatch.chdir(tmp_path)
    state = tmp_path / "state" / "sim.json"
    return {"state": state, "audit": state.parent / "sim.audit.jsonl"}


def audit_lines(desk: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in desk["audit"].read_text().splitlines()]


def test_desk_of_250_is_created_in_three_calls_and_a_second_apply_does_nothing(
    tmp_path: Path, desk: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", 250)
    args = ["apply", "-f", str(manifest), "--state", str(desk["state"]), "--auto-approve", "--format", "json"]
    code, out, err = call(capsys, *args)
    assert code == 0, err
    result = json.loads(out)
    assert result["summary"]["created"] == 250 and result["ok"]
    # The default batch is 100 users per call (99 would also make three calls).
    assert [len(ln["users"]) for ln in audit_lines(desk) if ln["action"] == "create"] == [100, 100, 50]
    state = json.loads(desk["state"].read_text())
    assert len(state["users"]) == 250
    code, sim_out, _ = call(capsys, "sim", "users", "--db", str(desk["state"].parent / "sim.sqlite"))
    in_sim = {u["name"]: u["id"] for u in json.loads(sim_out)}
    assert in_sim == {n: u["userId"] for n, u in state["users"].items()}
    assert PASSWORD not in desk["state"].read_text() + desk["audit"].read_text() + out + err

    code, out, err = call(capsys, *args)
    assert code == 0, err
    again = json.loads(out)
    assert again["planned"]["create"] == 0 and again["summary"]["created"] == 0
    assert json.loads(desk["state"].read_text())["serial"] == state["serial"]


def test_partial_batch_failure_names_the_user_and_exits_1(
    tmp_path: Path, desk: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", 3)
    # trader0001's name is taken by someone else (another email): the API refuses that user only.
    code, _, err = call(
        capsys,
        "sim",
        "add-user",
        "trader0001",
        "--email",
        "other@example.com",
        "--db",
        str(desk["state"].parent / "sim.sqlite"),
    )
    assert code == 0, err
    code, _, err = call(capsys, "apply", "-f", str(manifest), "--state", str(desk["state"]), "--auto-approve")
    assert code == 1
    assert "trader0001" in err and "already exists" in err
    users = json.loads(desk["state"].read_text())["users"]
    assert sorted(users) == ["trader0000", "trader0002"]


def test_apply_refuses_without_a_tty_unless_auto_approved(
    tmp_path: Path, desk: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", 1)
    code, _, err = call(capsys, "apply", "-f", str(manifest), "--state", str(desk["state"]))
    assert code == 1 and "--auto-approve" in err
    assert not desk["state"].exists()


def test_a_batch_size_above_the_apis_100_is_refused_before_anything_happens(
    tmp_path: Path, desk: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", 1)
    args = ["apply", "-f", str(manifest), "--state", str(desk["state"]), "--auto-approve"]
    code, _, err = call(capsys, *args, "--batch-size", "101")
    assert code != 0 and "--batch-size" in err and "101 is not in the range 1<=x<=100" in err
    assert not desk["state"].exists()
    code, _, err = call(capsys, *args, "--batch-size", "100")
    assert code == 0, err


def test_saved_plan_applies_in_a_second_process_and_a_stale_one_is_refused(
    tmp_path: Path, desk: dict[str, Any]
) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", 2)
    files = ["-f", str(manifest), "--state", str(desk["state"])]

    def reconcile(*args: str) -> subprocess.CompletedProcess[str]:
        return run_child(*args, cwd=tmp_path)

    plan_file, other_plan = tmp_path / "plan.json", tmp_path / "other.json"
    assert reconcile("plan", *files, "--out", str(plan_file)).returncode == 0
    assert reconcile("plan", *files, "--out", str(other_plan)).returncode == 0
    first = reconcile("apply", str(plan_file), *files)
    assert first.returncode == 0, first.stderr
    assert sorted(json.loads(desk["state"].read_text())["users"]) == ["trader0000", "trader0001"]
    # Made from the same inputs, but the state has moved on since.
    stale = reconcile("apply", str(other_plan), *files)
    assert stale.returncode == 1
    assert (
        "stale" in stale.stderr
        and "state was written since (none when planned, serial 1 now)" in stale.stderr
    )
    assert "new plan" in stale.stderr
    assert reconcile("plan", *files, "--out", str(plan_file)).returncode == 0
    write_desk(manifest, 3)
    changed = reconcile("apply", str(plan_file), *files)
    assert changed.returncode == 1 and "the manifest changed" in changed.stderr
    assert len(json.loads(desk["state"].read_text())["users"]) == 2


def test_agreement_signed_between_two_applies_is_granted_by_the_second(
    tmp_path: Path, desk: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", 4, simplus=True)
    args = ["apply", "-f", str(manifest), "--state", str(desk["state"]), "--auto-approve", "--format", "json"]
    code, out, err = call(capsys, *args)
    assert code == 0, err
    first = json.loads(out)
    assert first["summary"]["created"] == 4 and first["awaiting_agreement"] == [
        "trader0000",
        "trader0001",
        "trader0002",
        "trader0003",
    ]
    db = str(desk["state"].parent / "sim.sqlite")
    for name in ("trader0001", "trader0003"):
        code, _, err = call(capsys, "sim", "sign", name, "--db", db)
        assert code == 0, err
    code, out, err = call(capsys, *args)
    assert code == 0, err
    second = json.loads(out)
    assert second["granted"] == ["trader0001", "trader0003"]
    assert second["awaiting_agreement"] == ["trader0000", "trader0002"]
    assert [ln["action"] for ln in audit_lines(desk)].count("read_agreement_signals") == 2
    users = json.loads(desk["state"].read_text())["users"]
    assert {n: u["entitlements"]["simplus"]["status"] for n, u in users.items()} == {
        "trader0000": "awaiting_agreement",
        "trader0001": "granted",
        "trader0002": "awaiting_agreement",
        "trader0003": "granted",
    }


def test_cancellations_past_the_budget_exit_3_until_allowed_and_the_allowance_is_audited(
    tmp_path: Path, desk: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", 4)
    base = ["apply", "-f", str(manifest), "--state", str(desk["state"]), "--auto-approve"]
    assert call(capsys, *base)[0] == 0
    write_desk(manifest, 1)  # three users leave; the budget of a 4-user desk is 1
    code, _, err = call(capsys, *base)
    assert code == 3 and "--allow-cancellations 3" in err
    users = json.loads(desk["state"].read_text())["users"]
    assert [u["lifecycle"] for u in users.values()] == ["active"] * 4
    code, _, err = call(capsys, *base, "--allow-cancellations", "3")
    assert code == 0, err
    users = json.loads(desk["state"].read_text())["users"]
    assert sorted(n for n, u in users.items() if u["lifecycle"] == "cancelled") == [
        "trader0001",
        "trader0002",
        "trader0003",
    ]
    policy = [ln for ln in audit_lines(desk) if ln["action"] == "policy"]
    assert len(policy) == 1 and policy[0]["outcome"] == "--allow-cancellations 3"
    assert [ln["users"] for ln in audit_lines(desk) if ln["action"] == "cancel_everything"] == [
        ["trader0001", "trader0002", "trader0003"]
    ]


def test_a_penalty_ticket_is_waited_out_and_shown_on_stderr(
    tmp_path: Path, desk: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", 3)
    db = str(desk["state"].parent / "sim.sqlite")
    fault = [
        "sim",
        "fault",
        "penalty",
        "--path",
        "/user/createevaluationusers",
        "--seconds",
        "0.2",
        "--db",
        db,
    ]
    assert call(capsys, *fault)[0] == 0
    code, _, err = call(capsys, "apply", "-f", str(manifest), "--state", str(desk["state"]), "--auto-approve")
    assert code == 0, err
    assert "until" in err  # the wait is announced with its end time
    code, out, _ = call(capsys, "sim", "users", "--db", db)
    assert sorted(u["name"] for u in json.loads(out)) == ["trader0000", "trader0001", "trader0002"]
