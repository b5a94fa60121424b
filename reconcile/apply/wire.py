"""Turn plan actions into the API client's request models."""

from __future__ import annotations

from typing import Any

from reconcile.planning.plan import ContactPayload, CreateUser


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
