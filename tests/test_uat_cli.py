"""Bugs found by using reconcile as a new user would, each with the test that would have caught it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from cli_support import run
from test_planner_support import CONTACT_NY, user, write_manifest


def where(path: Path, text: str) -> str:
    """FILE:LINE:COL of the first ``text`` in ``path`` (1-based)."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if text in line:
            return f"{path}:{number}:{line.index(text) + 1}"
    raise AssertionError(f"{text!r} not in {path}")


def hinted_command(stderr: str) -> list[str]:
    """The arguments of the `reconcile apply …` that `plan --out` tells the user to run."""
    line = next(x for x in stderr.splitlines() if "apply it with: " in x)
    words = shlex.split(line.split("apply it with: ", 1)[1])
    assert words[:2] == ["reconcile", "apply"]
    return words[1:]


def test_the_command_plan_out_suggests_applies_the_saved_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`plan --state S --out P` used to suggest `apply P -f M`, which read another state: refused as stale."""
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path / "desk.yaml", [user("trader001", password="Literal-Pass-01")])
    planned = run("plan", "-f", manifest, "--state", "elsewhere/sim.json", "--out", "desk.plan")
    assert planned.exit_code == 0, planned.output

    applied = run(*hinted_command(planned.stderr), "--auto-approve")

    assert applied.exit_code == 0, applied.output
    assert "1 created" in applied.stdout + applied.stderr
    assert (tmp_path / "elsewhere" / "sim.json").exists()
    assert not (tmp_path / "state" / "sim.json").exists()


def test_the_suggested_apply_names_the_endpoint_the_plan_is_bound_to(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "desk.yaml", [user("trader001")])
    endpoint = "http://127.0.0.1:8765/v1"
    state = tmp_path / "s.json"
    planned = run("plan", "-f", manifest, "--state", state, "--endpoint", endpoint, "--out", tmp_path / "p")
    assert planned.exit_code == 0, planned.output
    words = hinted_command(planned.stderr)
    assert words[words.index("--endpoint") + 1] == endpoint


def test_the_suggested_apply_never_prints_the_backend_dsn(tmp_path: Path) -> None:
    """A DSN may hold a password; the hint must say `--backend` without its value."""
    from reconcile.cli.options import PlanInputs
    from reconcile.cli.plan import apply_command

    inputs = PlanInputs(
        paths=(Path("desk.yaml"),),
        state_path=None,
        backend="postgresql://ops:S3cret-DSN@db/reconcile",
        endpoint=None,
        targets=(),
        excludes=(),
    )
    hint = apply_command(Path("desk.plan"), inputs)
    assert "S3cret-DSN" not in hint
    assert hint.startswith("reconcile apply desk.plan -f desk.yaml --backend")


def test_missing_password_variables_are_all_named_with_their_place_and_nothing_is_sent(
    tmp_path: Path,
) -> None:
    """A missing variable used to be reported alone, for one user, with no FILE:LINE:COL."""
    manifest = write_manifest(
        tmp_path / "desk.yaml",
        [
            user("trader001", password={"env": "UAT_MISSING_ONE"}),
            user("trader002", password={"env": "UAT_PRESENT"}),
            user("trader003", password={"env": "UAT_MISSING_THREE"}),
        ],
    )
    state = tmp_path / "state" / "sim.json"

    result = run(
        "apply", "-f", manifest, "--state", state, "--auto-approve", env={"UAT_PRESENT": "Present-Pass-02"}
    )

    assert result.exit_code == 1
    errors = result.stderr
    assert "Traceback" not in errors
    one, three = where(manifest, "name: trader001"), where(manifest, "name: trader003")
    assert f"{one}: user trader001: environment variable UAT_MISSING_ONE is not set" in errors
    assert f"{three}: user trader003: environment variable UAT_MISSING_THREE is not set" in errors
    assert "trader002" not in errors and "Present-Pass-02" not in result.output
    assert not state.exists(), "nothing is recorded when a password is missing"
    listed = run("sim", "users", "--db", tmp_path / "state" / "sim.sqlite")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == [], "nothing reached the simulator"


def test_the_apply_summary_speaks_of_one_email_and_one_contact_in_the_singular(tmp_path: Path) -> None:
    """It used to say "1 emails changed, 1 contacts updated"."""
    contact = CONTACT_NY
    state = tmp_path / "state" / "sim.json"
    desk = tmp_path / "desk.yaml"
    write_manifest(desk, [user("trader001", password="Literal-Pass-01", contact=contact)])
    assert run("apply", "-f", desk, "--state", state, "--auto-approve").exit_code == 0

    moved = {**contact, "city": "Brooklyn"}
    write_manifest(desk, [user("trader001", password="Literal-Pass-01", contact=moved, email="ada@x.org")])
    result = run("apply", "-f", desk, "--state", state, "--auto-approve")

    assert result.exit_code == 0, result.output
    assert "Apply complete: 1 email changed, 1 contact updated (state serial" in result.stdout


def test_apply_says_where_the_generated_passwords_went_and_nothing_else_has_them(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "desk.yaml", [user("trader001"), user("trader002")])
    state = tmp_path / "state" / "sim.json"
    secrets_file = tmp_path / "new-passwords.txt"
    result = run(
        "apply", "-f", manifest, "--state", state, "--auto-approve", "--generated-passwords", secrets_file
    )
    assert result.exit_code == 0, result.output
    assert f"Generated passwords of 2 users are in {secrets_file} (mode 0600)" in result.stderr
    generated = [line.split("\t")[1] for line in secrets_file.read_text().splitlines() if "\t" in line]
    assert len(generated) == 2
    for password in generated:
        assert password not in result.output and password not in state.read_text()
    # Nothing generated on a second run: no file, no message.
    again = tmp_path / "again.txt"
    result = run("apply", "-f", manifest, "--state", state, "--auto-approve", "--generated-passwords", again)
    assert result.exit_code == 0 and not again.exists() and "Generated passwords" not in result.stderr
