"""Pydantic wire models of the partner API, following the contract (reconcile/contract/partner-api.json).

Responses are tolerant: unknown fields are ignored and enum-like fields are plain strings, so a
value the partner adds tomorrow does not break a read we do not need it for. Requests are strict:
only the contract's field names, and :func:`wire` never sends a field that is None.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from reconcile.contact import ContactFields


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _none_if_empty(value: Any) -> Any:
    return None if value == "" else value


ResultText = Annotated[str | None, BeforeValidator(_none_if_empty)]
"""A per-item ``errorText``: the API sends "" for success, read as None."""


def wire(request: BaseModel) -> dict[str, Any]:
    """Return the JSON body of ``request``: contract field names only, None fields left out."""
    body: dict[str, Any] = request.model_dump(mode="json", exclude_none=True, by_alias=True)
    return body


# --- auth -----------------------------------------------------------------------------------------


class AccessTokenResponse(_Response):
    """POST /auth/accesstokenrequest and GET /auth/renewaccesstoken."""

    accessToken: SecretStr | None = None
    expirationTime: str | None = None
    userId: int | None = None
    name: str | None = None
    userStatus: str | None = None
    errorText: str | None = None


# --- penalty tickets ------------------------------------------------------------------------------


class PenaltyTicket(_Response):
    """An HTTP 200 ``{"p-ticket", "p-time", "p-captcha"}``: wait, then resend with the ticket."""

    ticket: str = Field(alias="p-ticket", min_length=1)
    time: float = Field(alias="p-time", default=0.0, ge=0)
    captcha: bool = Field(alias="p-captcha", default=False)


# --- users ----------------------------------------------------------------------------------------


class EvaluationUser(_Request):
    """One entry of POST /user/createevaluationusers (the only model that carries a password)."""

    name: str
    email: str
    password: str = Field(repr=False)
    firstName: str
    lastName: str
    tradovateSubscriptionPlanId: int | None = None
    entitlementIds: list[int] | None = None


class CreateEvaluationUsers(_Request):
    users: list[EvaluationUser]


class CreateResult(_Response):
    """One user's outcome of createevaluationusers: ``userId`` or ``errorText``.

    The contract answers ``{errorText, userId}``; the conformance page shows ``{id, name, ...}``.
    Both are read into ``userId``; an empty ``errorText`` means success and is normalised to None.
    """

    userId: int | None = None
    errorText: ResultText = None
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _either_shape(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if data.get("userId") is None and data.get("id") is not None:
                data["userId"] = data["id"]
        return data


class CreateEvaluationUsersResponse(_Response):
    results: list[CreateResult] = Field(default_factory=list)
    errorText: str | None = None


class ModifyEmailAddress(_Request):
    userId: int
    email: str


class UserStatusMessage(_Response):
    status: str | None = None
    errorText: str | None = None


class User(_Response):
    """GET /user/item, /user/items, /user/find, /user/list (``status`` kept as text)."""

    id: int
    name: str
    email: str
    status: str | None = None
    organizationId: int | None = None
    timestamp: str | None = None
    professional: bool | None = None


class CancelEverything(_Request):
    userIds: list[int]
    tradovateSubscriptions: bool
    tradingPermissions: bool
    userPlugins: bool
    marketDataSubscriptions: bool


class CancelEverythingResult(_Response):
    # All four required (as in the contract): an answer without them is not proof of a cancel.
    tradovateSubscriptionIds: list[int]
    userPluginIds: list[int]
    marketDataSubscriptionIds: list[int]
    tradingPermissionIds: list[int]


# --- contact info ---------------------------------------------------------------------------------


class UpdateContactInfo(_Request, ContactFields):
    userId: int


# Not a ContactFields: a response may leave any field out, so every one is optional here.
class ContactInfo(_Response):
    id: int | None = None
    userId: int
    firstName: str | None = None
    lastName: str | None = None
    streetAddress1: str | None = None
    streetAddress2: str | None = None
    city: str | None = None
    state: str | None = None
    postCode: str | None = None
    country: str | None = None
    phone: str | None = None


class UpdateContactInfoResponse(_Response):
    contactInfo: ContactInfo | None = None
    errorText: str | None = None


# --- entitlements and the Market Data Agreement ---------------------------------------------------


class AddEntitlementSubscription(_Request):
    entitlementId: int
    userId: int
    accountId: int


class UserPlugin(_Response):
    id: int | None = None
    userId: int | None = None
    entitlementId: int | None = None
    accountId: int | None = None
    pluginName: str | None = None
    timestamp: str | None = None


class EntitlementSubscriptionResult(_Response):
    """``errorCode`` is "Success", "ConflictWithExisting" (already granted) or another failure."""

    errorCode: str | None = None
    errorText: ResultText = None
    entitlementSubscription: UserPlugin | None = None


class AdminAlertSignal(_Response):
    """A Market Data Agreement signal: pending while ``completed`` is None.

    The conformance page spells the completion time ``complete``; both are read into ``completed``.
    """

    id: int
    adminAlertId: int | None = None
    relatedToUserId: int | None = None
    relatedToAccountId: int | None = None
    completed: str | None = None
    timestamp: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _complete_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("completed") is None and data.get("complete"):
            data = {**data, "completed": data["complete"]}
        return data


class CompleteAlertSignal(_Request):
    adminAlertSignalId: int


class AdminAlertSignalResponse(_Response):
    adminAlertSignal: AdminAlertSignal | None = None
    errorText: str | None = None


# --- evaluation accounts (Stage 4) ----------------------------------------------------------------


class _AutoLiqSettings(BaseModel):
    """The auto-liquidation settings shared by PostTradeRisk, UpdateUserAutoLiqItem and UserAccountAutoLiq."""

    marginPercentageAlert: float | None = None
    dailyLossPercentageAlert: float | None = None
    dailyLossAlert: float | None = None
    marginPercentageLiqOnly: float | None = None
    dailyLossPercentageLiqOnly: float | None = None
    dailyLossLiqOnly: float | None = None
    marginPercentageAutoLiq: float | None = None
    dailyLossPercentageAutoLiq: float | None = None
    dailyLossAutoLiq: float | None = None
    weeklyLossAutoLiq: float | None = None
    flattenTimestamp: str | None = None
    trailingMaxDrawdown: float | None = None
    trailingMaxDrawdownLimit: float | None = None
    trailingMaxDrawdownMode: str | None = None
    """EOD or RealTime."""
    dailyProfitAutoLiq: float | None = None
    weeklyProfitAutoLiq: float | None = None
    doNotUnlock: bool | None = None
    changesLocked: bool | None = None


class PostTradeRisk(_Request, _AutoLiqSettings):
    """The auto-liquidation settings a new evaluation account starts with."""


class EvaluationAccount(_Request):
    """One entry of POST /user/createevaluationaccounts."""

    userId: int
    templateAccountId: int
    name: str
    initialBalance: float
    preTradeRisk: list[dict[str, Any]] | None = None
    """Position limits; "in most cases templateAccountId is all you need"."""
    postTradeRisk: PostTradeRisk | None = None


class CreateEvaluationAccounts(_Request):
    accounts: list[EvaluationAccount]


class CreateAccountResult(_Response):
    """One account's outcome of createevaluationaccounts: its ids, or ``errorText`` ("" means none)."""

    accountId: int | None = None
    tradingPermissionId: int | None = None
    errorText: ResultText = None


class CreateEvaluationAccountsResponse(_Response):
    results: list[CreateAccountResult] = Field(default_factory=list)
    errorText: str | None = None


class SimpleResponse(_Response):
    """``{"ok": true}`` or ``{"ok": false, "errorText": ...}``."""

    ok: bool
    errorText: str | None = None


class RevokeTradingPermission(_Request):
    tradingPermissionId: int


class RevokeTradingPermissions(_Request):
    tradingPermissionIds: list[int]


class TradingPermission(_Response):
    """GET /tradingPermission/list; ``status`` is Requested, Approved, Accepted, Declined or Revoked."""

    id: int
    userId: int
    accountId: int
    status: str
    updated: str | None = None


class TradingPermissionResponse(_Response):
    tradingPermission: TradingPermission | None = None
    errorText: str | None = None


class TradeDate(_Request):
    year: int
    month: int
    day: int


class ResetDemoAccountState(_Request):
    accountIds: list[int]
    resetTradeDate: TradeDate


class SwitchRiskCategory(_Request):
    accountIds: list[int]
    riskCategoryId: int


class SetAdminAutoLiqAction(_Request):
    """Lock (``LockTradingImmediately``) or unlock (``Normal``) an account; Other needs a reason."""

    accountId: int
    adminAction: str
    adminActionReasonCode: str
    adminActionReason: str | None = None


class AccountRiskStatus(_Response):
    """GET /accountRiskStatus/list: one per account (``id`` is the account's), ``adminAction`` as text."""

    id: int
    adminAction: str | None = None
    adminTimestamp: str | None = None


class AccountRiskStatusResponse(_Response):
    accountRiskStatus: AccountRiskStatus | None = None
    errorText: str | None = None


class UpdateUserAutoLiqItem(_Request, _AutoLiqSettings):
    """One account's changed auto-liquidation settings; fields left None are not sent."""

    accountId: int
    asOwner: bool | None = None


class UpdateUserAutoLiqs(_Request):
    items: list[UpdateUserAutoLiqItem]


class UserAccountAutoLiq(_Response, _AutoLiqSettings):
    """An account's auto-liquidation settings (assumed to share the account's id)."""

    id: int


class UpdateUserAutoLiqItemResponse(_Response):
    userAccountAutoLiq: UserAccountAutoLiq | None = None


class UpdateUserAutoLiqsResponse(_Response):
    userAutoLiqs: list[UpdateUserAutoLiqItemResponse] = Field(default_factory=list)
    errorText: str | None = None


class Account(_Response):
    """GET /account/list.

    The contract says ``closed``; the partner documentation speaks of ``active``. Both are read,
    into ``closed``.
    """

    id: int
    name: str
    userId: int
    riskCategoryId: int | None = None
    closed: bool | None = None
    restricted: bool | None = None
    evaluationSize: float | None = None
    timestamp: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _active_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("closed") is None and isinstance(data.get("active"), bool):
            data = {**data, "closed": not data["active"]}
        return data
