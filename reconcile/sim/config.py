"""The simulated partner organization and the simulator's knobs, with defaults matching examples/desk.yaml."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntitlementDef(_Model):
    """One entitlement of the organization's catalogue (GET /entitlement/list)."""

    name: str
    title: str
    price: float = 0.0
    fails_request: bool = False
    """Assigning it at creation fails the whole createevaluationusers request (as id 22 does)."""


class TemplateAccountDef(_Model):
    """A template account of the organization: what /user/createevaluationaccounts copies."""

    name: str
    size: float
    """The evaluation size in dollars (the Account's ``evaluationSize``)."""
    risk_category_id: int
    """The risk category a new account starts in."""


class RiskCategoryDef(_Model):
    """A risk category of the organization (the base risk profile of a template)."""

    name: str


class RateLimit(_Model):
    """At most ``per_hour`` requests per simulated hour, per user (per login name before login)."""

    per_hour: Annotated[int, Field(ge=1)]


def _default_entitlements() -> dict[int, EntitlementDef]:
    return {
        12345: EntitlementDef(name="Sim+", title="Sim+ (simulated trading with live data)", price=0.0),
        31: EntitlementDef(name="TradingView", title="TradingView add-on", price=0.0),
        22: EntitlementDef(
            name="Legacy bundle", title="Legacy bundle (cannot be assigned)", fails_request=True
        ),
    }


def _default_templates() -> dict[int, TemplateAccountDef]:
    return {
        5001: TemplateAccountDef(name="Evaluation 50K", size=50_000, risk_category_id=31),
        5002: TemplateAccountDef(name="Evaluation 100K", size=100_000, risk_category_id=31),
        5003: TemplateAccountDef(name="Evaluation 150K", size=150_000, risk_category_id=31),
    }


def _default_risk_categories() -> dict[int, RiskCategoryDef]:
    return {31: RiskCategoryDef(name="standard"), 32: RiskCategoryDef(name="halted")}


def _default_limits() -> dict[str, RateLimit]:
    # The published numbers (DESIGN §7); keys are lower-case contract paths.
    return {
        "/user/createevaluationusers": RateLimit(per_hour=100),
        "/auth/accesstokenrequest": RateLimit(per_hour=5),
        "/auth/renewaccesstoken": RateLimit(per_hour=15),
        "/accountriskstatus/switchriskcategory": RateLimit(per_hour=5000),
    }


class SimConfig(_Model):
    """What the simulator pretends to be, and how strict and how fast it runs.

    ``app_id``, ``cid`` and ``sec`` are checked only when set; any value is accepted otherwise.
    ``time_scale`` makes simulated time run that many times faster than real time (token expiry,
    rate-limit windows, penalty waits); ``Retry-After`` and ``p-time`` are given in real seconds.
    """

    organization_id: int = 7001
    organization_name: str = "Sim Prop Firm"
    admin_user_id: int = 1001
    admin_name: str = "partner-admin"
    admin_password: str = "sim-admin-password"
    app_id: str | None = None
    cid: str | None = None
    sec: str | None = None
    environment: Literal["sim", "demo", "live", "staging"] = "sim"
    entitlements: dict[int, EntitlementDef] = Field(default_factory=_default_entitlements)
    simplus_entitlement_id: int = 12345
    subscription_plans: frozenset[int] = frozenset({7, 8})
    data_account_id: int = 11111
    agreement_alert_id: int | None = None
    """AdminAlert id of the Market Data Agreement; None means 68 (70 when environment is staging)."""
    token_lifetime_minutes: Annotated[float, Field(gt=0)] = 85.0
    max_sessions: Annotated[int, Field(ge=1)] = 2
    max_users_per_request: Annotated[int, Field(ge=1)] = 100
    limits_enabled: bool = True
    rate_limits: dict[str, RateLimit] = Field(default_factory=_default_limits)
    penalties_enabled: bool = False
    """Over-limit requests get a penalty ticket (HTTP 200) instead of HTTP 429."""
    penalty_seconds: Annotated[float, Field(ge=0)] = 60.0
    """Simulated seconds a penalty ticket makes the client wait."""
    time_scale: Annotated[float, Field(gt=0)] = 1.0
    first_user_id: int = 100001
    account_templates: dict[int, TemplateAccountDef] = Field(default_factory=_default_templates)
    risk_categories: dict[int, RiskCategoryDef] = Field(default_factory=_default_risk_categories)
    max_accounts_per_request: Annotated[int, Field(ge=1)] = 100
    """createevaluationaccounts and updateuserautoliqs take at most this many items."""
    max_accounts_per_switch: Annotated[int, Field(ge=1)] = 10_000
    first_account_id: int = 500001

    @property
    def admin_email(self) -> str:
        """The admin's email address, as /auth/me gives it."""
        return f"{self.admin_name}@partner.example"

    @property
    def agreement_alert(self) -> int:
        """The AdminAlert id under which Market Data Agreement signals are filed."""
        if self.agreement_alert_id is not None:
            return self.agreement_alert_id
        return 70 if self.environment == "staging" else 68


class RuntimeSettings(_Model):
    """The knobs that ``/_sim/config`` changes while the simulator runs (kept in its database)."""

    limits_enabled: bool
    penalties_enabled: bool
    time_scale: Annotated[float, Field(gt=0)]

    @classmethod
    def from_config(cls, config: SimConfig) -> RuntimeSettings:
        return cls(
            limits_enabled=config.limits_enabled,
            penalties_enabled=config.penalties_enabled,
            time_scale=config.time_scale,
        )
