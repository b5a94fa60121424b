"""What every renderer says about a plan: action lines, summary sentence, PII masking, safe text.

Renderers differ in layout only; the words come from here, so text and Markdown never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

# counted is re-exported: commands import it from here as well as from reconcile.errors.
from reconcile.errors import counted as counted
from reconcile.errors import printable
from reconcile.manifest.models import PasswordFromEnv, PasswordFromFile, PasswordGenerate
from reconcile.planning.plan import (
    REASONS,
    Action,
    ActionKind,
    CancelEverything,
    CreateAccount,
    CreateUser,
    DriftEntry,
    DriftKind,
    FieldChange,
    GrantEntitlement,
    Plan,
    PlannedPassword,
    ResetAccount,
    RevokeTrading,
    SetTrading,
    SwitchRiskCategory,
    UpdateContact,
    UpdateEmail,
    UpdateRisk,
)

_A = TypeVar("_A")

PII_FIELDS = frozenset({"email", "phone", "streetAddress1", "streetAddress2", "postCode"})
"""Fields masked in review output unless --show-pii: they identify a person or a home."""


class ActionLine(NamedTuple):
    """One action as people read it: ``+ trader001  create  email="…" plan=7``."""

    symbol: str
    user: str
    what: str
    details: tuple[str, ...]
    kind: ActionKind


safe = printable
"""Return ``text`` with control characters escaped (names come from untrusted manifests)."""


def mask(field: str, value: Any) -> Any:
    """Mask the value of a PII field; other fields pass unchanged."""
    if field not in PII_FIELDS or not isinstance(value, str):
        return value
    if field == "email":
        local, at, domain = value.rpartition("@")
        return f"{local[:1]}***@{domain}" if at else "***"
    if field == "phone":
        return f"+***{value[-2:]}"
    return "***"


def quote(field: str, value: Any, *, show_pii: bool) -> str:
    """A field value as shown: JSON-quoted (escapes control characters), masked unless asked."""
    if type(value) is str:  # the common case first: 900k values at 100k users
        if not show_pii and field in PII_FIELDS:
            value = mask(field, value)
        return f'"{value}"' if _plain(value) else json.dumps(value, ensure_ascii=False)
    if value is None:
        return "(none)"
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # risk amounts: 2500, not 2500.0
    return json.dumps(value if show_pii else mask(field, value), ensure_ascii=False)


def _plain(text: str) -> bool:
    """True when ``json.dumps(text, ensure_ascii=False)`` is ``text`` in quotes, 20 times faster.

    json.dumps escapes only ``"``, ``\\`` and control characters; ``isprintable`` is False for
    every control character (and for some characters json.dumps keeps: those take the slow way).
    """
    return text.isprintable() and '"' not in text and "\\" not in text


def describe_changes(changes: Iterable[FieldChange], *, show_pii: bool) -> list[str]:
    """:func:`describe_change` of each change, a new plain value written here directly.

    Inline because a new desk of 100k users has 600k such values (its contacts).
    """
    described = []
    for change in changes:
        field, after = change.field, change.after
        if (
            change.before is None
            and type(after) is str
            and (show_pii or field not in PII_FIELDS)
            and _plain(after)
        ):
            described.append(f'{field}="{after}"')
        else:
            described.append(describe_change(change, show_pii=show_pii))
    return described


def describe_change(change: FieldChange, *, show_pii: bool) -> str:
    """``field: "before" → "after"``, or ``field="after"`` when the field was not set before."""
    field, before = change.field, change.before
    after = quote(field, change.after, show_pii=show_pii)
    if before is None:
        return f"{field}={after}"
    return f"{field}: {quote(field, before, show_pii=show_pii)} → {after}"


def describe_password(source: PlannedPassword) -> str:
    """Where the password of a new user comes from (never the password)."""
    if isinstance(source, PasswordGenerate):
        return "generated"  # checked first: the common case, and cheaper than pydantic's ==
    if isinstance(source, PasswordFromEnv):
        return f"env:{safe(source.env)}"
    if isinstance(source, PasswordFromFile):
        return f"file:{safe(source.file)}"
    if source == "literal":
        return "literal (in the manifest)"
    return "generated"


Wording = tuple[str, list[str]]
"""What an action does and its details: ``("create", ['email="…"', "plan=7"])``."""
_WORDINGS: dict[type, Callable[[Any, bool], Wording]] = {}


def wording(action: Action, *, show_pii: bool) -> Wording:
    """What ``action`` does and its details, without the symbol and user of :func:`describe`.

    Dispatched on the exact type through a dict: a large plan words 300k actions, and
    ``functools.singledispatch`` took a third of that time in its wrapper.
    """
    try:
        function = _WORDINGS[type(action)]
    except KeyError:
        raise TypeError(f"no description for {type(action).__name__}") from None
    return function(action, show_pii)


def describe(action: Action, *, show_pii: bool) -> ActionLine:
    """Describe one action."""
    what, details = wording(action, show_pii=show_pii)
    kind = action.action
    return ActionLine(kind.symbol, safe(action.user), what, tuple(details), kind)


def _words(kind: type[_A]) -> Callable[[Callable[[_A, bool], Wording]], Callable[[_A, bool], Wording]]:
    def register(function: Callable[[_A, bool], Wording]) -> Callable[[_A, bool], Wording]:
        _WORDINGS[kind] = function
        return function

    return register


@_words(CreateUser)
def _create(action: CreateUser, show_pii: bool) -> Wording:
    email, first, last = action.email, action.firstName, action.lastName
    if show_pii and _plain(email + first + last):  # one check for the three: 100k creates at 100k users
        details = [f'email="{email}"', f'firstName="{first}"', f'lastName="{last}"']
    else:
        details = [
            f"email={quote('email', email, show_pii=show_pii)}",
            f"firstName={quote('firstName', first, show_pii=show_pii)}",
            f"lastName={quote('lastName', last, show_pii=show_pii)}",
        ]
    if action.tradovateSubscriptionPlanId is not None:
        details.append(f"plan={action.tradovateSubscriptionPlanId}")
    if action.entitlements:
        details.append(f"entitlements=[{', '.join(map(safe, action.entitlements))}]")
    details.append(f"password={describe_password(action.password)}")
    return "create", details


@_words(UpdateEmail)
def _email(action: UpdateEmail, show_pii: bool) -> Wording:
    details = [
        f"{quote(c.field, c.before, show_pii=show_pii)} → {quote(c.field, c.after, show_pii=show_pii)}"
        for c in action.changes
    ]
    return "email", details


@_words(UpdateContact)
def _contact(action: UpdateContact, show_pii: bool) -> Wording:
    what = "contact" if action.userId is not None else "contact (after create)"
    return what, describe_changes(action.changes, show_pii=show_pii)


@_words(GrantEntitlement)
def _grant(action: GrantEntitlement, show_pii: bool) -> Wording:
    details = []
    if action.recheck:
        details.append("awaiting the Market Data Agreement: checked again on apply")
    elif action.agreement_gated:
        details.append("once the trader signs the Market Data Agreement")
    return f"grant {safe(action.entitlement)}", details


@_words(CancelEverything)
def _cancel(action: CancelEverything, show_pii: bool) -> Wording:
    flags = action.flags.model_dump()
    cancelled = [name for name, on in flags.items() if on]
    kept = [name for name, on in flags.items() if not on]
    details = [REASONS[action.reason], f"cancels {', '.join(cancelled) or 'nothing'}"]
    if kept:
        details.append(f"keeps {', '.join(kept)}")
    return "CANCEL EVERYTHING (irreversible)", details


@_words(CreateAccount)
def _create_account(action: CreateAccount, show_pii: bool) -> Wording:
    details = [
        f"template={safe(action.template)} ({action.templateAccountId})",
        f"initialBalance={action.initialBalance:g}",
        *(
            f"{safe(name)}={quote(name, value, show_pii=show_pii)}"
            for name, value in sorted(action.risk.items())
        ),
    ]
    if action.resetTo is not None:
        details.append(f"resetTo={action.resetTo.isoformat()} (recorded as its last reset)")
    after = "" if action.userId is not None else " (after create)"
    return f"create account {safe(action.account)}{after}", details


@_words(UpdateRisk)
def _risk(action: UpdateRisk, show_pii: bool) -> Wording:
    details = describe_changes(action.changes, show_pii=show_pii)
    return f"risk {safe(action.account)}", details


@_words(SwitchRiskCategory)
def _category(action: SwitchRiskCategory, show_pii: bool) -> Wording:
    before = safe(action.before) if action.before is not None else "(none)"
    change = f"{before} → {safe(action.riskCategory)} ({action.riskCategoryId})"
    return f"risk category {safe(action.account)}", [change]


@_words(SetTrading)
def _trading(action: SetTrading, show_pii: bool) -> Wording:
    what = "LOCK trading" if action.after == "locked" else "unlock trading"
    return f"{what} {safe(action.account)}", [f"{action.before} → {action.after}"]


@_words(ResetAccount)
def _reset(action: ResetAccount, show_pii: bool) -> Wording:
    last = action.before.isoformat() if action.before is not None else "never"
    details = [f"to the start of trade date {action.resetTo.isoformat()} (last reset: {last})"]
    return f"reset account {safe(action.account)}", details


@_words(RevokeTrading)
def _revoke(action: RevokeTrading, show_pii: bool) -> Wording:
    details = [REASONS[action.reason], f"trading permission {action.tradingPermissionId}"]
    return f"REVOKE TRADING {safe(action.account)} (irreversible)", details


_NOUNS: dict[ActionKind, tuple[str, str | None]] = {
    ActionKind.update_email: ("email change", None),
    ActionKind.update_contact: ("contact update", None),
    ActionKind.grant_entitlement: ("grant", None),
    ActionKind.create_account: ("new account", None),
    ActionKind.update_risk: ("risk update", None),
    ActionKind.switch_risk_category: ("category switch", "category switches"),
    ActionKind.set_trading: ("lock change", None),
    ActionKind.reset_account: ("account reset", None),
    ActionKind.revoke_trading: ("trading permission to revoke", "trading permissions to revoke"),
}
"""Kinds counted with a noun; creates and cancels read "3 to create", "1 to cancel"."""


def _phrase(kind: ActionKind, n: int) -> str:
    noun = _NOUNS.get(kind)
    if noun is not None:
        return counted(n, *noun)
    return f"{n} to {'create' if kind is ActionKind.create else 'cancel'}"


def summary_sentence(plan: Plan) -> str:
    """``Plan: 3 to create, 1 contact update, 2 grants, 1 to cancel.`` or ``No changes.``

    Agreement re-checks are added as a note: they are not changes.
    """
    summary = plan.summary
    parts = []
    for kind in ActionKind:
        n = summary[kind.value]
        if n:
            parts.append(_phrase(kind, n))
    sentence = f"Plan: {', '.join(parts)}." if parts else "No changes."
    rechecks = summary["recheck"]
    if rechecks:
        sentence += f" {counted(rechecks, 'grant')} awaiting agreement (checked again on apply)."
    return sentence + unsettled_sentence(plan)


def unsettled_sentence(plan: Plan) -> str:
    """Say (with a leading space) how many users' outcome waits to be settled; empty when none.

    Such users are left out of the actions, so "No changes." alone would read as in sync.
    """
    if not plan.unsettled:
        return ""
    n = len(plan.unsettled)
    return (
        f" The outcome for {counted(n, 'user')} waits to be settled (an apply's call for "
        f"{'it' if n == 1 else 'them'} has no known answer); the next apply settles it first."
    )


def targeting_sentence(plan: Plan) -> str:
    """Say loudly which users a --target/--exclude plan covers; empty for a full plan."""
    if not plan.is_targeted:
        return ""
    parts = []
    if plan.targeted:
        parts.append(f"only users matching {' or '.join(safe(p) for p in plan.targeted)}")
    if plan.excluded:
        parts.append(f"leaving out users matching {' or '.join(safe(p) for p in plan.excluded)}")
    return (
        f"TARGETED PLAN: {', '.join(parts)}. Changes to other users are not shown and will not be "
        "applied; run a full plan before relying on this one."
    )


def rechecks(plan: Plan) -> tuple[GrantEntitlement, ...]:
    """The grants that only wait for the Market Data Agreement."""
    return tuple(a for a in plan.actions if isinstance(a, GrantEntitlement) and a.recheck)


def describe_drift(entry: DriftEntry, *, show_pii: bool) -> str:
    """One drift entry as people read it: what differs, recorded → live for changed fields."""
    text = safe(entry.message)
    if entry.changes:
        text += ": " + ", ".join(describe_changes(entry.changes, show_pii=show_pii))
    return text


def differences(entries: Sequence[DriftEntry]) -> list[DriftEntry]:
    """The drift entries shown one per line: all but ``created_outside``.

    A user created outside is shown once, in the list of unmanaged users, not again as a line.
    """
    return [d for d in entries if d.kind is not DriftKind.created_outside]


def drift_sentence(plan: Plan) -> str:
    """What a refreshed plan found; empty for a plan made without reading the API."""
    if plan.refresh is None:
        return ""
    shown = len(differences(plan.refresh.drift))
    outside = len(plan.refresh.drift) - shown
    found = []
    if shown:
        found.append(f"{counted(shown, 'difference')} between recorded state and the API")
    if outside:
        found.append(f"{counted(outside, 'active user')} created outside reconcile (listed as unmanaged)")
    return f"Drift: {'; '.join(found)}." if found else "No drift: the API matches recorded state."


def unmanaged_sentence(unmanaged: Sequence[str]) -> str:
    """The unmanaged users, each named once; empty when there are none."""
    if not unmanaged:
        return ""
    names = ", ".join(safe(n) for n in unmanaged)
    return f"Unmanaged (in the organization; never changed or cancelled by reconcile): {names}"
