"""`reconcile watch` as a real process against `reconcile sim serve`: signing, edits, SIGTERM, metrics."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.apply_support import served_sim, served_sim_env, sim_admin
from tests.cli_support import call
from tests.poll_support import polling
from tests.watch_support import WatchProcess, desk_yaml

INTERVAL = 1.0
SLACK = 1.0  # process start-up and scheduling on a loaded machine


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[str]:
    with served_sim(tmp_path) as url:
        yield url


def _has_simplus(url: str, name: str) -> bool:
    users = {u["name"]: u for u in sim_admin(url, "GET", "users")}
    records = users[name]["records"]
    return any(r["refId"] == 12345 and not r["cancelled"] for r in records)


def _start(tmp_path: Path, url: str, *more: str, env: dict[str, str] | None = None) -> WatchProcess:
    args = ["-f", "desk.yaml", "--endpoint", url, "--interval", str(INTERVAL), *more]
    return WatchProcess(args, cwd=tmp_path, env=env or served_sim_env(tmp_path))


def test_a_signed_trader_has_simplus_within_two_intervals_and_metrics_count_it(
    tmp_path: Path, sim: str
) -> None:
    desk = tmp_path / "desk.yaml"
    desk.write_text(
        desk_yaml(
            [
                {"name": "trader001", "entitlements": ["simplus", "tradingview"]},
                {"name": "trader002", "entitlements": ["simplus"], "password": "{generate: true}"},
            ]
        )
    )
    watch = _start(tmp_path, sim, "--metrics-port", "0", "--generated-passwords", "passwords")
    try:
        first = watch.wait_for("the users created", lambda c: c["outcome"] == "applied")
        assert first["applied"]["created"] == 2 and first["awaiting_agreement"] == 2
        # The cycle that created a {generate: true} user names its own 0600 file.
        written = tmp_path / first["generated_passwords"]
        assert stat.S_IMODE(written.stat().st_mode) == 0o600 and "trader002" in written.read_text()
        waiting = watch.wait_for("a cycle in sync", lambda c: c["outcome"] == "in_sync")
        assert waiting["generated_passwords"] is None and waiting["awaiting_agreement"] == 2

        seen = len(watch.cycles)  # from here on: the sign may land before the command returns
        subprocess.run(
            [sys.executable, "-m", "reconcile", "sim", "sign", "trader001", "--url", sim],
            check=True,
            capture_output=True,
        )
        signed_at = time.time()
        granted = watch.wait_for("Sim+ granted", lambda c: c["applied"].get("granted", 0) >= 1, after=seen)
        assert granted["seen_at"] - signed_at <= 2 * INTERVAL + granted["seconds"] + SLACK
        assert _has_simplus(sim, "trader001") and not _has_simplus(sim, "trader002")
        assert granted["awaiting_agreement"] == 1

        base = watch.stderr().split("metrics on ", 1)[1].split("/metrics", 1)[0]
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert 'reconcile_watch_actions_applied_total{kind="created"} 2.0' in metrics
        assert 'reconcile_watch_actions_applied_total{kind="granted"} 1.0' in metrics
        assert "reconcile_watch_awaiting_agreement 1.0" in metrics
        assert "reconcile_watch_last_success_timestamp_seconds" in metrics
        assert "reconcile_watch_cycle_duration_seconds_count" in metrics
        health = httpx.get(f"{base}/healthz", timeout=10)
        assert health.status_code == 200 and "cycle" in health.text
        assert watch.terminate() == 0
    finally:
        watch.close()


def test_a_manifest_edit_is_applied_within_one_interval(tmp_path: Path, sim: str) -> None:
    desk = tmp_path / "desk.yaml"
    desk.write_text(desk_yaml([{"name": "trader001"}]))
    watch = _start(tmp_path, sim)
    try:
        watch.wait_for("a cycle in sync", lambda c: c["outcome"] == "in_sync")
        # The lock is held per cycle: a plan gets it between two.
        planned = subprocess.run(
            [
                sys.executable,
                "-m",
                "reconcile",
                "plan",
                "-f",
                "desk.yaml",
                "--endpoint",
                sim,
                "--lock-timeout",
                "30",
            ],
            cwd=tmp_path,
            env=served_sim_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert planned.returncode == 0 and "No changes." in planned.stdout, planned.stderr
        seen = len(watch.cycles)
        desk.write_text(
            desk_yaml([{"name": "trader001", "email": "new001@example.com"}, {"name": "trader002"}])
        )
        edited_at = time.time()
        done = watch.wait_for("the edit applied", lambda c: c["outcome"] == "applied", after=seen)
        assert done["applied"] == {"created": 1, "emails_changed": 1}
        # The cycle running at the edit may have read the old files; the next one starts within one interval.
        longest = max(c["seconds"] for c in watch.cycles[seen - 1 :])
        assert done["seen_at"] - edited_at <= INTERVAL + 2 * longest + SLACK
        users = {u["name"]: u for u in sim_admin(sim, "GET", "users")}
        assert users["trader001"]["email"] == "new001@example.com"
        assert watch.terminate() == 0
    finally:
        watch.close()


def test_sigterm_mid_apply_stops_after_the_call_in_flight_and_leaves_an_empty_journal(
    tmp_path: Path, sim: str
) -> None:
    (tmp_path / "desk.yaml").write_text(desk_yaml([{"name": f"trader{i:03d}"} for i in range(40)]))
    # Every create call is applied, then answered a second later: SIGTERM lands while one is in flight.
    fault = {"kind": "slow", "path": "/user/createevaluationusers", "count": 10, "seconds": 1.0}
    sim_admin(sim, "POST", "faults", fault)
    watch = _start(tmp_path, sim, "--batch-size", "10")
    journal = tmp_path / "state" / "sim.journal.jsonl"
    try:
        for _ in polling("the first create call in flight", interval=0.02, on_timeout=watch.stop_and_tell):
            if any(u["name"].startswith("trader") for u in sim_admin(sim, "GET", "users")):
                break
        assert watch.terminate() == 0, watch.stderr()
    finally:
        watch.close()
    assert not journal.exists() or not journal.read_text().strip()
    (stopped,) = watch.cycles
    assert stopped["outcome"] == "stopped" and "SIGTERM" in stopped["message"]
    created = {u["name"]: u["id"] for u in sim_admin(sim, "GET", "users") if u["name"].startswith("trader")}
    state = json.loads((tmp_path / "state" / "sim.json").read_text())
    assert len(created) == 10  # the call in flight finished and was recorded; no other was sent
    assert {name: record["userId"] for name, record in state["users"].items()} == created
    audit = (tmp_path / "state" / "sim.audit.jsonl").read_text().splitlines()
    assert any(json.loads(line)["action"] == "stop" for line in audit)


def test_a_condition_that_needs_a_person_stops_the_loop_with_exit_1(tmp_path: Path, sim: str) -> None:
    (tmp_path / "desk.yaml").write_text(desk_yaml([{"name": "trader001"}]))
    env = {**served_sim_env(tmp_path), "TRADOVATE_PASSWORD": "not-the-password"}
    watch = _start(tmp_path, sim, env=env)
    try:
        assert watch.proc.wait(timeout=60) == 1
        watch._reader.join(timeout=10)
    finally:
        watch.close()
    (cycle,) = watch.cycles
    assert cycle["outcome"] == "needs_person"
    assert "Traceback" not in watch.stderr() and "Error:" in watch.stderr()


def test_allow_cancellations_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "desk.yaml").write_text(desk_yaml([{"name": "trader001"}]))
    code, _out, err = call(capsys, "watch", "-f", "desk.yaml", "--allow-cancellations", "5")
    assert code == 1 and "lives within the policy budgets" in err
    assert not (tmp_path / "state").exists()
