"""`reconcile plan`, `show` and `check` as a user runs them: options, output and exit codes."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import click
import pytest

pytest.importorskip("reconcile.manifest.loader")

from cli_support import run
from test_planner_support import CONTACT_NY, SIMPLUS_ID, grant, record, write_manifest
from test_planner_support import user as entry

from reconcile.cli import all_commands, cli
from reconcile.state.file import FileStateStore
from reconcile.state.model import State


def write_state(path: Path, **users: Any) -> Path:
    FileStateStore(path).save(State(environment="sim", users=users))
    return path


@pytest.fixture
def desk(tmp_path: Path) -> Path:
    return write_manifest(
        tmp_path / "desk.yaml",
        [
            entry("trader001", entitlements=["simplus"], contact=CONTACT_NY),
            entry("trader002", password="Literal-Secret-77"),
            entry("other003"),
        ],
    )


@pytest.fixture
def empty_state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sim.json"


def test_plan_prints_the_text_plan_and_exits_0(desk: Path, empty_state: Path) -> None:
    result = run("plan", "-f", desk, "--state", empty_state)
    assert result.exit_code == 0, result.output
    assert "Plan: 3 to create, 1 contact update, 1 grant." in result.stdout
    assert "+ trader001" in result.stdout
    assert "\x1b[" not in result.stdout  # not a terminal: no colour
    assert "Literal-Secret-77" not in result.output
    assert not empty_state.exists()  # plan writes nothing


def test_detailed_exitcode_is_2_with_changes_and_0_in_sync(
    tmp_path: Path, desk: Path, empty_state: Path
) -> None:
    assert run("plan", "-f", desk, "--state", empty_state, "--detailed-exitcode").exit_code == 2
    synced = write_manifest(tmp_path / "one.yaml", [entry("trader001", entitlements=["simplus"])])
    state = write_state(
        tmp_path / "s.json",
        trader001=record(
            1001, "trader001", entitlements={"simplus": grant(SIMPLUS_ID, "awaiting_agreement")}
        ),
    )
    result = run("plan", "-f", synced, "--state", state, "--detailed-exitcode")
    assert result.exit_code == 0, result.output  # a Sim+ re-check is not a change
    assert "No changes. 1 grant awaiting agreement (checked again on apply)." in result.stdout


@pytest.mark.parametrize("fmt", ["json", "markdown"])
def test_plan_formats(fmt: str, desk: Path, empty_state: Path) -> None:
    result = run("plan", "-f", desk, "--state", empty_state, "--format", fmt)
    assert result.exit_code == 0, result.output
    if fmt == "json":
        data = json.loads(result.stdout)
        assert data["format_version"] == 1 and data["summary"]["create"] == 3
        assert data["binding"]["endpoint"] == "sim:embedded"
        passwords = {a["user"]: a["password"] for a in data["actions"] if a["action"] == "create"}
        assert passwords == {
            "trader001": {"generate": True},
            "trader002": "literal",
            "other003": {"generate": True},
        }
    else:
        assert result.stdout.startswith("## reconcile plan")
        assert "trader001@example.com" not in result.stdout
        shown = run("plan", "-f", desk, "--state", empty_state, "--format", fmt, "--show-pii")
        assert "trader001@example.com" in shown.stdout


def test_out_saves_a_plan_that_show_prints(tmp_path: Path, desk: Path, empty_state: Path) -> None:
    planfile = tmp_path / "plan.json"
    text = run("plan", "-f", desk, "--state", empty_state, "--out", planfile)
    assert text.exit_code == 0 and planfile.exists()
    assert f"Saved the plan to {planfile}" in text.stderr
    assert oct(planfile.stat().st_mode & 0o777) == "0o600"
    assert "Literal-Secret-77" not in planfile.read_text()
    shown = run("show", planfile)
    assert shown.exit_code == 0 and shown.stdout == text.stdout
    as_json = run("show", planfile, "--format", "json")
    assert as_json.stdout == planfile.read_text()


def test_show_explains_a_missing_plan_file(tmp_path: Path) -> None:
    result = run("show", tmp_path / "nope.json")
    assert result.exit_code == 1
    assert "does not exist" in result.stderr


def test_plan_with_errors_exits_1_and_saves_nothing(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", [entry("trader001")])
    state = write_state(tmp_path / "s.json", trader001=record(1001, "trader001", lifecycle="cancelled"))
    planfile = tmp_path / "plan.json"
    result = run("plan", "-f", manifest, "--state", state, "--out", planfile, "--detailed-exitcode")
    assert result.exit_code == 1
    assert "cannot reactivate a cancelled user; choose a new name" in result.stdout
    assert "the plan has 1 error" in result.stderr
    assert not planfile.exists()


def _big_desk(tmp_path: Path, keep: int) -> tuple[Path, Path]:
    names = [f"trader{i:03d}" for i in range(6)]
    manifest = write_manifest(tmp_path / "m.yaml", [entry(n) for n in names[:keep]])
    state = write_state(tmp_path / "s.json", **{n: record(1000 + i, n) for i, n in enumerate(names)})
    return manifest, state


def test_plan_past_the_cancellation_budget_says_so_once_exits_3_and_saves_no_plan(tmp_path: Path) -> None:
    manifest, state = _big_desk(tmp_path, keep=1)
    planfile = tmp_path / "plan.json"
    result = run("plan", "-f", manifest, "--state", state, "--out", planfile)
    assert result.exit_code == 3
    assert "Plan: 5 to cancel." in result.stdout
    assert (result.stdout + result.stderr).count("refuse") == 1  # one message: the error
    assert result.stderr.startswith("Error: refused by policy")
    assert all(f"trader{i:03d} (id {1000 + i}" in result.stderr for i in range(1, 6))
    assert not planfile.exists() and "Saved the plan" not in result.stderr
    # A review format carries the refusal in the plan: a pull-request comment has no stderr.
    markdown = run("plan", "-f", manifest, "--state", state, "--format", "markdown")
    assert markdown.exit_code == 3 and "policy: apply will refuse this plan" in markdown.stdout


def test_allow_cancellations_raises_the_budget_for_one_run(tmp_path: Path) -> None:
    manifest, state = _big_desk(tmp_path, keep=1)
    assert run("plan", "-f", manifest, "--state", state, "--allow-cancellations", "5").exit_code == 0
    assert run("plan", "-f", manifest, "--state", state, "--allow-cancellations", "4").exit_code == 3
    result = run(
        "plan", "-f", manifest, "--state", state, "--allow-cancellations", "5", "--detailed-exitcode"
    )
    assert result.exit_code == 2


def test_empty_manifest_never_cancels_the_desk(tmp_path: Path) -> None:
    manifest, state = _big_desk(tmp_path, keep=0)
    result = run("plan", "-f", manifest, "--state", state, "--format", "markdown")
    assert result.exit_code == 3
    assert "cancels all 6 managed active user" in result.stdout


def test_target_and_exclude_limit_the_plan_and_say_so(desk: Path, empty_state: Path) -> None:
    result = run(
        "plan",
        "-f",
        desk,
        "--state",
        empty_state,
        "--target",
        "trader*",
        "--exclude",
        "trader002",
        "--format",
        "json",
    )
    data = json.loads(result.stdout)
    assert {a["user"] for a in data["actions"]} == {"trader001"}
    assert data["targeted"] == ["trader*"] and data["excluded"] == ["trader002"]
    text = run("plan", "-f", desk, "--state", empty_state, "--target", "trader*")
    assert "TARGETED PLAN: only users matching trader*" in text.stdout


def test_default_state_path_is_state_environment_json(
    tmp_path: Path, desk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_state(
        tmp_path / "state" / "sim.json",
        trader001=record(1001, "trader001", entitlements={"simplus": grant(SIMPLUS_ID)}, contact=CONTACT_NY),
    )
    result = run("plan", "-f", desk, "--format", "json")
    data = json.loads(result.stdout)
    assert data["summary"]["create"] == 2 and data["binding"]["state_serial"] == 1


def test_plan_needs_no_credentials_and_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("plan opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name in ("TRADOVATE_USERNAME", "TRADOVATE_PASSWORD", "TRADOVATE_SECRET", "RECONCILE_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    manifest = write_manifest(tmp_path / "demo.yaml", [entry("trader001")], environment="demo")
    result = run("plan", "-f", manifest, "--state", tmp_path / "demo.json", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["binding"]["endpoint"] == "https://demo.tradovateapi.com/v1"


def test_endpoint_override_is_bound_and_checked(desk: Path, empty_state: Path) -> None:
    result = run(
        "plan",
        "-f",
        desk,
        "--state",
        empty_state,
        "--endpoint",
        "http://127.0.0.1:8765/v1",
        "--format",
        "json",
    )
    assert json.loads(result.stdout)["binding"]["endpoint"] == "http://127.0.0.1:8765/v1"
    refused = run("plan", "-f", desk, "--state", empty_state, "--endpoint", "http://example.com/v1")
    assert refused.exit_code == 1 and "plain http" in refused.stderr


def test_check_fails_when_the_plan_is_not_empty(tmp_path: Path, desk: Path, empty_state: Path) -> None:
    result = run("check", "-f", desk, "--state", empty_state)
    assert result.exit_code == 1
    assert "Plan: 3 to create" in result.stdout
    assert "not in sync: the plan has 5 changes" in result.stderr
    synced = write_manifest(tmp_path / "one.yaml", [entry("trader001", entitlements=["simplus"])])
    state = write_state(
        tmp_path / "s.json",
        trader001=record(
            1001, "trader001", entitlements={"simplus": grant(SIMPLUS_ID, "awaiting_agreement")}
        ),
    )
    ok = run("check", "-f", synced, "--state", state)
    assert ok.exit_code == 0, ok.output


def test_wrong_state_environment_is_an_error_naming_the_file(tmp_path: Path, desk: Path) -> None:
    other = tmp_path / "live.json"
    FileStateStore(other).save(State(environment="live"))
    result = run("plan", "-f", desk, "--state", other)
    assert result.exit_code == 1 and str(other) in result.stderr and "--state" in result.stderr


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    subcommands = all_commands() if group is cli else group.commands
    for name, command in sorted(subcommands.items()):
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
    return found


@pytest.mark.parametrize("path", [(), *_commands(cli)], ids=lambda p: " ".join(p) or "reconcile")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = run(*path, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: reconcile")
    # Between the usage block and the options: the command's description.
    description = result.stdout.split("\n\n", 1)[1].split("Options:", 1)[0]
    assert description.strip(), "the command needs a description"


def test_plan_and_check_are_registered() -> None:
    assert {"plan", "show", "check"} <= set(all_commands())
