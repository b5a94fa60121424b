"""Properties of the planner over generated manifests and states (Hypothesis)."""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_planner_support import (
    BINDING,
    CONTACT_NY,
    EVAL50K_RISK,
    SIMPLUS_ID,
    TRADINGVIEW_ID,
    account_record,
    apply_perfectly,
    grant,
    manifest,
    record,
    state,
)

from reconcile.manifest.models import Manifest
from reconcile.planning.plan import AccountAction, CreateAccount, CreateUser, RevokeTrading
from reconcile.planning.planner import make_plan, plan_all
from reconcile.state.model import AccountRecord, State

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
    taken: set[str] = set()
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
        entry["accounts"] = draw(account_lists(taken))
        users.append(entry)
    return manifest(*users)


ACCOUNTS = ["EVAL1", "eval1", "EVAL2", "EVAL3"]  # two spellings of one name: matched ignoring case
DATES = [None, date(2026, 11, 1), date(2026, 11, 20)]
RISKS: list[dict[str, Any]] = [
    {},
    {"dailyLossAutoLiq": 800},
    {"dailyLossAutoLiq": 1000.0, "doNotUnlock": False},
]


@st.composite
def account_lists(draw: Any, taken: set[str]) -> list[dict[str, Any]]:
    """Accounts of one manifest user; ``taken`` keeps names unique ignoring case, as the loader does."""
    accounts = []
    for name in draw(st.lists(st.sampled_from(ACCOUNTS), unique=True, max_size=2)):
        if name.casefold() in taken:
            continue
        taken.add(name.casefold())
        entry: dict[str, Any] = {
            "name": name,
            "template": draw(st.sampled_from(["eval50k", "eval100k"])),
            "trading": draw(st.sampled_from(["active", "active", "locked", "revoked"])),
        }
        for key, values in (
            ("risk", RISKS),
            ("riskCategory", [None, "standard", "halted"]),
            ("resetTo", DATES),
        ):
            value = draw(st.sampled_from(values))
            if value:
                entry[key] = value
        accounts.append(entry)
    return accounts


@st.composite
def account_records(draw: Any, users: dict[str, Any]) -> dict[str, AccountRecord]:
    """Recorded accounts, each of one of the recorded ``users``."""
    records: dict[str, AccountRecord] = {}
    if not users:
        return records
    for i, name in enumerate(draw(st.lists(st.sampled_from(["EVAL1", "EVAL2", "EVAL4"]), unique=True))):
        owner = draw(st.sampled_from(sorted(users)))
        records[name] = account_record(
            7000 + i,
            owner,
            users[owner].userId,
            template=draw(st.sampled_from(["eval50k", "eval100k"])),
            permission=draw(st.sampled_from(["active", "active", "revoked"])),
            risk=draw(st.sampled_from([EVAL50K_RISK, {}, {"dailyLossAutoLiq": 800}])),
            riskCategory=draw(st.sampled_from([None, "standard", "halted"])),
            trading=draw(st.sampled_from(["active", "locked"])),
            lastReset=draw(st.sampled_from(DATES)),
        )
    return records


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
    return state(draw(account_records(records)), **records)


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


@given(
    manifests(),
    states(),
    st.lists(st.sampled_from([*NAMES, "trader00[1-3]", "*5"]), max_size=2),
    st.lists(st.sampled_from([*NAMES, "*2"]), max_size=1),
)
def test_one_pass_gives_the_narrowed_plan_and_the_whole_one(
    m: Manifest, s: State, targets: list[str], excludes: list[str]
) -> None:
    # A narrowed plan's cancellations are judged on the whole manifest's plan: made in the same
    # pass, both must be exactly what two separate plannings give.
    planned = plan_all(m, s)
    narrowed = planned.select(binding=BINDING, targets=targets, excludes=excludes)
    assert narrowed == make_plan(m, s, binding=BINDING, targets=targets, excludes=excludes)
    assert planned.select(binding=BINDING) == make_plan(m, s, binding=BINDING)


@given(manifests(), states(), st.lists(st.sampled_from([*NAMES, "trader00[1-3]", "*5"]), max_size=2))
def test_only_state_users_get_anything_but_a_create(m: Manifest, s: State, targets: list[str]) -> None:
    plan = make_plan(m, s, binding=BINDING, targets=targets)
    created = {a.user for a in plan.actions if isinstance(a, CreateUser)}
    for action in plan.actions:
        if isinstance(action, CreateUser):
            assert action.user not in s.users
            continue
        user_id = getattr(action, "userId", None)
        if isinstance(action, RevokeTrading):
            # Only a recorded, still active permission of this user, under its recorded id.
            revoked = s.accounts[action.account]
            assert (revoked.permission, revoked.user) == ("active", action.user)
            assert (revoked.accountId, revoked.tradingPermissionId) == (
                action.accountId,
                action.tradingPermissionId,
            )
        elif isinstance(action, AccountAction):
            if isinstance(action, CreateAccount) or action.accountId is None:
                assert not any(n.casefold() == action.account.casefold() for n in s.accounts)
            else:
                assert s.accounts[action.account].user == action.user
                assert s.accounts[action.account].permission == "active"
        if user_id is None and action.user not in s.users:
            assert action.user in created
        else:
            recorded = s.users[action.user]
            assert recorded.lifecycle == "active"
            assert user_id in (None, recorded.userId)
