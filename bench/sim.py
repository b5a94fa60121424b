"""Benchmark the simulator over real HTTP on loopback: 100 createevaluationusers calls x 100 users.

Prints requests/s and users/s. Limits are off (the published 100 calls/hour would stop it).
Run: .venv/bin/python bench/sim.py [--calls 100] [--batch 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from reconcile.sim.app import create_app
from reconcile.sim.config import SimConfig
from reconcile.sim.server import serve
from reconcile.sim.testing import login


def main() -> None:
    """Create calls x batch users through a loopback server and print the rates."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(SimConfig(limits_enabled=False), Path(tmp) / "sim.sqlite")
        with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            client.headers["Authorization"] = f"Bearer {login(client)}"
            started = time.perf_counter()
            created = 0
            for call in range(args.calls):
                users = [
                    {
                        "name": f"bench{call:04d}x{i:03d}",
                        "email": f"bench{call:04d}x{i:03d}@example.com",
                        "password": "Bench-Passw0rd",
                        "firstName": "Bench",
                        "lastName": f"User{i}",
                        "tradovateSubscriptionPlanId": 7,
                        "entitlementIds": [31],
                    }
                    for i in range(args.batch)
                ]
                response = client.post("/user/createevaluationusers", json={"users": users})
                response.raise_for_status()
                created += sum("userId" in r for r in response.json()["results"])
            elapsed = time.perf_counter() - started
    print(f"calls: {args.calls} x {args.batch} users over http on loopback")
    print(f"users created: {created}")
    print(f"elapsed: {elapsed:.2f} s")
    print(f"requests/s: {args.calls / elapsed:.1f}")
    print(f"users/s: {created / elapsed:.0f}")


if __name__ == "__main__":
    main()
