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
from reconcile.planning.plan import CancelEverything, Diagnostic, Plan, RevokeTrading
from reconcile.state.model import State

_REASONS = {"removed_from_manifest": "removed from the manifest", "status_cancelled": "status: cancelled"}


@dataclass(frozen=True)
class CancellationCheck:
    """How a plan's cancellations compare with the budget."""

    cancellations: tuple[CancelEverything, ...]
    active_users: int
    budget: int
    allowed: int | None
    whole: int | None
    """Cancellations of the whole manifest when the plan was narrowed by --target/--exclude."""
    refused_reason: str | None
    """Why the plan is refused (a sentence), or None when it passes."""

    @property
    def refused(self) -> bool:
        return self.refused_reason is not None

    @property
    def judged(self) -> int:
        """The cancellations the policy judges: the whole manifest's when the plan was narrowed."""
        return max(len(self.cancellations), self.whole or 0)

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
        """The refusal for people: why, every user it would cancel, and what to do."""
        if self.refused_reason is None:
            return ""
        count = len(self.cancellations)
        users = "\n".join(f"  - {a.user} (id {a.userId}, {_REASONS[a.reason]})" for a in self.cancellations)
        whole = ""
        if self.judged > count:
            # The allowance must say yes to everything the manifest cancels, not to this slice.
            whole = (
                f"The whole manifest would cancel {self.judged} users; --allow-cancellations counts "
                "them all, whatever --target/--exclude select.\n"
            )
        return (
            f"refused by policy: {self.refused_reason}.\n"
            f"The plan would cancel {plural(count, 'this user', f'these {count} users')}, "
            f"irreversibly:\n{users}\n{whole}"
            "If the manifest lost users by mistake (a bad merge, a missing file), restore them. "
            f"If these cancellations are intended, run again with --allow-cancellations {self.judged}."
        )


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


def evaluate_cancellations(
    plan: Plan,
    state: State,
    policy: Policy,
    allow_cancellations: int | None = None,
    *,
    whole: Sequence[CancelEverything] | None = None,
) -> CancellationCheck:
    """Compare the cancellations of ``plan`` with the budget; never raises.

    ``whole`` holds the cancellations of the same manifest and state planned without
    --target/--exclude (None when ``plan`` is not narrowed): the budgets, the whole-desk guard
    and ``allow_cancellations`` all judge those.
    """
    cancellations = cancellations_of(plan)
    active = sum(1 for record in state.users.values() if record.lifecycle == "active")
    budget = budget_for(policy, active)
    count = len(cancellations)
    judged = count if whole is None else max(count, len(whole))
    subject = "the plan" if whole is None else "the whole manifest (whatever --target/--exclude select)"
    reason: str | None = None
    if not count:
        pass  # a run that cancels nobody harms nobody, whatever the rest of the manifest does
    elif allow_cancellations is not None:
        if judged > allow_cancellations:
            allowance = f"--allow-cancellations {allow_cancellations}"
            reason = f"{subject} cancels {judged} users, more than {allowance}"
    elif judged >= active:
        reason = (
            f"{subject} cancels all {counted(active, 'managed active user')}; cancelling the whole desk "
            "is never within the policy budget"
        )
    elif judged > budget:
        percent_budget = max(1, math.floor(active * policy.maxCancellationPercent / 100))
        reason = (
            f"{subject} cancels {judged} users; the budget is {budget} (policy.maxCancellations "
            f"{policy.maxCancellations}; policy.maxCancellationPercent {policy.maxCancellationPercent:g}% "
            f"of {active} managed active users allows {percent_budget})"
        )
    return CancellationCheck(
        cancellations=cancellations,
        active_users=active,
        budget=budget,
        allowed=allow_cancellations,
        whole=None if whole is None else len(whole),
        refused_reason=reason,
    )


def check_cancellations(
    plan: Plan,
    state: State,
    policy: Policy,
    allow_cancellations: int | None = None,
    *,
    whole: Sequence[CancelEverything] | None = None,
) -> CancellationCheck:
    """Raise :class:`PolicyError` (exit 3) when ``plan`` cancels more users than allowed.

    Returns the passing check, for callers that record it (the audit log notes
    ``allow_cancellations`` when it was used).
    """
    check = evaluate_cancellations(plan, state, policy, allow_cancellations, whole=whole)
    if check.refused:
        raise PolicyError(check.message())
    return check
