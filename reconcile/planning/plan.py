"""The plan (DESIGN §5): actions, field-level changes, and what the plan was made from.

A plan is data. Renderers draw it; the applier executes it and nothing else. The JSON form
(``Plan.model_dump(mode="json")``) is versioned by ``format_version`` and documented in the README.
"""

from __future__ import annotations

import enum
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconcile.contact import ContactFields
from reconcile.errors import PlanError, describe_os_error, first_invalid
from reconcile.manifest.models import CancelFlags, PasswordFromEnv, PasswordFromFile, PasswordGenerate

PLAN_FORMAT_VERSION = 1


class ActionKind(enum.StrEnum):
    """What an action does; ordered as the applier executes them."""

    create = "create"
    update_email = "update_email"
    update_contact = "update_contact"
    grant_entitlement = "grant_entitlement"
    create_account = "create_account"
    update_risk = "update_risk"
    switch_risk_category = "switch_risk_category"
    set_trading = "set_trading"
    reset_account = "reset_account"
    revoke_trading = "revoke_trading"
    cancel_everything = "cancel_everything"

    @property
    def symbol(self) -> str:
        """The symbol users see in text plans."""
        return _SYMBOLS[self]

    @property
    def order(self) -> int:
        return _ORDER[self]


_SYMBOLS = {
    ActionKind.create: "+",
    ActionKind.update_email: "~",
    ActionKind.update_contact: "~",
    ActionKind.grant_entitlement: ">",
    ActionKind.create_account: "+",
    ActionKind.update_risk: "~",
    ActionKind.switch_risk_category: "~",
    ActionKind.set_trading: "~",
    ActionKind.reset_account: "<",
    ActionKind.revoke_trading: "-",
    ActionKind.cancel_everything: "-",
}
_ORDER = {kind: i for i, kind in enumerate(ActionKind)}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldChange(_Model):
    """One field's value before and after (``None`` = absent)."""

    field: str
    before: Any = None
    after: Any = None


class ContactPayload(_Model, ContactFields):
    """Everything /contactInfo/updatecontactinfo needs besides the user id."""


# A password *source*, never a password: plans are written to disk and shown in reviews.
PlannedPassword = PasswordFromEnv | PasswordFromFile | PasswordGenerate | Literal["literal"]


class CreateUser(_Model):
    """Create one evaluation user (batched ≤ 100 per createevaluationusers call)."""

    action: Literal[ActionKind.create] = ActionKind.create
    user: str
    email: str
    firstName: str
    lastName: str
    password: PlannedPassword
    tradovateSubscriptionPlanId: int | None = None
    entitlementIds: tuple[int, ...] = ()
    """Non-Sim+ entitlements assigned at creation (Sim+ is never sent here)."""
    entitlements: tuple[str, ...] = ()
    """The names of ``entitlementIds``, for people and for state."""


class UpdateEmail(_Model):
    """Change a user's email with /user/modifyemailaddress."""

    action: Literal[ActionKind.update_email] = ActionKind.update_email
    user: str
    userId: int
    changes: tuple[FieldChange, ...]
    email: str


class UpdateContact(_Model):
    """Set a user's contact info (and names) with /contactInfo/updatecontactinfo.

    ``userId`` is None for a user created earlier in the same plan.
    """

    action: Literal[ActionKind.update_contact] = ActionKind.update_contact
    user: str
    userId: int | None
    changes: tuple[FieldChange, ...]
    contact: ContactPayload


class GrantEntitlement(_Model):
    """Grant an entitlement; Sim+ (``agreement_gated``) only after the agreement is signed."""

    action: Literal[ActionKind.grant_entitlement] = ActionKind.grant_entitlement
    user: str
    userId: int | None
    entitlement: str
    entitlementId: int
    accountId: int
    agreement_gated: bool
    recheck: bool = False
    """True when the grant already waits for the agreement: apply checks the signature again.

    A re-check is not a change: it is left out of ``Plan.has_changes`` and the change counts, so
    a plan whose traders have not signed yet is still "no changes" (DESIGN §8.7).
    """


class CancelEverything(_Model):
    """Cancel everything of a user (batched ≤ 100 user ids per call). Irreversible.

    Apply sends it to the endpoint and then to the binding's companion host, skipping a host the
    state already records in the user's ``cancelledOn`` (a cancel an earlier apply half finished).
    """

    action: Literal[ActionKind.cancel_everything] = ActionKind.cancel_everything
    user: str
    userId: int
    flags: CancelFlags
    reason: Literal["removed_from_manifest", "status_cancelled", "expired"]


REASONS = {
    "removed_from_manifest": "removed from the manifest",
    "status_cancelled": "status: cancelled",
    "expired": "expiresOn reached",
    "trading_revoked": "trading: revoked",
}
"""Why a user is cancelled or an account's trading permission revoked, as every output says it."""


class CreateAccount(_Model):
    """Create one evaluation account with its trading permission (≤ 100 per createevaluationaccounts).

    ``userId`` is None for a user created earlier in the same plan: apply takes the id that
    user's create recorded. ``risk`` is the template's risk merged with the account's overrides.
    """

    action: Literal[ActionKind.create_account] = ActionKind.create_account
    user: str
    userId: int | None
    account: str
    template: str
    templateAccountId: int
    initialBalance: float
    risk: dict[str, Any] = Field(default_factory=dict)
    resetTo: date | None = None
    """The manifest's ``resetTo``, recorded as the account's last reset: a new account needs none."""


class UpdateRisk(_Model):
    """Set an account's auto-liquidation settings (≤ 100 items per updateuserautoliqs call)."""

    action: Literal[ActionKind.update_risk] = ActionKind.update_risk
    user: str
    account: str
    accountId: int | None
    changes: tuple[FieldChange, ...]
    risk: dict[str, Any]
    """Every field the manifest sets for the account (template merged with overrides)."""


class SwitchRiskCategory(_Model):
    """Move accounts to a risk category (one switchriskcategory call per category, ≤ 100 ids).

    ``accountId`` is None for an account created earlier in the same plan.
    """

    action: Literal[ActionKind.switch_risk_category] = ActionKind.switch_risk_category
    user: str
    account: str
    accountId: int | None
    before: str | None
    riskCategory: str
    riskCategoryId: int


class SetTrading(_Model):
    """Lock or unlock trading with setadminautoliqaction (``LockTradingImmediately`` / ``Normal``)."""

    action: Literal[ActionKind.set_trading] = ActionKind.set_trading
    user: str
    account: str
    accountId: int | None
    before: Literal["active", "locked"]
    after: Literal["active", "locked"]


class ResetAccount(_Model):
    """Reset an account to the start of ``resetTo`` (resetdemoaccountstate, grouped by trade date)."""

    action: Literal[ActionKind.reset_account] = ActionKind.reset_account
    user: str
    account: str
    accountId: int
    before: date | None
    """The trade date of the last reset recorded, if any."""
    resetTo: date


class RevokeTrading(_Model):
    """Revoke an account's trading permission (≤ 100 per revoketradingpermissions). Irreversible.

    Counted in the cancellation budgets; before sending, apply reads the permission once to
    confirm it still belongs to this account and user.
    """

    action: Literal[ActionKind.revoke_trading] = ActionKind.revoke_trading
    user: str
    userId: int
    account: str
    accountId: int
    tradingPermissionId: int
    reason: Literal["removed_from_manifest", "trading_revoked"]


Action = Annotated[
    CreateUser
    | UpdateEmail
    | UpdateContact
    | GrantEntitlement
    | CreateAccount
    | UpdateRisk
    | SwitchRiskCategory
    | SetTrading
    | ResetAccount
    | RevokeTrading
    | CancelEverything,
    Field(discriminator="action"),
]
AccountAction = CreateAccount | UpdateRisk | SwitchRiskCategory | SetTrading | ResetAccount | RevokeTrading
"""The actions on evaluation accounts (partner Stage 4)."""


class Diagnostic(_Model):
    """Something the reviewer must see that is not an action (a rename the API cannot do...)."""

    severity: Literal["error", "warning", "info"]
    user: str | None = None
    message: str


class DriftKind(enum.StrEnum):
    """How the live organization differs from recorded state (``plan --refresh``)."""

    changed = "changed"
    """Email, names or contact changed outside reconcile."""
    closed = "closed"
    """Closed (cancelled) outside reconcile."""
    missing = "missing"
    """No longer in the organization's user list."""
    created_outside = "created_outside"
    """An active user of the organization that reconcile neither created nor adopted."""
    entitlement_missing = "entitlement_missing"
    """Recorded as granted, but the user no longer has it."""
    entitlement_added = "entitlement_added"
    """The user has it, but reconcile did not grant it (or recorded it as awaiting the agreement)."""
    account_risk_changed = "account_risk_changed"
    """An account's auto-liquidation settings or risk category changed outside reconcile."""
    account_trading_changed = "account_trading_changed"
    """An account was locked or unlocked outside reconcile."""
    account_revoked = "account_revoked"
    """An account's trading permission was revoked outside reconcile (or the account is gone)."""
    account_outside = "account_outside"
    """An account of a managed user that reconcile neither created nor adopted."""
    account_other_user = "account_other_user"
    """A recorded account id the API shows as another account or another user's: state is wrong."""


class DriftEntry(_Model):
    """One difference between recorded state and the live organization."""

    kind: DriftKind
    user: str
    userId: int | None = None
    changes: tuple[FieldChange, ...] = ()
    """Field-level ``before`` (recorded) / ``after`` (live) for ``changed``."""
    entitlement: str | None = None
    account: str | None = None
    """The account the entry is about (the account kinds)."""
    message: str


class Refresh(_Model):
    """What ``plan --refresh`` found in the live organization."""

    drift: tuple[DriftEntry, ...] = ()
    unmanaged: tuple[str, ...] = ()
    """Users of the organization reconcile neither created nor adopted: never changed or cancelled."""


class PlanBinding(_Model):
    """What a plan was made from; ``apply`` refuses the plan when any of it changed."""

    manifest_digest: str
    state_lineage: str
    state_serial: int
    environment: str
    endpoint: str
    tool_version: str
    companion: str | None = None
    """The host that also receives every cancel-everything (DESIGN §7); None when there is none."""


class Plan(_Model):
    """Everything apply will do, and nothing else."""

    format_version: Literal[1] = 1
    binding: PlanBinding
    actions: tuple[Action, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    targeted: tuple[str, ...] = ()
    """Non-empty when the plan was limited with --target/--exclude (patterns, for the record)."""
    excluded: tuple[str, ...] = ()
    """The --exclude patterns of a limited plan (``targeted`` holds the --target ones)."""
    refresh: Refresh | None = None
    """Drift and unmanaged users; set only on plans made with ``--refresh`` (the API was read)."""
    unsettled: tuple[str, ...] = ()
    """Users left out because an apply's call for them waits to be settled (its outcome is unknown)."""

    @property
    def summary(self) -> dict[str, int]:
        """Change counts by kind, every kind present (0 when none), plus ``recheck``.

        Sim+ grants that only wait for the agreement (``recheck``) are counted apart: they are
        not changes.
        """
        counts = Counter(a.action for a in self.changes)
        summary = {kind.value: counts.get(kind, 0) for kind in ActionKind}
        summary["recheck"] = len(self.actions) - len(self.changes)
        return summary

    @property
    def changes(self) -> tuple[Action, ...]:
        """The actions that change something (every action but agreement re-checks)."""
        return tuple(a for a in self.actions if not (isinstance(a, GrantEntitlement) and a.recheck))

    @property
    def has_changes(self) -> bool:
        """True when apply would change something (re-checks alone are no change)."""
        return bool(self.changes)

    @property
    def is_targeted(self) -> bool:
        """True when --target/--exclude limited the plan to some users."""
        return bool(self.targeted or self.excluded)

    @property
    def has_drift(self) -> bool:
        """True when a refreshed plan found the live organization differing from recorded state."""
        return self.refresh is not None and bool(self.refresh.drift)

    @property
    def empty(self) -> bool:
        return not self.actions

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)

    def to_json_dict(self) -> dict[str, Any]:
        """The documented JSON form: ``format_version``, ``summary``, ``actions``, …"""
        data = self.model_dump(mode="json", exclude_none=False)
        if data.get("refresh") is None:
            # Only refreshed plans carry the key: plans made without the API read as before.
            data.pop("refresh", None)
        if not data.get("unsettled"):
            # Only plans that left users out for settling carry the key.
            data.pop("unsettled", None)
        if data["binding"].get("companion") is None:
            # Only plans with a companion host carry the key: the rest read as before.
            data["binding"].pop("companion", None)
        return {"format_version": data.pop("format_version"), "summary": self.summary, **data}


def dumps_plan(plan: Plan) -> str:
    """The JSON text of a plan file (``--format json`` prints the same, from :func:`plan_json_pieces`)."""
    return "".join(plan_json_pieces(plan))


_JSON_PIECE = 4096
"""Actions per piece of a plan's JSON (about 3 MB)."""
_JSON_OPEN = '{\n  "actions": [\n'
_JSON_CLOSE = "\n  ]\n}"
_JSON_EMPTY = '{\n  "actions": [],\n'


def plan_json_pieces(plan: Plan) -> Iterator[str]:
    """Yield ``dumps_json(plan.to_json_dict()) + "\\n"`` in pieces of whole lines, byte for byte.

    ``to_json_dict`` has pydantic build every action as a dict first (2 s and 300 MiB at 100k
    users); here orjson reads the actions' fields itself, :data:`_JSON_PIECE` at a time, and
    the text goes out as it is made. tests/test_render_pieces.py holds both to the same bytes.
    """
    rest = plan.model_copy(update={"actions": ()}).to_json_dict()
    rest["summary"] = plan.summary  # the copy without actions would count none
    text = dumps_json(rest) + "\n"  # "actions" sorts first: the pieces go in its place
    if not plan.actions:
        yield text
        return
    yield _JSON_OPEN
    actions = plan.actions
    for start in range(0, len(actions), _JSON_PIECE):
        piece = _actions_json(actions[start : start + _JSON_PIECE])[len(_JSON_OPEN) : -len(_JSON_CLOSE)]
        yield piece if start == 0 else ",\n" + piece
    yield "\n  ],\n" + text[len(_JSON_EMPTY) :]


def _actions_json(batch: Sequence[Action]) -> str:
    """``dumps_json({"actions": [...]})`` of the batch, its actions read by orjson."""
    import orjson

    # dumps_json's layout; dates, datetimes and dataclasses go to _json_fields, not orjson's forms.
    options = (
        orjson.OPT_INDENT_2
        | orjson.OPT_SORT_KEYS
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS
    )
    try:
        data = orjson.dumps({"actions": batch}, default=_json_fields, option=options)
    except TypeError:  # a value pydantic writes in its own way (a datetime, a Decimal…): let it
        return dumps_json({"actions": [a.model_dump(mode="json") for a in batch]})
    if data.isascii() and b"\x7f" not in data:
        return data.decode()
    return dumps_json(orjson.loads(data))  # dumps_json escapes non-ASCII as json.dumps does


def _json_fields(value: Any) -> Any:
    """What pydantic's ``model_dump(mode="json")`` makes of a value orjson does not write itself."""
    if isinstance(value, BaseModel):
        return value.__dict__
    if type(value) is date:
        return value.isoformat()
    raise TypeError(type(value).__name__)


def dumps_json(data: Any) -> str:
    """``json.dumps(data, indent=2, sort_keys=True)``, through orjson (string keys, no floats' repr)."""
    import orjson

    text = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    if text.isascii() and "\x7f" not in text:
        return text  # the common case, found at memory speed (a regex scan takes seconds at 100k users)
    return _NON_ASCII.sub(_escape, text)


_NON_ASCII = re.compile(r"[^\x00-\x7e]")
"""What ``ensure_ascii`` escapes: everything past ``~`` (DEL too)."""


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code > 0xFFFF:  # a surrogate pair, as json.dumps writes it
        code -= 0x10000
        return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def save_plan(plan: Plan, path: str | Path) -> None:
    """Write a plan file (JSON, mode 0600)."""
    from reconcile.fsutil import atomic_write_text

    try:
        atomic_write_text(Path(path), dumps_plan(plan))
    except OSError as exc:
        raise PlanError(describe_os_error(exc, "write the plan file", path, option="--out PATH")) from None


def load_plan(path: str | Path) -> Plan:
    """Read a plan file written by :func:`save_plan`."""
    make_one = "make one with `reconcile plan --out PLANFILE`"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"plan file {path} does not exist; {make_one}") from None
    except OSError as exc:
        raise PlanError(f"cannot read plan file {path}: {exc.strerror}") from None
    except ValueError as exc:  # UnicodeDecodeError included
        reason = "not text" if isinstance(exc, UnicodeDecodeError) else f"not JSON ({exc})"
        raise PlanError(f"{path} is not a reconcile plan file: it is {reason}; {make_one}") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise PlanError(f"{path} is not a reconcile plan file (it has no format_version); {make_one}")
    version = data["format_version"]
    if type(version) is not int:  # not bool either: True == 1 in Python
        shown = json.dumps(version)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise PlanError(
            f"{path} is not a reconcile plan file: its format_version must be a whole number, "
            f"not {shown}; {make_one}"
        )
    if version != PLAN_FORMAT_VERSION:
        raise PlanError(
            f"plan file {path} has format_version {version}; "
            f"this reconcile reads {PLAN_FORMAT_VERSION}: make a new plan with this version"
        )
    data.pop("summary", None)
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(f"plan file {path} is not a valid plan: {first_invalid(exc)}") from None
