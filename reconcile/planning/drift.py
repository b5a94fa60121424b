"""Recorded state and a live snapshot → drift, and the state as the API has it now (pure, no I/O).

One comparison serves both callers: ``plan --refresh`` plans against :attr:`Comparison.observed`
(so the plan repairs what the manifest governs) and shows :attr:`Comparison.drift`;
``reconcile refresh`` saves :attr:`Comparison.observed` as the new recorded state.

What is compared, per managed active user (matched by user id, the one key that never changes):
lifecycle (closed or gone), email, names and contact (only when the contact was read: the API
shows names only inside contact info), and entitlements by id. Active users of the organization
that state does not hold are ``created_outside``; every such user, closed ones included, is listed
as unmanaged. Users recorded as cancelled are not compared: nothing is done to them any more.

When the snapshot holds accounts, each recorded account whose permission is active is compared by
account id: its trading permission (revoked or gone outside), the auto-liquidation fields state
records, its risk category (when reconcile set one) and its admin lock. An account id the API
shows under another name or user is ``account_other_user``: nothing is recorded for it, and the
planner makes it an error, so nothing is applied to another trader's account. Accounts of managed
users that state does not hold are ``account_outside``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconcile.contact import ADDRESS_FIELDS
from reconcile.planning.plan import DriftEntry, DriftKind, FieldChange
from reconcile.planning.snapshot import LiveAccount, LiveSnapshot, LiveUser, contact_record
from reconcile.state.model import AccountRecord, GrantRecord, State, UserRecord


@dataclass(frozen=True)
class Comparison:
    """What a live snapshot says about recorded state."""

    observed: State
    """Recorded state updated to what the API shows (same lineage and serial: not saved)."""
    drift: tuple[DriftEntry, ...]
    """Sorted by user, then kind, then entitlement."""
    unmanaged: tuple[str, ...]
    """Names of organization users that state does not hold (closed ones included), sorted."""
    closed: frozenset[str]
    """Managed users closed or gone outside reconcile (now recorded as cancelled in ``observed``)."""
    changed: tuple[str, ...]
    """Names whose record differs between state and ``observed``, sorted."""
    changed_accounts: tuple[str, ...] = ()
    """Account names whose record differs between state and ``observed``, sorted."""


def compare(
    state: State,
    live: LiveSnapshot,
    entitlements: Mapping[str, int],
    risk_categories: Mapping[str, int] | None = None,
) -> Comparison:
    """Compare ``state`` with ``live``; the two maps are the manifest's names → ids."""
    names_by_id = {eid: name for name, eid in sorted(entitlements.items(), reverse=True)}
    users = dict(state.users)
    drift: list[DriftEntry] = []
    closed: set[str] = set()
    managed_ids = {record.userId for record in state.users.values()}
    for name in sorted(state.users):
        record = state.users[name]
        if record.lifecycle != "active":
            continue
        new, entries = _compare_user(name, record, live.by_id.get(record.userId), names_by_id, live.read_at)
        drift.extend(entries)
        if new.lifecycle != "active":
            closed.add(name)
        if new != record:
            users[name] = new
    unmanaged = sorted(u.name for u in live.users if u.userId not in managed_ids)
    for user in live.users:
        if user.userId in managed_ids or user.closed:
            continue
        drift.append(
            DriftEntry(
                kind=DriftKind.created_outside,
                user=user.name,
                userId=user.userId,
                message="is in the organization, but reconcile neither created nor adopted it: "
                "it is never changed or cancelled",
            )
        )
    accounts = dict(state.accounts)
    if live.accounts is not None:
        drift.extend(_compare_accounts(state, live, accounts, risk_categories or {}))
    drift.sort(key=lambda d: (d.user, list(DriftKind).index(d.kind), d.account or "", d.entitlement or ""))
    changed = tuple(sorted(name for name in users if users[name] is not state.users.get(name)))
    changed_accounts = tuple(sorted(n for n in accounts if accounts[n] is not state.accounts.get(n)))
    observed = state.model_copy(update={"users": users, "accounts": accounts})
    return Comparison(observed, tuple(drift), tuple(unmanaged), frozenset(closed), changed, changed_accounts)


def _compare_accounts(
    state: State, live: LiveSnapshot, accounts: dict[str, AccountRecord], categories: Mapping[str, int]
) -> list[DriftEntry]:
    """Drift of every recorded account with an active permission; put what the API shows in ``accounts``."""
    names_by_id = {cid: name for name, cid in sorted(categories.items(), reverse=True)}
    now = live.read_at
    entries: list[DriftEntry] = []
    for name in sorted(state.accounts):
        record = state.accounts[name]
        if record.permission != "active":
            continue  # revoked is final: nothing is done to the account any more
        found_live = live.accounts_by_id.get(record.accountId)
        if found_live is not None and (
            found_live.userId != record.userId or found_live.name.casefold() != name.casefold()
        ):
            entries.append(_other_account(name, record, found_live, live))
            continue
        new, found = _compare_account(name, record, found_live, names_by_id)
        entries.extend(found)
        if new != record:
            revoked_at = now if new.permission == "revoked" else None
            accounts[name] = new.model_copy(update={"updatedAt": now, "revokedAt": revoked_at})
    recorded = {r.accountId for r in state.accounts.values()}
    managed = {r.userId: n for n, r in state.users.items() if r.lifecycle == "active"}
    for account in live.accounts or ():
        if account.accountId in recorded or account.userId not in managed or account.closed:
            continue
        entries.append(
            DriftEntry(
                kind=DriftKind.account_outside,
                user=managed[account.userId],
                userId=account.userId,
                account=account.name,
                message=f"account {account.name} (id {account.accountId}) is not recorded: reconcile neither "
                "created nor adopted it, so it never changes it (`reconcile import` adopts it by name)",
            )
        )
    return entries


def _other_account(name: str, record: AccountRecord, found: LiveAccount, live: LiveSnapshot) -> DriftEntry:
    """Report a recorded account id the API shows as another account or another user's.

    State is wrong about it, and which side is right is a guess: nothing is recorded, and the
    planner turns the entry into an error, so nothing is reset, locked or revoked on it.
    """
    owner = live.by_id.get(found.userId)
    owner_name = owner.name if owner is not None else f"user id {found.userId}"
    return DriftEntry(
        kind=DriftKind.account_other_user,
        user=record.user,
        userId=record.userId,
        account=name,
        message=f"account {name}: state records account id {record.accountId} for {record.user}, but "
        f"the API shows that id as account {found.name} of {owner_name}: state is wrong about this "
        "account; correct it (reconcile state show) before anything is applied to it",
    )


def _compare_account(
    name: str, record: AccountRecord, live: LiveAccount | None, categories: Mapping[int, str]
) -> tuple[AccountRecord, list[DriftEntry]]:
    def entry(kind: DriftKind, message: str, changes: tuple[FieldChange, ...] = ()) -> DriftEntry:
        return DriftEntry(
            kind=kind, user=record.user, userId=record.userId, account=name, changes=changes, message=message
        )

    if live is None or live.closed or live.revoked:
        why = (
            "is no longer in the organization's account list"
            if live is None or live.closed
            else ("had its trading permission revoked outside reconcile")
        )
        return record.model_copy(update={"permission": "revoked"}), [
            entry(DriftKind.account_revoked, f"account {name} {why}")
        ]
    update: dict[str, Any] = {}
    if live.tradingPermissionId is not None and live.tradingPermissionId != record.tradingPermissionId:
        # None: lost when it was created. Another: the recorded one was revoked and a new one
        # granted outside. Either way the live one is what a revocation must name.
        update["tradingPermissionId"] = live.tradingPermissionId
    entries: list[DriftEntry] = []
    changes = [
        FieldChange(field=f, before=value, after=live.autoLiq.get(f))
        for f, value in sorted(record.risk.items())
        if live.autoLiq.get(f) != value
    ]
    if changes:
        update["risk"] = {f: live.autoLiq.get(f) for f in record.risk if live.autoLiq.get(f) is not None}
    if record.riskCategory is not None and live.riskCategoryId is not None:
        category = categories.get(live.riskCategoryId, f"#{live.riskCategoryId}")
        if category != record.riskCategory:
            changes.append(FieldChange(field="riskCategory", before=record.riskCategory, after=category))
            update["riskCategory"] = category
    if changes:
        fields = ", ".join(c.field for c in changes)
        entries.append(
            entry(
                DriftKind.account_risk_changed,
                f"account {name}: changed outside reconcile: {fields}",
                tuple(changes),
            )
        )
    if live.trading != record.trading:
        how = "locked" if live.trading == "locked" else "unlocked"
        entries.append(
            entry(DriftKind.account_trading_changed, f"account {name} was {how} outside reconcile")
        )
        update["trading"] = live.trading
    return (record.model_copy(update=update) if update else record), entries


def _compare_user(
    name: str, record: UserRecord, live: LiveUser | None, names_by_id: Mapping[int, str], now: datetime
) -> tuple[UserRecord, list[DriftEntry]]:
    if live is None or live.closed:
        kind = DriftKind.missing if live is None else DriftKind.closed
        message = (
            f"user id {record.userId} is no longer in the organization's user list"
            if live is None
            else "was closed outside reconcile (status Closed): it can no longer be changed"
        )
        entry = DriftEntry(kind=kind, user=name, userId=record.userId, message=message)
        closed = {"lifecycle": "cancelled", "cancelledAt": now, "updatedAt": now}
        return record.model_copy(update=closed), [entry]

    entries: list[DriftEntry] = []
    update: dict[str, Any] = {}
    changes = _field_changes(record, live, update)
    if changes:
        fields = ", ".join(c.field for c in changes)
        entries.append(
            DriftEntry(
                kind=DriftKind.changed,
                user=name,
                userId=record.userId,
                changes=changes,
                message=f"changed outside reconcile: {fields}",
            )
        )
    grants, grant_entries = _compare_grants(name, record, live, names_by_id, now)
    entries.extend(grant_entries)
    if grants != record.entitlements:
        update["entitlements"] = grants
    if not update:
        return record, entries
    return record.model_copy(update={**update, "updatedAt": now}), entries


def _field_changes(record: UserRecord, live: LiveUser, update: dict[str, Any]) -> tuple[FieldChange, ...]:
    """Recorded → live for email, names and contact; fill ``update`` with the live values."""
    before: dict[str, Any] = {"email": record.email}
    after: dict[str, Any] = {"email": live.email}
    if live.contact_read:
        recorded_contact = record.contact.model_dump() if record.contact is not None else {}
        live_contact = live.contact.model_dump() if live.contact is not None else {}
        for field in ADDRESS_FIELDS:
            before[field] = recorded_contact.get(field)
            after[field] = live_contact.get(field)
        # Names are readable only through contact info: without one, the recorded names stand.
        for field in ("firstName", "lastName"):
            if live_contact.get(field):
                before[field] = getattr(record, field)
                after[field] = live_contact[field]
    changes = tuple(
        FieldChange(field=f, before=before[f], after=after[f])
        for f in sorted(before)
        if before[f] != after[f]
    )
    if not changes:
        return ()
    fields = {c.field for c in changes}
    if "email" in fields:
        update["email"] = live.email
    for field in ("firstName", "lastName"):
        if field in fields:
            update[field] = after[field]
    if fields & set(ADDRESS_FIELDS):
        update["contact"] = contact_record(live.contact)
    return changes


def _compare_grants(
    name: str, record: UserRecord, live: LiveUser, names_by_id: Mapping[int, str], now: datetime
) -> tuple[dict[str, GrantRecord], list[DriftEntry]]:
    grants = dict(record.entitlements)
    entries: list[DriftEntry] = []

    def entry(kind: DriftKind, entitlement: str, message: str) -> None:
        entries.append(
            DriftEntry(kind=kind, user=name, userId=record.userId, entitlement=entitlement, message=message)
        )

    for entitlement, grant in sorted(record.entitlements.items()):
        has = grant.entitlementId in live.entitlementIds
        if grant.status == "granted" and not has:
            del grants[entitlement]
            entry(
                DriftKind.entitlement_missing,
                entitlement,
                f"{entitlement} is recorded as granted, but the user no longer has it",
            )
        elif grant.status == "awaiting_agreement" and has:
            grants[entitlement] = GrantRecord(
                entitlementId=grant.entitlementId, status="granted", updatedAt=now
            )
            entry(
                DriftKind.entitlement_added,
                entitlement,
                f"{entitlement} was granted outside reconcile (recorded as awaiting the agreement)",
            )
    recorded = {grant.entitlementId for grant in record.entitlements.values()}
    for entitlement_id in sorted(live.entitlementIds - recorded):
        known = names_by_id.get(entitlement_id)
        if known is not None and known not in grants:
            grants[known] = GrantRecord(entitlementId=entitlement_id, status="granted", updatedAt=now)
            entry(DriftKind.entitlement_added, known, f"{known} was granted outside reconcile")
        else:
            entry(
                DriftKind.entitlement_added,
                str(entitlement_id),
                f"entitlement {entitlement_id} was granted outside reconcile; it is not named under "
                "partner.entitlements, so it is not recorded",
            )
    return grants, entries
