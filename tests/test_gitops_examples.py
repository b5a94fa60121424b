"""The CI examples call reconcile with commands and options that exist, and do what the docs say."""

from __future__ import annotations

import re
import shlex
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
    for argv in calls(path):
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
