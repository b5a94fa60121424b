"""Two `reconcile watch` processes on one PostgreSQL state: one acts, the other takes over when it dies."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.apply_support import served_sim, served_sim_env, sim_admin
from tests.pg_fixtures import new_database
from tests.watch_support import WatchProcess, desk_yaml

INTERVAL = 0.5


def test_one_watch_acts_and_the_standby_takes_over_within_one_interval(tmp_path: Path) -> None:
    dsn = new_database()
    desk = tmp_path / "desk.yaml"
    desk.write_text(desk_yaml([{"name": "trader001"}]))
    with served_sim(tmp_path) as url:
        args = ["-f", "desk.yaml", "--endpoint", url, "--backend", dsn, "--interval", str(INTERVAL)]
        env = served_sim_env(tmp_path)
        first = WatchProcess(args, cwd=tmp_path, env=env)
        second: WatchProcess | None = None
        try:
            first.wait_for("the first watch applying", lambda c: c["outcome"] == "applied")
            second = WatchProcess(args, cwd=tmp_path, env=env)
            second.wait_for("the second watch standing by", lambda c: c["cycle"] >= 3)
            before = len(first.cycles)
            first.wait_for("the first watch still leading", lambda c: c["outcome"] == "in_sync", after=before)
            assert {c["outcome"] for c in second.cycles} == {"standby"}

            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(timeout=30)
            killed_at = time.time()
            took_over = second.wait_for("the takeover", lambda c: c["outcome"] != "standby")
            assert took_over["outcome"] == "in_sync", took_over
            assert took_over["seen_at"] - killed_at <= INTERVAL + took_over["seconds"] + 1.0

            desk.write_text(desk_yaml([{"name": "trader001"}, {"name": "trader002"}]))
            seen = len(second.cycles)
            done = second.wait_for("the new leader applying", lambda c: c["outcome"] == "applied", after=seen)
            assert done["applied"] == {"created": 1}
            assert {u["name"] for u in sim_admin(url, "GET", "users")} >= {"trader001", "trader002"}
            assert second.terminate() == 0
        finally:
            first.close()
            if second is not None:
                second.close()
