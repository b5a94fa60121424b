"""Recorded state (DESIGN §4): what the tool created or adopted, and what it last applied.

One :class:`State` document per environment; the stores that keep it are in
:mod:`reconcile.state.store` (the interfaces), :mod:`reconcile.state.file` and
:mod:`reconcile.state.postgres`.
"""

from __future__ import annotations

import operator
import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_serializer,
    field_validator,
)

from reconcile.contact import ContactAddress
from reconcile.errors import StateError

STATE_FORMAT_VERSION = 2
"""Written by this reconcile; version 1 (before :class:`StateBinding`) is read too."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactRecord(_Model, ContactAddress):
    """The contact fields last applied (same names as the manifest and the API)."""


class GrantRecord(_Model):
    """One entitlement of one user, by the manifest's entitlement name."""

    entitlementId: int
    status: Literal["granted", "awaiting_agreement"]
    updatedAt: datetime


class UserRecord(_Model):
    """One managed user: created by this tool or explicitly adopted."""

    userId: int
    origin: Literal["created", "adopted"] = "created"
    lifecycle: Literal["active", "cancelled"] = "active"
    email: str
    firstName: str
    lastName: str
    tradovateSubscriptionPlanId: int | None = None
    contact: ContactRecord | None = None
    entitlements: dict[str, GrantRecord] = Field(default_factory=dict)
    createdAt: datetime
    updatedAt: datetime
    cancelledAt: datetime | None = None
    cancelledOn: list[str] = Field(default_factory=list)
    """Hosts (endpoint labels) whose cancel-everything succeeded; sorted.

    ``lifecycle`` turns ``cancelled`` only once every host of the run did (DESIGN §7: live and
    demo); until then the user stays ``active`` and the next plan finishes the cancel.
    """


class AccountRecord(_Model):
    """One managed evaluation account, keyed in :attr:`State.accounts` by its name."""

    accountId: int
    user: str
    """The manifest name of the user holding the trading permission."""
    userId: int
    origin: Literal["created", "adopted"] = "created"
    template: str | None = None
    """The manifest's template name (None for an adopted account whose template is unknown)."""
    tradingPermissionId: int | None = None
    permission: Literal["active", "revoked"] = "active"
    """The trading permission: ``revoked`` is final (revoked here, by a cancel, or outside)."""
    risk: dict[str, Any] = Field(default_factory=dict)
    """The auto-liquidation fields as last applied (only the fields the manifest set)."""
    riskCategory: str | None = None
    """The manifest's category name as last applied; None when never switched."""
    trading: Literal["active", "locked"] = "active"
    """The admin lock as last applied."""
    lastReset: date | None = None
    """The ``resetTo`` trade date last applied (or recorded at creation)."""
    resetUnsettled: date | None = None
    """A reset to this trade date was sent and its answer lost: it may have happened, so it is
    never sent again on a guess (a second reset would undo the trading done since the first)."""
    createdAt: datetime
    updatedAt: datetime
    revokedAt: datetime | None = None


class StateBinding(_Model):
    """The organization and endpoint a state belongs to (DESIGN §8.10): set on first write."""

    endpoint: str
    """The endpoint label plans are bound to: a base URL, or ``sim:embedded``."""
    dataAccountId: int
    """The partner's data account (``partner.dataAccountId``): the organization."""

    def describe(self) -> str:
        return f"{self.endpoint} (partner data account {self.dataAccountId})"


class State(_Model):
    """The recorded state of one environment."""

    format_version: Literal[1, 2] = 2

    @field_validator("format_version", mode="before")
    @classmethod
    def _whole_number(cls, value: object) -> object:
        # A Literal takes true for 1 (True == 1 in Python) and, from JSON, "2" for 2: a version
        # that is not a whole number is no version at all.
        if type(value) is not int:
            raise ValueError(f"format_version must be a whole number, not {value!r}")
        return value

    lineage: str = Field(default_factory=lambda: str(uuid.uuid4()))
    serial: int = 0
    environment: str
    binding: StateBinding | None = None
    """None only in state written before version 2, until its next write."""
    users: dict[str, UserRecord] = Field(default_factory=dict)
    accounts: dict[str, AccountRecord] = Field(default_factory=dict)
    """Evaluation accounts by name (names are unique in the organization, in any case)."""

    @field_serializer("users", mode="wrap")
    def _users_whole(self, users: dict[str, UserRecord], handler: SerializerFunctionWrapHandler) -> Any:
        # A cancelled user read lazily (reconcile.state.decode.LazyUser) holds only its id and
        # lifecycle until first used; pydantic would serialize just those: read it whole first.
        for record in users.values():
            if type(record) is not UserRecord:
                getattr(record, "materialize", lambda: None)()
        return handler(users)

    @classmethod
    def empty(cls, environment: str) -> State:
        """A new, never-saved state (serial 0, fresh lineage)."""
        return cls(environment=environment)

    def content_equals(self, other: State) -> bool:
        """True when both hold the same binding, users and accounts (lineage and serial aside)."""
        return (
            self.environment == other.environment
            and self.binding == other.binding
            and self.users == other.users
            and self.accounts == other.accounts
        )


_CORRUPT_ADVICE = (
    "an id belongs to one trader (or account), so acting on this state could change or cancel the "
    "wrong one. Restore it from version control or a backup (or correct it by hand, each name with "
    "the one id the organization has for it), then check it with `reconcile plan --refresh`"
)


def refuse_shared_ids(state: State, where: str) -> None:
    """Raise :class:`StateError` when two names share one ``userId`` or ``accountId`` (DESIGN §8.8).

    Account names differing only in case count as one name (the planner matches them so): both
    recorded, one of the two accounts would silently never be governed or revoked.
    """
    # The usual answer (no id shared) from one set of ids: the names are gathered only to say which.
    if len(set(map(_USER_ID, state.users.values()))) == len(state.users) and len(
        set(map(_ACCOUNT_ID, state.accounts.values()))
    ) == len(state.accounts) == len({name.casefold() for name in state.accounts}):
        return
    found = [
        *_shared("userId", {name: r.userId for name, r in state.users.items()}),
        *_shared("accountId", {name: r.accountId for name, r in state.accounts.items()}),
        *_shared("account name (in any case)", {name: name.casefold() for name in state.accounts}),
    ]
    if found:
        raise StateError(f"state {where} is corrupt: {'; '.join(found)}; {_CORRUPT_ADVICE}")


_USER_ID = operator.attrgetter("userId")
_ACCOUNT_ID = operator.attrgetter("accountId")


def _shared(key: str, ids: dict[str, int] | dict[str, str]) -> list[str]:
    """Say which ``key`` values more than one name holds."""
    names_of: dict[int | str, str] = {}
    shared: dict[int | str, list[str]] = {}
    for name, value in ids.items():
        first = names_of.setdefault(value, name)
        if first != name:
            shared.setdefault(value, [first]).append(name)
    return [
        f"{key} {value} is recorded for {', '.join(sorted(names))}" for value, names in sorted(shared.items())
    ]


def refuse_repeated_names(
    repeated: dict[str, list[object]], where: str, *, kind: str = "user", key: str = "userId"
) -> None:
    """Raise :class:`StateError` when a name is recorded more than once (with its ids)."""
    if repeated:
        found = "; ".join(
            f"{kind} {name!r} is recorded {len(ids)} times ({key} {' and '.join(map(str, ids))})"
            for name, ids in sorted(repeated.items())
        )
        raise StateError(f"state {where} is corrupt: {found}; {_CORRUPT_ADVICE}")
