"""Helpers for the account tests: a client of the in-process simulator and a desk to apply to."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from reconcile.api.auth import TokenAuth
from reconcile.api.client import PartnerClient
from reconcile.api.credentials import Credentials
from reconcile.api.models import EvaluationUser
from reconcile.apply import side_files
from reconcile.apply.executor import execute
from reconcile.apply.run import ExecuteOptions, Run
from reconcile.planning.plan import Action, CreateAccount
from reconcile.sim import admin
from reconcile.sim.app import SimApp
from reconcile.sim.testing import ContractCheckingTransport
from reconcile.state.file import FileStateStore
from reconcile.state.model import AccountRecord, State, UserRecord

BASE = "http://sim.test/v1"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = date(2025, 6, 2)
RISK = {"trailingMaxDrawdown": 2500.0, "dailyLossAutoLiq": 1000.0, "doNotUnlock": True}


@pytest.fixture
def client(sim_app: SimApp, sim_transport: ContractCheckingTransport) -> Iterator[PartnerClient]:
    creds = Credentials(username=sim_app.config.admin_name, password=sim_app.config.admin_password)
    with PartnerClient(
        BASE, transport=sim_transport, auth=TokenAuth(creds, endpoint=BASE), sleep=lambda _s: None
    ) as partner:
        yield partner


class Desk:
    """A state file, its journal and audit log, and the client: what one apply needs."""

    def __init__(self, tmp_path: Path, client: PartnerClient, app: SimApp) -> None:
        self.store = FileStateStore(tmp_path / "state" / "sim.json")
        self.journal, self.audit = side_files(self.store.path, "sim")
        self.client = client
        self.app = app
        self.state: State = self.store.load("sim")

    def trader(self, name: str) -> int:
        """Create ``name`` at the API and record it in state; return its id."""
        user = EvaluationUser(
            name=name, email=f"{name}@example.com", password="Trader-Pa55!", firstName="T", lastName="T"
        )
        user_id = self.client.create_evaluation_users([user])[0].userId
        assert user_id is not None
        self.state.users[name] = UserRecord(
            userId=user_id, email=f"{name}@example.com", firstName="T", lastName="T", createdAt=NOW,
            updatedAt=NOW,
        )  # fmt: skip
        self.state = self.store.save(self.state)
        return user_id

    def apply(
        self, actions: Sequence[Action], *, batch_size: int = 100, passwords: dict[str, str] | None = None
    ) -> tuple[Run, int]:
        """Execute ``actions``; return the run and the number of requests it sent."""
        run = self.run()
        before = self.client.requests_sent
        try:
            execute(run, actions, ExecuteOptions(passwords=passwords or {}, batch_size=batch_size))
        finally:
            self.state = run.state
        return run, self.client.requests_sent - before

    def run(self) -> Run:
        """A run on the stored state."""
        state = self.store.load("sim")
        return Run(store=self.store, state=state, client=self.client, journal=self.journal, audit=self.audit)

    def edit(self, name: str, **update: Any) -> AccountRecord:
        """Hand-edit account ``name``'s record in the stored state; return the edited record."""
        state = self.store.load("sim")
        state.accounts[name] = state.accounts[name].model_copy(update=update)
        self.state = self.store.save(state, changed=(), changed_accounts=[name])
        return self.state.accounts[name]

    def sim(self, name: str) -> dict[str, Any]:
        (found,) = [a for a in admin.dump_accounts(self.app.store, self.app.config) if a["name"] == name]
        return found

    def record(self, name: str) -> AccountRecord:
        saved = self.store.read()
        assert saved is not None
        return saved.accounts[name]


@pytest.fixture
def desk(tmp_path: Path, client: PartnerClient, sim_app: SimApp) -> Desk:
    client.list_accounts()  # log in now, so request counts below hold only the applier's calls
    return Desk(tmp_path, client, sim_app)


def create(user: str, account: str, user_id: int | None, **fields: Any) -> CreateAccount:
    values: dict[str, Any] = {
        "template": "eval50k", "templateAccountId": 5001, "initialBalance": 50000.0, "risk": RISK,
    }  # fmt: skip
    return CreateAccount(user=user, userId=user_id, account=account, **(values | fields))


def made(desk: Desk, user: str, names: Sequence[str]) -> dict[str, AccountRecord]:
    """Create ``names`` for a new trader ``user`` through the applier; return their records."""
    user_id = desk.trader(user)
    run, _ = desk.apply([create(user, n, user_id) for n in names])
    assert run.result.ok, run.result.failures
    return {n: run.state.accounts[n] for n in names}


def account_desk_yaml(users: dict[str, list[dict[str, Any]]]) -> str:
    """A manifest for environment sim: ``users`` maps trader names to their account entries."""
    import json

    lines = [
        "apiVersion: reconcile/v1",
        "environment: sim",
        "partner:",
        "  dataAccountId: 11111",
        "  entitlements: {simplus: 12345}",
        "  accountTemplates:",
        "    eval50k: {templateAccountId: 5001, initialBalance: 50000, risk: " + json.dumps(RISK) + "}",
        "    eval100k: {templateAccountId: 5002, initialBalance: 100000}",
        "  riskCategories: {standard: 31, halted: 32}",
        "defaults: {tradovateSubscriptionPlanId: 7}",
        "policy: {maxCancellations: 2, maxCancellationPercent: 100}",
        "users:",
    ]
    for name, accounts in users.items():
        lines += [
            f"  - name: {name}",
            f"    email: {name}@example.com",
            "    password: {env: TRADER_PASSWORD}",
            "    firstName: Test",
            "    lastName: Trader",
            f"    accounts: {json.dumps(accounts)}",
        ]
    return "\n".join(lines) + "\n"


def accounts_for(user: int, count: int, **fields: Any) -> list[dict[str, Any]]:
    """``count`` eval50k accounts named ``FIRM<user><i>`` with ``fields`` added to each."""
    return [{"name": f"FIRM{user:03d}{i:03d}", "template": "eval50k", **fields} for i in range(count)]
