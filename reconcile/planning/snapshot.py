"""A snapshot of the live organization, as drift, refresh and import compare it with state.

Pure data: :mod:`reconcile.operations.read_live` reads one through the client.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from reconcile.contact import ADDRESS_FIELDS, ContactAddress
from reconcile.state.model import ContactRecord

CLOSED = "Closed"
"""The ``UserStatus`` of a user whose everything was cancelled."""


_REQUIRED_CONTACT = tuple(name for name, info in ContactAddress.model_fields.items() if info.is_required())


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LiveContact(_Model):
    """A user's contact info as the API has it (empty strings read as None).

    Not a :class:`reconcile.contact.ContactFields`: the API may leave any field blank, so every
    field here is optional where the plan and state require four.
    """

    firstName: str | None = None
    lastName: str | None = None
    phone: str | None = None
    streetAddress1: str | None = None
    streetAddress2: str | None = None
    city: str | None = None
    state: str | None = None
    postCode: str | None = None
    country: str | None = None


def contact_record(contact: LiveContact | None) -> ContactRecord | None:
    """Return what state records of a live contact: None when a required field is blank."""
    if contact is None or not all(getattr(contact, name) for name in _REQUIRED_CONTACT):
        return None
    return ContactRecord(**{name: getattr(contact, name) for name in ADDRESS_FIELDS})


class LiveUser(_Model):
    """One user of the organization as the API shows it."""

    userId: int
    name: str
    email: str
    status: str | None = None
    entitlementIds: frozenset[int] = frozenset()
    """Entitlement ids of the user's active plugins."""
    agreement_signed: bool = False
    """True when a Market Data Agreement signal exists for the user (completed or not)."""
    pending_signals: tuple[int, ...] = ()
    """Ids of the user's agreement signals not completed yet (the ones a Sim+ grant completes)."""
    contact_read: bool = False
    """False when contact info was not read for this user (then ``contact`` says nothing)."""
    contact: LiveContact | None = None

    @property
    def closed(self) -> bool:
        return self.status == CLOSED


LOCKED = "LockTradingImmediately"
"""The admin action that locks an account (``Normal`` unlocks it)."""


class LiveAccount(_Model):
    """One evaluation account as the API shows it, with its trading permission, auto-liq and risk status."""

    accountId: int
    name: str
    userId: int
    riskCategoryId: int | None = None
    closed: bool = False
    tradingPermissionId: int | None = None
    permissionStatus: str | None = None
    """The status of the account's trading permission (Approved, Revoked, …); None: it has none."""
    autoLiq: Mapping[str, Any] = {}
    """The auto-liquidation settings the API has (fields it does not set are left out)."""
    adminAction: str | None = None

    @property
    def trading(self) -> str:
        """``locked`` or ``active``, as the manifest says it."""
        return "active" if self.adminAction in (None, "Normal") else "locked"

    @property
    def revoked(self) -> bool:
        return (self.permissionStatus or "").lower() in ("revoked", "declined")


class LiveSnapshot(_Model):
    """The organization at one moment: its users (and accounts), and how many requests reading them took."""

    users: tuple[LiveUser, ...]
    read_at: datetime
    requests: int = 0
    accounts: tuple[LiveAccount, ...] | None = None
    """None when the accounts were not read (a desk that has none)."""
    agreement_alert_id: int | None = None
    """The Market Data Agreement whose signals ``users`` carry (None: not read)."""

    def pending_signals(self) -> dict[int, dict[int, list[int]]]:
        """Agreement alert id → user id → pending signal ids: what apply would read itself."""
        if self.agreement_alert_id is None:
            return {}
        pending = {u.userId: list(u.pending_signals) for u in self.users if u.pending_signals}
        return {self.agreement_alert_id: pending}

    @functools.cached_property
    def by_id(self) -> Mapping[int, LiveUser]:
        return {u.userId: u for u in self.users}

    @functools.cached_property
    def by_name(self) -> Mapping[str, LiveUser]:
        return {u.name: u for u in self.users}

    @functools.cached_property
    def accounts_by_id(self) -> Mapping[int, LiveAccount]:
        return {a.accountId: a for a in self.accounts or ()}

    @functools.cached_property
    def accounts_by_name(self) -> Mapping[str, LiveAccount]:
        """Accounts by lowercased name (names are unique in the organization in any case)."""
        return {a.name.lower(): a for a in self.accounts or ()}
