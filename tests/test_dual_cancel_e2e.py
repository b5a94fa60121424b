"""Two `reconcile sim serve` hosts: apply cancels on both, and finishes a cancel the companion refused."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from apply_support import served_sim, served_sim_env, write_desk
from apply_support import sim_admin as admin

from reconcile.state.file import FileStateStore

pytestmark = pytest.mark.slow


def _apply(tmp_path: Path, manifest: Path, primary: str, companion: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconcile", "apply", "-f", str(manifest),
         "--state", str(tmp_path / "state" / "sim.json"), "--endpoint", primary,
         "--companion-endpoint", companion, "--auto-approve", "--allow-cancellations", "5"],
        capture_output=True, text=True, env=served_sim_env(tmp_path), cwd=tmp_path, check=False,
    )  # fmt: skip


def _status(url: str) -> dict[str, str]:
    return {u["name"]: u["status"] for u in admin(url, "GET", "users")}


def test_cancel_reaches_both_hosts_and_a_companion_failure_is_retried(tmp_path: Path) -> None:
    (tmp_path / "primary").mkdir()
    (tmp_path / "companion").mkdir()
    manifest = write_desk(tmp_path / "desk.yaml", 3)
    with served_sim(tmp_path / "primary") as primary:
        created = _apply(tmp_path, manifest, primary, "http://127.0.0.1:9/v1")  # no cancel: never called
        assert created.returncode == 0, created.stderr
        # The companion host knows the same users under the same ids (a firm's users exist on both).
        with (
            closing(sqlite3.connect(tmp_path / "primary" / "served.sqlite")) as src,
            closing(sqlite3.connect(tmp_path / "companion" / "served.sqlite")) as dst,
        ):
            src.backup(dst)
        with served_sim(tmp_path / "companion") as companion:
            write_desk(manifest, 2)
            done = _apply(tmp_path, manifest, primary, companion)
            assert done.returncode == 0, done.stderr
            assert "1 cancelled" in done.stdout
            assert _status(primary)["trader0002"] == _status(companion)["trader0002"] == "Closed"
            assert _status(companion)["trader0001"] == "Active"

            # Every attempt of the companion's call fails: the user fails, naming that host.
            admin(
                companion, "POST", "faults", {"kind": "http500", "path": "/user/canceleverything", "count": 5}
            )
            write_desk(manifest, 1)
            failed = _apply(tmp_path, manifest, primary, companion)
            assert failed.returncode == 1
            assert f"trader0001: cancel_everything: on {companion}: canceleverything" in failed.stderr
            assert _status(primary)["trader0001"] == "Closed"
            assert _status(companion)["trader0001"] == "Active"
            record = FileStateStore(tmp_path / "state" / "sim.json").load("sim").users["trader0001"]
            assert record.lifecycle == "active" and record.cancelledOn == [primary]
            audit = [json.loads(x) for x in (tmp_path / "state" / "sim.audit.jsonl").read_text().splitlines()]
            last = [a for a in audit if a["action"] == "cancel_everything"][-2:]
            assert [(a["detail"]["host"], a["outcome"]) for a in last] == [
                (primary, "cancelled"),
                (companion, "refused"),
            ]

            retried = _apply(tmp_path, manifest, primary, companion)
            assert retried.returncode == 0, retried.stderr
            assert "cancel still to finish" in retried.stderr + retried.stdout
            assert _status(companion)["trader0001"] == "Closed"
            record = FileStateStore(tmp_path / "state" / "sim.json").load("sim").users["trader0001"]
            assert record.lifecycle == "cancelled" and record.cancelledOn == sorted([primary, companion])
