"""Properties of the planner over generated manifests and states (Hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_planner_support import (
    BINDING,
    CONTACT_NY,
    SIMPLUS_ID,
    TRADINGVIEW_ID,
    apply_perfectly,
    grant,
    manifest,
    record,
    state,
)

from reconcile.manifest.models import Manifest
from reconcile.planning.plan import CreateUser
from reconcile.planning.planner import make_plan
from reconcile.state.model import State

NAMES = [f"trader{i:03d}" for i in range(1, 7)]
CONTACT_GB = {
    "phone": "+442071838750",
    "streetAddress1": "10 Downing Street",
    "city": "London",
    "postCode": "SW1A 2AA",
    "country": "GB",
}
contacts = st.sampled_from([None, CONTACT_NY, CONTACT_GB])
emails = st.sampled_from(["own", "own", "alias1", "alias2"])  # aliases make renames and email changes
first_names = st.sampled_from(["Test", "Ada"])
entitlement_sets = st.sampled_from([(), ("simplus",), ("tradingview",), ("simplus", "tradingview")])


def _email(name: str, kind: str) -> str:
    return f"{name}@example.com" if kind == "own" else f"{kind}@example.com"


@st.composite
def manifests(draw: Any) -> Manifest:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    users, seen = [], set()
    for name in names:
        if draw(st.booleans()) and draw(st.booleans()):
            users.append({"name": name, "status": "cancelled"})
            continue
        email = _email(name, draw(emails))
        if email in seen:  # the loader refuses duplicate emails
            email = _email(name, "own")
        seen.add(email)
        entry: dict[str, Any] = {
            "name": name,
            "email": email,
            "password": {"generate": True},
            "firstName": draw(first_names),
            "lastName": "User",
            "entitlements": list(draw(entitlement_sets)),
        }
        contact = draw(contacts)
        if contact is not None:
            entry["contact"] = contact
        if draw(st.booleans()):
            entry["tradovateSubscriptionPlanId"] = 8
        users.append(entry)
    return manifest(*users)


@st.composite
def states(draw: Any) -> State:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    records = {}
    for i, name in enumerate(sorted(names)):
        grants = {}
        for entitlement, eid in (("simplus", SIMPLUS_ID), ("tradingview", TRADINGVIEW_ID)):
            status = draw(st.sampled_from([None, "granted", "awaiting_agreement"]))
            if status is not None and not (entitlement == "tradingview" and status == "awaiting_agreement"):
                grants[entitlement] = grant(eid, status)
        records[name] = record(
            2000 + i,
            name,
            email=_email(name, draw(emails)),
            firstName=draw(first_names),
            lifecycle=draw(st.sampled_from(["active", "active", "cancelled"])),
            contact=draw(contacts),
            entitlements=grants,
        )
    return state(**records)


@given(manifests(), states(), st.randoms())
def test_plan_is_deterministic_and_ignores_manifest_order(m: Manifest, s: State, random: Any) -> None:
    shuffled_users = list(m.users)
    random.shuffle(shuffled_users)
    shuffled = m.model_copy(update={"users": tuple(shuffled_users)})
    first = make_plan(m, s, binding=BINDING)
    assert make_plan(m, s, binding=BINDING) == first
    assert make_plan(shuffled, s, binding=BINDING) == first
    assert make_plan(m, s, binding=BINDING).model_dump_json() == first.model_dump_json()


@settings(max_examples=200)
@given(manifests(), states(), st.frozensets(st.sampled_from(NAMES)))
def test_apply_then_plan_again_is_empty(m: Manifest, s: State, signed: frozenset[str]) -> None:
    plan = make_plan(m, s, binding=BINDING)
    assume(not plan.has_errors)  # apply refuses plans with errors
    after = apply_perfectly(plan, s, signed=signed)
    again = make_plan(m, after, binding=BINDING)
    assert not again.has_changes, again.changes
    assert not again.has_errors
    # Only agreement re-checks may remain, for users who have not signed.
    assert {a.user for a in again.actions} <= set(NAMES) - signed


@given(manifests(), states(), st.lists(st.sampled_from([*NAMES, "trader00[1-3]", "*5"]), max_size=2))
def test_only_state_users_get_anything_but_a_create(m: Manifest, s: State, targets: list[str]) -> None:
    plan = make_plan(m, s, binding=BINDING, targets=targets)
    created = {a.user for a in plan.actions if isinstance(a, CreateUser)}
    for action in plan.actions:
        if isinstance(action, CreateUser):
            assert action.user not in s.users
            continue
        if action.userId is None:
            assert action.user in created
        else:
            recorded = s.users[action.user]
            assert recorded.lifecycle == "active"
            assert recorded.userId == action.userId
