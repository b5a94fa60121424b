"""What the applier needs from the partner-API client and the loaded manifest, as structural types.

:class:`reconcile.api.client.PartnerClient` satisfies :class:`ApplyClient`, and
:class:`reconcile.manifest.loader.LoadedManifest` :class:`LoadedLike`; unit tests pass small
in-memory fakes. Only the attributes the applier reads are named here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Protocol, runtime_checkable

from reconcile.errors import Location
from reconcile.manifest.models import CancelFlags, Manifest


class LoadedLike(Protocol):
    """What apply needs of a loaded manifest."""

    @property
    def manifest(self) -> Manifest: ...
    @property
    def digest(self) -> str: ...
    @property
    def locations(self) -> Mapping[str, Location]:
        """User name → where the manifest declares it (relative password files start there)."""


class CreateResultLike(Protocol):
    @property
    def userId(self) -> int | None: ...
    @property
    def errorText(self) -> str | None: ...


class UserLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def status(self) -> str | None: ...


class SignalLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def relatedToUserId(self) -> int | None: ...
    @property
    def completed(self) -> Any: ...


class GrantResultLike(Protocol):
    @property
    def errorCode(self) -> str | None: ...
    @property
    def errorText(self) -> str | None: ...


class PluginLike(Protocol):
    @property
    def userId(self) -> int | None: ...
    @property
    def entitlementId(self) -> int | None: ...


class CreateAccountResultLike(Protocol):
    @property
    def accountId(self) -> int | None: ...
    @property
    def tradingPermissionId(self) -> int | None: ...
    @property
    def errorText(self) -> str | None: ...


class AccountLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def userId(self) -> int: ...


class PermissionLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def userId(self) -> int: ...
    @property
    def accountId(self) -> int: ...
    @property
    def status(self) -> str: ...


class CancelClient(Protocol):
    """The one call a companion host receives (DESIGN §7: cancel on both live and demo)."""

    @property
    def endpoint_label(self) -> str:
        """The host this client talks to, as state records it (``cancelledOn``)."""

    @property
    def last_request_id(self) -> str | None:
        """The server's id of the last request sent, for the audit log."""

    def cancel_everything(
        self, user_ids: Sequence[int], flags: CancelFlags, *, users: Sequence[str] = ()
    ) -> Any: ...


@runtime_checkable
class PacedCreates(Protocol):
    """A client that can wait for a create's slot before the create is announced (it paces them)."""

    def await_create_slot(self) -> float: ...


@runtime_checkable
class ProbedCreates(Protocol):
    """A client that paces creates and can say, without waiting, whether a create may go now."""

    def create_slot_free(self) -> bool: ...


class ApplyClient(CancelClient, Protocol):
    """The partner-API calls the applier makes."""

    def create_evaluation_users(self, users: Sequence[Any]) -> Sequence[CreateResultLike]: ...
    def modify_email_address(self, user_id: int, email: str, *, user: str | None = None) -> Any: ...
    def update_contact_info(self, req: Any, *, user: str | None = None) -> Any: ...
    def add_entitlement_subscription(
        self, entitlement_id: int, user_id: int, account_id: int, *, user: str | None = None
    ) -> GrantResultLike: ...
    def agreement_signals(self, alert_id: int) -> Sequence[SignalLike]: ...
    def complete_alert_signal(self, signal_id: int, *, user: str | None = None) -> Any: ...
    def find_user(self, name: str) -> UserLike | None: ...
    def user_items(self, ids: Sequence[int]) -> Sequence[UserLike]: ...
    def user_plugins_of(self, user_ids: Sequence[int]) -> Sequence[PluginLike]: ...
    def create_evaluation_accounts(self, accounts: Sequence[Any]) -> Sequence[CreateAccountResultLike]: ...
    def update_user_auto_liqs(self, items: Sequence[Any], *, accounts: Sequence[str] = ()) -> Any: ...
    def switch_risk_category(
        self, account_ids: Sequence[int], category_id: int, *, accounts: Sequence[str] = ()
    ) -> Any: ...
    def set_admin_auto_liq_action(
        self,
        account_id: int,
        action: str,
        *,
        reason_code: str = "Other",
        reason: str | None = None,
        account: str | None = None,
    ) -> Any: ...
    def reset_demo_account_state(
        self, account_ids: Sequence[int], trade_date: date, *, accounts: Sequence[str] = ()
    ) -> Any: ...
    def revoke_trading_permissions(
        self, permission_ids: Sequence[int], *, accounts: Sequence[str] = ()
    ) -> Any: ...
    def list_accounts(self) -> Sequence[AccountLike]: ...
    def list_trading_permissions(self) -> Sequence[PermissionLike]: ...
