"""Every error exits 1, for every command: exit 2 belongs to --detailed-exitcode ("changes present")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from cli_support import run

from reconcile.cli import all_commands, cli

CI = Path(__file__).resolve().parent.parent / "examples" / "ci"


def _walk(prefix: tuple[str, ...], command: click.Command) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(prefix, command)]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            found.extend(_walk((*prefix, name), sub))
    return found


EVERY = _walk((), cli)
COMMANDS = [path for path, _ in EVERY if path]
GROUPS = [path for path, command in EVERY if isinstance(command, click.Group)]
WITH_FILES = [path for path, command in EVERY if any("--file" in p.opts for p in command.params)]


def test_the_walk_reaches_every_command_and_subcommand() -> None:
    assert set(all_commands()) <= {p[0] for p in COMMANDS}
    assert {("sim",), ("state",)} <= set(GROUPS)
    assert any(len(p) == 2 and p[0] == "sim" for p in COMMANDS)
    assert {("plan",), ("apply",), ("validate",), ("check",)} <= set(WITH_FILES)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_an_option_typo_exits_1_on_every_command(path: tuple[str, ...]) -> None:
    result = run(*path, "--no-such-option")
    assert result.exit_code == 1, result.output
    if path == ("sim", "pnl"):
        # pnl takes unknown dashes as its arguments so that a loss reads `sim pnl NAME -500`.
        assert "Missing argument 'AMOUNT'" in result.stderr
    else:
        assert "No such option '--no-such-option'" in result.stderr


@pytest.mark.parametrize("path", GROUPS, ids=lambda p: " ".join(p) or "reconcile")
def test_an_unknown_command_exits_1(path: tuple[str, ...]) -> None:
    result = run(*path, "no-such-command")
    assert result.exit_code == 1, result.output
    assert "No such command 'no-such-command'" in result.stderr
    assert run(*path).exit_code == 1  # nothing to do: the help is shown, and a pipeline still fails


@pytest.mark.parametrize("path", WITH_FILES, ids=" ".join)
def test_a_missing_manifest_exits_1(path: tuple[str, ...], tmp_path: Path) -> None:
    result = run(*path, "-f", tmp_path / "missing.yaml")
    assert result.exit_code == 1, result.output
    assert "missing.yaml" in result.stderr


# ------------------------------------------------------------------ the shipped CI pipelines


def _step(script: str, workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a pipeline's shell step as the CI runner does (bash -e), with this reconcile on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=workdir,
        env={**os.environ, "PATH": path, "MANIFEST": "desk/", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gitlab_plan_job_fails_on_a_missing_manifest(tmp_path: Path) -> None:
    jobs = yaml.safe_load((CI / "gitlab" / ".gitlab-ci.yml").read_text(encoding="utf-8"))
    for job in ("plan", "drift"):
        # GitLab fails the job at the first script line that exits non-zero.
        line = jobs[job]["script"][0]
        done = _step(line, tmp_path)
        assert done.returncode != 0, f"{job}: {line!r} passed on a missing manifest"
        assert "desk/" in done.stderr


def test_github_plan_and_drift_steps_fail_on_a_missing_manifest(tmp_path: Path) -> None:
    for workflow, job, step_id in (("reconcile.yml", "plan", "plan"), ("drift.yml", "drift", "drift")):
        document = yaml.safe_load((CI / "github" / workflow).read_text(encoding="utf-8"))
        step = next(s for s in document["jobs"][job]["steps"] if s.get("id") == step_id)
        outputs = tmp_path / f"{step_id}.out"
        done = _step(step["run"], tmp_path, GITHUB_OUTPUT=str(outputs))
        assert done.returncode != 0, f"{workflow}: the {step_id} step passed on a missing manifest"
        # drift.yml opens a "drift detected" issue only on 2: an error must not look like drift.
        assert outputs.read_text(encoding="utf-8").strip() == "exitcode=1"
