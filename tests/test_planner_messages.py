"""What the planner tells a reviewer, word for word, and the edges of the rename rule (found by mutants)."""

from __future__ import annotations

from typing import Any

import deepdiff
import pytest
from test_planner_support import BINDING, CONTACT_NY, SIMPLUS_ID, grant, manifest, record, state, user

from reconcile.planning.plan import CreateUser, Plan
from reconcile.planning.planner import _field_changes, make_plan
from reconcile.state.model import State


def plan_of(users: list[dict[str, Any]], s: State) -> Plan:
    return make_plan(manifest(*users), s, binding=BINDING)


def diagnostics(plan: Plan) -> list[tuple[str, str | None, str]]:
    return [(d.severity, d.user, d.message) for d in plan.diagnostics]


def test_a_cancelled_user_the_tool_never_managed_is_nothing_to_do() -> None:
    plan = plan_of([{"name": "trader009", "status": "cancelled"}], state())
    assert plan.actions == ()
    assert diagnostics(plan) == [
        (
            "info",
            "trader009",
            "marked cancelled, but this tool never created or adopted this user: nothing to do",
        )
    ]


def test_a_dropped_entitlement_and_a_new_subscription_plan_are_warned_about_not_applied() -> None:
    s = state(trader001=record(1001, "trader001", entitlements={"simplus": grant(SIMPLUS_ID)}))
    plan = plan_of([user("trader001", tradovateSubscriptionPlanId=8)], s)
    assert plan.actions == ()
    assert diagnostics(plan) == [
        (
            "warning",
            "trader001",
            "entitlement 'simplus' is no longer in the manifest but stays granted: this tool does not "
            "revoke single entitlements; put it back, or cancel the user",
        ),
        (
            "warning",
            "trader001",
            "tradovateSubscriptionPlanId 7 → 8 is not applied: the subscription plan is set only when "
            "a user is created",
        ),
    ]


def test_contact_warnings_say_what_stays_and_what_to_add() -> None:
    dropped = plan_of([user("trader001")], state(trader001=record(1001, "trader001", contact=CONTACT_NY)))
    assert diagnostics(dropped) == [
        (
            "warning",
            "trader001",
            "contact is no longer in the manifest, but the partner API cannot clear contact info: "
            "the recorded contact stays",
        )
    ]
    renamed = plan_of([user("trader001", firstName="Ada")], state(trader001=record(1001, "trader001")))
    assert diagnostics(renamed) == [
        (
            "warning",
            "trader001",
            "the name change Test User → Ada User cannot be sent: the partner API changes names only "
            "with contact info (updatecontactinfo needs an address); add a contact",
        )
    ]


def _renames(plan: Plan) -> list[tuple[str | None, str]]:
    errors = [d for d in plan.diagnostics if d.severity == "error"]
    return [(d.user, d.message.split(" is not possible")[0]) for d in errors]


def test_every_new_user_with_a_removed_users_email_is_a_rename_error() -> None:
    s = state(
        trader001=record(1001, "trader001"),
        trader002=record(1002, "trader002"),
        trader003=record(1003, "trader003"),
    )
    users = [
        user("trader001"),  # kept as it is
        user("trader004"),  # new, with a fresh email
        user("trader005", email="trader002@example.com"),  # new, with the email of removed trader002
        user("trader006", email="trader003@example.com"),  # new, with the email of removed trader003
    ]
    plan = plan_of(users, s)
    assert _renames(plan) == [
        ("trader005", "renaming trader002 to trader005"),
        ("trader006", "renaming trader003 to trader006"),
    ]
    assert [a.user for a in plan.actions if isinstance(a, CreateUser)] == ["trader004"]


def test_an_email_freed_by_a_cancelled_or_kept_user_is_no_rename() -> None:
    s = state(
        trader001=record(1001, "trader001", lifecycle="cancelled"),
        trader002=record(1002, "trader002"),
        trader003=record(1003, "trader003"),
    )
    users = [
        user("trader002", email="trader003@example.com"),  # a kept user takes a removed user's email
        user("trader004", email="trader001@example.com"),  # a new user takes a cancelled user's email
    ]
    plan = plan_of(users, s)
    assert _renames(plan) == []
    assert [a.user for a in plan.actions if isinstance(a, CreateUser)] == ["trader004"]


@pytest.mark.parametrize(
    ("before", "after", "changed"),
    [
        ({"a": "x", "b": None, "c": 1, "d": True, "e": "same"},
         {"a": "y", "b": "z", "c": None, "d": False, "e": "same"},
         ["a", "b", "c", "d"]),
        ({"a": None, "b": 2}, {"a": "new", "b": 2}, ["a"]),
        ({"a": "old"}, {}, ["a"]),
    ],
)  # fmt: skip
def test_plain_values_are_compared_without_deepdiff(
    before: dict[str, Any], after: dict[str, Any], changed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DeepDiff costs ~0.5 ms a call: a 100k-user plan must not pay it for text, numbers and None."""

    def no_deepdiff(*args: object, **kwargs: object) -> None:
        raise AssertionError("DeepDiff was called for plain values")

    monkeypatch.setattr(deepdiff, "DeepDiff", no_deepdiff)  # the planner imports it when it needs it
    assert [c.field for c in _field_changes(before, after)] == changed


def test_a_grant_awaiting_the_agreement_is_rechecked_for_the_recorded_user() -> None:
    awaiting = {"simplus": grant(SIMPLUS_ID, "awaiting_agreement")}
    plan = plan_of(
        [user("trader001", entitlements=["simplus"])],
        state(trader001=record(1001, "trader001", entitlements=awaiting)),
    )
    assert [(a.user, a.userId, a.entitlement, a.recheck) for a in plan.actions] == [
        ("trader001", 1001, "simplus", True)
    ]
