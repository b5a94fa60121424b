"""Turn plan actions into the API client's request models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconcile.planning.plan import ContactPayload, CreateAccount, CreateUser


def evaluation_user(action: CreateUser, password: str) -> Any:
    """The createevaluationusers entry for one create (the only place a password meets the wire)."""
    from reconcile.api.models import EvaluationUser

    return EvaluationUser(
        name=action.user,
        email=action.email,
        password=password,
        firstName=action.firstName,
        lastName=action.lastName,
        tradovateSubscriptionPlanId=action.tradovateSubscriptionPlanId,
        entitlementIds=list(action.entitlementIds) or None,
    )


def contact_request(user_id: int, contact: ContactPayload) -> Any:
    """The updatecontactinfo body for one user."""
    from reconcile.api.models import UpdateContactInfo

    return UpdateContactInfo(userId=user_id, **contact.model_dump())


def evaluation_account(action: CreateAccount, user_id: int) -> Any:
    """The createevaluationaccounts entry for one account (risk: the template's merged with overrides)."""
    from reconcile.api.models import EvaluationAccount, PostTradeRisk

    return EvaluationAccount(
        userId=user_id,
        templateAccountId=action.templateAccountId,
        name=action.account,
        initialBalance=action.initialBalance,
        postTradeRisk=PostTradeRisk(**action.risk) if action.risk else None,
    )


def auto_liq_item(account_id: int, risk: Mapping[str, Any]) -> Any:
    """The updateuserautoliqs item setting ``risk`` (only the fields the manifest sets) on one account."""
    from reconcile.api.models import UpdateUserAutoLiqItem

    return UpdateUserAutoLiqItem(accountId=account_id, **risk)
