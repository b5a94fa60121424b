"""Cancellation budgets (DESIGN §8.4): cancelling is irreversible, so a plan may cancel only a few.

The budget of a run is the smaller of

* ``policy.maxCancellations`` (absolute), and
* ``policy.maxCancellationPercent`` of the managed active users in state, rounded down but never
  below 1, so a small desk can still retire one trader at a time (10 % of 5 users is 0.5: one).

and, whatever the budgets say, a plan that would cancel *every* managed active user is refused
(an empty or nearly empty manifest, such as a bad merge that dropped the users list, must never
cancel the desk). ``--allow-cancellations N`` replaces all of this for one run: a plan cancelling
at most N users passes. Every cancellation counts, whether the user was removed from the
manifest or marked ``status: cancelled``.

``--target``/``--exclude`` narrow what a run does, never what the policy judges: a run that
cancels anyone is judged by what the *whole* manifest, against the whole state, would cancel,
both by the budget and by ``--allow-cancellations N`` (else an empty manifest applied with
``--target 'kt*' --allow-cancellations 10`` cancels every ``kt*`` trader, one allowance-sized
slice at a time). The refusal names that whole number, so the allowance it suggests is a
deliberate yes to all of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from reconcile.errors import PolicyError, counted, plural
from reconcile.manifest.models import Policy
from reconcile.planning.plan import REASONS, CancelEverything, Diagnostic, Plan, RevokeTrading
from reconcile.state.model import State

Irreversible = CancelEverything | RevokeTrading
"""What the budgets count: a user's cancel-everything, an account's trading permission revoked."""


@dataclass(frozen=True)
class CancellationCheck:
    """How a plan's cancellations and revocations compare with the budget."""

    cancellations: tuple[CancelEverything, ...]
    revocations: tuple[RevokeTrading, ...]
    counts: Judged
    """What the policy judged: the plan's counts, or the whole manifest's when it was narrowed."""
    active_users: int
    budget: int
    allowed: int | None
    whole: int | None
    """Irreversible actions of the whole manifest when the plan was narrowed by --target/--exclude."""
    refused_reason: str | None
    """Why the plan is refused (a sentence), or None when it passes."""

    @property
    def refused(self) -> bool:
        return self.refused_reason is not None

    @property
    def irreversible(self) -> tuple[Irreversible, ...]:
        """The cancellations, then the revocations."""
        return (*self.cancellations, *self.revocations)

    @property
    def judged(self) -> int:
        """The irreversible actions the policy judges: the whole manifest's when the plan was narrowed."""
        return max(len(self.irreversible), self.whole or 0, self.counts.total)

    def diagnostic(self) -> Diagnostic | None:
        """A warning for the rendered plan when apply would refuse it; None when it passes."""
        if self.refused_reason is None:
            return None
        return Diagnostic(
            severity="warning",
            message=(
                f"policy: apply will refuse this plan: {self.refused_reason}. If these cancellations "
                f"are intended, apply with --allow-cancellations {self.judged}"
            ),
        )

    def message(self) -> str:
        """The refusal for people: why, every user it would cancel and permission it would revoke."""
        if self.refused_reason is None:
            return ""
        whole = ""
        if self.judged > len(self.irreversible):
            # The allowance must say yes to everything the manifest cancels, not to this slice.
            whole = (
                f"The whole manifest would {self.counts.verbs()}; --allow-cancellations counts "
                "them all, whatever --target/--exclude select.\n"
            )
        return (
            f"refused by policy: {self.refused_reason}.\n{self._listed()}{whole}"
            "If the manifest lost users or accounts by mistake (a bad merge, a missing file), restore "
            f"them. If these cancellations are intended, run again with --allow-cancellations {self.judged}."
        )

    def _listed(self) -> str:
        out = ""
        count = len(self.cancellations)
        if count:
            users = "\n".join(
                f"  - {a.user} (id {a.userId}, {REASONS[a.reason]})" for a in self.cancellations
            )
            these = plural(count, "this user", f"these {count} users")
            out += f"The plan would cancel {these}, irreversibly:\n{users}\n"
        count = len(self.revocations)
        if count:
            accounts = "\n".join(
                f"  - {a.account} of {a.user} (account id {a.accountId}, {REASONS[a.reason]})"
                for a in self.revocations
            )
            these = plural(count, "this trading permission", f"these {count} trading permissions")
            out += f"The plan would revoke {these}, irreversibly:\n{accounts}\n"
        return out


def budget_for(policy: Policy, active_users: int) -> int:
    """The number of cancellations ``policy`` allows on a desk of ``active_users``."""
    by_percent = max(1, math.floor(active_users * policy.maxCancellationPercent / 100))
    return min(policy.maxCancellations, by_percent)


def cancellations_of(plan: Plan) -> tuple[CancelEverything, ...]:
    """The cancel-everything actions of ``plan``."""
    return tuple(a for a in plan.actions if isinstance(a, CancelEverything))


def revocations_of(plan: Plan) -> tuple[RevokeTrading, ...]:
    """The revoke-trading actions of ``plan``."""
    return tuple(a for a in plan.actions if isinstance(a, RevokeTrading))


def irreversible_of(plan: Plan) -> tuple[Irreversible, ...]:
    """What the budgets count in ``plan``: its cancellations and revocations."""
    return (*cancellations_of(plan), *revocations_of(plan))


def evaluate_cancellations(
    plan: Plan,
    state: State,
    policy: Policy,
    allow_cancellations: int | None = None,
    *,
    whole: Sequence[Irreversible] | None = None,
) -> CancellationCheck:
    """Compare the cancellations and revocations of ``plan`` with the budget; never raises.

    ``whole`` holds the irreversible actions of the same manifest and state planned without
    --target/--exclude (None when ``plan`` is not narrowed): the budgets, the whole-desk guards
    and ``allow_cancellations`` all judge those.
    """
    cancellations, revocations = cancellations_of(plan), revocations_of(plan)
    active = sum(1 for record in state.users.values() if record.lifecycle == "active")
    budget = budget_for(policy, active)
    judged = Judged.of(cancellations, revocations, whole)
    # A run that cancels and revokes nothing harms nobody, whatever the rest of the manifest does.
    reason = (
        _refusal(judged, state, policy, active, allow_cancellations) if cancellations or revocations else None
    )
    return CancellationCheck(
        cancellations=cancellations,
        revocations=revocations,
        counts=judged,
        active_users=active,
        budget=budget,
        allowed=allow_cancellations,
        whole=None if whole is None else len(whole),
        refused_reason=reason,
    )


@dataclass(frozen=True)
class Judged:
    """What the policy judges: the plan's counts, or the whole manifest's when it was narrowed."""

    users: int
    revocations: int
    narrowed: bool

    @classmethod
    def of(
        cls,
        cancellations: Sequence[CancelEverything],
        revocations: Sequence[RevokeTrading],
        whole: Sequence[Irreversible] | None,
    ) -> Judged:
        if whole is None:
            return cls(len(cancellations), len(revocations), narrowed=False)
        whole_users = sum(1 for a in whole if isinstance(a, CancelEverything))
        return cls(
            max(len(cancellations), whole_users),
            max(len(revocations), len(whole) - whole_users),
            narrowed=True,
        )

    @property
    def total(self) -> int:
        return self.users + self.revocations

    @property
    def subject(self) -> str:
        return "the whole manifest (whatever --target/--exclude select)" if self.narrowed else "the plan"

    def verbs(self, *, says: bool = False) -> str:
        """``cancel 3 users``, ``revoke 2 trading permissions``, or both and their sum.

        ``says`` conjugates for a subject: ``cancels 3 users``.
        """
        s = "s" if says else ""
        revoke = f"revoke{s} {counted(self.revocations, 'trading permission')}"
        if not self.revocations:
            return f"cancel{s} {self.users} users"
        if not self.users:
            return revoke
        return f"cancel{s} {counted(self.users, 'user')} and {revoke} ({self.total} irreversible actions)"

    def what(self) -> str:
        """``the plan cancels 3 users`` (and the like, from :meth:`verbs`)."""
        return f"{self.subject} {self.verbs(says=True)}"


def _refusal(
    judged: Judged, state: State, policy: Policy, active: int, allow_cancellations: int | None
) -> str | None:
    """Why the judged cancellations and revocations are refused, or None when they pass."""
    budget = budget_for(policy, active)
    if allow_cancellations is not None:
        if judged.total > allow_cancellations:
            return f"{judged.what()}, more than --allow-cancellations {allow_cancellations}"
        return None
    permissions = sum(1 for record in state.accounts.values() if record.permission == "active")
    if judged.users and judged.users >= active:
        return (
            f"{judged.subject} cancels all {counted(active, 'managed active user')}; cancelling the "
            "whole desk is never within the policy budget"
        )
    if judged.revocations and judged.revocations >= permissions:
        return (
            f"{judged.what()}: every active trading permission recorded; revoking every account is "
            "never within the policy budget"
        )
    if judged.total > budget:
        percent_budget = max(1, math.floor(active * policy.maxCancellationPercent / 100))
        return (
            f"{judged.what()}; the budget is {budget} (policy.maxCancellations "
            f"{policy.maxCancellations}; policy.maxCancellationPercent {policy.maxCancellationPercent:g}% "
            f"of {active} managed active users allows {percent_budget})"
        )
    return None


def check_cancellations(
    plan: Plan,
    state: State,
    policy: Policy,
    allow_cancellations: int | None = None,
    *,
    whole: Sequence[Irreversible] | None = None,
) -> CancellationCheck:
    """Raise :class:`PolicyError` (exit 3) when ``plan`` cancels or revokes more than allowed.

    Returns the passing check, for callers that record it (the audit log notes
    ``allow_cancellations`` when it was used).
    """
    check = evaluate_cancellations(plan, state, policy, allow_cancellations, whole=whole)
    if check.refused:
        raise PolicyError(check.message())
    return check
