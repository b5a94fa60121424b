"""``reconcile validate`` as a person runs it: summary, problems, warnings on stderr, exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cli_support import run_child

ROOT = Path(__file__).parent.parent
CORPUS = Path(__file__).parent / "corpus"


def run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_child(
        *args, cwd=cwd, env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin", **(env or {})}, timeout=120
    )


def test_validate_ok_summary() -> None:
    result = run("validate", "-f", "examples/desk.yaml", env={"TRADER001_PASSWORD": "Sim-Passw0rd-001"})
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "OK: 9 users (8 active, 1 cancelled) in 1 file\n",
        "",
    )


def test_validate_lists_every_problem_and_exits_1() -> None:
    result = run("validate", "-f", "duplicates.yaml", cwd=CORPUS)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "Error: " + (CORPUS / "duplicates.expected").read_text()
    assert "Traceback" not in result.stderr


def test_validate_binary_input_is_a_clear_error() -> None:
    result = run("validate", "-f", "binary.yaml", "-f", "billion_laughs.yaml", cwd=CORPUS)
    assert result.returncode == 1
    assert "binary.yaml:1:1: not UTF-8 text" in result.stderr
    assert "billion_laughs.yaml:4:8: aliases (*a) are not allowed" in result.stderr


def test_validate_json(tmp_path: Path) -> None:
    ok = json.loads(run("validate", "-f", "examples/desk.yaml", "--format", "json").stdout)
    assert (ok["ok"], ok["users"], ok["active"], ok["cancelled"]) == (True, 9, 8, 1)
    bad = run("validate", "-f", "environment_and_ids.yaml", "--format", "json", cwd=CORPUS)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["problems"][0] == {
        "file": "environment_and_ids.yaml",
        "line": 2,
        "column": 14,
        "path": "environment",
        "message": "expected 'sim', 'demo', 'live' or 'staging', got 'prod'",
    }


def test_validate_warnings_go_to_stderr(tmp_path: Path) -> None:
    text = (ROOT / "examples" / "desk.yaml").read_text().replace("environment: sim", "environment: demo")
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    result = run("validate", "-f", str(path))
    assert result.returncode == 0
    assert result.stdout.startswith("OK: 9 users")
    assert "Warning: " in result.stderr and "users[4].password: a literal password" in result.stderr
    assert "sim-only-Passw0rd!" not in result.stderr + result.stdout
