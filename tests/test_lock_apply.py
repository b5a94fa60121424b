"""Two applies on one state: one waits or fails naming the holder; nothing interleaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("reconcile.manifest.loader")
pytest.importorskip("reconcile.api.connect")

from apply_support import PASSWORD, write_desk

from reconcile.state.lock import read_holder

pytestmark = pytest.mark.slow


def start_apply(
    tmp_path: Path, manifest: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconcile",
            "apply",
            "-f",
            str(manifest),
            "--state",
            str(tmp_path / "state" / "sim.json"),
            "--auto-approve",
            "--batch-size",
            "10",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TRADER_PASSWORD": PASSWORD, **(env or {})},
    )


def sim(tmp_path: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "reconcile", "sim", *args, "--db", str(tmp_path / "state" / "sim.sqlite")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    return done.stdout


def start_paused_apply(tmp_path: Path, manifest: Path, release: Path) -> subprocess.Popen[str]:
    """Start an apply held inside its lock, just before its first create call, until ``release`` exists."""
    first = start_apply(tmp_path, manifest, env={"RECONCILE_TEST_PAUSE_AT": f"before_create_call:{release}"})
    reached = Path(f"{release}.reached")
    for _ in range(6000):  # a bound, not a timing assumption: the pause holds until released
        if reached.exists() or first.poll() is not None:
            break
        time.sleep(0.02)
    assert reached.exists(), first.communicate()
    return first


@pytest.mark.parametrize(
    "removed",
    [(), ("sim.json.lock",), ("sim.json.lock", "sim.json.lock.json")],
    ids=["files-kept", "lock-file-removed", "both-files-removed"],
)
def test_second_apply_fails_naming_the_holder_and_the_first_finishes(
    tmp_path: Path, removed: tuple[str, ...]
) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", 30)
    (tmp_path / "state").mkdir()
    release = tmp_path / "release"
    first = start_paused_apply(tmp_path, manifest, release)
    state = tmp_path / "state" / "sim.json"
    holder = read_holder(state)
    assert holder is not None and holder.pid == first.pid
    for name in removed:  # a stray `rm state/*.lock*` must not open the door
        (tmp_path / "state" / name).unlink()
    second = start_apply(tmp_path, manifest, "--lock-timeout", "0")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1
    assert f"pid {first.pid}" in err
    assert {
        (): "is locked",
        ("sim.json.lock",): "its lock file sim.json.lock was removed while",
        ("sim.json.lock", "sim.json.lock.json"): "sim.json.lock and sim.json.lock.json were removed while",
    }[removed] in err
    if "sim.json.lock.json" not in removed:
        assert holder.lock_id in err
    assert json.loads(sim(tmp_path, "users")) == [], "the refused apply sent nothing"
    release.touch()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    recorded = json.loads(state.read_text())
    assert len(recorded["users"]) == 30 and recorded["serial"] == 3
    assert not list(state.parent.glob("*.lock*")), "no lock file is left beside the state"


def test_two_applies_started_together_with_waiting_create_each_trader_once(tmp_path: Path) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", 30)
    runs = [start_apply(tmp_path, manifest, "--lock-timeout", "120") for _ in range(2)]
    outcomes = [(r.wait(timeout=180), r.stderr.read() if r.stderr else "") for r in runs]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    users = json.loads(sim(tmp_path, "users"))
    names = [u["name"] for u in users]
    assert len(names) == 30 == len(set(names))
    recorded = json.loads((tmp_path / "state" / "sim.json").read_text())
    assert recorded["serial"] == 3
    assert {n: r["userId"] for n, r in recorded["users"].items()} == {u["name"]: u["id"] for u in users}
