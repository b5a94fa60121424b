"""Helpers for tests that run against the simulator (used by tests/conftest.py's fixtures)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from reconcile.contract import ContractViolation, operation_path, validate_response
from reconcile.sim.admin import normalise_path
from reconcile.sim.config import SimConfig
from reconcile.sim.faults import FAULT_HEADER
from reconcile.sim.transport import SimTransport


class ManualClock:
    """A real-time clock stand-in that moves only when told: ``clock.advance(seconds)``."""

    def __init__(self, start: float = 1_798_761_600.0) -> None:  # 2027-01-01T00:00:00Z
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ContractCheckingTransport(SimTransport):
    """A :class:`SimTransport` that checks every partner-API answer against the contract.

    Violations raise :class:`ContractViolation` at once and stay in :attr:`violations`, so a
    fixture can fail the test even when the code under test swallowed the exception. Answers
    of ``/_sim/`` routes and deliberately injected faults (``X-Sim-Fault``) are not checked.
    """

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.violations: list[str] = []
        self.checked = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        path = request.url.path
        if normalise_path(path).startswith("/_sim/") or FAULT_HEADER in response.headers:
            return response
        if response.status_code == 404 and not _in_contract(path):
            return response  # the simulator rightly refuses a path the API does not have
        response.read()
        try:
            body = json.loads(response.content) if response.content else None
            validate_response(request.method, path, response.status_code, body)
        except (ContractViolation, ValueError) as exc:
            self.violations.append(f"{request.method} {path}: {exc}")
            raise ContractViolation(f"{request.method} {path}: {exc}") from None
        self.checked += 1
        return response


def _in_contract(path: str) -> bool:
    try:
        operation_path(path)
    except ContractViolation:
        return False
    return True


def login(client: httpx.Client, config: SimConfig | None = None) -> str:
    """Log in as the simulated organization's admin and return the access token."""
    config = config or SimConfig()
    response = client.post(
        "/auth/accesstokenrequest",
        json={"name": config.admin_name, "password": config.admin_password, "appId": "reconcile-tests"},
    )
    body = response.json()
    if response.status_code != 200 or "accessToken" not in body:
        raise AssertionError(f"login to the simulator failed: HTTP {response.status_code} {body}")
    token: str = body["accessToken"]
    return token
