"""Builders shared by the planner, policy, render and plan tests, and the shared contact (no tests)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from reconcile.manifest.models import SIMPLUS, Manifest
from reconcile.planning.plan import (
    CreateUser,
    GrantEntitlement,
    Plan,
    PlanBinding,
    UpdateContact,
    UpdateEmail,
)
from reconcile.state.model import ContactRecord, GrantRecord, State, UserRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SIMPLUS_ID = 12345
TRADINGVIEW_ID = 31
DATA_ACCOUNT = 11111

BINDING = PlanBinding(
    manifest_digest="sha256:" + "ab" * 32,
    state_lineage="00000000-0000-4000-8000-000000000000",
    state_serial=3,
    environment="sim",
    endpoint="sim:embedded",
    tool_version="0.1.0",
)

CONTACT_NY: dict[str, Any] = {
    "phone": "+12125550100",
    "streetAddress1": "123 Main St",
    "city": "New York",
    "state": "NY",
    "postCode": "10001",
    "country": "US",
}


def user(name: str, **overrides: Any) -> dict[str, Any]:
    """A valid active manifest user entry (as YAML would give it)."""
    entry: dict[str, Any] = {
        "name": name,
        "email": f"{name}@example.com",
        "password": {"generate": True},
        "firstName": "Test",
        "lastName": "User",
    }
    entry.update(overrides)
    return entry


def manifest_data(*users: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A manifest document for environment sim with Sim+ and TradingView defined."""
    data: dict[str, Any] = {
        "apiVersion": "reconcile/v1",
        "environment": "sim",
        "partner": {
            "dataAccountId": DATA_ACCOUNT,
            "entitlements": {SIMPLUS: SIMPLUS_ID, "tradingview": TRADINGVIEW_ID},
        },
        "defaults": {"tradovateSubscriptionPlanId": 7},
        "users": list(users),
    }
    data.update(top)
    return data


def manifest(*users: dict[str, Any], **top: Any) -> Manifest:
    """:func:`manifest_data`, validated."""
    return Manifest.model_validate(manifest_data(*users, **top))


def write_manifest(path: Path, users: list[dict[str, Any]], **top: Any) -> Path:
    """:func:`manifest_data` written as a YAML file, for the command-line tests."""
    path.write_text(yaml.safe_dump(manifest_data(*users, **top), sort_keys=False), encoding="utf-8")
    return path


def record(user_id: int, name: str, **overrides: Any) -> UserRecord:
    """A state record matching :func:`user` with the same name."""
    data: dict[str, Any] = {
        "userId": user_id,
        "email": f"{name}@example.com",
        "firstName": "Test",
        "lastName": "User",
        "tradovateSubscriptionPlanId": 7,
        "createdAt": T0,
        "updatedAt": T0,
    }
    data.update(overrides)
    return UserRecord.model_validate(data)


def grant(entitlement_id: int, status: str = "granted") -> GrantRecord:
    return GrantRecord(entitlementId=entitlement_id, status=status, updatedAt=T0)  # type: ignore[arg-type]


def state(**users: UserRecord) -> State:
    return State(environment="sim", lineage=BINDING.state_lineage, serial=BINDING.state_serial, users=users)


def apply_perfectly(plan: Plan, before: State, *, signed: frozenset[str] = frozenset()) -> State:
    """Apply ``plan`` to ``before`` the way a flawless partner API would, and record it.

    Created users get the next free id; a Sim+ grant becomes ``granted`` when the user is in
    ``signed`` and ``awaiting_agreement`` otherwise; cancellations mark users cancelled.
    """
    users = {name: rec.model_copy(deep=True) for name, rec in before.users.items()}
    next_id = max((r.userId for r in users.values()), default=1000) + 1
    for action in plan.actions:
        if isinstance(action, CreateUser):
            users[action.user] = UserRecord(
                userId=next_id,
                email=action.email,
                firstName=action.firstName,
                lastName=action.lastName,
                tradovateSubscriptionPlanId=action.tradovateSubscriptionPlanId,
                entitlements={
                    name: grant(eid)
                    for name, eid in zip(action.entitlements, action.entitlementIds, strict=True)
                },
                createdAt=T0,
                updatedAt=T0,
            )
            next_id += 1
        elif isinstance(action, UpdateEmail):
            users[action.user] = users[action.user].model_copy(update={"email": action.email})
        elif isinstance(action, UpdateContact):
            payload = action.contact.model_dump()
            names = {"firstName": payload.pop("firstName"), "lastName": payload.pop("lastName")}
            users[action.user] = users[action.user].model_copy(
                update={**names, "contact": ContactRecord.model_validate(payload)}
            )
        elif isinstance(action, GrantEntitlement):
            status = (
                "granted" if not action.agreement_gated or action.user in signed else "awaiting_agreement"
            )
            rec = users[action.user]
            users[action.user] = rec.model_copy(
                update={
                    "entitlements": {
                        **rec.entitlements,
                        action.entitlement: grant(action.entitlementId, status),
                    }
                }
            )
        else:
            users[action.user] = users[action.user].model_copy(update={"lifecycle": "cancelled"})
    return before.model_copy(update={"users": users, "serial": before.serial + 1})
