"""Drift detection (pure): recorded state x live snapshot, and the plan that repairs it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from test_planner_support import (
    BINDING,
    CONTACT_NY,
    SIMPLUS_ID,
    TRADINGVIEW_ID,
    grant,
    manifest,
    record,
    state,
    user,
)

from reconcile.planning.drift import compare
from reconcile.planning.plan import (
    CancelEverything,
    CreateUser,
    DriftKind,
    GrantEntitlement,
    UpdateContact,
    UpdateEmail,
    load_plan,
    save_plan,
)
from reconcile.planning.planner import make_plan
from reconcile.planning.snapshot import LiveContact, LiveSnapshot, LiveUser
from reconcile.render import render

READ_AT = datetime(2026, 2, 1, tzinfo=UTC)
ENTITLEMENTS = {"simplus": SIMPLUS_ID, "tradingview": TRADINGVIEW_ID}


def live_user(user_id: int, name: str, **overrides: Any) -> LiveUser:
    """A live user matching :func:`record` (contact read, none on file)."""
    data: dict[str, Any] = {
        "userId": user_id,
        "name": name,
        "email": f"{name}@example.com",
        "status": "Active",
        "contact_read": True,
    }
    data.update(overrides)
    return LiveUser.model_validate(data)


def snapshot(*users: LiveUser) -> LiveSnapshot:
    return LiveSnapshot(users=users, read_at=READ_AT)


def live_contact(**overrides: Any) -> LiveContact:
    return LiveContact(**{"firstName": "Test", "lastName": "User", **CONTACT_NY, **overrides})


def test_nothing_differs_means_no_drift_and_the_same_state() -> None:
    s = state(
        trader001=record(1001, "trader001", contact=CONTACT_NY, entitlements={"simplus": grant(SIMPLUS_ID)}),
    )
    live = snapshot(live_user(1001, "trader001", contact=live_contact(), entitlementIds={SIMPLUS_ID}))
    result = compare(s, live, ENTITLEMENTS)
    assert result.drift == () and result.unmanaged == () and result.changed == ()
    assert result.observed.users == s.users


def test_email_and_contact_changed_by_hand_are_reported_field_by_field() -> None:
    s = state(trader001=record(1001, "trader001", contact=CONTACT_NY))
    live = snapshot(
        live_user(
            1001,
            "trader001",
            email="hand@example.com",
            contact=live_contact(city="Boston", state="MA", lastName="Byron"),
        )
    )
    result = compare(s, live, ENTITLEMENTS)
    (entry,) = result.drift
    assert entry.kind is DriftKind.changed
    assert [(c.field, c.before, c.after) for c in entry.changes] == [
        ("city", "New York", "Boston"),
        ("email", "trader001@example.com", "hand@example.com"),
        ("lastName", "User", "Byron"),
        ("state", "NY", "MA"),
    ]
    observed = result.observed.users["trader001"]
    assert observed.email == "hand@example.com" and observed.lastName == "Byron"
    assert observed.contact is not None and observed.contact.city == "Boston"
    assert result.changed == ("trader001",)
    # The input state is left alone: the comparison is pure.
    assert s.users["trader001"].email == "trader001@example.com"


def test_contact_not_read_is_not_compared() -> None:
    s = state(trader001=record(1001, "trader001", contact=CONTACT_NY))
    live = snapshot(live_user(1001, "trader001", contact_read=False))
    assert compare(s, live, ENTITLEMENTS).drift == ()


def test_closed_and_missing_users_are_recorded_as_cancelled() -> None:
    s = state(trader001=record(1001, "trader001"), trader002=record(1002, "trader002"))
    live = snapshot(live_user(1001, "trader001", status="Closed"))
    result = compare(s, live, ENTITLEMENTS)
    assert [(d.user, d.kind) for d in result.drift] == [
        ("trader001", DriftKind.closed),
        ("trader002", DriftKind.missing),
    ]
    assert result.closed == {"trader001", "trader002"}
    for name in ("trader001", "trader002"):
        assert result.observed.users[name].lifecycle == "cancelled"
        assert result.observed.users[name].cancelledAt == READ_AT


def test_entitlements_missing_added_or_granted_while_awaiting_are_drift() -> None:
    s = state(
        trader001=record(1001, "trader001", entitlements={"simplus": grant(SIMPLUS_ID)}),
        trader002=record(
            1002, "trader002", entitlements={"simplus": grant(SIMPLUS_ID, "awaiting_agreement")}
        ),
    )
    live = snapshot(
        live_user(1001, "trader001", entitlementIds={TRADINGVIEW_ID, 999}),
        live_user(1002, "trader002", entitlementIds={SIMPLUS_ID}),
    )
    result = compare(s, live, ENTITLEMENTS)
    assert [(d.user, d.kind, d.entitlement) for d in result.drift] == [
        ("trader001", DriftKind.entitlement_missing, "simplus"),
        ("trader001", DriftKind.entitlement_added, "999"),
        ("trader001", DriftKind.entitlement_added, "tradingview"),
        ("trader002", DriftKind.entitlement_added, "simplus"),
    ]
    assert "not named under partner.entitlements" in result.drift[1].message
    one = result.observed.users["trader001"].entitlements
    assert set(one) == {"tradingview"} and one["tradingview"].status == "granted"
    assert result.observed.users["trader002"].entitlements["simplus"].status == "granted"


def test_users_created_outside_are_unmanaged_and_never_touched_by_the_plan() -> None:
    m = manifest(user("trader001"))
    s = state(trader001=record(1001, "trader001"))
    live = snapshot(
        live_user(1001, "trader001"),
        live_user(2001, "outsider"),
        live_user(2002, "oldtimer", status="Closed"),
    )
    plan = make_plan(m, s, binding=BINDING, live=live)
    assert plan.refresh is not None
    assert plan.refresh.unmanaged == ("oldtimer", "outsider")
    assert [(d.user, d.kind) for d in plan.refresh.drift] == [("outsider", DriftKind.created_outside)]
    assert plan.actions == ()
    assert plan.has_drift and not plan.has_changes


def test_refreshed_plan_repairs_what_the_manifest_governs() -> None:
    m = manifest(
        user("trader001", contact=CONTACT_NY),
        user("trader002", entitlements=["simplus"]),
    )
    s = state(
        trader001=record(1001, "trader001", contact=CONTACT_NY),
        trader002=record(1002, "trader002", entitlements={"simplus": grant(SIMPLUS_ID)}),
    )
    live = snapshot(
        live_user(1001, "trader001", email="hand@example.com", contact=live_contact(phone="+12125550999")),
        live_user(1002, "trader002", agreement_signed=True),
    )
    # Without the snapshot nothing is planned: state says all is applied.
    assert make_plan(m, s, binding=BINDING).actions == ()

    plan = make_plan(m, s, binding=BINDING, live=live)
    by_kind = {type(a): a for a in plan.actions}
    email = by_kind[UpdateEmail]
    assert isinstance(email, UpdateEmail)
    assert (email.user, email.email) == ("trader001", "trader001@example.com")
    assert email.changes[0].before == "hand@example.com"
    contact = by_kind[UpdateContact]
    assert isinstance(contact, UpdateContact)
    assert [(c.field, c.before, c.after) for c in contact.changes] == [
        ("phone", "+12125550999", "+12125550100")
    ]
    regrant = by_kind[GrantEntitlement]
    assert isinstance(regrant, GrantEntitlement)
    assert (regrant.user, regrant.entitlement, regrant.userId, regrant.recheck) == (
        "trader002",
        "simplus",
        1002,
        False,
    )


def test_user_closed_outside_gets_a_warning_and_no_action() -> None:
    m = manifest(user("trader001", email="new@example.com"), user("trader002"))
    s = state(trader001=record(1001, "trader001"), trader002=record(1002, "trader002"))
    live = snapshot(live_user(1001, "trader001", status="Closed"), live_user(1002, "trader002"))
    plan = make_plan(m, s, binding=BINDING, live=live)
    assert plan.actions == ()
    assert not plan.has_errors
    assert [(d.severity, d.user, d.message) for d in plan.diagnostics] == [
        (
            "warning",
            "trader001",
            "was closed outside reconcile and cannot be reactivated: nothing is planned for it; "
            "set status: cancelled (or remove it), and run `reconcile refresh` to record it",
        )
    ]


def test_removed_user_closed_outside_is_not_cancelled_again() -> None:
    m = manifest(user("trader002"))
    s = state(trader001=record(1001, "trader001"), trader002=record(1002, "trader002"))
    live = snapshot(live_user(1001, "trader001", status="Closed"), live_user(1002, "trader002"))
    (cancel,) = make_plan(m, s, binding=BINDING).actions
    assert isinstance(cancel, CancelEverything) and cancel.user == "trader001"
    assert make_plan(m, s, binding=BINDING, live=live).actions == ()


def test_manifest_user_that_exists_unmanaged_is_not_created_again() -> None:
    m = manifest(user("trader001"))
    live = snapshot(live_user(5001, "trader001"))
    assert isinstance(make_plan(m, state(), binding=BINDING).actions[0], CreateUser)
    plan = make_plan(m, state(), binding=BINDING, live=live)
    assert plan.actions == ()
    assert [(d.severity, d.user, d.message) for d in plan.diagnostics] == [
        (
            "warning",
            "trader001",
            "already exists in the organization, but reconcile neither created nor adopted it: "
            "not created again; adopt it with `reconcile import trader001`",
        )
    ]


def test_manifest_user_that_exists_closed_gets_no_import_hint_import_would_refuse() -> None:
    plan = make_plan(
        manifest(user("trader001")),
        state(),
        binding=BINDING,
        live=snapshot(live_user(5001, "trader001", status="Closed")),
    )
    assert plan.actions == ()
    assert [(d.severity, d.user, d.message) for d in plan.diagnostics] == [
        (
            "warning",
            "trader001",
            "already exists in the organization, but reconcile neither created nor adopted it: "
            "not created again; it is closed, so it cannot be adopted: choose a new name, or set "
            "status: cancelled",
        )
    ]


def test_targeted_refreshed_plan_reports_only_the_targeted_users() -> None:
    m = manifest(user("trader001"), user("trader002"))
    s = state(trader001=record(1001, "trader001"), trader002=record(1002, "trader002"))
    live = snapshot(
        live_user(1001, "trader001", email="a@example.com"),
        live_user(1002, "trader002", email="b@example.com"),
        live_user(3000, "zed"),
    )
    plan = make_plan(m, s, binding=BINDING, live=live, targets=["trader002"])
    assert plan.refresh is not None
    assert [d.user for d in plan.refresh.drift] == ["trader002"]
    assert [a.user for a in plan.actions] == ["trader002"]
    assert plan.refresh.unmanaged == ()
    with_zed = make_plan(m, s, binding=BINDING, live=live, targets=["trader001", "zed"]).refresh
    assert with_zed is not None
    assert ([d.user for d in with_zed.drift], with_zed.unmanaged) == (["trader001", "zed"], ("zed",))


def refreshed_plan_with_drift() -> Any:
    m = manifest(user("trader001", contact=CONTACT_NY))
    s = state(trader001=record(1001, "trader001", contact=CONTACT_NY))
    live = snapshot(
        live_user(1001, "trader001", email="hand@example.com", contact=live_contact()),
        live_user(2001, "outsider"),
    )
    return make_plan(m, s, binding=BINDING, live=live)


def test_text_and_markdown_show_drift_as_its_own_section_with_pii_masked_in_markdown() -> None:
    plan = refreshed_plan_with_drift()
    text = render(plan, "text")
    assert (
        "Drift: 1 difference between recorded state and the API; "
        "1 active user created outside reconcile (listed as unmanaged)." in text
    )
    assert text.count("outsider") == 1
    assert (
        '! trader001  changed outside reconcile: email: email: "trader001@example.com" → "hand@example.com"'
        in text
    )
    assert "Unmanaged (in the organization; never changed or cancelled by reconcile): outsider" in text
    md = render(plan, "markdown")
    assert "### Drift" in md
    assert "hand@example.com" not in md and "h\\*\\*\\*@example.com" in md
    assert "<code>outsider</code>" in md


def test_refreshed_plan_json_carries_drift_and_survives_a_plan_file(tmp_path: Path) -> None:
    plan = refreshed_plan_with_drift()
    data = json.loads(render(plan, "json"))
    assert data["refresh"]["unmanaged"] == ["outsider"]
    assert [(d["user"], d["kind"]) for d in data["refresh"]["drift"]] == [
        ("outsider", "created_outside"),
        ("trader001", "changed"),
    ]
    save_plan(plan, tmp_path / "plan.json")
    assert load_plan(tmp_path / "plan.json") == plan


def test_plan_without_refresh_has_no_refresh_key_and_no_drift_section() -> None:
    plan = make_plan(manifest(user("trader001")), state(), binding=BINDING)
    assert "refresh" not in json.loads(render(plan, "json"))
    assert "Drift" not in render(plan, "text") and "Drift" not in render(plan, "markdown")
