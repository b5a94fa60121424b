"""A `reconcile watch` process for end-to-end tests: its cycle lines, read as they come."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.poll_support import polling

Cycle = dict[str, Any]


def desk_yaml(users: list[dict[str, Any]], *, max_cancellations: int = 25, percent: float = 10.0) -> str:
    """A sim manifest of ``users`` (name, email, entitlements, password, expiresOn)."""
    lines = [
        "apiVersion: reconcile/v1",
        "environment: sim",
        "partner: {dataAccountId: 11111, entitlements: {simplus: 12345, tradingview: 31}}",
        "defaults: {tradovateSubscriptionPlanId: 7}",
        f"policy: {{maxCancellations: {max_cancellations}, maxCancellationPercent: {percent}}}",
        "users:",
    ]
    for user in users:
        password = user.get("password", "{env: TRADER_PASSWORD}")
        lines.append(
            f"  - {{name: {user['name']}, email: {user.get('email', user['name'] + '@example.com')}, "
            f"password: {password}, firstName: Test, lastName: User, "
            f"entitlements: [{', '.join(user.get('entitlements', []))}]"
            + (f", expiresOn: {user['expiresOn']}" if "expiresOn" in user else "")
            + "}"
        )
    return "\n".join(lines) + "\n"


class WatchProcess:
    """``reconcile watch ARGS`` in ``cwd``; ``cycles`` fills as its JSON lines arrive."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.stderr_path = cwd / f"watch-{time.monotonic_ns()}.err"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconcile", "watch", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.cycles: list[Cycle] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            cycle = json.loads(line)
            cycle["seen_at"] = time.time()
            self.cycles.append(cycle)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_for(
        self, what: str, test: Callable[[Cycle], bool], *, after: int = 0, timeout: float = 60
    ) -> Cycle:
        """The first cycle from index ``after`` on that passes ``test``."""
        for _ in polling(what, timeout=timeout, interval=0.05, on_timeout=self.stop_and_tell):
            for cycle in self.cycles[after:]:
                if test(cycle):
                    return cycle
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"watch exited {self.proc.returncode} before {what}:\n{self.stderr()}")
        raise AssertionError("unreachable")

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def stop_and_tell(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return f"cycles: {self.cycles[-5:]}\nstderr:\n{self.stderr()[-3000:]}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()
