"""What the commands say: counts that match what happened, each finding once, plain words.

Most tests drive the README's desk (examples/desk.yaml) against the embedded simulator, as a new
user would: apply, `reconcile sim sign`, apply again, import, plan --refresh.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from cli_support import run

import reconcile

DESK = Path(__file__).resolve().parents[1] / "examples" / "desk.yaml"
WAITING = ["trader001", "trader002", "trader004", "trader006"]
"""The desk's users with Sim+: none has signed the Market Data Agreement after the first apply."""


@pytest.fixture
def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """examples/desk.yaml in an empty folder (the embedded simulator keeps its data in state/)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADER001_PASSWORD", "Sim-Passw0rd-001")
    for name in ("TRADOVATE_USERNAME", "TRADOVATE_PASSWORD", "RECONCILE_ENDPOINT", "RECONCILE_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    return Path(shutil.copy(DESK, tmp_path / "desk.yaml"))


def apply_desk(desk: Path) -> tuple[str, str]:
    """The README's first apply; return its stdout and stderr."""
    result = run("apply", "-f", desk, "--auto-approve", "--generated-passwords", desk.parent / "pw.txt")
    assert result.exit_code == 0, result.stderr
    return result.stdout, result.stderr


# --- counts and summaries ---------------------------------------------------------------------------


def test_first_apply_shows_no_grant_progress_for_grants_that_only_wait(desk: Path) -> None:
    """Progress said `grant: 4/4`, then `4 awaiting agreement` with nothing granted."""
    out, err = apply_desk(desk)
    assert "create: 8/8" in err
    assert "grant:" not in err
    assert "Apply complete: 8 created, 5 contacts updated, 4 awaiting agreement (state serial 3)." in out
    assert (
        "4 users await the Market Data Agreement; Sim+ is granted by a later apply once they sign: "
        f"{', '.join(WAITING)}" in out
    )


def test_agreement_rechecks_are_not_counted_as_changes_by_apply(desk: Path) -> None:
    """`apply` printed "No changes." and then "Apply complete: 1 granted"."""
    apply_desk(desk)
    assert run("sim", "sign", "trader001").exit_code == 0
    result = run("apply", "-f", desk, "--auto-approve")
    assert result.exit_code == 0, result.stderr
    assert "No changes. 4 grants awaiting agreement (checked again on apply)." in result.stdout
    assert (
        "Apply complete: no changes; agreement re-checked for 4 grants: 1 signed since and granted, "
        "3 still awaiting (state serial 4)." in result.stdout
    )
    assert "grant: 1/1" in result.stderr  # the one grant sent
    assert "3 users await the Market Data Agreement" in result.stdout


def test_after_import_all_grants_awaiting_signatures_are_no_change(desk: Path) -> None:
    """After `import --all`, `plan --refresh --detailed-exitcode` said `Plan: 4 grants.` and exited 2."""
    apply_desk(desk)
    (desk.parent / "state" / "sim.json").unlink()
    imported = run("import", "--all", "-f", desk)
    assert imported.exit_code == 0, imported.stderr
    assert "Adopted 8 users" in imported.stdout

    result = run("plan", "-f", desk, "--refresh", "--detailed-exitcode")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "No drift: the API matches recorded state." in result.stdout
    assert "No changes. 4 grants awaiting agreement (checked again on apply)." in result.stdout

    # A trader who signed before the import has a grant to make: that one is a change.
    (desk.parent / "state" / "sim.json").unlink()
    assert run("sim", "sign", "trader002").exit_code == 0
    assert run("import", "--all", "-f", desk).exit_code == 0
    result = run("plan", "-f", desk, "--detailed-exitcode")
    assert result.exit_code == 2
    assert "Plan: 1 grant. 3 grants awaiting agreement (checked again on apply)." in result.stdout


# Words that are spelled "(s)" for a reason, not a lazy plural.
_NOT_PLURALS = {"http(s)"}


def test_no_message_in_the_package_writes_a_plural_as_s_in_brackets() -> None:
    """`4 user(s) await…`, `1 user(s) to create…`: every count goes through counted()/plural()."""
    package = Path(reconcile.__file__).parent
    found = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        for match in re.finditer(r"\w+\(s\)", line)
        if match.group() not in _NOT_PLURALS
    ]
    assert len(list(package.rglob("*.py"))) > 40  # the walk did see the package
    assert found == []


# --- drift ---------------------------------------------------------------------------------------


def test_drift_names_each_unmanaged_user_once_and_hints_import_only_where_it_works(desk: Path) -> None:
    """An unmanaged user was shown three times, with `reconcile import` though not in the manifest."""
    apply_desk(desk)
    assert run("sim", "add-user", "outsider1", "--email", "outsider1@example.com").exit_code == 0
    result = run("plan", "-f", desk, "--refresh", "--detailed-exitcode")
    assert result.exit_code == 2  # a user created outside is still drift
    assert result.stdout.count("outsider1") == 1
    assert (
        "Unmanaged (in the organization; never changed or cancelled by reconcile): outsider1" in result.stdout
    )
    assert "reconcile import" not in result.stdout + result.stderr
    refreshed = run("refresh", "-f", desk)
    assert refreshed.stdout.count("outsider1") == 1

    # A manifest user that exists unmanaged gets the hint, and following it works.
    assert run("sim", "add-user", "trader010", "--email", "trader010@example.com").exit_code == 0
    text = desk.read_text(encoding="utf-8")
    desk.write_text(
        text + "\n  - name: trader010\n    email: trader010@example.com\n    password: {generate: true}\n"
        "    firstName: Outside\n    lastName: User\n",
        encoding="utf-8",
    )
    result = run("plan", "-f", desk, "--refresh")
    # Listed unmanaged, and warned about once: the manifest wants it, but it is not created again.
    assert [line.split(":")[0] for line in result.stdout.splitlines() if "trader010" in line] == [
        "Unmanaged (in the organization; never changed or cancelled by reconcile)",
        "Warning",
    ]
    assert "adopt it with `reconcile import trader010`" in result.stdout
    assert run("import", "trader010", "-f", desk).exit_code == 0
