"""PartnerClient: the partner-API calls reconcile makes, with penalties, retries and pacing.

Layers, one concern each: pacing (client-side hourly limits) → retries (tenacity: 429/423, 5xx
and network failures, with backoff and jitter) → penalty tickets (wait ``p-time``, resend with
``p-ticket``) → auth (:class:`reconcile.api.auth.TokenAuth`) → transport.

A non-idempotent call (createevaluationusers) whose request may have reached the server is never
resent: the client raises :class:`~reconcile.errors.OutcomeUnknown` and the applier looks the users
up. Only failures that prove the request was not applied (429/423, a connection that could not be
opened, a login that failed first) are retried for it.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from reconcile.api.auth import LoginDeferred, TokenAuth
from reconcile.api.events import OnEvent, emit_wait
from reconcile.api.models import (
    Account,
    AccountRiskStatus,
    AccountRiskStatusResponse,
    AddEntitlementSubscription,
    AdminAlertSignal,
    AdminAlertSignalResponse,
    CancelEverything,
    CancelEverythingResult,
    CompleteAlertSignal,
    ContactInfo,
    CreateAccountResult,
    CreateEvaluationAccounts,
    CreateEvaluationAccountsResponse,
    CreateEvaluationUsers,
    CreateEvaluationUsersResponse,
    CreateResult,
    EntitlementSubscriptionResult,
    EvaluationAccount,
    EvaluationUser,
    ModifyEmailAddress,
    ResetDemoAccountState,
    RevokeTradingPermission,
    RevokeTradingPermissions,
    SetAdminAutoLiqAction,
    SimpleResponse,
    SwitchRiskCategory,
    TradeDate,
    TradingPermission,
    TradingPermissionResponse,
    UpdateContactInfo,
    UpdateContactInfoResponse,
    UpdateUserAutoLiqItem,
    UpdateUserAutoLiqs,
    UpdateUserAutoLiqsResponse,
    User,
    UserAccountAutoLiq,
    UserPlugin,
    UserStatusMessage,
    wire,
)
from reconcile.api.pacing import CREATE_PATH, Pacer
from reconcile.api.penalties import drive, resend_while_penalised, retry_after_seconds
from reconcile.api.penalties import for_users as _for
from reconcile.api.redact import redact, request_secrets
from reconcile.api.transport import default_transport, send
from reconcile.errors import ApiError, AuthError, OutcomeUnknown, TransportError

if TYPE_CHECKING:
    from tenacity import RetryCallState

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

MAX_ITEMS_PER_CALL = 100
"""The most users, accounts or ids one bulk call carries (createevaluationusers' published limit)."""
MAX_USERS_PER_CREATE = MAX_ITEMS_PER_CALL
_IDS_PER_READ = 100
IDS_PER_LDEPS_READ = 250
"""The most master ids one ``/…/ldeps?masterids=`` read carries: 250 ids of up to 7 digits are
2,000 characters of query, well inside any URL limit (8 KB is the common server default)."""
_LDEPS_QUERY_CHARS = 2000

_HEADERS = {
    "Accept": "application/json",
    "Accept-Encoding": "gzip, deflate",
    "Connection": "keep-alive",
    "User-Agent": f"python-httpx/{httpx.__version__}",
}
"""What every request carries besides its own (as httpx's client sent them)."""

# Exceptions raised before the request left this machine: always safe to retry.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def id_chunks(ids: Sequence[int]) -> Iterator[str]:
    """``ids`` as comma-joined query values of at most IDS_PER_LDEPS_READ ids and 2,000 characters."""
    chunk: list[str] = []
    size = 0
    for text in map(str, ids):
        if chunk and (len(chunk) == IDS_PER_LDEPS_READ or size + len(text) + 1 > _LDEPS_QUERY_CHARS):
            yield ",".join(chunk)
            chunk, size = [], 0
        chunk.append(text)
        size += len(text) + 1
    if chunk:
        yield ",".join(chunk)


class CancelFlagsLike(Protocol):
    @property
    def tradovateSubscriptions(self) -> bool: ...
    @property
    def tradingPermissions(self) -> bool: ...
    @property
    def userPlugins(self) -> bool: ...
    @property
    def marketDataSubscriptions(self) -> bool: ...


class _Retry(Exception):
    """One attempt failed in a way that is safe to retry; ``error`` is raised if retries run out."""

    def __init__(self, error: ApiError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class _ThisThread(threading.local):
    """What one thread's calls leave behind (the applier calls from several threads)."""

    request_id: str | None = None


class PartnerClient:
    """The partner API as typed calls. ``sleep``, ``clock`` and ``transport`` are test seams.

    ``max_attempts`` bounds retries per call; a ``Retry-After`` longer than ``max_retry_after``
    seconds is not waited for: the call fails and says when to try again.
    """

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        auth: TokenAuth | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        on_event: OnEvent | None = None,
        pacer: Pacer | None = None,
        timeout: float = 30.0,
        max_attempts: int = 5,
        max_retry_after: float = 600.0,
        endpoint_label: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.endpoint_label = endpoint_label or self.base_url
        self.sleep = sleep
        self.clock = clock
        self.wallclock = wallclock
        self.on_event = on_event
        self.pacer = pacer
        self.max_attempts = max_attempts
        self.max_retry_after = max_retry_after
        self.auth = auth
        if auth is not None:
            auth.attach(self.base_url, sleep=sleep, pacer=pacer, on_event=on_event, max_wait=max_retry_after)
        self.requests_sent = 0
        self.closers: list[Callable[[], None]] = []
        """Called by :meth:`close` after the HTTP client (e.g. the embedded simulator's database)."""
        self._local = _ThisThread()
        self._transport = (
            transport
            if transport is not None
            else default_transport(httpx.URL(self.base_url).scheme, timeout=timeout)
        )
        self._timeout = httpx.Timeout(timeout).as_dict()
        self._targets: dict[str, tuple[httpx.URL, list[tuple[bytes, bytes]]]] = {}

    def close(self) -> None:
        self._transport.close()
        for close in self.closers:
            close()
        self.closers.clear()

    def __enter__(self) -> PartnerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def last_request_id(self) -> str | None:
        """The id of this thread's last request (the server's ``X-Request-Id`` when it sends one)."""
        return self._local.request_id

    # -- users ------------------------------------------------------------------------------------

    def create_evaluation_users(self, users: Sequence[EvaluationUser]) -> list[CreateResult]:
        """Create up to 100 users; return one result per user, in order (``userId`` or ``errorText``).

        Raises :class:`OutcomeUnknown` when the request was sent and no usable answer came, and
        :class:`ApiError` when the API refused the whole request.
        """
        call = "createevaluationusers"
        names = tuple(u.name for u in users)
        data = self._create(call, names, "users", wire(CreateEvaluationUsers(users=list(users))))
        answer = self._parse(CreateEvaluationUsersResponse, data, call, names, sent=True)
        _check_results(call, names, "users", len(answer.results), answer.errorText)
        return _said_something(
            answer.results, lambda r: r.userId is not None or bool(r.errorText), "a user id", "user"
        )

    def await_create_slot(self) -> float:
        """Wait until createevaluationusers may be sent within its hourly limit; return the seconds waited.

        The applier waits here before it records the call's intent, so a run killed during an
        hour's wait leaves nothing to settle. The call itself takes the slot.
        """
        if self.pacer is None:
            return 0.0
        return self.pacer.ready(CREATE_PATH, sleep=self._idle)

    def create_slot_free(self) -> bool:
        """Return whether createevaluationusers may be sent now without waiting for its slot."""
        return self.pacer is None or self.pacer.free(CREATE_PATH)

    def modify_email_address(self, user_id: int, email: str, *, user: str | None = None) -> None:
        """Change a user's email address."""
        data = self._call(
            "POST",
            "/user/modifyemailaddress",
            call="modifyemailaddress",
            users=(user or f"user id {user_id}",),
            body=wire(ModifyEmailAddress(userId=user_id, email=email)),
        )
        self._parse(UserStatusMessage, data, "modifyemailaddress", (user or f"user id {user_id}",))

    def update_contact_info(self, req: UpdateContactInfo, *, user: str | None = None) -> ContactInfo:
        """Set a user's contact information; return it as the API stored it."""
        who = (user or f"user id {req.userId}",)
        data = self._call(
            "POST", "/contactInfo/updatecontactinfo", call="updatecontactinfo", users=who, body=wire(req)
        )
        answer = self._parse(UpdateContactInfoResponse, data, "updatecontactinfo", who)
        return _present(
            answer.contactInfo,
            "updatecontactinfo",
            who,
            "contactInfo",
            "check the user with `reconcile show`",
        )

    def add_entitlement_subscription(
        self, entitlement_id: int, user_id: int, account_id: int, *, user: str | None = None
    ) -> EntitlementSubscriptionResult:
        """Grant an entitlement; the result's ``errorCode`` says how it went (no raise on refusal).

        "ConflictWithExisting" means the user already has it, which also makes a resend safe.
        """
        who = (user or f"user id {user_id}",)
        data = self._call(
            "POST",
            "/userPlugin/addentitlementsubscription",
            call="addentitlementsubscription",
            users=who,
            body=wire(
                AddEntitlementSubscription(entitlementId=entitlement_id, userId=user_id, accountId=account_id)
            ),
            business_errors=False,
        )
        return self._parse(EntitlementSubscriptionResult, data, "addentitlementsubscription", who)

    def agreement_signals(self, alert_id: int) -> list[AdminAlertSignal]:
        """Read every Market Data Agreement signal filed under ``alert_id`` (one call)."""
        data = self._call(
            "GET", "/adminAlertSignal/deps", call="adminAlertSignal/deps", params={"masterid": alert_id}
        )
        return self._parse_list(AdminAlertSignal, data, "adminAlertSignal/deps", ())

    def complete_alert_signal(self, signal_id: int, *, user: str | None = None) -> None:
        """Mark one agreement signal completed."""
        who = (user,) if user else ()
        data = self._call(
            "POST",
            "/adminAlertSignal/completealertsignal",
            call="completealertsignal",
            users=who,
            body=wire(CompleteAlertSignal(adminAlertSignalId=signal_id)),
        )
        self._parse(AdminAlertSignalResponse, data, "completealertsignal", who)

    def cancel_everything(
        self, user_ids: Sequence[int], flags: CancelFlagsLike, *, users: Sequence[str] = ()
    ) -> CancelEverythingResult:
        """Cancel subscriptions, permissions and plugins of up to 100 users; all four flags sent."""
        _check_batch("canceleverything", len(user_ids), "users")
        who = tuple(users) or tuple(f"user id {i}" for i in user_ids)
        request = CancelEverything(
            userIds=list(user_ids),
            tradovateSubscriptions=flags.tradovateSubscriptions,
            tradingPermissions=flags.tradingPermissions,
            userPlugins=flags.userPlugins,
            marketDataSubscriptions=flags.marketDataSubscriptions,
        )
        data = self._call(
            "POST", "/user/canceleverything", call="canceleverything", users=who, body=wire(request)
        )
        return self._parse(CancelEverythingResult, data, "canceleverything", who)

    # -- evaluation accounts (Stage 4) -------------------------------------------------------------

    def create_evaluation_accounts(self, accounts: Sequence[EvaluationAccount]) -> list[CreateAccountResult]:
        """Create up to 100 accounts with their trading permissions; one result per account, in order.

        Each result has ``accountId`` and ``tradingPermissionId``, or ``errorText``. Raises
        :class:`OutcomeUnknown` when the request was sent and no usable answer came (it is never
        resent), and :class:`ApiError` when the API refused the whole request.
        """
        call = "createevaluationaccounts"
        names = tuple(a.name for a in accounts)
        data = self._create(call, names, "accounts", wire(CreateEvaluationAccounts(accounts=list(accounts))))
        answer = self._parse(CreateEvaluationAccountsResponse, data, call, names, sent=True)
        _check_results(call, names, "accounts", len(answer.results), answer.errorText)
        return _said_something(
            answer.results, lambda r: r.accountId is not None or bool(r.errorText), "an account id", "account"
        )

    def revoke_trading_permission(
        self, permission_id: int, *, account: str | None = None
    ) -> TradingPermission:
        """Revoke one trading permission; return it as the API now has it (status Revoked)."""
        call = "revoketradingpermission"
        who = (account or f"trading permission {permission_id}",)
        data = self._call(
            "POST",
            "/user/revoketradingpermission",
            call=call,
            users=who,
            body=wire(RevokeTradingPermission(tradingPermissionId=permission_id)),
        )
        answer = self._parse(TradingPermissionResponse, data, call, who)
        return _present(
            answer.tradingPermission,
            call,
            who,
            "tradingPermission",
            "read the permission (/tradingPermission/list) to see whether it was revoked",
        )

    def revoke_trading_permissions(
        self, permission_ids: Sequence[int], *, accounts: Sequence[str] = ()
    ) -> None:
        """Revoke up to 100 trading permissions in one call (revoking a revoked one again is harmless)."""
        call = "revoketradingpermissions"
        _check_batch(call, len(permission_ids), "trading permission ids")
        who = tuple(accounts) or tuple(f"trading permission {i}" for i in permission_ids)
        body = wire(RevokeTradingPermissions(tradingPermissionIds=list(permission_ids)))
        self._simple("/user/revoketradingpermissions", call, body, who)

    def reset_demo_account_state(
        self, account_ids: Sequence[int], trade_date: date, *, accounts: Sequence[str] = ()
    ) -> None:
        """Return up to 100 accounts to their state at market open on ``trade_date``.

        Not resent after an unknown outcome: a second reset would also undo the trading done since
        the first, so whether to reset again is the caller's decision (its journal's).
        """
        call = "resetdemoaccountstate"
        _check_batch(call, len(account_ids), "account ids")
        day = TradeDate(year=trade_date.year, month=trade_date.month, day=trade_date.day)
        body = wire(ResetDemoAccountState(accountIds=list(account_ids), resetTradeDate=day))
        self._simple(
            "/account/resetdemoaccountstate", call, body, _accounts(account_ids, accounts), idempotent=False
        )

    def switch_risk_category(
        self, account_ids: Sequence[int], category_id: int, *, accounts: Sequence[str] = ()
    ) -> None:
        """Move up to 100 accounts to risk category ``category_id`` (those already there are skipped)."""
        call = "switchriskcategory"
        _check_batch(call, len(account_ids), "account ids")
        body = wire(SwitchRiskCategory(accountIds=list(account_ids), riskCategoryId=category_id))
        self._simple("/accountRiskStatus/switchriskcategory", call, body, _accounts(account_ids, accounts))

    def set_admin_auto_liq_action(
        self,
        account_id: int,
        action: str,
        *,
        reason_code: str = "Other",
        reason: str | None = None,
        account: str | None = None,
    ) -> AccountRiskStatus:
        """Set an account's admin action: ``LockTradingImmediately`` locks it, ``Normal`` unlocks it.

        The API wants a ``reason`` when ``reason_code`` is Other (the code most partners use).
        """
        call = "setadminautoliqaction"
        if reason_code == "Other" and not reason:
            raise ValueError(f"{call}: reason_code Other needs a reason")
        who = (account or f"account id {account_id}",)
        request = SetAdminAutoLiqAction(
            accountId=account_id,
            adminAction=action,
            adminActionReasonCode=reason_code,
            adminActionReason=reason,
        )
        data = self._call(
            "POST", "/accountRiskStatus/setadminautoliqaction", call=call, users=who, body=wire(request)
        )
        answer = self._parse(AccountRiskStatusResponse, data, call, who)
        return _present(
            answer.accountRiskStatus,
            call,
            who,
            "accountRiskStatus",
            "read the account's risk status (/accountRiskStatus/list) to see whether the action was set",
        )

    def update_user_auto_liqs(
        self, items: Sequence[UpdateUserAutoLiqItem], *, accounts: Sequence[str] = ()
    ) -> list[UserAccountAutoLiq]:
        """Change the auto-liquidation settings of up to 100 accounts; return them as the API stored them."""
        call = "updateuserautoliqs"
        _check_batch(call, len(items), "items")
        who = _accounts([i.accountId for i in items], accounts)
        data = self._call(
            "POST",
            "/userAccountAutoLiq/updateuserautoliqs",
            call=call,
            users=who,
            body=wire(UpdateUserAutoLiqs(items=list(items))),
        )
        answer = self._parse(UpdateUserAutoLiqsResponse, data, call, who)
        return [a.userAccountAutoLiq for a in answer.userAutoLiqs if a.userAccountAutoLiq is not None]

    def list_accounts(self) -> list[Account]:
        """Return every account of the organization (one call)."""
        return self._parse_list(
            Account, self._call("GET", "/account/list", call="account/list"), "account/list", ()
        )

    def list_trading_permissions(self) -> list[TradingPermission]:
        """Return every trading permission of the organization's accounts (one call)."""
        data = self._call("GET", "/tradingPermission/list", call="tradingPermission/list")
        return self._parse_list(TradingPermission, data, "tradingPermission/list", ())

    def list_user_auto_liqs(self) -> list[UserAccountAutoLiq]:
        """Return the auto-liquidation settings of every account (one call)."""
        data = self._call("GET", "/userAccountAutoLiq/list", call="userAccountAutoLiq/list")
        return self._parse_list(UserAccountAutoLiq, data, "userAccountAutoLiq/list", ())

    def list_account_risk_statuses(self) -> list[AccountRiskStatus]:
        """Return the risk status (admin action) of every account (one call)."""
        data = self._call("GET", "/accountRiskStatus/list", call="accountRiskStatus/list")
        return self._parse_list(AccountRiskStatus, data, "accountRiskStatus/list", ())

    def _create(self, call: str, names: tuple[str, ...], noun: str, body: dict[str, Any]) -> Any:
        """Send a create call for up to 100 items once: it is never resent (not idempotent)."""
        _check_batch(call, len(names), noun)
        path = f"/user/{call}"
        return self._call(
            "POST", path, call=call, users=names, body=body, idempotent=False, business_errors=False
        )

    def _simple(
        self, path: str, call: str, body: dict[str, Any], who: tuple[str, ...], *, idempotent: bool = True
    ) -> None:
        """Send a call the API answers ``{"ok": ...}``; raise unless it answered ok."""
        data = self._call("POST", path, call=call, users=who, body=body, idempotent=idempotent)
        if not self._parse(SimpleResponse, data, call, who, sent=not idempotent).ok:
            raise ApiError(
                f"{call}{_for(who)}: the API answered ok: false and gave no reason", call=call, users=who
            )

    # -- reads ------------------------------------------------------------------------------------

    def find_user(self, name: str) -> User | None:
        """Return the user called ``name``, or None when there is none."""
        data = self._call(
            "GET", "/user/find", call="user/find", users=(name,), params={"name": name}, missing_ok=True
        )
        if data is None or data == {}:
            return None
        return self._parse(User, data, "user/find", (name,))

    def user_items(self, ids: Sequence[int]) -> list[User]:
        """Return the users with these ids (those that exist), in the API's order."""
        found: list[User] = []
        for start in range(0, len(ids), _IDS_PER_READ):
            chunk = ids[start : start + _IDS_PER_READ]
            data = self._call(
                "GET", "/user/items", call="user/items", params={"ids": ",".join(str(i) for i in chunk)}
            )
            found.extend(self._parse_list(User, data, "user/items", ()))
        return found

    def list_users(self) -> list[User]:
        """Return every user of the organization."""
        return self._parse_list(User, self._call("GET", "/user/list", call="user/list"), "user/list", ())

    def contact_info(self, user_id: int) -> ContactInfo | None:
        """Return a user's contact information, or None when none is on file."""
        data = self._call("GET", "/contactInfo/deps", call="contactInfo/deps", params={"masterid": user_id})
        infos = self._parse_list(ContactInfo, data, "contactInfo/deps", (f"user id {user_id}",))
        return infos[0] if infos else None

    def contact_infos(self, user_ids: Sequence[int]) -> list[ContactInfo]:
        """Return the contact information on file for these users (``/contactInfo/ldeps``, batched)."""
        return self._ldeps(ContactInfo, "contactInfo/ldeps", user_ids)

    def user_plugins_of(self, user_ids: Sequence[int]) -> list[UserPlugin]:
        """Return the plugins (granted entitlements) of these users (``/userPlugin/ldeps``, batched)."""
        return self._ldeps(UserPlugin, "userPlugin/ldeps", user_ids)

    def _ldeps(self, model: type[M], call: str, ids: Sequence[int]) -> list[M]:
        found: list[M] = []
        for chunk in id_chunks(ids):
            data = self._call("GET", f"/{call}", call=call, params={"masterids": chunk})
            found.extend(self._parse_list(model, data, call, ()))
        return found

    def user_plugins(self, user_id: int) -> list[UserPlugin]:
        """Return a user's plugins (granted entitlements)."""
        data = self._call("GET", "/userPlugin/deps", call="userPlugin/deps", params={"masterid": user_id})
        return self._parse_list(UserPlugin, data, "userPlugin/deps", (f"user id {user_id}",))

    def list_user_plugins(self) -> list[UserPlugin]:
        """Return the active plugins (granted entitlements) of every user of the organization."""
        data = self._call("GET", "/userPlugin/list", call="userPlugin/list")
        return self._parse_list(UserPlugin, data, "userPlugin/list", ())

    # -- the request pipeline -----------------------------------------------------------------------

    def _call(self, method: str, path: str, **options: Any) -> Any:
        """Send one call through pacing, retries, penalties and auth; return its parsed JSON.

        ``options`` are :meth:`_send_call`'s. A limited path's slot counts from the answer.
        """
        if self.pacer is None or not self.pacer.limits_path(path):
            return self._send_call(method, path, **options)
        with self.pacer.paced(path, sleep=self._idle):
            return self._send_call(method, path, **options)

    def _idle(self, seconds: float) -> None:
        """Sleep ``seconds`` (a pacing wait), renewing the access token on the way when it falls due."""
        sleep = self.pacer.sleep if self.pacer is not None else self.sleep
        due = self.auth.renewal_due_in() if self.auth is not None else None
        if self.auth is None or due is None or due >= seconds:
            sleep(seconds)
            return
        due = max(due, 0.0)
        sleep(due)
        try:
            self.auth.renew_if_due(lambda request: send(self._transport, request, None))
        except (ApiError, httpx.HTTPError) as exc:
            # Not fatal: the call after the wait logs in if the token is gone by then.
            # httpx's own transport (behind a proxy) quotes a header value it refuses: the token.
            log.info(
                "renewing the access token during a wait failed: %s", redact(str(exc), self.auth.secrets())
            )
        sleep(seconds - due)

    def _send_call(
        self,
        method: str,
        path: str,
        *,
        call: str,
        users: tuple[str, ...] = (),
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        idempotent: bool = True,
        business_errors: bool = True,
        missing_ok: bool = False,
    ) -> Any:
        request_id = uuid.uuid4().hex
        self._local.request_id = request_id
        request = self._request(method, path, body, params, request_id)

        def attempt() -> Any:
            return self._attempt(request, call, users, idempotent=idempotent, missing_ok=missing_ok)

        try:
            data = self._retried(attempt, call)
        except _Retry as exc:
            if isinstance(exc.error, LoginDeferred) and self.auth is not None:
                # Retried as long as this run waits: no call of it can be sent, so it says so once.
                attempts = None if (exc.retry_after or 0) > self.max_retry_after else self.max_attempts
                raise self.auth.give_up(exc.error, attempts=attempts) from None
            if exc.retry_after is not None and exc.retry_after > self.max_retry_after:
                raise ApiError(
                    f"{exc.error} The API asks to wait {exc.retry_after:.0f} s, longer than this run waits "
                    f"({self.max_retry_after:.0f} s): run the command again after that",
                    call=call,
                    users=users,
                ) from None
            raise exc.error from None
        if business_errors:
            self._raise_business_error(data, call, users)
        return data

    def _retried(self, attempt: Callable[[], Any], call: str) -> Any:
        """Run ``attempt``, retrying it with tenacity once it has failed in a retryable way.

        Most calls succeed at once: their first attempt runs outside tenacity (whose setup and
        bookkeeping cost a tenth of a call's CPU). A first failure is handed to tenacity as its
        own first attempt, so attempts, waits and messages are those of a retry from the start.
        """
        try:
            return attempt()
        except _Retry as exc:
            failed: list[_Retry] = [exc]

        # Imported here: tenacity and its imports cost ~20 ms of every run's start, and a run
        # whose calls all succeed at once never needs it.
        from tenacity import Retrying, retry_if_exception, stop_after_attempt

        def again() -> Any:
            if failed:
                raise failed.pop()
            return attempt()

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(
                lambda e: isinstance(e, _Retry) and (e.retry_after or 0) <= self.max_retry_after
            ),
            sleep=self.sleep,
            before_sleep=self._before_sleep(call),
            reraise=True,
        )
        return retrying(again)

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        params: dict[str, Any] | None,
        request_id: str,
    ) -> httpx.Request:
        """Build the request for ``path``, byte for byte what httpx builds from its headers and JSON.

        A JSON call's headers are assembled as raw pairs in httpx's order (Host first, the
        body's Content-Length last), from a prefix made once per path: httpx's own assembly
        normalises and rescans the headers three times over. Other calls are built by httpx.
        """
        url, head = self._targets.get(path) or self._target(path)
        timeout = {"timeout": self._timeout}
        content = None
        if body is not None:
            content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        if content is None or params is not None:
            headers = {**_HEADERS, "X-Request-Id": request_id}
            if content is not None:
                headers["Content-Type"] = "application/json"
            return httpx.Request(
                method, url, params=params, headers=headers, content=content, extensions=timeout
            )
        raw = [
            *head,
            (b"X-Request-Id", request_id.encode("ascii")),
            (b"Content-Type", b"application/json"),
            (b"Content-Length", str(len(content)).encode("ascii")),
        ]
        stream = httpx.ByteStream(content)
        request = httpx.Request(method, url, headers=raw, stream=stream, extensions=timeout)
        request.read()
        return request

    def _target(self, path: str) -> tuple[httpx.URL, list[tuple[bytes, bytes]]]:
        """Parse ``path``'s URL once per client; with it the headers every request to it starts with."""
        url = httpx.URL(self.base_url + path)
        head = [(b"Host", url.netloc), *((k.encode("ascii"), v.encode("ascii")) for k, v in _HEADERS.items())]
        self._targets[path] = url, head
        return url, head

    def _attempt(
        self, request: httpx.Request, call: str, users: tuple[str, ...], *, idempotent: bool, missing_ok: bool
    ) -> Any:
        exchange = resend_while_penalised(
            request,
            call,
            users,
            sleep=self.sleep,
            wallclock=self.wallclock,
            on_event=self.on_event,
            error=ApiError,
        )
        response = drive(exchange, lambda r: self._send(r, call, users, idempotent=idempotent))
        return self._answer(response, call, users, idempotent=idempotent, missing_ok=missing_ok)

    def _send(
        self, request: httpx.Request, call: str, users: tuple[str, ...], *, idempotent: bool
    ) -> httpx.Response:
        self.requests_sent += 1
        if self.auth is not None:
            # A renewal that failed during a pacing wait left the mark set: this call's own
            # failure would pass for a login's, and a create the server applied would be resent.
            self.auth.reset_authenticating()
        try:
            response = send(self._transport, request, self.auth)
        except LoginDeferred as exc:
            raise _Retry(exc, exc.retry_after) from None
        except _NOT_SENT as exc:
            self._auth_done()
            raise _Retry(
                TransportError(
                    f"{call}{_for(users)}: cannot connect to {self.endpoint_label} ({type(exc).__name__}); "
                    "check the endpoint and the network",
                    call=call,
                    users=users,
                )
            ) from None
        except httpx.LocalProtocolError as exc:
            # The request itself cannot be written (a header or body HTTP cannot carry): refused
            # before a whole request left, so no server can have applied it; sent again it fails again.
            self._auth_done()
            raise ApiError(
                f"{call}{_for(users)}: the request could not be sent ({exc}), so nothing was applied; "
                "this is a bug in reconcile or in a value it sends: report it with this message",
                call=call,
                users=users,
            ) from None
        except (httpx.TransportError, httpx.DecodingError) as exc:  # DecodingError: a broken gzip body
            if self._auth_done() or idempotent:
                # Failed during login (the call itself was never sent), or safe to resend anyway.
                raise _Retry(
                    TransportError(
                        f"{call}{_for(users)}: no answer from {self.endpoint_label} ({type(exc).__name__})",
                        call=call,
                        users=users,
                    )
                ) from None
            raise self._outcome_unknown(
                call, users, f"the connection failed ({type(exc).__name__})"
            ) from None
        response = self._redacted(response, request)
        self._local.request_id = response.headers.get("X-Request-Id") or self._local.request_id
        self._check_status(response, call, users, idempotent=idempotent)
        return response

    def _check_status(
        self, response: httpx.Response, call: str, users: tuple[str, ...], *, idempotent: bool
    ) -> None:
        """Raise for an answer that is no answer: rate limited, a server error, or the token refused."""
        status = response.status_code
        if status in (423, 429):
            raise _Retry(
                ApiError(
                    f"{call}{_for(users)}: rate limited by the API (HTTP {status}); try again later",
                    call=call,
                    users=users,
                ),
                retry_after_seconds(response, self.wallclock()),
            )
        if status >= 500:
            if not idempotent:
                raise self._outcome_unknown(call, users, f"the API answered HTTP {status}")
            raise _Retry(
                TransportError(
                    f"{call}{_for(users)}: the API answered HTTP {status} ({_snippet(response)})",
                    call=call,
                    users=users,
                ),
                retry_after_seconds(response, self.wallclock()),
            )
        if status == 401:
            raise AuthError(
                f"{call}{_for(users)}: the API refused the access token even after a fresh login "
                f"({_snippet(response)}); check that the partner account may use this call",
                call=call,
                users=users,
            )

    def _answer(
        self,
        response: httpx.Response,
        call: str,
        users: tuple[str, ...],
        *,
        idempotent: bool,
        missing_ok: bool,
    ) -> Any:
        status = response.status_code
        if status == 404 and missing_ok:
            return None
        if status >= 400:
            raise ApiError(
                f"{call}{_for(users)}: the API refused the request with HTTP {status}: {_snippet(response)}",
                call=call,
                users=users,
            )
        try:
            return json.loads(response.content) if response.content else None
        except (ValueError, RecursionError):  # RecursionError: arrays nested past Python's limit
            what = "an HTML page" if b"<html" in response.content[:200].lower() else "malformed JSON"
            if not idempotent:
                raise self._outcome_unknown(call, users, f"the answer was {what}") from None
            raise _Retry(
                TransportError(
                    f"{call}{_for(users)}: the API answered HTTP {status} with {what}, not JSON",
                    call=call,
                    users=users,
                )
            ) from None

    def _redacted(self, response: httpx.Response, request: httpx.Request) -> httpx.Response:
        """Read ``response``; drop any secret of ``request`` it echoes, so no message can carry one."""
        content = response.read()
        secrets = request_secrets(request) + (self.auth.secrets() if self.auth is not None else [])
        text = content.decode("utf-8", errors="replace")
        scrubbed = redact(text, secrets)
        if scrubbed == text:
            return response
        return httpx.Response(
            response.status_code,
            headers={k: v for k, v in response.headers.items() if k.lower() != "content-length"},
            content=scrubbed.encode(),
            request=request,
        )

    def _outcome_unknown(self, call: str, users: tuple[str, ...], why: str) -> OutcomeUnknown:
        return OutcomeUnknown(
            f"{call}{_for(users)}: {why} after the request was sent, so it may or may not have been "
            "applied. It was not resent; look the users up (the next apply does) before trying again",
            call=call,
            users=users,
            reason=why,
        )

    def _auth_done(self) -> bool:
        """Return whether the failure happened during login/renewal, and clear the mark."""
        if self.auth is None or not self.auth.authenticating:
            return False
        self.auth.reset_authenticating()
        return True

    @staticmethod
    def _raise_business_error(data: Any, call: str, users: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            return
        text = data.get("errorText")
        violations = data.get("violations")
        if violations:
            text = "; ".join(str(v) for v in violations) if isinstance(violations, list) else str(violations)
        if text:
            raise ApiError(f"{call}{_for(users)}: the API said: {text}", call=call, users=users)

    def _parse(
        self, model: type[M], data: Any, call: str, users: tuple[str, ...], *, sent: bool = False
    ) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise self._unexpected(exc, data, call, users, sent) from None

    def _parse_list(self, model: type[M], data: Any, call: str, users: tuple[str, ...]) -> list[M]:
        try:
            return _list_adapter(model).validate_python(data)
        except ValidationError as exc:
            raise self._unexpected(exc, data, call, users, False) from None

    def _unexpected(
        self, exc: ValidationError, data: Any, call: str, users: tuple[str, ...], sent: bool
    ) -> ApiError:
        # Field locations and reasons only: the values may be personal data.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:5]
        )
        what = f"the answer is not what the contract describes ({problems})"
        if sent:
            return OutcomeUnknown(
                f"{call}{_for(users)}: {what}; look the users up before trying again",
                call=call,
                users=users,
                reason=what,
            )
        return TransportError(f"{call}{_for(users)}: {what}", call=call, users=users)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retry) and exc.retry_after is not None:
            return exc.retry_after
        from tenacity import wait_exponential_jitter  # see _retried

        return float(wait_exponential_jitter(multiplier=0.5, max=30.0, jitter=1.0)(state))

    def _before_sleep(self, call: str) -> Callable[[RetryCallState], None]:
        def report(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            seconds = state.upcoming_sleep
            message = f"{call}: retrying in {seconds:.1f} s (attempt {state.attempt_number + 1}): {exc}"
            log.info("%s", message)
            emit_wait(self.on_event, "retry", call, message, seconds, self.wallclock)

        return report


def _check_batch(call: str, count: int, noun: str) -> None:
    if not 0 < count <= MAX_ITEMS_PER_CALL:
        raise ValueError(f"{call} takes 1 to {MAX_ITEMS_PER_CALL} {noun}, got {count}")


def _check_results(call: str, names: tuple[str, ...], noun: str, answered: int, error: str | None) -> None:
    """Refuse a create answer that is not one result per item: a whole-request refusal or a short list."""
    if not answered and error:
        raise ApiError(
            f"{call}{_for(names)}: the API refused the whole request: {error}", call=call, users=names
        )
    if answered != len(names):
        raise OutcomeUnknown(
            f"{call}{_for(names)}: the API answered {answered} results for {len(names)} {noun}, so it "
            f"is not known which were created; look the {noun} up before creating them again",
            call=call,
            users=names,
            reason=f"the API answered {answered} results for {len(names)} {noun}",
        )


def _present(value: T | None, call: str, who: tuple[str, ...], field: str, check: str) -> T:
    """Return the ``field`` an answer carried; raise, saying how to ``check`` the outcome, if it had none."""
    if value is None:
        raise TransportError(f"{call}{_for(who)}: the answer has no {field}; {check}", call=call, users=who)
    return value


def _said_something(results: Sequence[M], answered: Callable[[M], bool], ident: str, item: str) -> list[M]:
    """Return ``results``, each that has neither an id nor an error given an error saying so."""
    text = f"the API answered neither {ident} nor an error for this {item}"
    return [r if answered(r) else r.model_copy(update={"errorText": text}) for r in results]


def _accounts(account_ids: Sequence[int], names: Sequence[str]) -> tuple[str, ...]:
    """Who a call is about, for messages: the account names when known, else their ids."""
    return tuple(names) or tuple(f"account id {i}" for i in account_ids)


@functools.cache
def _list_adapter(model: type[M]) -> TypeAdapter[list[M]]:
    # Building an adapter costs far more than validating with it: build one per model.
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def _snippet(response: httpx.Response) -> str:
    """A short, safe description of an error answer: its errorText/message, else its first words."""
    try:
        data = json.loads(response.content)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        for key in ("errorText", "message", "error", "detail"):
            if data.get(key):
                return str(data[key])[:300]
    text = response.text.strip()
    if text.lower().startswith("<"):
        return "an HTML page"
    return text[:200] or "no body"
