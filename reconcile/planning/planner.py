"""Manifest and State → Plan (DESIGN §5, §8): a pure function, deterministic, no I/O, no clock.

The rules, per user name:

* in the manifest and active, not in state → ``create`` (Sim+ never in ``entitlementIds``), then
  ``update_contact`` when a contact is given and an agreement-gated Sim+ ``grant_entitlement``;
* in both and active → ``update_email`` / ``update_contact`` with field-level before/after, and a
  ``grant_entitlement`` per entitlement not granted yet (a Sim+ grant that already waits for the
  agreement is planned again as a *re-check*, which is not a change);
* in state and active, but absent from the manifest or ``status: cancelled`` → ``cancel_everything``;
* ``expiresOn`` reached (on or before ``today``, which the caller passes in) → as ``status:
  cancelled``: ``cancel_everything`` for an active recorded user, no create for a new one; an
  expiry in the next :data:`EXPIRY_NOTICE_DAYS` days is an info diagnostic;
* cancelled in state but active in the manifest → error: the API cannot reactivate a user;
* absent from the manifest while a new manifest user carries its email → a rename, which the
  partner API cannot do: error, and neither the create nor the cancel is planned.

Each planned user's evaluation accounts follow the rules in :mod:`reconcile.planning.accounts`
(create, risk, category, lock, reset, revoke), as does revoking an account gone from the manifest.

Passwords are create-only and never compared. Users the tool never created or adopted are never
touched (DESIGN §8.3): only state users can get anything but a create.

With a live snapshot (``plan --refresh``) the plan is made against recorded state as the API has
it now (:func:`reconcile.planning.drift.compare`), so it repairs what the manifest governs: an email
changed by hand gets ``update_email`` back, a missing Sim+ is granted again. The differences go
into ``Plan.refresh``. Users closed outside get no actions (a warning, not an error: a drift check
must still report), and a manifest user that exists unmanaged in the organization is not created
again (a warning points to ``reconcile import``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal, get_args

from reconcile.bulk import gc_paused
from reconcile.contact import ADDRESS_FIELDS, CONTACT_FIELDS
from reconcile.errors import PlanError, counted, plural
from reconcile.manifest.models import SIMPLUS, Contact, Manifest, User
from reconcile.planning import build
from reconcile.planning.accounts import (
    Note,
    Planned,
    Recorded,
    note_renames,
    plan_removed_accounts,
    plan_user_accounts,
)
from reconcile.planning.drift import compare
from reconcile.planning.plan import (
    AccountAction,
    Action,
    CancelEverything,
    Diagnostic,
    DriftKind,
    FieldChange,
    GrantEntitlement,
    Plan,
    PlanBinding,
    PlannedPassword,
    Refresh,
)
from reconcile.planning.snapshot import LiveSnapshot
from reconcile.state.model import ContactRecord, State, UserRecord

Severity = Literal["error", "warning", "info"]
EXPIRY_NOTICE_DAYS = 7
"""A plan notes expiries due within this many days."""
_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@gc_paused()
def make_plan(
    manifest: Manifest,
    state: State,
    *,
    binding: PlanBinding,
    targets: Sequence[str] = (),
    excludes: Sequence[str] = (),
    live: LiveSnapshot | None = None,
    today: date | None = None,
) -> Plan:
    """Plan what makes the partner API match ``manifest``, given what ``state`` recorded.

    ``targets``/``excludes`` are glob patterns on user names (``fnmatch``, case-sensitive): only
    users matching a target (all, when none is given) and no exclude get actions or diagnostics.
    ``live`` (read by the caller) adds drift detection and repair; None plans from state alone.
    ``today`` (UTC) judges ``expiresOn``; None leaves expiries unjudged (only for callers that
    plan no real run: every command passes the date).
    """
    return plan_all(manifest, state, live=live, today=today).select(
        binding=binding, targets=targets, excludes=excludes
    )


@dataclass(frozen=True)
class PlanningPass:
    """Every action and diagnostic of every user, before --target/--exclude select some.

    One planning pass serves several selections: a narrowed plan and the whole one the policy
    judges its cancellations by (reconcile/planning/policy.py); planning twice cost a targeted
    plan twice the time.
    """

    acc: _Accumulator
    refresh: Refresh | None

    @gc_paused()
    def select(
        self, *, binding: PlanBinding, targets: Sequence[str] = (), excludes: Sequence[str] = ()
    ) -> Plan:
        """The plan of the users ``targets``/``excludes`` select (see :func:`make_plan`)."""
        return _selected_plan(self.acc, self.refresh, binding=binding, targets=targets, excludes=excludes)


@gc_paused()
def plan_all(
    manifest: Manifest, state: State, *, live: LiveSnapshot | None = None, today: date | None = None
) -> PlanningPass:
    """Plan every user of ``manifest`` against ``state``; :meth:`PlanningPass.select` makes the plans."""
    if state.environment != manifest.environment:
        raise PlanError(
            f"the manifest is for environment {manifest.environment!r} but the state is for "
            f"{state.environment!r}; pass --state with the {manifest.environment} state file"
        )
    seen = _Observed.of(state, live, manifest, today)
    state = seen.state
    acc = _Accumulator()
    wanted = {user.name for user in manifest.users}
    gone = _gone(state, wanted)
    renamed = _plan_renames(manifest, state, gone, acc)
    recorded = state.users
    for user in manifest.users:
        fields = vars(user)  # see _plan_user
        if fields["name"] not in renamed:
            _plan_user(manifest, user, fields, recorded.get(fields["name"]), seen, acc)
    _plan_removed(manifest, gone, renamed, acc)
    acc.extend(plan_removed_accounts(manifest, state, acc.staying))
    acc.extend(note_renames(acc.account_actions))
    _note_unfinished_cancels(state, acc)
    for entry in seen.refresh.drift if seen.refresh is not None else ():
        if entry.kind is DriftKind.account_other_user:  # acting on it would act on a guess
            acc.add("error", entry.user, entry.message)
    return PlanningPass(acc, seen.refresh)


@dataclass(frozen=True)
class _Observed:
    """State as planning sees it: corrected by the live snapshot when there is one."""

    state: State
    recorded: Recorded
    """The accounts of ``state`` by case-folded name."""
    live: LiveSnapshot | None = None
    refresh: Refresh | None = None
    closed_outside: frozenset[str] = frozenset()
    unmanaged: frozenset[str] = frozenset()
    today: date | None = None

    @classmethod
    def of(cls, state: State, live: LiveSnapshot | None, manifest: Manifest, today: date | None) -> _Observed:
        if live is None:
            return cls(state, recorded=Recorded.of(state), today=today)
        comparison = compare(state, live, manifest.partner.entitlements, manifest.partner.riskCategories)
        return cls(
            state=comparison.observed,
            recorded=Recorded.of(comparison.observed),
            live=live,
            refresh=Refresh(drift=comparison.drift, unmanaged=comparison.unmanaged),
            closed_outside=comparison.closed,
            unmanaged=frozenset(comparison.unmanaged),
            today=today,
        )

    def expired(self, user: User) -> bool:
        """True when ``user``'s evaluation ended on or before today."""
        return self.today is not None and user.expiresOn is not None and user.expiresOn <= self.today


def _plan_user(
    manifest: Manifest,
    user: User,
    fields: Mapping[str, Any],
    record: UserRecord | None,
    seen: _Observed,
    acc: _Accumulator,
) -> None:
    """Plan one user of the manifest (not a rename), or say why nothing is planned for it.

    ``fields`` is ``vars(user)``: on the paths every user takes, fields are read from the models'
    dicts, since each attribute read of a pydantic model goes through ``BaseModel.__getattr__``'s
    slot (~100 ns, a dict read ~10 ns), which at 100k users was most of the planner's time.
    """
    expires = fields["expiresOn"] is not None  # rare: the date checks are skipped for everyone else
    if fields["status"] == "cancelled" or (expires and seen.expired(user)):
        _plan_cancelled_in_manifest(manifest, user, record, acc, expired=user.status != "cancelled")
        return
    if expires:
        _note_expiry(user, seen.today, acc)
    name = fields["name"]
    if record is None:
        _plan_new(manifest, user, fields, seen, acc)
        return
    recorded = vars(record)
    if name in seen.closed_outside:
        acc.add(
            "warning",
            user.name,
            "was closed outside reconcile and cannot be reactivated: nothing is planned for it; "
            "set status: cancelled (or remove it), and run `reconcile refresh` to record it",
        )
    elif recorded["lifecycle"] == "cancelled":
        acc.add(
            "error",
            user.name,
            "was cancelled (cancel-everything cannot be undone): cannot reactivate "
            "a cancelled user; choose a new name for a new user, or set status: cancelled",
        )
    elif recorded["cancelledOn"]:
        acc.add(
            "error",
            user.name,
            f"was cancelled on {', '.join(record.cancelledOn)} by an apply that did not finish "
            "(cancel-everything cannot be undone): set status: cancelled (or remove it) so the "
            "next apply finishes the cancel on the other host",
        )
    else:
        _plan_existing(manifest, user, fields, record, recorded, acc)
        acc.staying.add(name)
        if fields["accounts"]:
            acc.extend(plan_user_accounts(manifest, user, record.userId, seen.recorded))


def _plan_new(
    manifest: Manifest, user: User, fields: Mapping[str, Any], seen: _Observed, acc: _Accumulator
) -> None:
    """Create a user state does not record, unless the organization has it unmanaged."""
    if fields["name"] not in seen.unmanaged:
        _plan_create(manifest, user, fields, acc)
        if fields["accounts"]:
            acc.extend(plan_user_accounts(manifest, user, None, seen.recorded))
        return
    assert seen.live is not None  # only a refreshed plan knows unmanaged users
    # The hint must work: `import` refuses a closed user.
    hint = (
        "it is closed, so it cannot be adopted: choose a new name, or set status: cancelled"
        if seen.live.by_name[user.name].closed
        else f"adopt it with `reconcile import {user.name}`"
    )
    acc.add(
        "warning",
        user.name,
        f"already exists in the organization, but reconcile neither created nor adopted it: "
        f"not created again; {hint}",
    )


def _gone(state: State, wanted: Collection[str]) -> list[tuple[str, UserRecord]]:
    """The active recorded users the manifest no longer names, by name.

    One pass over state, sorting only what it finds: a churned desk records far more cancelled
    users than the manifest names.
    """
    return sorted(
        (name, record)
        for name, record in state.users.items()
        if record.lifecycle == "active" and name not in wanted
    )


def _plan_removed(
    manifest: Manifest, gone: Iterable[tuple[str, UserRecord]], renamed: Collection[str], acc: _Accumulator
) -> None:
    """Cancel everything of each active recorded user the manifest no longer names."""
    for name, record in gone:
        if name not in renamed:
            acc.actions.append(
                build.cancel_everything(
                    user=name,
                    userId=record.userId,
                    flags=manifest.defaults.cancel,
                    reason="removed_from_manifest",
                )
            )


def _note_unfinished_cancels(state: State, acc: _Accumulator) -> None:
    """Tell, for each planned cancel, the hosts an earlier apply already cancelled on."""
    for action in acc.actions:
        if isinstance(action, CancelEverything) and (done := state.users[action.user].cancelledOn):
            acc.add(
                "info",
                action.user,
                f"cancel still to finish: already cancelled on {', '.join(done)}; apply sends it "
                f"only to the {plural(len(done), 'host')} still missing",
            )


def _selected_plan(
    acc: _Accumulator,
    refresh: Refresh | None,
    *,
    binding: PlanBinding,
    targets: Sequence[str],
    excludes: Sequence[str],
) -> Plan:
    """Return the plan of what ``targets``/``excludes`` select, sorted."""
    selected = _selector(targets, excludes)
    actions = acc.actions if not (targets or excludes) else [a for a in acc.actions if selected(a.user)]
    actions.sort(key=_action_key)
    diagnostics = sorted(
        (d for d, about in acc.diagnostics if not about or any(selected(name) for name in about)),
        key=lambda d: (_SEVERITY_ORDER[d.severity], d.user or "", d.message),
    )
    if refresh is not None:
        refresh = Refresh(
            drift=tuple(d for d in refresh.drift if selected(d.user)),
            unmanaged=tuple(name for name in refresh.unmanaged if selected(name)),
        )
    return build.plan(
        binding=binding,
        actions=tuple(actions),
        diagnostics=tuple(diagnostics),
        targeted=tuple(targets),
        excluded=tuple(excludes),
        refresh=refresh,
    )


@dataclass
class _Accumulator:
    actions: list[Action] = field(default_factory=list)
    # Each diagnostic with the users it is about (a rename concerns two), for --target/--exclude.
    diagnostics: list[tuple[Diagnostic, tuple[str, ...]]] = field(default_factory=list)
    account_actions: list[Action] = field(default_factory=list)
    """The actions on accounts, also in ``actions``."""
    staying: set[str] = field(default_factory=set)
    """Managed users who stay active: an account of theirs gone from the manifest is revoked."""
    changes: dict[tuple[str, str | None, str | None], FieldChange] = field(default_factory=dict)
    """Each text field change made so far, so that equal ones are one object (:meth:`change`)."""
    new_values: tuple[tuple[str, dict[str, FieldChange]], ...] = field(
        default_factory=lambda: tuple((name, {}) for name in sorted(ADDRESS_FIELDS))
    )
    """Per address field by name, the changes from None to a text made so far, by that text."""
    at_creation: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[int, ...]]] = field(default_factory=dict)
    """Entitlements as listed by users → those set at creation (names, ids), made once per list."""
    plan_ids: dict[int | None, int | None] = field(default_factory=dict)
    """A user's own tradovateSubscriptionPlanId (or None) → the plan id it is created with."""

    def change(self, name: str, before: Any, after: Any) -> FieldChange:
        """A field change; equal changes of text (a new contact's city, country...) are one object.

        A plan's models are never changed (frozen): sharing equal ones halves a new desk's plan.
        """
        if (before is None or type(before) is str) and (after is None or type(after) is str):
            key = (name, before, after)
            found = self.changes.get(key)
            if found is None:
                found = self.changes[key] = build.field_change(field=name, before=before, after=after)
            return found
        return build.field_change(field=name, before=before, after=after)

    def new_contact_changes(self, values: Mapping[str, Any]) -> tuple[FieldChange, ...]:
        """The changes that set a new user's address ``values`` (all but None), by field name.

        :meth:`change` for each, made lean: at 100k new users this is the planner's inner loop.
        """
        changes = []
        for name, made in self.new_values:
            value = values[name]
            if value is None:
                continue
            change = made.get(value) if type(value) is str else None
            if change is None:
                change = build.field_change(field=name, before=None, after=value)
                if type(value) is str:
                    made[value] = change
            changes.append(change)
        return tuple(changes)

    def subscription_plan(self, manifest: Manifest, user: User, fields: Mapping[str, Any]) -> int | None:
        """``manifest.subscription_plan_for(user)``, asked once per plan id users set (None too)."""
        own = fields["tradovateSubscriptionPlanId"]
        if own not in self.plan_ids:
            self.plan_ids[own] = manifest.subscription_plan_for(user)
        return self.plan_ids[own]

    def entitlements_at_creation(
        self, manifest: Manifest, listed: tuple[str, ...]
    ) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """The names and ids of the ``listed`` entitlements set at creation (Sim+ never is), sorted."""
        found = self.at_creation.get(listed)
        if found is None:
            names = tuple(sorted(name for name in listed if name != SIMPLUS))
            ids = tuple(manifest.partner.entitlements[name] for name in names)
            found = self.at_creation[listed] = (names, ids)
        return found

    def add(self, severity: Severity, user: str, message: str, *, also: tuple[str, ...] = ()) -> None:
        diagnostic = Diagnostic(severity=severity, user=user, message=message)
        self.diagnostics.append((diagnostic, (user, *also)))

    def extend(self, planned: Iterable[Planned]) -> None:
        """Add what the account rules planned: notes and account actions."""
        for item in planned:
            if isinstance(item, Note):
                self.add(item.severity, item.user, item.message, also=item.also)
            else:
                self.actions.append(item)
                self.account_actions.append(item)


def _selector(targets: Sequence[str], excludes: Sequence[str]) -> Callable[[str], bool]:
    def selected(name: str) -> bool:
        if targets and not any(fnmatch.fnmatchcase(name, p) for p in targets):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in excludes)

    return selected


_EXTRA_KEY = {GrantEntitlement: "entitlement"} | {kind: "account" for kind in get_args(AccountAction)}
_SORT_BY: dict[type[Any], tuple[int, str | None]] = {
    kind: (kind.model_fields["action"].default.order, _EXTRA_KEY.get(kind))
    for kind in get_args(get_args(Action)[0])
}
"""Per action type: its kind's place in the plan, and the field ordering one user's actions of that kind."""


def _action_key(action: Action) -> tuple[int, str, str]:
    order, extra = _SORT_BY[type(action)]
    fields = vars(action)  # one attribute read instead of two (see _plan_user)
    return (order, fields["user"], "" if extra is None else fields[extra])


def _plan_renames(
    manifest: Manifest, state: State, gone: Iterable[tuple[str, UserRecord]], acc: _Accumulator
) -> set[str]:
    """Report renames (a new manifest user with the email of an active state user ``gone`` from it).

    Returns both names of every rename pair: they get no create and no cancel.
    """
    gone_by_email = {record.email.casefold(): name for name, record in gone}
    involved: set[str] = set()
    if not gone_by_email:
        return involved
    for user in manifest.users:
        if user.status != "active" or user.name in state.users or user.email is None:
            continue
        old = gone_by_email.get(user.email.casefold())
        if old is None:
            continue
        involved.update((old, user.name))
        acc.add(
            "error",
            user.name,
            also=(old,),
            message=f"renaming {old} to {user.name} is not possible through the partner API "
            "(a username change needs the trader's own current password): "
            f"keep the old name or cancel {old} and create {user.name} with another email",
        )
    return involved


def _plan_cancelled_in_manifest(
    manifest: Manifest, user: User, record: UserRecord | None, acc: _Accumulator, *, expired: bool
) -> None:
    if record is None:
        acc.add(
            "info",
            user.name,
            f"expired on {user.expiresOn}: not created"
            if expired
            else "marked cancelled, but this tool never created or adopted this user: nothing to do",
        )
    elif record.lifecycle == "active":
        acc.actions.append(
            build.cancel_everything(
                user=user.name,
                userId=record.userId,
                flags=manifest.defaults.cancel,
                reason="expired" if expired else "status_cancelled",
            )
        )


def _note_expiry(user: User, today: date | None, acc: _Accumulator) -> None:
    """Note an expiry due within :data:`EXPIRY_NOTICE_DAYS` days of ``today``."""
    if today is None or user.expiresOn is None or user.expiresOn > today + timedelta(EXPIRY_NOTICE_DAYS):
        return
    days = (user.expiresOn - today).days
    acc.add(
        "info",
        user.name,
        f"expires on {user.expiresOn} (in {counted(days, 'day')}): "
        "from that date apply cancels everything of this user",
    )


def _planned_password(user: User) -> PlannedPassword:
    # Only where the password comes from reaches the plan; a literal is replaced by a marker.
    source = user.password
    if source is None:  # the manifest model requires a password for active users
        raise PlanError(f"{user.name}: an active user needs a password to be created")
    return "literal" if isinstance(source, str) else source


def _plan_create(manifest: Manifest, user: User, fields: Mapping[str, Any], acc: _Accumulator) -> None:
    """Create ``user`` (``fields`` is ``vars(user)``, see :func:`_plan_user`), set its contact, grant Sim+."""
    name, first, last, contact = fields["name"], fields["firstName"], fields["lastName"], fields["contact"]
    assert fields["email"] and first and last  # an active manifest user has them
    names, ids = acc.entitlements_at_creation(manifest, fields["entitlements"])
    acc.actions.append(
        build.create_user(
            user=name,
            email=fields["email"],
            firstName=first,
            lastName=last,
            password=_planned_password(user),
            tradovateSubscriptionPlanId=acc.subscription_plan(manifest, user, fields),
            entitlementIds=ids,
            entitlements=names,
        )
    )
    if contact is not None:
        after = _contact_values(first, last, contact)
        acc.actions.append(
            build.update_contact(
                user=name,
                userId=None,
                # The names were just set by the create: only the contact fields are news.
                changes=acc.new_contact_changes(after),
                contact=build.contact_payload(**after),
            )
        )
    if SIMPLUS in fields["entitlements"]:
        acc.actions.append(_grant(manifest, name, None, SIMPLUS))


def _grant(
    manifest: Manifest, user: str, user_id: int | None, name: str, *, recheck: bool = False
) -> GrantEntitlement:
    return build.grant_entitlement(
        user=user,
        userId=user_id,
        entitlement=name,
        entitlementId=manifest.partner.entitlements[name],
        accountId=manifest.partner.dataAccountId,
        agreement_gated=name == SIMPLUS,
        recheck=recheck,
    )


def _plan_existing(
    manifest: Manifest,
    user: User,
    fields: Mapping[str, Any],
    record: UserRecord,
    recorded: Mapping[str, Any],
    acc: _Accumulator,
) -> None:
    """Plan a managed active user; ``fields``/``recorded``: the models' ``vars`` (see :func:`_plan_user`)."""
    name, email = fields["name"], fields["email"]
    assert email and fields["firstName"] and fields["lastName"]  # an active manifest user has them
    if email != recorded["email"]:  # both validated text: ``!=`` is the whole comparison
        acc.actions.append(
            build.update_email(
                user=name,
                userId=record.userId,
                changes=(acc.change("email", record.email, email),),
                email=email,
            )
        )
    contact, recorded_contact = fields["contact"], recorded["contact"]
    # On a large desk nearly every contact is unchanged: its fields (validated text or None on
    # both sides, so ``==`` is exact; the models hold the same field names) are compared before
    # any mapping or model is made.
    if not (
        contact is not None
        and recorded_contact is not None
        and fields["firstName"] == recorded["firstName"]
        and fields["lastName"] == recorded["lastName"]
        and vars(contact) == vars(recorded_contact)
    ):
        _plan_contact(user, record, acc)

    wanted, granted = fields["entitlements"], recorded["entitlements"]
    for entitlement in sorted(wanted) if len(wanted) > 1 else wanted:
        grant = granted.get(entitlement)
        if grant is None:
            acc.actions.append(_grant(manifest, name, record.userId, entitlement))
        elif grant.status == "awaiting_agreement":
            acc.actions.append(_grant(manifest, name, record.userId, entitlement, recheck=True))
    for entitlement in granted:  # a loop makes nothing in the common case (every grant still wanted)
        if entitlement not in wanted:
            _note_kept_entitlements(name, [e for e in granted if e not in wanted], acc)
            break

    wanted_plan = acc.subscription_plan(manifest, user, fields)
    if wanted_plan is not None and wanted_plan != recorded["tradovateSubscriptionPlanId"]:
        acc.add(
            "warning",
            name,
            f"tradovateSubscriptionPlanId {record.tradovateSubscriptionPlanId} → {wanted_plan} "
            "is not applied: the subscription plan is set only when a user is created",
        )


def _note_kept_entitlements(user: str, kept: list[str], acc: _Accumulator) -> None:
    """Warn of each granted entitlement the manifest no longer lists: it stays granted."""
    for entitlement in sorted(kept):
        acc.add(
            "warning",
            user,
            f"entitlement {entitlement!r} is no longer in the manifest but stays granted: this tool "
            "does not revoke single entitlements; put it back, or cancel the user",
        )


def _plan_contact(user: User, record: UserRecord, acc: _Accumulator) -> None:
    """Update the contact when it (or a name) changed; :func:`_plan_existing` skips the unchanged."""
    assert user.firstName and user.lastName
    contact: Contact | ContactRecord | None = user.contact
    if contact is None:
        if record.contact is not None:
            acc.add(
                "warning",
                user.name,
                "contact is no longer in the manifest, but the partner API cannot clear "
                "contact info: the recorded contact stays",
            )
        # updatecontactinfo needs an address: without one in the manifest, a name change can
        # only be sent with the contact recorded earlier.
        contact = record.contact
        if contact is None:
            if (user.firstName, user.lastName) != (record.firstName, record.lastName):
                acc.add(
                    "warning",
                    user.name,
                    f"the name change {record.firstName} {record.lastName} → "
                    f"{user.firstName} {user.lastName} cannot be sent: the partner API changes names "
                    "only with contact info (updatecontactinfo needs an address); add a contact",
                )
            return
    after = _contact_values(user.firstName, user.lastName, contact)
    changes = _field_changes(_recorded_contact(record), after, acc.change)
    if changes:
        acc.actions.append(
            build.update_contact(
                user=user.name, userId=record.userId, changes=changes, contact=build.contact_payload(**after)
            )
        )


def _recorded_contact(record: UserRecord) -> dict[str, Any]:
    if record.contact is None:
        values: dict[str, Any] = dict.fromkeys(CONTACT_FIELDS)
        values.update(firstName=record.firstName, lastName=record.lastName)
        return values
    return _contact_values(record.firstName, record.lastName, record.contact)


def _contact_values(first: str, last: str, contact: Contact | ContactRecord) -> dict[str, Any]:
    """The ContactPayload fields as a plain mapping (attribute reads: no serializer per user)."""
    values: dict[str, Any] = dict(vars(contact))  # its fields are the address's (a copy: models stay)
    values.update(firstName=first, lastName=last)
    return values


def _field_changes(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    change: Callable[[str, Any, Any], FieldChange] = lambda name, old, new: build.field_change(
        field=name, before=old, after=new
    ),
) -> tuple[FieldChange, ...]:
    """Field-level before/after of two flat mappings (absent = None), sorted by field name.

    Plain scalars (text, whole numbers, booleans, None) of one type, or one side None, are
    compared with ``==``; DeepDiff decides the rest: containers, and scalars of different types
    (``1`` / ``True`` / ``1.0``, which ``==`` calls equal). DeepDiff costs ~0.5 ms a call: once
    per changed user it was most of a 100k-user plan, and on plain scalars it gives the same
    answer as ``==``.
    """
    # Same keys on both sides: DeepDiff sees an empty mapping turning into a full one as one
    # change of the root, not as per-field changes.
    if before == after and all(value is None or type(value) is str for value in before.values()):
        return ()  # the common case on a large desk: nothing changed
    keys = set(before) | set(after)
    old = {key: before.get(key) for key in keys}
    new = {key: after.get(key) for key in keys}
    changed: set[str] = set()
    deep = [key for key in keys if not _plain(old[key], new[key])]
    changed.update(key for key in keys if key not in deep and old[key] != new[key])
    if deep:
        from deepdiff import DeepDiff  # ~20 ms to import: only plans with such values need it

        diff = DeepDiff({key: old[key] for key in deep}, {key: new[key] for key in deep})
        changed.update(str(key) for key in diff.affected_root_keys)
    return tuple(change(name, old[name], new[name]) for name in sorted(changed))


_SCALARS: frozenset[type] = frozenset({str, int, bool})


def _plain(a: Any, b: Any) -> bool:
    """True when ``a != b`` says exactly whether the values differ (no DeepDiff needed)."""
    if a is None or b is None:
        return (a is None or type(a) in _SCALARS) and (b is None or type(b) in _SCALARS)
    return type(a) is type(b) and type(a) in _SCALARS
