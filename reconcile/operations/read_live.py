"""Read a snapshot of the live organization through the partner API (for drift, refresh, import).

One snapshot costs ``3 + C`` requests, whatever the size of the organization:

* ``GET /user/list``               every user of the organization (id, name, email, status);
* ``GET /userPlugin/list``         every active plugin (granted entitlement) of every user;
* ``GET /adminAlertSignal/deps``   every Market Data Agreement signal (who signed);
* ``GET /contactInfo/ldeps`` x C   contact info (and with it the names: ``/user/list`` has none),
  read only for the users asked for (the managed ones for drift, the candidates for import), up
  to 250 users a request (:data:`reconcile.api.client.IDS_PER_LDEPS_READ`): 4 per 1,000 users.

A desk with evaluation accounts costs four more, whatever the number of accounts:
``/account/list``, ``/tradingPermission/list``, ``/userAccountAutoLiq/list`` and
``/accountRiskStatus/list``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Protocol

from reconcile.api.client import id_chunks
from reconcile.api.models import (
    Account,
    AccountRiskStatus,
    AdminAlertSignal,
    ContactInfo,
    TradingPermission,
    User,
    UserAccountAutoLiq,
    UserPlugin,
)
from reconcile.planning.snapshot import LiveAccount, LiveContact, LiveSnapshot, LiveUser

ACCOUNT_READS = 4
"""Requests that read every account with its permission, auto-liq settings and risk status."""


class LiveReader(Protocol):
    """The reads a snapshot needs (:class:`reconcile.api.client.PartnerClient` has them)."""

    def list_users(self) -> list[User]: ...
    def list_user_plugins(self) -> list[UserPlugin]: ...
    def agreement_signals(self, alert_id: int) -> list[AdminAlertSignal]: ...
    def contact_infos(self, user_ids: Sequence[int]) -> list[ContactInfo]: ...
    def list_accounts(self) -> list[Account]: ...
    def list_trading_permissions(self) -> list[TradingPermission]: ...
    def list_user_auto_liqs(self) -> list[UserAccountAutoLiq]: ...
    def list_account_risk_statuses(self) -> list[AccountRiskStatus]: ...


def contact_from_wire(info: ContactInfo) -> LiveContact:
    """Return the contact the API answered, empty strings read as None."""
    fields = {name: getattr(info, name) or None for name in LiveContact.model_fields}
    return LiveContact(**fields)


def read_live(
    client: LiveReader,
    *,
    agreement_alert_id: int,
    contacts_of: Collection[int] | None = None,
    read_at: datetime,
    accounts: bool = False,
) -> LiveSnapshot:
    """Read the organization's users, plugins and agreement signals, and the contacts asked for.

    ``contacts_of`` holds the user ids whose contact info to read (None = every user: one request
    each). Ids not in the organization are skipped. With ``accounts`` the evaluation accounts are
    read too (:data:`ACCOUNT_READS` more requests).
    """
    users = client.list_users()
    plugins = client.list_user_plugins()
    signals = client.agreement_signals(agreement_alert_id)
    granted: dict[int, set[int]] = {}
    for plugin in plugins:
        if plugin.userId is not None and plugin.entitlementId is not None:
            granted.setdefault(plugin.userId, set()).add(plugin.entitlementId)
    signed = {s.relatedToUserId for s in signals if s.relatedToUserId is not None}
    listing = LiveSnapshot(
        users=tuple(
            LiveUser(
                userId=user.id,
                name=user.name,
                email=user.email,
                status=user.status,
                entitlementIds=frozenset(granted.get(user.id, ())),
                agreement_signed=user.id in signed,
            )
            for user in sorted(users, key=lambda u: u.id)
        ),
        read_at=read_at,
        requests=3 + (ACCOUNT_READS if accounts else 0),
        accounts=read_accounts(client) if accounts else None,
    )
    ids = [u.userId for u in listing.users] if contacts_of is None else contacts_of
    return with_contacts(client, listing, ids)


def read_accounts(client: LiveReader) -> tuple[LiveAccount, ...]:
    """Every account of the organization with its permission, auto-liq settings and admin action."""
    accounts = client.list_accounts()
    permissions: dict[int, TradingPermission] = {}
    for permission in client.list_trading_permissions():
        kept = permissions.get(permission.accountId)
        # An account's live permission wins over an older revoked one.
        if kept is None or kept.status.lower() == "revoked":
            permissions[permission.accountId] = permission
    auto_liqs = {a.id: a.model_dump(exclude_none=True, exclude={"id"}) for a in client.list_user_auto_liqs()}
    actions = {s.id: s.adminAction for s in client.list_account_risk_statuses()}
    live: list[LiveAccount] = []
    for account in sorted(accounts, key=lambda a: a.id):
        held = permissions.get(account.id)
        live.append(
            LiveAccount(
                accountId=account.id,
                name=account.name,
                userId=account.userId,
                riskCategoryId=account.riskCategoryId,
                closed=bool(account.closed),
                tradingPermissionId=held.id if held is not None else None,
                permissionStatus=held.status if held is not None else None,
                autoLiq=auto_liqs.get(account.id, {}),
                adminAction=actions.get(account.id),
            )
        )
    return tuple(live)


def with_contacts(client: LiveReader, snapshot: LiveSnapshot, user_ids: Collection[int]) -> LiveSnapshot:
    """Return ``snapshot`` with the contact info of ``user_ids`` read (``/contactInfo/ldeps``, batched).

    Ids not in the snapshot, and users whose contact was read already, cost nothing.
    """
    wanted = set(user_ids)
    todo = [u.userId for u in snapshot.users if u.userId in wanted and not u.contact_read]
    if not todo:
        return snapshot
    infos: dict[int, ContactInfo] = {}
    for info in client.contact_infos(todo):
        infos.setdefault(info.userId, info)  # the first on file, as /contactInfo/deps gives it
    reading = set(todo)
    users = tuple(
        user.model_copy(
            update={
                "contact_read": True,
                "contact": contact_from_wire(infos[user.userId]) if user.userId in infos else None,
            }
        )
        if user.userId in reading
        else user
        for user in snapshot.users
    )
    requests = snapshot.requests + sum(1 for _ in id_chunks(todo))
    # A new snapshot, not a copy: a copy would keep the cached look-ups of the old users.
    return LiveSnapshot(users=users, read_at=snapshot.read_at, requests=requests, accounts=snapshot.accounts)
