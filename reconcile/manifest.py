"""Desired state: the manifest models (DESIGN §3).

The models are the single source of truth for what a manifest may say; ``reconcile schema``
exports them as JSON Schema. Loading YAML with file:line:column errors lives in
:mod:`reconcile.loader`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import pycountry
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

SIMPLUS = "simplus"
"""The reserved entitlement name of Sim+: granted only after the Market Data Agreement is signed."""

DEFAULT_AGREEMENT_ALERT_ID = {"live": 68, "demo": 68, "sim": 68, "staging": 70}

Environment = Literal["sim", "demo", "live", "staging"]

_PHONE = re.compile(r"^\+?[0-9][0-9 ()./-]*[0-9]$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class PasswordFromEnv(_Model):
    """Read the password from an environment variable at apply time."""

    env: Annotated[str, StringConstraints(min_length=1)]


class PasswordFromFile(_Model):
    """Read the password from a file (first line) at apply time."""

    file: Annotated[str, StringConstraints(min_length=1)]


class PasswordGenerate(_Model):
    """Generate a strong password at apply time; shown or written once, never stored."""

    generate: Literal[True]


LiteralPassword = Annotated[str, StringConstraints(min_length=8, max_length=64)]
PasswordSource = PasswordFromEnv | PasswordFromFile | PasswordGenerate | LiteralPassword


class Contact(_Model):
    """Contact details, reconciled with /contactInfo/updatecontactinfo."""

    phone: Annotated[str, StringConstraints(min_length=10, max_length=21)]
    streetAddress1: Annotated[str, StringConstraints(min_length=3, max_length=61)]
    streetAddress2: Annotated[str, StringConstraints(max_length=61)] | None = None
    city: Annotated[str, StringConstraints(min_length=2, max_length=35)]
    state: Annotated[str, StringConstraints(min_length=1, max_length=35)] | None = None
    postCode: Annotated[str, StringConstraints(min_length=4, max_length=11)] | None = None
    country: Annotated[str, StringConstraints(min_length=2, max_length=2)]

    @field_validator("phone")
    @classmethod
    def _phone_international(cls, v: str) -> str:
        if not v.startswith("+") or not _PHONE.match(v):
            raise ValueError(
                "expected a phone number in international form, e.g. +12125550100 "
                "(a leading + and digits; spaces, dots, dashes and parentheses allowed)"
            )
        return v

    @field_validator("country")
    @classmethod
    def _iso_country(cls, v: str) -> str:
        if not v.isascii() or not v.isupper() or pycountry.countries.get(alpha_2=v) is None:
            raise ValueError(f"expected a 2-letter ISO 3166 country code such as US or GB, got {v!r}")
        return v

    @model_validator(mode="after")
    def _state_for_us(self) -> Contact:
        if self.country == "US" and not self.state:
            raise ValueError("state is required when country is US (e.g. state: NY)")
        return self


class User(_Model):
    """One evaluation trader. ``name`` is the identity key."""

    name: Annotated[str, StringConstraints(min_length=3, max_length=64)]
    status: Literal["active", "cancelled"] = "active"
    email: Annotated[str, StringConstraints(max_length=64)] | None = None
    password: PasswordSource | None = None
    firstName: Annotated[str, StringConstraints(min_length=1)] | None = None
    lastName: Annotated[str, StringConstraints(min_length=1)] | None = None
    tradovateSubscriptionPlanId: Annotated[int, Field(gt=0, strict=True)] | None = None
    entitlements: tuple[str, ...] = ()
    contact: Contact | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from email_validator import EmailNotValidError, validate_email

        try:
            validate_email(v, check_deliverability=False)
        except EmailNotValidError as exc:
            raise ValueError(f"expected a valid email address: {exc}") from None
        return v

    @model_validator(mode="after")
    def _active_needs_identity(self) -> User:
        if self.status == "active":
            missing = [f for f in ("email", "password", "firstName", "lastName") if getattr(self, f) is None]
            if missing:
                raise ValueError(
                    f"an active user needs {', '.join(missing)} "
                    "(or set status: cancelled to cancel this user)"
                )
        if self.firstName and self.lastName and len(self.firstName) + len(self.lastName) > 60:
            raise ValueError(
                f"firstName and lastName may have at most 60 characters together "
                f"(have {len(self.firstName) + len(self.lastName)})"
            )
        if len(set(self.entitlements)) != len(self.entitlements):
            raise ValueError("entitlements lists a name twice")
        return self


class Partner(_Model):
    """The partner organization's fixed ids."""

    dataAccountId: Annotated[int, Field(gt=0, strict=True)]
    entitlements: dict[str, Annotated[int, Field(gt=0, strict=True)]] = Field(default_factory=dict)
    agreementAlertId: Annotated[int, Field(gt=0, strict=True)] | None = None


class CancelFlags(_Model):
    """The four flags of /user/canceleverything; all on unless turned off here."""

    tradovateSubscriptions: bool = True
    tradingPermissions: bool = True
    userPlugins: bool = True
    marketDataSubscriptions: bool = True


class Defaults(_Model):
    """Values applied to every user unless the user says otherwise."""

    tradovateSubscriptionPlanId: Annotated[int, Field(gt=0, strict=True)] | None = None
    cancel: CancelFlags = CancelFlags()


class Policy(_Model):
    """Safety rails: cancellation budgets (DESIGN §8.4)."""

    maxCancellations: Annotated[int, Field(ge=0, strict=True)] = 25
    maxCancellationPercent: Annotated[float, Field(ge=0, le=100)] = 10.0


class Manifest(_Model):
    """The desired set of evaluation users of one environment."""

    apiVersion: Literal["reconcile/v1"]
    environment: Environment
    partner: Partner
    defaults: Defaults = Defaults()
    policy: Policy = Policy()
    users: tuple[User, ...] = ()

    @model_validator(mode="after")
    def _entitlements_defined(self) -> Manifest:
        # Cross-user rules (unique names/emails) are checked by the loader, which knows where
        # each user was written and can name both places.
        known = self.partner.entitlements
        for index, user in enumerate(self.users):
            for name in user.entitlements:
                if name not in known:
                    defined = ", ".join(sorted(known)) or "none"
                    raise ValueError(
                        f"users[{index}].entitlements: {name!r} is not defined under "
                        f"partner.entitlements (defined: {defined})"
                    )
        return self

    @property
    def agreement_alert_id(self) -> int:
        """The AdminAlert id of the Market Data Agreement for this environment."""
        if self.partner.agreementAlertId is not None:
            return self.partner.agreementAlertId
        return DEFAULT_AGREEMENT_ALERT_ID[self.environment]

    @property
    def simplus_id(self) -> int | None:
        """The Sim+ entitlement id, if the organization defines one."""
        return self.partner.entitlements.get(SIMPLUS)

    def subscription_plan_for(self, user: User) -> int | None:
        """The subscription plan id a user is created with."""
        if user.tradovateSubscriptionPlanId is not None:
            return user.tradovateSubscriptionPlanId
        return self.defaults.tradovateSubscriptionPlanId
