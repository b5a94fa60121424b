"""Builders shared by the planner, policy, render and plan tests, and the shared contact (no tests)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from reconcile.manifest.models import SIMPLUS, Manifest
from reconcile.planning.plan import (
    CancelEverything,
    CreateAccount,
    CreateUser,
    GrantEntitlement,
    Plan,
    PlanBinding,
    ResetAccount,
    RevokeTrading,
    SetTrading,
    SwitchRiskCategory,
    UpdateContact,
    UpdateEmail,
    UpdateRisk,
)
from reconcile.state.model import AccountRecord, ContactRecord, GrantRecord, State, UserRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SIMPLUS_ID = 12345
TRADINGVIEW_ID = 31
DATA_ACCOUNT = 11111
TEMPLATES: dict[str, Any] = {
    "eval50k": {
        "templateAccountId": 5001,
        "initialBalance": 50000,
        "risk": {"dailyLossAutoLiq": 1000, "trailingMaxDrawdown": 2500, "doNotUnlock": True},
    },
    "eval100k": {"templateAccountId": 5002, "initialBalance": 100000},
}
EVAL50K_RISK: dict[str, Any] = {
    "dailyLossAutoLiq": 1000.0,
    "trailingMaxDrawdown": 2500.0,
    "doNotUnlock": True,
}

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
            "accountTemplates": TEMPLATES,
            "riskCategories": {"standard": 31, "halted": 32},
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


def account(name: str, template: str = "eval50k", **overrides: Any) -> dict[str, Any]:
    """A manifest account entry (as YAML would give it)."""
    return {"name": name, "template": template, **overrides}


def account_record(account_id: int, user: str, user_id: int, **overrides: Any) -> AccountRecord:
    """A recorded active account created from eval50k, matching :func:`account` with no overrides."""
    data: dict[str, Any] = {
        "accountId": account_id,
        "user": user,
        "userId": user_id,
        "template": "eval50k",
        "tradingPermissionId": account_id + 50_000,
        "risk": dict(EVAL50K_RISK),
        "createdAt": T0,
        "updatedAt": T0,
    }
    data.update(overrides)
    return AccountRecord.model_validate(data)


def grant(entitlement_id: int, status: str = "granted") -> GrantRecord:
    return GrantRecord(entitlementId=entitlement_id, status=status, updatedAt=T0)  # type: ignore[arg-type]


def state(accounts: dict[str, AccountRecord] | None = None, **users: UserRecord) -> State:
    return State(
        environment="sim",
        lineage=BINDING.state_lineage,
        serial=BINDING.state_serial,
        users=users,
        accounts=accounts or {},
    )


def apply_perfectly(plan: Plan, before: State, *, signed: frozenset[str] = frozenset()) -> State:
    """Apply ``plan`` to ``before`` the way a flawless partner API would, and record it.

    Created users and accounts get the next free ids; a Sim+ grant becomes ``granted`` when the
    user is in ``signed`` and ``awaiting_agreement`` otherwise; cancellations mark users cancelled
    (and, with ``tradingPermissions``, their accounts revoked).
    """
    users = {name: rec.model_copy(deep=True) for name, rec in before.users.items()}
    accounts = {name: rec.model_copy(deep=True) for name, rec in before.accounts.items()}
    next_id = max((r.userId for r in users.values()), default=1000) + 1
    for action in plan.actions:
        if isinstance(action, CreateUser):
            users[action.user] = _created_user(action, next_id)
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
        elif isinstance(action, CancelEverything):
            users[action.user] = users[action.user].model_copy(update={"lifecycle": "cancelled"})
            if action.flags.tradingPermissions:
                for name, rec in accounts.items():
                    if rec.user == action.user:
                        accounts[name] = rec.model_copy(update={"permission": "revoked"})
        else:
            _apply_account(action, accounts, users)
    return before.model_copy(update={"users": users, "accounts": accounts, "serial": before.serial + 1})


def _created_user(action: CreateUser, user_id: int) -> UserRecord:
    return UserRecord(
        userId=user_id,
        email=action.email,
        firstName=action.firstName,
        lastName=action.lastName,
        tradovateSubscriptionPlanId=action.tradovateSubscriptionPlanId,
        entitlements={
            name: grant(eid) for name, eid in zip(action.entitlements, action.entitlementIds, strict=True)
        },
        createdAt=T0,
        updatedAt=T0,
    )


def _apply_account(action: Any, accounts: dict[str, AccountRecord], users: dict[str, UserRecord]) -> None:
    """Record one account action as the applier would (ids after the largest recorded)."""
    if isinstance(action, CreateAccount):
        account_id = max((r.accountId for r in accounts.values()), default=7000) + 1
        accounts[action.account] = AccountRecord(
            accountId=account_id,
            user=action.user,
            userId=users[action.user].userId,
            template=action.template,
            tradingPermissionId=account_id + 50_000,
            risk=action.risk,
            lastReset=action.resetTo,
            createdAt=T0,
            updatedAt=T0,
        )
        return
    update: dict[str, Any] = {}
    if isinstance(action, UpdateRisk):
        update = {"risk": action.risk}
    elif isinstance(action, SwitchRiskCategory):
        update = {"riskCategory": action.riskCategory}
    elif isinstance(action, SetTrading):
        update = {"trading": action.after}
    elif isinstance(action, ResetAccount):
        update = {"lastReset": action.resetTo}
    elif isinstance(action, RevokeTrading):
        update = {"permission": "revoked"}
    else:
        raise AssertionError(f"apply_perfectly does not know {type(action).__name__}")
    accounts[action.account] = accounts[action.account].model_copy(update=update)
