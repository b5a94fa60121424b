"""The CI examples call reconcile with commands and options that exist, and do what the docs say."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from reconcile.cli import all_commands

CI = Path(__file__).resolve().parent.parent / "examples" / "ci"
FILES = sorted(p for p in CI.rglob("*") if p.suffix in (".yml", ".yaml"))
# `reconcile SUBCOMMAND ...` up to a shell operator (redirect, ||, &&, ;, end of line).
_CALL = re.compile(
    r"(?<![\w/.-])reconcile ((?:plan|apply|refresh|import|show|check|validate|state)\b[^\n>|&;]*)"
)


def calls(path: Path) -> list[list[str]]:
    text = path.read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return [shlex.split(match.group(1)) for match in _CALL.finditer(body)]


def test_every_example_is_valid_yaml_and_calls_reconcile() -> None:
    assert {p.name for p in FILES} == {"reconcile.yml", "drift.yml", ".gitlab-ci.yml"}
    for path in FILES:
        assert isinstance(yaml.safe_load(path.read_text(encoding="utf-8")), dict)
        assert calls(path), f"{path} never calls reconcile"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_calls_use_real_commands_and_options(path: Path) -> None:
    argvs = calls(path)
    assert argvs, f"{path.name} never calls reconcile"
    for argv in argvs:
        command = all_commands().get(argv[0])
        assert isinstance(command, click.Command), f"{path.name}: no command {argv[0]!r}"
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for token in argv[1:]:
            if token.startswith("-"):
                assert token.split("=", 1)[0] in known, f"{path.name}: `reconcile {argv[0]}` has no {token}"
        if argv[0] in ("plan", "apply", "refresh", "import"):
            assert {"-f", "--file"} & set(argv), f"{path.name}: `reconcile {argv[0]}` without -f"


def test_pipelines_plan_without_credentials_and_check_drift_on_a_schedule() -> None:
    for path in FILES:
        all_calls = [" ".join(a) for a in calls(path)]
        text = path.read_text(encoding="utf-8")
        if path.name == "drift.yml":
            assert any("--refresh" in c and "--detailed-exitcode" in c for c in all_calls)
            assert "schedule" in text
        if path.name in ("reconcile.yml", ".gitlab-ci.yml"):
            plans = [c for c in all_calls if c.startswith("plan") and "--out" in c]
            applies = [c for c in all_calls if c.startswith("apply")]
            assert plans and applies
            assert all("--auto-approve" in c for c in applies)
    gitlab = (CI / "gitlab" / ".gitlab-ci.yml").read_text(encoding="utf-8")
    plan_job = yaml.safe_load(gitlab)["plan"]
    assert "TRADOVATE" not in yaml.safe_dump(plan_job)
    github = yaml.safe_load((CI / "github" / "reconcile.yml").read_text(encoding="utf-8"))
    assert "TRADOVATE" not in yaml.safe_dump(github["jobs"]["plan"])


# --- the platforms' own schemas, the install line, and the shell steps themselves ----------------

_SCHEMAS = {"reconcile.yml": "vendor.github-workflows", "drift.yml": "vendor.github-workflows",
            ".gitlab-ci.yml": "vendor.gitlab-ci"}  # fmt: skip


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_pipeline_is_valid_for_its_platform(path: Path) -> None:
    # check-jsonschema ships GitHub's and GitLab's schemas inside the package: no network.
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", _SCHEMAS[path.name], str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _install_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if "pip install" in line and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_pipeline_installs_reconcile_from_the_firms_source_at_a_pinned_commit(path: Path) -> None:
    # `pip install reconcile` would fetch an unrelated project of that name from the public index.
    lines = _install_lines(path)
    assert lines, f"{path.name} never installs reconcile"
    for line in lines:
        assert 'pip install "reconcile-partner @ git+${RECONCILE_REPOSITORY}@${RECONCILE_COMMIT}"' in line
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    variables = document.get("env") or document.get("variables")
    assert {"RECONCILE_REPOSITORY", "RECONCILE_COMMIT"} <= set(variables), path.name


def _bash(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a pipeline step's shell as the runner would (bash -e), reconcile on PATH, no secrets."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TRADOVATE_", "RECONCILE_"))}
    environ.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}",
        NO_COLOR="1",
        GIT_AUTHOR_NAME="ci",
        GIT_AUTHOR_EMAIL="ci@example.invalid",
        GIT_COMMITTER_NAME="ci",
        GIT_COMMITTER_EMAIL="ci@example.invalid",
        **env,
    )
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=cwd, env=environ, capture_output=True, text=True, timeout=180
    )


def _git(cwd: Path, *args: str) -> str:
    done = _bash(shlex.join(["git", *args]), cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def manifests_repo(tmp_path: Path) -> Path:
    """A clone of the firm's manifests repository (desk/: examples/desk.yaml's trader001), origin on disk."""
    desk = yaml.safe_load((CI.parent / "desk.yaml").read_text(encoding="utf-8"))
    desk["users"] = [user for user in desk["users"] if user["name"] == "trader001"]
    seed = tmp_path / "seed"
    (seed / "desk").mkdir(parents=True)
    (seed / "desk" / "desk.yaml").write_text(yaml.safe_dump(desk, sort_keys=False), encoding="utf-8")
    _git(tmp_path, "init", "-q", "-b", "main", str(seed))
    _git(seed, "add", ".")
    _git(seed, "commit", "-q", "-m", "the desk")
    _git(tmp_path, "clone", "-q", "--bare", str(seed), str(tmp_path / "origin.git"))
    _git(tmp_path, "clone", "-q", str(tmp_path / "origin.git"), str(tmp_path / "work"))
    return tmp_path / "work"


def _github_step(path: Path, job: str, name: str) -> str:
    steps = yaml.safe_load(path.read_text(encoding="utf-8"))["jobs"][job]["steps"]
    return next(str(step["run"]) for step in steps if step.get("name") == name)


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


@needs_git
def test_github_plan_and_commit_state_steps_run_as_written(manifests_repo: Path, tmp_path: Path) -> None:
    workflow = CI / "github" / "reconcile.yml"
    output = tmp_path / "github_output"
    done = _bash(_github_step(workflow, "plan", "plan"), manifests_repo, MANIFEST="desk/",
                 GITHUB_OUTPUT=str(output))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert output.read_text() == "exitcode=2\n"
    assert "**Plan: " in (manifests_repo / "plan.md").read_text()
    assert json.loads((manifests_repo / "reconcile.plan.json").read_text())["format_version"] == 1

    # The apply job, given the reviewed plan where its download step puts it; then its last
    # step commits state/ and pushes.
    (manifests_repo / "reviewed").mkdir()
    (manifests_repo / "reconcile.plan.json").rename(manifests_repo / "reviewed" / "reconcile.plan.json")
    done = _bash(_github_step(workflow, "apply", "apply"), manifests_repo, MANIFEST="desk/",
                 TRADER001_PASSWORD="Sim-Passw0rd-001")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Apply complete: 1 created" in done.stdout
    done = _bash(_github_step(workflow, "apply", "commit state"), manifests_repo, GITHUB_SHA="a" * 40)
    assert done.returncode == 0, done.stderr
    pushed = _git(tmp_path / "origin.git", "show", "--stat", "--format=%s", "main")
    assert pushed.startswith("reconcile: record state after apply of aaaaaaaa")
    assert "state/sim.json" in pushed


@needs_git
def test_github_drift_step_reports_changes_with_exit_2(manifests_repo: Path, tmp_path: Path) -> None:
    output = tmp_path / "github_output"
    done = _bash(_github_step(CI / "github" / "drift.yml", "drift", "drift check"), manifests_repo,
                 GITHUB_OUTPUT=str(output))  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert output.read_text() == "exitcode=2\n"
    assert "Plan: " in (manifests_repo / "drift.md").read_text()


@needs_git
def test_gitlab_plan_script_and_after_script_run_as_written(manifests_repo: Path, tmp_path: Path) -> None:
    pipeline = yaml.safe_load((CI / "gitlab" / ".gitlab-ci.yml").read_text(encoding="utf-8"))
    ci = {"MANIFEST": "desk/", "CI_COMMIT_SHORT_SHA": "abc123", "CI_DEFAULT_BRANCH": "main"}
    # GitLab runs each item as a line of one shell script that stops at the first failure.
    done = _bash("\n".join(pipeline["plan"]["script"]), manifests_repo, **ci)
    assert done.returncode == 0, done.stderr
    assert "**Plan: " in done.stdout
    # The apply script's last line (its first fetches the plan from the GitLab API).
    done = _bash(pipeline["apply"]["script"][-1], manifests_repo, TRADER001_PASSWORD="Sim-Passw0rd-001", **ci)
    assert done.returncode == 0, done.stderr
    assert "Apply complete: 1 created" in done.stdout
    # Everything but the push, which needs the GitLab server: the commit lands on the rebased main.
    after = [line for line in pipeline["apply"]["after_script"] if not line.startswith("git push")]
    assert len(after) == len(pipeline["apply"]["after_script"]) - 1
    done = _bash("\n".join(after), manifests_repo, **ci)
    assert done.returncode == 0, done.stderr
    subject = _git(manifests_repo, "log", "-1", "--format=%s")
    assert subject == "reconcile: record state after abc123 [skip ci]\n"
    assert "state/sim.json" in _git(manifests_repo, "show", "--stat", "--format=", "HEAD")
