"""The account rules of the planner (partner Stage 4): pure, deterministic, no I/O, no clock.

Per account name (matched against state ignoring case):

* in the manifest, not in state → ``create_account`` (the template's risk merged field by field
  with the account's overrides; ``resetTo`` recorded as the last reset, since a new account needs
  none), then ``switch_risk_category`` when a category is given and ``set_trading`` when it
  starts ``locked``. ``trading: revoked`` for an account never created plans nothing (a note).
* in both → ``update_risk`` for the fields the manifest sets that differ from the recorded risk,
  ``switch_risk_category``, ``set_trading`` (active ↔ locked), ``reset_account`` for a new
  ``resetTo``, or only ``revoke_trading`` when the manifest says ``trading: revoked``. A
  ``resetTo`` older than the last reset is a warning, never a reset backwards. The template is
  create-only: a new one is a warning. A revoked permission cannot come back (error), and an
  account recorded for another user is an error (a permission belongs to one trader).
* in state with an active permission, absent from the manifest while its user stays managed
  and active → ``revoke_trading`` (removed from the manifest). Accounts of a user who is
  cancelled get nothing here: cancel-everything with ``tradingPermissions: true`` revokes them
  (apply records it), and with ``false`` the flag keeps them, as asked.

Only accounts of users the planner plans (created in this plan, or managed and active) get
actions, so an unmanaged user's accounts are never touched.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reconcile.manifest.models import Account, Manifest, User
from reconcile.planning import build
from reconcile.planning.plan import (
    AccountAction,
    CreateAccount,
    FieldChange,
    RevokeTrading,
    SwitchRiskCategory,
)
from reconcile.state.model import AccountRecord, State


@dataclass(frozen=True)
class Note:
    """A diagnostic about one user's account (the planner adds it to the plan)."""

    severity: Literal["error", "warning", "info"]
    user: str
    message: str
    also: tuple[str, ...] = ()
    """Other users it is about (--target/--exclude keep it when any of them is selected)."""


Planned = AccountAction | Note


@dataclass(frozen=True)
class Recorded:
    """Recorded accounts by case-folded name: the name state keys it under, and its record."""

    by_folded: Mapping[str, tuple[str, AccountRecord]]

    @classmethod
    def of(cls, state: State) -> Recorded:
        return cls({name.casefold(): (name, record) for name, record in state.accounts.items()})


def desired_risk(manifest: Manifest, account: Account) -> dict[str, Any]:
    """The template's risk fields, overridden field by field by the account's (set fields only)."""
    risk = manifest.partner.accountTemplates[account.template].risk.fields_set()
    if account.risk is not None:
        risk.update(account.risk.fields_set())
    return risk


def plan_user_accounts(
    manifest: Manifest, user: User, user_id: int | None, recorded: Recorded
) -> Iterator[Planned]:
    """Plan the accounts of one user being created (``user_id`` None) or managed and active."""
    for account in user.accounts:
        found = recorded.by_folded.get(account.name.casefold())
        if found is None:
            yield from _new_account(manifest, user.name, user_id, account)
        else:
            yield from _recorded_account(manifest, user.name, account, *found)


def plan_removed_accounts(manifest: Manifest, state: State, staying: Collection[str]) -> Iterator[Planned]:
    """Revoke each active permission the manifest no longer names whose user is in ``staying``."""
    if not state.accounts:  # nothing recorded: no need to gather the manifest's accounts
        return
    wanted = {account.name.casefold() for user in manifest.users for account in user.accounts}
    for name in sorted(state.accounts):
        record = state.accounts[name]
        if record.permission == "active" and record.user in staying and name.casefold() not in wanted:
            yield _revoke(name, record, "removed_from_manifest")


def note_renames(actions: Sequence[object]) -> Iterator[Note]:
    """Say, per user, that accounts removed while others are created cannot be a rename.

    The partner API cannot rename an account: a name changed in the manifest is a new account and
    the old one's trading permission revoked, irreversibly. Said loudly, so a reviewer who meant a
    rename puts the old name back before apply.
    """
    removed: dict[str, list[str]] = {}
    created: dict[str, list[str]] = {}
    for action in actions:
        if isinstance(action, RevokeTrading) and action.reason == "removed_from_manifest":
            removed.setdefault(action.user, []).append(action.account)
        elif isinstance(action, CreateAccount):
            created.setdefault(action.user, []).append(action.account)
    for user in sorted(removed.keys() & created.keys()):
        yield Note(
            "warning",
            user,
            f"account {', '.join(removed[user])} is revoked (gone from the manifest) while "
            f"{', '.join(created[user])} is created: an account cannot be renamed, so this revokes "
            "the trader's account for good; if a rename was meant, put the old name back",
        )


def _new_account(manifest: Manifest, user: str, user_id: int | None, account: Account) -> Iterator[Planned]:
    if account.trading == "revoked":
        yield Note(
            "info",
            user,
            f"account {account.name} is marked trading: revoked but was never created: nothing to do",
        )
        return
    template = manifest.partner.accountTemplates[account.template]
    yield build.create_account(
        user=user,
        userId=user_id,
        account=account.name,
        template=account.template,
        templateAccountId=template.templateAccountId,
        initialBalance=template.initialBalance,
        risk=desired_risk(manifest, account),
        resetTo=account.resetTo,
    )
    if account.riskCategory is not None:
        yield _switch(manifest, user, account.name, None, None, account.riskCategory)
    if account.trading == "locked":
        yield build.set_trading(
            user=user, account=account.name, accountId=None, before="active", after="locked"
        )


def _recorded_account(
    manifest: Manifest, user: str, account: Account, name: str, record: AccountRecord
) -> Iterator[Planned]:
    if record.user != user:
        yield Note(
            "error",
            user,
            f"account {account.name} is recorded for user {record.user}: a trading permission "
            f"belongs to one trader, so it cannot move; put it back under {record.user}, or give "
            "this user a new account with a new name",
            also=(record.user,),  # a plan targeting the owner (cancelling it, say) must see it too
        )
    elif record.permission == "revoked":
        if account.trading != "revoked":
            yield Note(
                "error",
                user,
                f"account {name}: its trading permission was revoked, which cannot be undone: set "
                "trading: revoked (or remove the account); a new account needs a new name",
            )
    elif account.trading == "revoked":
        yield _revoke(name, record, "trading_revoked")
    else:
        yield from _changes(manifest, user, account, name, record)


def _changes(
    manifest: Manifest, user: str, account: Account, name: str, record: AccountRecord
) -> Iterator[Planned]:
    """What an active recorded account needs to match its manifest entry."""
    if record.template is not None and record.template != account.template:
        yield Note(
            "warning",
            user,
            f"account {name}: template {record.template} → {account.template} is not applied: the "
            "template (and its initialBalance) is used only when an account is created",
        )
    wanted = desired_risk(manifest, account)
    changes = risk_changes(record.risk, wanted)
    if changes:
        yield build.update_risk(
            user=user, account=name, accountId=record.accountId, changes=changes, risk=wanted
        )
    if account.riskCategory is not None and account.riskCategory != record.riskCategory:
        yield _switch(manifest, user, name, record.accountId, record.riskCategory, account.riskCategory)
    if account.trading != record.trading:
        after: Literal["active", "locked"] = "locked" if account.trading == "locked" else "active"
        yield build.set_trading(
            user=user, account=name, accountId=record.accountId, before=record.trading, after=after
        )
    yield from _reset(user, account, name, record)


def _reset(user: str, account: Account, name: str, record: AccountRecord) -> Iterator[Planned]:
    wanted, last = account.resetTo, record.lastReset
    if wanted is None or wanted == last:
        return
    if last is not None and wanted < last:
        yield Note(
            "warning",
            user,
            f"account {name}: resetTo {wanted.isoformat()} is before its last reset "
            f"({last.isoformat()}): not reset (a reset never goes back); set a later date to reset "
            "it again",
        )
        return
    yield build.reset_account(
        user=user, account=name, accountId=record.accountId, before=last, resetTo=wanted
    )


def _switch(
    manifest: Manifest, user: str, account: str, account_id: int | None, before: str | None, category: str
) -> SwitchRiskCategory:
    return build.switch_risk_category(
        user=user,
        account=account,
        accountId=account_id,
        before=before,
        riskCategory=category,
        riskCategoryId=manifest.partner.riskCategories[category],
    )


def _revoke(
    name: str, record: AccountRecord, reason: Literal["removed_from_manifest", "trading_revoked"]
) -> Planned:
    if record.tradingPermissionId is None:
        return Note(
            "warning",
            record.user,
            f"account {name}: no trading permission id is recorded, so its permission cannot be "
            "revoked: run `reconcile refresh` to read it, then plan again",
        )
    return build.revoke_trading(
        user=record.user,
        userId=record.userId,
        account=name,
        accountId=record.accountId,
        tradingPermissionId=record.tradingPermissionId,
        reason=reason,
    )


def risk_changes(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """Field-level before/after of the risk fields ``wanted`` sets, sorted by field name.

    Numbers compare by value (2500 and 2500.0 are one setting: state and the API may say either);
    a boolean never equals a number.
    """
    return tuple(
        build.field_change(field=key, before=recorded.get(key), after=wanted[key])
        for key in sorted(wanted)
        if not _same(recorded.get(key), wanted[key])
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return type(a) is type(b) and a == b
