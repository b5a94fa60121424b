"""State belongs to one endpoint and organization (DESIGN §8.10); moving it is a deliberate command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apply_support import desk_here, served_sim, served_sim_env, write_desk
from cli_support import run


@pytest.fixture
def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return desk_here(tmp_path, monkeypatch, 3)


def test_state_of_a_served_simulator_is_refused_by_the_embedded_one_until_rebound(
    tmp_path: Path, desk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state" / "sim.json"
    for name, value in served_sim_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    with served_sim(tmp_path) as url:
        result = run("apply", "-f", desk, "--endpoint", url, "--auto-approve")
        assert result.exit_code == 0, result.stderr
    recorded = json.loads(state.read_text())
    assert recorded["binding"] == {"endpoint": url, "dataAccountId": 11111}
    assert recorded["format_version"] == 2

    write_desk(desk, 4)  # one more trader: a run that ignored the binding would report success
    for command in (["plan"], ["plan", "--refresh"], ["check"], ["apply", "--auto-approve"], ["refresh"]):
        result = run(*command, "-f", desk)
        assert result.exit_code == 1, (command, result.output)
        assert f"state/sim.json belongs to {url} (partner data account 11111), not sim:embedded" in (
            result.stderr
        )
        assert f"Pass --endpoint {url}" in result.stderr and "reconcile state rebind" in result.stderr
        assert "Apply complete" not in result.stdout
    listed = run("sim", "users")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == [], "nothing reached the embedded simulator"
    # Another organization on the same endpoint is refused the same way.
    other = desk.read_text().replace("dataAccountId: 11111", "dataAccountId: 22222")
    (tmp_path / "other.yaml").write_text(other)
    result = run("plan", "-f", tmp_path / "other.yaml", "--endpoint", url)
    assert result.exit_code == 1 and "not " + url + " (partner data account 22222)" in result.stderr

    result = run("state", "rebind", "-f", desk)
    assert result.exit_code == 0, result.stderr
    assert f"rebound from {url} (partner data account 11111) to sim:embedded" in result.stdout
    shown = run("state", "show")
    assert "bound to: sim:embedded (partner data account 11111)" in shown.stdout
    assert run("state", "rebind", "-f", desk).stdout.endswith("; nothing to do\n")
    result = run("plan", "-f", desk)
    assert result.exit_code == 0 and "Plan: 1 to create" in result.stdout, result.stderr


def test_state_written_before_bindings_loads_and_is_bound_by_its_next_write(
    tmp_path: Path, desk: Path
) -> None:
    assert run("apply", "-f", desk, "--auto-approve").exit_code == 0
    state = tmp_path / "state" / "sim.json"
    old = json.loads(state.read_text())
    del old["binding"]
    old["format_version"] = 1
    state.write_text(json.dumps(old))  # as reconcile wrote it before bindings
    assert "bound to: nothing yet" in run("state", "show").stdout
    result = run("plan", "-f", desk)
    assert result.exit_code == 0 and "No changes" in result.stdout, result.output
    assert "binding" not in json.loads(state.read_text()), "plan writes nothing"
    write_desk(desk, 4)
    assert run("apply", "-f", desk, "--auto-approve").exit_code == 0
    recorded = json.loads(state.read_text())
    assert recorded["binding"] == {"endpoint": "sim:embedded", "dataAccountId": 11111}
    assert recorded["format_version"] == 2 and len(recorded["users"]) == 4
