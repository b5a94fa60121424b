"""Bring the API's view into recorded state: adopt existing users (``import``) and ``refresh``.

Both read a live snapshot (:mod:`reconcile.operations.read_live`), change nothing remote, and save
state under the state lock the caller holds (:func:`reconcile.operations.remote.remote_session`).

``import`` rules (DESIGN §8.3: only created or adopted users are ever changed or cancelled):

* a name must be in the manifest: adopting a user the manifest does not name would plan its
  cancellation at once;
* a name must exist in the organization and be active (a closed user cannot be managed);
* a user already in state is left as it is (reported as already managed);
* ``--all`` adopts every active organization user the manifest names and state does not hold,
  and reports the organization users it leaves unmanaged because the manifest does not name them.

The record takes what the API shows: id, email, contact and names (from contact info), and the
grants of entitlements named under ``partner.entitlements``; a Sim+ the manifest wants for a
trader who has not signed the agreement is recorded as awaiting it, as apply would. What the
API cannot show is taken from the manifest: the names of a user without contact info, and the
subscription plan (set at creation, readable nowhere), so an adopted user the manifest describes
truly plans no change.

Accounts: ``import`` also adopts, by name, every account the manifest gives a managed user that
exists under that user and state does not hold yet. Its record takes what the API shows (ids,
permission, the auto-liq fields the manifest sets, category, lock), so the next plan repairs only
real differences; its last reset is taken as the manifest's ``resetTo`` (the API keeps no record of
resets, and adopting must never trigger one on a guess). An account the manifest names that exists
under another user is reported and left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from reconcile.errors import ReconcileError
from reconcile.manifest.models import SIMPLUS, Account, Manifest, User
from reconcile.operations.read_live import LiveReader, read_live, with_contacts
from reconcile.planning.drift import compare
from reconcile.planning.plan import DriftEntry
from reconcile.planning.snapshot import LiveAccount, LiveSnapshot, LiveUser, contact_record
from reconcile.state.model import AccountRecord, GrantRecord, State, UserRecord
from reconcile.state.store import StateStore


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RefreshResult:
    """What ``refresh`` found and recorded."""

    drift: tuple[DriftEntry, ...]
    unmanaged: tuple[str, ...]
    changed: tuple[str, ...]
    """Users whose record was rewritten."""
    serial: int
    """The state serial after the refresh (unchanged when nothing changed)."""
    requests: int
    changed_accounts: tuple[str, ...] = ()
    """Accounts whose record was rewritten."""


def refresh_state(
    manifest: Manifest,
    store: StateStore,
    client: LiveReader,
    *,
    clock: Callable[[], datetime] = _now,
) -> RefreshResult:
    """Record in state what the API shows for every managed user; change nothing remote.

    The caller holds the state lock.
    """
    state = store.load(manifest.environment)
    live = read_live(
        client,
        agreement_alert_id=manifest.agreement_alert_id,
        contacts_of=[r.userId for r in state.users.values() if r.lifecycle == "active"],
        read_at=clock(),
        accounts=has_accounts(manifest, state),
    )
    comparison = compare(state, live, manifest.partner.entitlements, manifest.partner.riskCategories)
    changed, accounts = comparison.changed, comparison.changed_accounts
    saved = (
        store.save(comparison.observed, changed=changed, changed_accounts=accounts)
        if changed or accounts
        else state
    )
    return RefreshResult(
        drift=comparison.drift,
        unmanaged=comparison.unmanaged,
        changed=comparison.changed,
        serial=saved.serial,
        requests=live.requests,
        changed_accounts=accounts,
    )


def has_accounts(manifest: Manifest, state: State) -> bool:
    """True when the manifest or state holds evaluation accounts (then reading the API reads them too)."""
    return bool(state.accounts) or any(user.accounts for user in manifest.users)


@dataclass
class ImportResult:
    """What ``import`` did."""

    adopted: list[str] = field(default_factory=list)
    already_managed: list[str] = field(default_factory=list)
    skipped_closed: list[str] = field(default_factory=list)
    """With ``--all``: organization users the manifest names that are closed (not adoptable)."""
    left_unmanaged: list[str] = field(default_factory=list)
    """With ``--all``: organization users the manifest does not name (left unmanaged)."""
    accounts_adopted: list[str] = field(default_factory=list)
    accounts_elsewhere: list[str] = field(default_factory=list)
    """Accounts the manifest names that exist under another user (not adopted)."""
    serial: int = 0
    requests: int = 0


def import_users(
    manifest: Manifest,
    store: StateStore,
    client: LiveReader,
    names: Sequence[str] | None,
    *,
    clock: Callable[[], datetime] = _now,
) -> ImportResult:
    """Adopt existing organization users into state (``names``, or None for every one the manifest names).

    Raises :class:`ReconcileError` listing every problem, and changes nothing, when a name is not
    in the manifest, not in the organization, or closed. The caller holds the state lock.
    """
    state = store.load(manifest.environment)
    wanted = {user.name: user for user in manifest.users}
    now = clock()
    # The listing first (3 requests); then contact info of the chosen users only, one request each.
    listing = read_live(
        client,
        agreement_alert_id=manifest.agreement_alert_id,
        contacts_of=(),
        read_at=now,
        accounts=has_accounts(manifest, state),
    )
    result = ImportResult()
    candidates = _candidates(names, wanted, state, listing, result)
    live = with_contacts(client, listing, [listing.by_name[name].userId for name in candidates])
    result.requests = live.requests
    users = dict(state.users)
    for name in candidates:
        users[name] = adopted_record(wanted[name], live.by_name[name], manifest, now)
    result.adopted = list(candidates)
    adopted = state.model_copy(update={"users": users, "accounts": dict(state.accounts)})
    _adopt_accounts(manifest, adopted, live, now, result)
    if candidates or result.accounts_adopted:
        saved = store.save(adopted, changed=candidates, changed_accounts=result.accounts_adopted)
        result.serial = saved.serial
    else:
        result.serial = state.serial
    return result


def _adopt_accounts(
    manifest: Manifest, state: State, live: LiveSnapshot, now: datetime, result: ImportResult
) -> None:
    """Record in ``state`` the manifest's accounts of managed users that exist under them (by name)."""
    # Names match in any case and ids once: a recorded account is never adopted a second time.
    recorded_names = {name.casefold() for name in state.accounts}
    recorded_ids = {record.accountId for record in state.accounts.values()}
    for user in manifest.users:
        owner = state.users.get(user.name)
        if owner is None or owner.lifecycle != "active":
            continue
        for account in user.accounts:
            found = live.accounts_by_name.get(account.name.lower())
            if account.name.casefold() in recorded_names or found is None or found.accountId in recorded_ids:
                continue
            if found.userId != owner.userId:
                result.accounts_elsewhere.append(account.name)
                continue
            state.accounts[account.name] = adopted_account(user.name, account, found, manifest, now)
            result.accounts_adopted.append(account.name)


def adopted_account(
    user: str, account: Account, live: LiveAccount, manifest: Manifest, now: datetime
) -> AccountRecord:
    """The state record of an adopted account: what the API shows, for the fields the manifest sets."""
    template = manifest.partner.accountTemplates.get(account.template)
    wanted = {
        **(template.risk.fields_set() if template else {}),
        **(account.risk.fields_set() if account.risk else {}),
    }
    categories = {cid: name for name, cid in manifest.partner.riskCategories.items()}
    category = None
    if account.riskCategory is not None and live.riskCategoryId is not None:
        category = categories.get(live.riskCategoryId, f"#{live.riskCategoryId}")
    return AccountRecord(
        accountId=live.accountId,
        user=user,
        userId=live.userId,
        origin="adopted",
        template=account.template,
        tradingPermissionId=live.tradingPermissionId,
        permission="revoked" if live.revoked else "active",
        risk={f: live.autoLiq[f] for f in wanted if live.autoLiq.get(f) is not None},
        riskCategory=category,
        trading="locked" if live.trading == "locked" else "active",
        lastReset=account.resetTo,
        createdAt=now,
        updatedAt=now,
        revokedAt=now if live.revoked else None,
    )


def _candidates(
    names: Sequence[str] | None,
    wanted: dict[str, User],
    state: State,
    live: LiveSnapshot,
    result: ImportResult,
) -> list[str]:
    managed_ids = {record.userId for record in state.users.values()}
    if names is None:
        result.left_unmanaged = sorted(
            u.name for u in live.users if u.name not in wanted and u.userId not in managed_ids
        )
        chosen: list[str] = []
        for name in sorted(wanted):
            user = live.by_name.get(name)
            if user is None or wanted[name].status != "active":
                continue
            if name in state.users:
                result.already_managed.append(name)
            elif user.closed:
                result.skipped_closed.append(name)
            else:
                chosen.append(name)
        return chosen

    problems: list[str] = []
    chosen = []
    for name in sorted(set(names)):
        user = live.by_name.get(name)
        if name in state.users:
            result.already_managed.append(name)
        elif name not in wanted:
            problems.append(
                f"{name}: not in the manifest; add it to the manifest first (adopting a user the "
                "manifest does not name would plan its cancellation)"
            )
        elif user is None:
            problems.append(f"{name}: no user of that name in the organization; check the spelling")
        elif user.closed:
            problems.append(f"{name}: closed in the organization; a closed user cannot be managed")
        elif wanted[name].status != "active":
            problems.append(f"{name}: the manifest marks it cancelled; there is nothing to adopt it for")
        else:
            chosen.append(name)
    if problems:
        raise ReconcileError("nothing was imported:\n  " + "\n  ".join(problems))
    return chosen


def adopted_record(user: User, live: LiveUser, manifest: Manifest, now: datetime) -> UserRecord:
    """The state record of an adopted user: what the API shows, the manifest for what it cannot."""
    fields = live.contact.model_dump() if live.contact is not None else {}
    grants = {
        name: GrantRecord(entitlementId=eid, status="granted", updatedAt=now)
        for name, eid in sorted(manifest.partner.entitlements.items())
        if eid in live.entitlementIds
    }
    if SIMPLUS in user.entitlements and SIMPLUS not in grants and not live.agreement_signed:
        # What apply would record, from the same read: the trader has not signed, so there is
        # nothing to grant yet, and the plan shows an agreement re-check, not a change.
        grants[SIMPLUS] = GrantRecord(
            entitlementId=manifest.partner.entitlements[SIMPLUS], status="awaiting_agreement", updatedAt=now
        )
    return UserRecord(
        userId=live.userId,
        origin="adopted",
        email=live.email,
        firstName=fields.get("firstName") or user.firstName or "",
        lastName=fields.get("lastName") or user.lastName or "",
        tradovateSubscriptionPlanId=manifest.subscription_plan_for(user),
        contact=contact_record(live.contact),
        entitlements=grants,
        createdAt=now,
        updatedAt=now,
    )
