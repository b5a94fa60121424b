"""The planner's rules, one by one (DESIGN §5, §8)."""

from __future__ import annotations

import pytest
from test_planner_support import (
    BINDING,
    CONTACT_NY,
    DATA_ACCOUNT,
    SIMPLUS_ID,
    TRADINGVIEW_ID,
    grant,
    manifest,
    record,
    state,
    user,
)

from reconcile.errors import PlanError
from reconcile.manifest.models import CancelFlags
from reconcile.planning.plan import (
    CancelEverything,
    CreateUser,
    FieldChange,
    GrantEntitlement,
    UpdateContact,
    UpdateEmail,
)
from reconcile.planning.planner import make_plan
from reconcile.state.model import State

CANCELLED = {"status": "cancelled", "email": None, "password": None, "firstName": None, "lastName": None}


def plan_of(m, s=None, **kw):
    return make_plan(m, s if s is not None else state(), binding=BINDING, **kw)


def kinds(plan):
    return [(a.action.value, a.user) for a in plan.actions]


def messages(plan, severity):
    return [(d.user, d.message) for d in plan.diagnostics if d.severity == severity]


def test_new_user_is_created_without_simplus_in_entitlement_ids_and_gets_a_gated_grant():
    m = manifest(user("trader001", entitlements=["tradingview", "simplus"], contact=CONTACT_NY))
    plan = plan_of(m)
    assert kinds(plan) == [
        ("create", "trader001"),
        ("update_contact", "trader001"),
        ("grant_entitlement", "trader001"),
    ]
    create, contact, simplus = plan.actions
    assert isinstance(create, CreateUser)
    assert create.entitlementIds == (TRADINGVIEW_ID,)
    assert create.entitlements == ("tradingview",)
    assert create.tradovateSubscriptionPlanId == 7
    assert create.password.model_dump() == {"generate": True}
    assert isinstance(contact, UpdateContact) and contact.userId is None
    assert contact.contact.phone == "+12125550100" and contact.contact.firstName == "Test"
    assert FieldChange(field="city", before=None, after="New York") in contact.changes
    assert {c.field for c in contact.changes} == set(CONTACT_NY)  # the names come with the create
    assert simplus == GrantEntitlement(
        user="trader001",
        userId=None,
        entitlement="simplus",
        entitlementId=SIMPLUS_ID,
        accountId=DATA_ACCOUNT,
        agreement_gated=True,
    )


def test_user_subscription_plan_overrides_the_default():
    plan = plan_of(manifest(user("trader001", tradovateSubscriptionPlanId=8)))
    assert plan.actions[0].tradovateSubscriptionPlanId == 8


@pytest.mark.parametrize(
    ("password", "planned"),
    [
        ({"env": "PW_001"}, {"env": "PW_001"}),
        ({"file": "secrets/pw"}, {"file": "secrets/pw"}),
        ("Sup3r-Secret-Literal", "literal"),
    ],
)
def test_only_the_password_source_reaches_the_plan(password, planned):
    plan = plan_of(manifest(user("trader001", password=password)))
    dumped = plan.model_dump(mode="json")
    assert dumped["actions"][0]["password"] == planned
    assert "Sup3r-Secret-Literal" not in plan.model_dump_json()


def test_in_sync_user_plans_nothing_and_password_is_never_compared():
    m = manifest(user("trader001", password="another-Passw0rd", entitlements=["tradingview"]))
    s = state(trader001=record(1001, "trader001", entitlements={"tradingview": grant(TRADINGVIEW_ID)}))
    plan = plan_of(m, s)
    assert plan.actions == () and plan.diagnostics == ()
    assert not plan.has_changes


def test_email_change_plans_update_email_with_before_and_after():
    m = manifest(user("trader001", email="new@example.com"))
    plan = plan_of(m, state(trader001=record(1001, "trader001")))
    (action,) = plan.actions
    assert action == UpdateEmail(
        user="trader001",
        userId=1001,
        email="new@example.com",
        changes=(FieldChange(field="email", before="trader001@example.com", after="new@example.com"),),
    )


def test_contact_change_sends_the_full_payload_and_lists_only_changed_fields():
    m = manifest(user("trader001", contact={**CONTACT_NY, "phone": "+12125559999"}))
    s = state(trader001=record(1001, "trader001", contact=CONTACT_NY))
    (action,) = plan_of(m, s).actions
    assert isinstance(action, UpdateContact)
    assert action.userId == 1001
    assert action.changes == (FieldChange(field="phone", before="+12125550100", after="+12125559999"),)
    assert action.contact.model_dump() == {
        **CONTACT_NY,
        "phone": "+12125559999",
        "firstName": "Test",
        "lastName": "User",
        "streetAddress2": None,
    }


def test_contact_added_to_an_existing_user_plans_update_contact():
    m = manifest(user("trader001", contact=CONTACT_NY))
    (action,) = plan_of(m, state(trader001=record(1001, "trader001"))).actions
    assert isinstance(action, UpdateContact)
    assert {c.field for c in action.changes} == set(CONTACT_NY)


def test_name_change_with_contact_is_sent_through_update_contact():
    m = manifest(user("trader001", lastName="Lovelace", contact=CONTACT_NY))
    s = state(trader001=record(1001, "trader001", contact=CONTACT_NY))
    (action,) = plan_of(m, s).actions
    assert action.changes == (FieldChange(field="lastName", before="User", after="Lovelace"),)


def test_name_change_without_any_contact_cannot_be_sent_and_warns():
    plan = plan_of(manifest(user("trader001", firstName="Ada")), state(trader001=record(1001, "trader001")))
    assert plan.actions == ()
    ((who, message),) = messages(plan, "warning")
    assert who == "trader001"
    assert "cannot be sent" in message and "add a contact" in message


def test_name_change_uses_the_recorded_contact_when_the_manifest_dropped_it():
    s = state(trader001=record(1001, "trader001", contact=CONTACT_NY))
    plan = plan_of(manifest(user("trader001", firstName="Ada")), s)
    (action,) = plan.actions
    assert action.changes == (FieldChange(field="firstName", before="Test", after="Ada"),)
    assert action.contact.city == "New York"
    assert any("cannot clear contact info" in m for _, m in messages(plan, "warning"))


def test_missing_entitlement_is_granted_to_an_existing_user():
    m = manifest(user("trader001", entitlements=["tradingview", "simplus"]))
    plan = plan_of(m, state(trader001=record(1001, "trader001")))
    assert [(a.entitlement, a.agreement_gated, a.userId, a.recheck) for a in plan.actions] == [
        ("simplus", True, 1001, False),
        ("tradingview", False, 1001, False),
    ]
    assert plan.has_changes


def test_simplus_awaiting_agreement_is_a_recheck_not_a_change():
    m = manifest(user("trader001", entitlements=["simplus"]))
    s = state(
        trader001=record(1001, "trader001", entitlements={"simplus": grant(SIMPLUS_ID, "awaiting_agreement")})
    )
    plan = plan_of(m, s)
    (action,) = plan.actions
    assert isinstance(action, GrantEntitlement) and action.recheck and action.agreement_gated
    assert not plan.has_changes
    assert plan.summary["grant_entitlement"] == 0 and plan.summary["recheck"] == 1


def test_entitlement_removed_from_manifest_warns_and_revokes_nothing():
    s = state(trader001=record(1001, "trader001", entitlements={"tradingview": grant(TRADINGVIEW_ID)}))
    plan = plan_of(manifest(user("trader001")), s)
    assert plan.actions == ()
    ((who, message),) = messages(plan, "warning")
    assert who == "trader001" and "'tradingview'" in message and "does not revoke" in message


def test_subscription_plan_change_of_existing_user_warns():
    plan = plan_of(
        manifest(user("trader001", tradovateSubscriptionPlanId=9)), state(trader001=record(1001, "trader001"))
    )
    assert plan.actions == ()
    assert "only when a user is created" in messages(plan, "warning")[0][1]


def test_user_removed_from_manifest_is_cancelled_with_the_default_flags():
    flags = {"userPlugins": False}
    m = manifest(user("trader001"), defaults={"tradovateSubscriptionPlanId": 7, "cancel": flags})
    s = state(trader001=record(1001, "trader001"), trader002=record(1002, "trader002"))
    (action,) = plan_of(m, s).actions
    assert action == CancelEverything(
        user="trader002", userId=1002, flags=CancelFlags(userPlugins=False), reason="removed_from_manifest"
    )


def test_status_cancelled_cancels_an_active_state_user():
    s = state(trader002=record(1002, "trader002"))
    (action,) = plan_of(manifest(user("trader002", **CANCELLED)), s).actions
    assert isinstance(action, CancelEverything) and action.reason == "status_cancelled"


def test_already_cancelled_users_are_left_alone():
    s = state(
        trader002=record(1002, "trader002", lifecycle="cancelled"),
        trader003=record(1003, "trader003", lifecycle="cancelled"),
    )
    plan = plan_of(manifest(user("trader002", **CANCELLED)), s)
    assert plan.actions == () and plan.diagnostics == ()


def test_status_cancelled_for_an_unknown_user_is_only_a_note():
    plan = plan_of(manifest(user("stranger", **CANCELLED)))
    assert plan.actions == ()
    assert [d.severity for d in plan.diagnostics] == ["info"]
    assert not plan.has_errors


def test_reactivating_a_cancelled_user_is_an_error():
    s = state(trader001=record(1001, "trader001", lifecycle="cancelled"))
    plan = plan_of(manifest(user("trader001")), s)
    assert plan.actions == ()
    assert plan.has_errors
    assert "cannot reactivate a cancelled user; choose a new name" in messages(plan, "error")[0][1]


def test_rename_is_reported_as_impossible_and_plans_neither_create_nor_cancel():
    m = manifest(user("trader001b", email="trader001@example.com"), user("trader002"))
    s = state(trader001=record(1001, "trader001"))
    plan = plan_of(m, s)
    assert kinds(plan) == [("create", "trader002")]
    ((who, message),) = messages(plan, "error")
    assert who == "trader001b"
    assert message.startswith(
        "renaming trader001 to trader001b is not possible through the partner API (a username change "
        "needs the trader's own current password)"
    )


def test_rename_match_ignores_email_case():
    m = manifest(user("trader001b", email="Trader001@Example.com"))
    plan = plan_of(m, state(trader001=record(1001, "trader001")))
    assert plan.actions == () and plan.has_errors


def test_actions_are_sorted_by_kind_then_user():
    m = manifest(
        user("zed", entitlements=["simplus"]),
        user("amy", entitlements=["simplus"]),
        user("bob", email="bob2@example.com"),
    )
    s = state(bob=record(1, "bob"), old=record(2, "old"))
    assert kinds(plan_of(m, s)) == [
        ("create", "amy"),
        ("create", "zed"),
        ("update_email", "bob"),
        ("grant_entitlement", "amy"),
        ("grant_entitlement", "zed"),
        ("cancel_everything", "old"),
    ]


def test_target_and_exclude_limit_actions_and_are_recorded():
    m = manifest(user("trader001"), user("trader002"), user("other"))
    plan = plan_of(m, targets=["trader*"], excludes=["trader002"])
    assert kinds(plan) == [("create", "trader001")]
    assert plan.targeted == ("trader*",) and plan.excluded == ("trader002",)
    assert plan.is_targeted
    assert not plan_of(m).is_targeted


def test_target_keeps_a_rename_error_when_either_name_matches():
    m = manifest(user("new", email="old@example.com"))
    s = state(old=record(1, "old", email="old@example.com"))
    assert plan_of(m, s, targets=["old"]).has_errors
    assert not plan_of(m, s, targets=["unrelated"]).has_errors


def test_manifest_and_state_of_different_environments_are_refused():
    with pytest.raises(PlanError, match="pass --state"):
        make_plan(manifest(user("trader001")), State(environment="live"), binding=BINDING)
