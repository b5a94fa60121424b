"""SIGKILL `reconcile apply` at many points against `reconcile sim serve`; a second apply converges."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("reconcile.loader")
pytest.importorskip("reconcile.api.connect")

from apply_support import served_sim_env, write_desk

from reconcile.state import FileStateStore

pytestmark = pytest.mark.slow

DESK = 25
LEAVING = 10
SIGNED = 15


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconcile",
            "sim",
            "serve",
            "--port",
            "0",
            "--no-limits",
            "--db",
            str(tmp_path / "served.sqlite"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/v1", line)
    assert match, line
    yield match.group(0)
    proc.terminate()
    proc.wait(timeout=10)


def apply(
    tmp_path: Path, url: str, manifest: Path, crash: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = served_sim_env(tmp_path)
    env.pop("RECONCILE_TEST_CRASH_AT", None)
    if crash:
        env["RECONCILE_TEST_CRASH_AT"] = crash
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "reconcile",
            "apply",
            "-f",
            str(manifest),
            "--state",
            str(tmp_path / "state" / "sim.json"),
            "--endpoint",
            url,
            "--auto-approve",
            "--batch-size",
            "10",
            "--allow-cancellations",
            str(LEAVING),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )


def plan_is_empty(tmp_path: Path, url: str, manifest: Path) -> bool:
    """True when `reconcile plan --detailed-exitcode` finds no change (agreement re-checks are none)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "reconcile",
            "plan",
            "-f",
            str(manifest),
            "--state",
            str(tmp_path / "state" / "sim.json"),
            "--endpoint",
            url,
            "--detailed-exitcode",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    return done.returncode == 0


def admin(url: str, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
    base = url.rsplit("/v1", 1)[0]
    response = httpx.request(method, f"{base}/_sim/{route}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def assert_converged(tmp_path: Path, url: str, *, active: int, granted: int) -> None:
    users = admin(url, "GET", "users")
    names = [u["name"] for u in users]
    assert len(names) == len(set(names)), "a trader was created twice"
    state = FileStateStore(tmp_path / "state" / "sim.json").load("sim")
    by_name = {u["name"]: u for u in users}
    assert sorted(state.users) == sorted(names)
    for name, record in state.users.items():
        sim_user = by_name[name]
        assert record.userId == sim_user["id"]
        assert (record.lifecycle == "cancelled") == (sim_user["status"] == "Closed")
        plugins = {
            r["refId"] for r in sim_user["records"] if r["kind"] == "userPlugin" and not r["cancelled"]
        }
        grant = record.entitlements.get("simplus")
        if record.lifecycle == "active":
            assert (grant is not None and grant.status == "granted") == (12345 in plugins), name
            signals = sim_user["agreementSignals"]
            if 12345 in plugins:  # granted: this user's own signal was completed
                assert signals and all(s.get("completed") for s in signals), name
            else:  # not granted: the user never signed
                assert not signals, name
            assert sim_user["contactInfo"] is not None and record.contact is not None
    assert sum(1 for r in state.users.values() if r.lifecycle == "active") == active
    assert (
        sum(
            1
            for r in state.users.values()
            if (g := r.entitlements.get("simplus")) is not None and g.status == "granted"
        )
        == granted
    )


# Points in the first apply (creates in 3 batches of 10, then contacts, then grants of the signers)
# and in a later apply that cancels the users who left the desk.
@pytest.mark.parametrize(
    "crash",
    [
        "before_create_call:1",
        "before_create_call:2",
        "after_create_call:1",
        "after_create_call:3",
        "after_create_save:2",
        "after_updates_call:1",
        "before_grant_call:1",
        "after_grant_call:1",
        "before_cancel_call:1",
        "after_cancel_call:1",
    ],
)
def test_killed_apply_converges_on_the_next_run(tmp_path: Path, server: str, crash: str) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", DESK, simplus=True, contact=True)
    if "grant" in crash or "cancel" in crash:
        first = apply(tmp_path, server, manifest)  # everyone created; Sim+ awaits the agreement
        assert first.returncode == 0, first.stderr
        for i in range(SIGNED):
            admin(server, "POST", "agreements", {"name": f"trader{i:04d}"})
    if "cancel" in crash:
        assert apply(tmp_path, server, manifest).returncode == 0
        write_desk(manifest, DESK - LEAVING, simplus=True, contact=True)
    killed = apply(tmp_path, server, manifest, crash=crash)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    done = apply(tmp_path, server, manifest)
    assert done.returncode == 0, done.stderr
    granted = SIGNED if "grant" in crash or "cancel" in crash else 0
    active = DESK - LEAVING if "cancel" in crash else DESK
    assert_converged(tmp_path, server, active=active, granted=min(granted, active))
    assert plan_is_empty(tmp_path, server, manifest)


@pytest.mark.parametrize("path", ["/user/createevaluationusers", "/user/canceleverything"])
def test_applied_then_dropped_answers_are_settled_without_doubles(
    tmp_path: Path, server: str, path: str
) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", DESK, simplus=True, contact=True)
    if "cancel" in path:
        assert apply(tmp_path, server, manifest).returncode == 0
        write_desk(manifest, DESK - LEAVING, simplus=True, contact=True)
    admin(server, "POST", "faults", {"kind": "drop_after_apply", "path": path, "count": 1, "seconds": 0})
    result = apply(tmp_path, server, manifest)
    assert result.returncode == 0, result.stderr
    assert_converged(tmp_path, server, active=DESK - LEAVING if "cancel" in path else DESK, granted=0)
    assert plan_is_empty(tmp_path, server, manifest)
