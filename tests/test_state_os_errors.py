"""OS errors on state (a full disk, a folder that cannot be written): named, exit 1, nothing lost."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from pathlib import Path

import pytest
from apply_support import desk_here
from cli_support import run

from reconcile.sim.store import Tx


@pytest.fixture
def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return desk_here(tmp_path, monkeypatch, 3)


def test_a_full_disk_during_apply_is_named_and_the_next_apply_loses_nothing(
    tmp_path: Path, desk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state" / "sim.json"
    real_replace = os.replace

    def full_disk(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).resolve() == state.resolve():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    result = run("apply", "-f", desk, "--auto-approve")
    assert result.exit_code == 1, result.output
    assert f"cannot write state {Path('state') / 'sim.json'}: No space left on device" in result.stderr
    assert "the disk is full: free space on it" in result.stderr
    assert "Traceback" not in result.output
    assert not state.exists()
    journal = (tmp_path / "state" / "sim.journal.jsonl").read_text()
    assert "trader0000" in journal, "the created users' intent stays in the journal"

    monkeypatch.setattr(os, "replace", real_replace)  # space is free again
    result = run("apply", "-f", desk, "--auto-approve")
    assert result.exit_code == 0, result.stderr
    recorded = json.loads(state.read_text())["users"]
    listed = json.loads(run("sim", "users").stdout)
    assert sorted(recorded) == sorted(u["name"] for u in listed) == [f"trader{i:04d}" for i in range(3)]
    assert {n: r["userId"] for n, r in recorded.items()} == {u["name"]: u["id"] for u in listed}


@pytest.mark.parametrize("command", ["apply", "plan", "refresh"])
def test_a_state_folder_that_cannot_be_made_is_named(tmp_path: Path, desk: Path, command: str) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be\n")
    extra = ["--auto-approve"] if command == "apply" else []
    result = run(command, "-f", desk, "--state", blocker / "state" / "sim.json", *extra)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert str(blocker) in result.stderr and "Not a directory" in result.stderr
    assert "a part of that path is a file, not a folder" in result.stderr


def test_permission_denied_on_the_state_folder_is_named(
    tmp_path: Path, desk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, who ignores permission bits: make the folder refuse in-process instead.
    real_open = os.open

    def denied(path: str | os.PathLike[str], flags: int, *args: int, **kwargs: object) -> int:
        if Path(path).parent.name == "state" and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    (tmp_path / "state").mkdir()
    monkeypatch.setattr(os, "open", denied)
    result = run("apply", "-f", desk, "--auto-approve")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "Permission denied" in result.stderr and "sim.json.lock" in result.stderr
    assert "check that this user may use that folder" in result.stderr


def test_a_full_disk_under_the_embedded_simulator_is_named_and_loses_nothing(
    tmp_path: Path, desk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = Tx.run

    def full_disk(self: Tx, sql: str, params: tuple[object, ...] = ()) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Tx, "run", full_disk)
    result = run("apply", "-f", desk, "--auto-approve")
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    where = Path("state") / "sim.sqlite"
    assert f"the simulator's database {where} failed: database or disk is full" in result.stderr
    assert "Free space on that disk" in result.stderr

    monkeypatch.setattr(Tx, "run", real_run)  # space is free again
    result = run("apply", "-f", desk, "--auto-approve")
    assert result.exit_code == 0, result.stderr
    listed = json.loads(run("sim", "users").stdout)
    assert sorted(u["name"] for u in listed) == [f"trader{i:04d}" for i in range(3)]


def test_an_embedded_simulator_database_that_cannot_be_opened_is_named(tmp_path: Path, desk: Path) -> None:
    # A folder where the database file should be: no permission bit that root could bypass.
    (tmp_path / "state" / "sim.sqlite").mkdir(parents=True)
    result = run("apply", "-f", desk, "--auto-approve")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    where = Path("state") / "sim.sqlite"
    assert f"the simulator's database {where} failed: unable to open database file" in result.stderr


def test_the_advice_names_the_option_that_moves_the_path_or_none() -> None:
    import errno

    from reconcile.errors import describe_os_error

    denied = PermissionError(errno.EACCES, "Permission denied")
    assert describe_os_error(denied, "write state", "state/sim.json").endswith(
        "or pass --state PATH to one it may use"
    )
    plan = describe_os_error(denied, "write the plan file", "/plans/p.json", option="--out PATH")
    assert "--out PATH" in plan and "--state" not in plan
    bare = describe_os_error(OSError(errno.ENOTDIR, "Not a directory"), "use a file", "a/b", option=None)
    assert bare == (
        "cannot use a file a/b: Not a directory; a part of that path is a file, not a folder: fix the path"
    )
