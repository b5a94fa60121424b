"""The end-to-end flow against a real demo or staging endpoint; skipped without credentials.

Set TRADOVATE_USERNAME, TRADOVATE_PASSWORD, TRADOVATE_APP_ID, TRADOVATE_CID, TRADOVATE_SEC and
RECONCILE_LIVE_ENVIRONMENT (demo or staging), RECONCILE_LIVE_DATA_ACCOUNT_ID, then
``pytest -m live``. It creates two uniquely named evaluation users, checks that a second plan is
empty, and cancels them again.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
from cli_support import run_child

pytestmark = pytest.mark.live

_NEEDED = (
    "TRADOVATE_USERNAME",
    "TRADOVATE_PASSWORD",
    "RECONCILE_LIVE_ENVIRONMENT",
    "RECONCILE_LIVE_DATA_ACCOUNT_ID",
)


@pytest.fixture
def live_env() -> dict[str, str]:
    missing = [name for name in _NEEDED if not os.environ.get(name)]
    if missing:
        pytest.skip(f"live endpoint not configured ({', '.join(missing)} unset)")
    return {**os.environ, "LIVE_TRADER_PASSWORD": "Live-Test-" + secrets.token_hex(8)}


def reconcile(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_child(*args, cwd=tmp_path, env=env)


def test_apply_then_plan_is_empty_then_cancel(tmp_path: Path, live_env: dict[str, str]) -> None:
    suffix = secrets.token_hex(4)
    environment = live_env["RECONCILE_LIVE_ENVIRONMENT"]
    users = "".join(
        f"  - {{name: rctest{suffix}{i}, email: rctest{suffix}{i}@example.com, "
        f"password: {{env: LIVE_TRADER_PASSWORD}}, firstName: Reconcile, lastName: Test{i}}}\n"
        for i in range(2)
    )
    head = (
        f"apiVersion: reconcile/v1\nenvironment: {environment}\n"
        f"partner: {{dataAccountId: {live_env['RECONCILE_LIVE_DATA_ACCOUNT_ID']}}}\n"
    )
    manifest = tmp_path / "live.yaml"
    manifest.write_text(head + "users:\n" + users)
    state = str(tmp_path / "state" / f"{environment}.json")
    applied = reconcile(tmp_path, live_env, "apply", "-f", str(manifest), "--state", state, "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    planned = reconcile(
        tmp_path, live_env, "plan", "-f", str(manifest), "--state", state, "--detailed-exitcode"
    )
    assert planned.returncode == 0, planned.stdout + planned.stderr
    manifest.write_text(head + "users: []\n")
    cancelled = reconcile(
        tmp_path,
        live_env,
        "apply",
        "-f",
        str(manifest),
        "--state",
        state,
        "--auto-approve",
        "--allow-cancellations",
        "2",
    )
    assert cancelled.returncode == 0, cancelled.stderr
