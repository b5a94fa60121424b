"""Helpers shared by the apply, crash and lock end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import sim_serve_argv

PASSWORD = "Tr4der-Password!"


def write_desk(path: Path, n: int, *, simplus: bool = False, contact: bool = False, start: int = 0) -> Path:
    users = []
    for i in range(start, start + n):
        users.append(
            f"""  - name: trader{i:04d}
    email: trader{i:04d}@example.com
    password: {{env: TRADER_PASSWORD}}
    firstName: Test
    lastName: User{i}
"""
            + ("    entitlements: [simplus]\n" if simplus else "")
            + (
                f'    contact: {{phone: "+1212555{i:04d}", streetAddress1: {i} Main St, city: New York, '
                'state: NY, postCode: "10001", country: US}\n'
                if contact
                else ""
            )
        )
    path.write_text(
        "apiVersion: reconcile/v1\nenvironment: sim\npartner:\n  dataAccountId: 11111\n"
        "  entitlements:\n    simplus: 12345\n    tradingview: 31\n"
        "defaults:\n  tradovateSubscriptionPlanId: 7\nusers:\n" + "".join(users)
    )
    return path


def desk_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, **options: bool) -> Path:
    """Write a desk of ``n`` traders in ``tmp_path``, work there, and set their password variable."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADER_PASSWORD", PASSWORD)
    return write_desk(tmp_path / "desk.yaml", n, **options)


def served_sim_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a `reconcile apply --endpoint` subprocess against `reconcile sim serve`."""
    import os

    return {
        **os.environ,
        "TRADER_PASSWORD": PASSWORD,
        # The simulator's default organization admin; app id, cid and secret are not checked.
        "TRADOVATE_USERNAME": "partner-admin",
        "TRADOVATE_PASSWORD": "sim-admin-password",
        "TRADOVATE_APP_ID": "reconcile-tests",
        "TRADOVATE_APP_VERSION": "1.0",
        "TRADOVATE_CID": "1",
        "TRADOVATE_SEC": "not-a-secret",
        "TRADOVATE_DEVICE_ID": "reconcile-tests",
        # Keep the token cache out of the user's home.
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


@contextlib.contextmanager
def served_sim(folder: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `reconcile sim serve` (no rate limits) on a free loopback port; yield its /v1 base URL."""
    proc = subprocess.Popen(
        sim_serve_argv(folder / "served.sqlite", "--no-limits"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=folder,
        env=None if env is None else {**os.environ, **env},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/v1", line)
        assert match, line
        yield match.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def sim_admin(url: str, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
    """Call the served simulator's /_sim/ admin API (sign agreements, arm faults, list users)."""
    import httpx

    base = url.rsplit("/v1", 1)[0]
    response = httpx.request(method, f"{base}/_sim/{route}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()
