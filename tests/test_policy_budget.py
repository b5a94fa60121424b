"""Cancellation budgets: refused past policy, raised for one run, never cancelling the whole desk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_planner_support import BINDING, manifest, record, state, user

from reconcile.errors import PolicyError
from reconcile.manifest.models import Policy
from reconcile.planning.planner import make_plan
from reconcile.planning.policy import budget_for, check_cancellations, evaluate_cancellations


def desk(active: int, keep: int, *, cancelled_in_state: int = 0, **policy: object):
    """A state of ``active`` users and a manifest that keeps the first ``keep`` of them."""
    names = [f"trader{i:03d}" for i in range(active)]
    records = {name: record(1000 + i, name) for i, name in enumerate(names)}
    for j in range(cancelled_in_state):
        records[f"gone{j:03d}"] = record(5000 + j, f"gone{j:03d}", lifecycle="cancelled")
    m = manifest(*(user(n) for n in names[:keep]), policy=policy or {})
    s = state(**records)
    return make_plan(m, s, binding=BINDING), s, m.policy


@pytest.mark.parametrize(
    ("active", "max_cancellations", "percent", "budget"),
    [
        (100, 25, 10.0, 10),  # the percentage is the tighter budget
        (1000, 25, 10.0, 25),  # the absolute number is the tighter budget
        (5, 25, 10.0, 1),  # 10 % of 5 is 0.5: a small desk may still retire one trader
        (0, 25, 10.0, 1),
        (100, 0, 10.0, 0),  # maxCancellations: 0 forbids every cancellation
        (100, 25, 0.0, 1),
    ],
)
def test_budget(active, max_cancellations, percent, budget):
    policy = Policy(maxCancellations=max_cancellations, maxCancellationPercent=percent)
    assert budget_for(policy, active) == budget


def test_cancellations_within_budget_pass():
    plan, s, policy = desk(100, keep=90)
    check = check_cancellations(plan, s, policy)
    assert not check.refused and len(check.cancellations) == 10


def test_cancellations_past_budget_are_refused_with_every_user_listed():
    plan, s, policy = desk(100, keep=89)
    with pytest.raises(PolicyError) as caught:
        check_cancellations(plan, s, policy)
    assert caught.value.exit_code == 3
    text = str(caught.value)
    assert "the plan cancels 11 users; the budget is 10" in text
    assert all(f"trader{i:03d} (id {1000 + i}, removed from the manifest)" in text for i in range(89, 100))
    assert "--allow-cancellations 11" in text


def test_allow_cancellations_raises_the_budget_for_one_run():
    plan, s, policy = desk(100, keep=89)
    assert not check_cancellations(plan, s, policy, allow_cancellations=11).refused
    with pytest.raises(PolicyError, match="more than --allow-cancellations 10"):
        check_cancellations(plan, s, policy, allow_cancellations=10)


@pytest.mark.parametrize(("active", "keep"), [(3, 0), (1, 0), (30, 0), (30, 1), (5, 1)])
def test_empty_or_nearly_empty_manifest_never_cancels_the_desk_with_defaults(active, keep):
    plan, s, policy = desk(active, keep=keep)
    assert evaluate_cancellations(plan, s, policy).refused


def test_whole_desk_is_refused_even_when_the_budgets_would_allow_it():
    plan, s, policy = desk(2, keep=0, maxCancellations=100, maxCancellationPercent=100)
    check = evaluate_cancellations(plan, s, policy)
    assert check.refused and "all 2 managed active users" in (check.refused_reason or "")
    assert not evaluate_cancellations(plan, s, policy, allow_cancellations=2).refused


def test_only_active_users_count_toward_the_percentage():
    # 10 active (+ 90 cancelled long ago): 10 % of 10 allows one cancellation, not ten.
    plan, s, policy = desk(10, keep=8, cancelled_in_state=90)
    check = evaluate_cancellations(plan, s, policy)
    assert check.active_users == 10 and check.budget == 1 and check.refused


def test_status_cancelled_counts_like_removal():
    s = state(**{f"user{i}": record(i, f"user{i}") for i in range(20)})
    cancelled = {"status": "cancelled", "email": None, "password": None, "firstName": None, "lastName": None}
    users = [user(f"user{i}", **(cancelled if i < 3 else {})) for i in range(20)]
    plan = make_plan(manifest(*users), s, binding=BINDING)
    check = evaluate_cancellations(plan, s, Policy())
    assert len(check.cancellations) == 3 and check.budget == 2 and check.refused


def test_refusal_diagnostic_tells_the_reviewer_what_apply_will_do():
    plan, s, policy = desk(100, keep=50)
    diagnostic = evaluate_cancellations(plan, s, policy).diagnostic()
    assert diagnostic is not None and diagnostic.severity == "warning"
    assert (
        "apply will refuse this plan" in diagnostic.message
        and "--allow-cancellations 50" in diagnostic.message
    )
    passing, s2, policy2 = desk(100, keep=100)
    assert evaluate_cancellations(passing, s2, policy2).diagnostic() is None


@pytest.mark.parametrize(
    ("keep", "target", "whole", "count"),
    [
        (0, "trader000*", "cancels all 30 managed active users", 30),  # users: [] sliced by --target
        (10, "trader001*", "cancels 20 users; the budget is 15", 20),  # 20 leave; --target picks 10
    ],
)
def test_target_cannot_slice_a_manifest_past_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: int, target: str, whole: str, count: int
) -> None:
    from apply_support import PASSWORD, write_desk
    from cli_support import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADER_PASSWORD", PASSWORD)
    manifest = tmp_path / "desk.yaml"

    def write(n: int) -> None:
        write_desk(manifest, n)
        manifest.write_text(
            manifest.read_text().replace("users:\n", "policy:\n  maxCancellationPercent: 50\nusers:\n", 1)
            + ("" if n else "  []\n")
        )

    write(30)
    assert run("apply", "-f", manifest, "--auto-approve").exit_code == 0
    write(keep)
    for command in (["plan"], ["apply", "--auto-approve"]):
        result = run(*command, "-f", manifest, "--target", target)
        assert result.exit_code == 3, result.output
        assert f"the whole manifest (whatever --target/--exclude select) {whole}" in result.stderr
        # The allowance it suggests is the whole number, never the size of the slice.
        assert f"run again with --allow-cancellations {count}." in result.stderr
        assert "--allow-cancellations 10." not in result.stderr
    # A saved plan (made with an allowance) meets the same judgement when applied without one.
    saved = tmp_path / "slice.plan.json"
    result = run(
        "plan", "-f", manifest, "--target", target, "--allow-cancellations", str(count), "--out", saved
    )
    assert result.exit_code == 0, result.stderr
    result = run("apply", saved, "-f", manifest)
    assert result.exit_code == 3 and whole in result.stderr, result.output
    # An allowance the size of the slice is no yes to the whole set: still refused.
    result = run("apply", "-f", manifest, "--target", target, "--auto-approve", "--allow-cancellations", "10")
    assert result.exit_code == 3, result.output
    assert (
        f"the whole manifest (whatever --target/--exclude select) cancels {count} users, more than "
        "--allow-cancellations 10" in result.stderr
    )
    recorded = json.loads((tmp_path / "state" / "sim.json").read_text())["users"]
    assert len(recorded) == 30 and all(u["lifecycle"] == "active" for u in recorded.values())
    # Saying yes to everything the manifest cancels, the operator may still retire one slice at a time.
    result = run(
        "apply", "-f", manifest, "--target", target, "--auto-approve", "--allow-cancellations", str(count)
    )
    assert result.exit_code == 0, result.stderr
    recorded = json.loads((tmp_path / "state" / "sim.json").read_text())["users"]
    assert sum(u["lifecycle"] == "cancelled" for u in recorded.values()) == 10


def test_a_refusal_names_both_budgets_and_says_what_to_do():
    plan, s, policy = desk(100, keep=89)
    check = evaluate_cancellations(plan, s, policy)
    assert check.refused_reason == (
        "the plan cancels 11 users; the budget is 10 (policy.maxCancellations 25; "
        "policy.maxCancellationPercent 10% of 100 managed active users allows 10)"
    )
    text = check.message()
    users = "\n".join(f"  - trader{i:03d} (id {1000 + i}, removed from the manifest)" for i in range(89, 100))
    assert f":\n{users}\nIf the manifest lost users or accounts by mistake" in text
    assert text.endswith(
        "\nIf the manifest lost users or accounts by mistake (a bad merge, a missing file), restore them. "
        "If these cancellations are intended, run again with --allow-cancellations 11."
    )


def test_a_small_desks_percentage_budget_is_one_trader():
    # 10 % of 5 users is 0.5, rounded down to 0, raised to 1: two cancellations are one too many.
    plan, s, policy = desk(5, keep=3)
    reason = evaluate_cancellations(plan, s, policy).refused_reason
    assert reason == (
        "the plan cancels 2 users; the budget is 1 (policy.maxCancellations 25; "
        "policy.maxCancellationPercent 10% of 5 managed active users allows 1)"
    )


def test_the_whole_desk_refusal_says_no_budget_allows_it():
    plan, s, policy = desk(2, keep=0, maxCancellations=100, maxCancellationPercent=100)
    reason = evaluate_cancellations(plan, s, policy).refused_reason or ""
    assert reason.endswith("; cancelling the whole desk is never within the policy budget")


def test_a_passing_check_has_no_message_and_remembers_the_allowance():
    plan, s, policy = desk(100, keep=89)
    allowed = evaluate_cancellations(plan, s, policy, allow_cancellations=11)
    assert not allowed.refused and allowed.message() == "" and allowed.allowed == 11
    assert evaluate_cancellations(plan, s, policy).allowed is None


def test_a_refusal_of_one_user_speaks_of_this_user():
    plan, s, policy = desk(100, keep=99, maxCancellations=0)
    text = evaluate_cancellations(plan, s, policy).message()
    assert (
        "\nThe plan would cancel this user, irreversibly:\n"
        "  - trader099 (id 1099, removed from the manifest)\n" in text
    )
    many, s, policy = desk(100, keep=89)
    assert (
        "\nThe plan would cancel these 11 users, irreversibly:\n"
        in evaluate_cancellations(many, s, policy).message()
    )


def test_the_check_counts_the_whole_manifests_cancellations_when_the_plan_is_narrowed():
    plan, s, policy = desk(100, keep=89)
    whole = tuple(a for a in plan.actions if a.user != "trader099")
    assert evaluate_cancellations(plan, s, policy, whole=whole).whole == 10
    assert evaluate_cancellations(plan, s, policy).whole is None


def test_a_narrowed_plans_warning_suggests_the_whole_manifests_number():
    # The slice cancels one user; the whole manifest cancels eleven: the yes must cover eleven.
    plan, s, policy = desk(100, keep=89)
    narrowed = plan.model_copy(update={"actions": tuple(a for a in plan.actions if a.user == "trader099")})
    check = evaluate_cancellations(narrowed, s, policy, whole=tuple(plan.actions))
    assert check.judged == 11
    diagnostic = check.diagnostic()
    assert diagnostic is not None and diagnostic.message.endswith("apply with --allow-cancellations 11")
    assert evaluate_cancellations(narrowed, s, policy, 1, whole=tuple(plan.actions)).refused
    assert not evaluate_cancellations(narrowed, s, policy, 11, whole=tuple(plan.actions)).refused


def _cancelled(tmp_path: Path) -> list[str]:
    users = json.loads((tmp_path / "state" / "sim.json").read_text())["users"]
    return sorted(name for name, u in users.items() if u["lifecycle"] == "cancelled")


def test_an_allowance_the_size_of_a_slice_cannot_cancel_the_rest_of_the_desk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 30 traders, 10 already cancelled; `users: []` would cancel the 20 still active.
    from apply_support import desk_here, write_desk
    from cli_support import run

    manifest = desk_here(tmp_path, monkeypatch, 30)
    assert run("apply", "-f", manifest, "--auto-approve").exit_code == 0
    write_desk(manifest, 20)
    result = run("apply", "-f", manifest, "--auto-approve", "--allow-cancellations", "10")
    assert result.exit_code == 0, result.output
    before = _cancelled(tmp_path)
    assert len(before) == 10
    empty = tmp_path / "empty.yaml"
    empty.write_text(manifest.read_text().split("users:\n")[0] + "users: []\n")

    result = run("plan", "-f", empty, "--target", "trader001*")
    assert result.exit_code == 3, result.output
    assert (
        "the whole manifest (whatever --target/--exclude select) cancels all 20 managed active users"
        in result.stderr
    )
    assert "The whole manifest would cancel 20 users; --allow-cancellations counts them all" in result.stderr
    assert result.stderr.rstrip().endswith("run again with --allow-cancellations 20.")

    result = run(
        "apply", "-f", empty, "--target", "trader000*", "--allow-cancellations", "10", "--auto-approve"
    )
    assert result.exit_code == 3, result.output
    assert "cancels 20 users, more than --allow-cancellations 10" in result.stderr
    assert _cancelled(tmp_path) == before


def test_an_allowance_of_one_cannot_cancel_one_of_a_refused_three(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apply_support import desk_here
    from cli_support import run

    manifest = desk_here(tmp_path, monkeypatch, 30)
    assert run("apply", "-f", manifest, "--auto-approve").exit_code == 0
    text = manifest.read_text().split("  - name: trader0027\n")[0]  # drops trader0027..0029
    manifest.write_text(text.replace("users:\n", "policy:\n  maxCancellations: 1\nusers:\n", 1))

    result = run(
        "apply", "-f", manifest, "--target", "trader0029", "--allow-cancellations", "1", "--auto-approve"
    )
    assert result.exit_code == 3, result.output
    assert "cancels 3 users, more than --allow-cancellations 1" in result.stderr
    assert "  - trader0029 (id " in result.stderr
    assert result.stderr.rstrip().endswith("run again with --allow-cancellations 3.")
    assert _cancelled(tmp_path) == []


def account_desk(active: int, keep: int, accounts: int, keep_accounts: int, **policy: object):
    """``active`` users each with ``accounts`` accounts; the manifest keeps ``keep`` users, each
    with their first ``keep_accounts`` accounts (the others are revoked)."""
    from test_planner_support import account, account_record

    names = [f"trader{i:03d}" for i in range(active)]
    records = {name: record(1000 + i, name) for i, name in enumerate(names)}
    recorded = {
        f"EVAL{i:03d}X{j}": account_record(7000 + 10 * i + j, name, 1000 + i)
        for i, name in enumerate(names)
        for j in range(accounts)
    }
    users = [
        user(n, accounts=[account(f"EVAL{i:03d}X{j}") for j in range(keep_accounts)])
        for i, n in enumerate(names[:keep])
    ]
    m = manifest(*users, policy=policy or {})
    s = state(recorded, **records)
    return make_plan(m, s, binding=BINDING), s, m.policy


def test_revocations_count_with_cancellations_against_one_budget():
    # 100 traders with two accounts: 5 removed (cancelled), the 95 others each lose one account.
    plan, s, policy = account_desk(100, keep=95, accounts=2, keep_accounts=1)
    check = evaluate_cancellations(plan, s, policy)
    assert (len(check.cancellations), len(check.revocations)) == (5, 95)
    assert check.refused_reason is not None
    assert check.refused_reason.startswith(
        "the plan cancels 5 users and revokes 95 trading permissions (100 irreversible actions); "
        "the budget is 10"
    )
    assert [a.user for a in check.irreversible][:6] == [
        *(f"trader{i:03d}" for i in range(95, 100)),
        "trader000",
    ]


def test_a_refusal_lists_each_permission_to_revoke_and_a_passing_allowance_counts_them():
    plan, s, policy = account_desk(10, keep=10, accounts=2, keep_accounts=1, maxCancellations=1)
    check = evaluate_cancellations(plan, s, policy)
    assert check.refused_reason == (
        "the plan revokes 10 trading permissions; the budget is 1 (policy.maxCancellations 1; "
        "policy.maxCancellationPercent 10% of 10 managed active users allows 1)"
    )
    text = check.message()
    assert "The plan would revoke these 10 trading permissions, irreversibly:\n" in text
    assert "  - EVAL000X1 of trader000 (account id 7001, removed from the manifest)\n" in text
    assert text.endswith("run again with --allow-cancellations 10.")
    assert not evaluate_cancellations(plan, s, policy, allow_cancellations=10).refused
    assert evaluate_cancellations(plan, s, policy, allow_cancellations=9).refused_reason == (
        "the plan revokes 10 trading permissions, more than --allow-cancellations 9"
    )


def test_revoking_every_permission_is_refused_whatever_the_budget():
    plan, s, policy = account_desk(
        2, keep=2, accounts=1, keep_accounts=0, maxCancellations=100, maxCancellationPercent=100
    )
    reason = evaluate_cancellations(plan, s, policy).refused_reason or ""
    assert reason.startswith("the plan revokes 2 trading permissions: every active trading permission")
    assert not evaluate_cancellations(plan, s, policy, allow_cancellations=2).refused


def test_a_cancelled_users_accounts_are_not_counted_twice():
    # Cancel-everything revokes the user's permissions itself: one irreversible action per user.
    plan, s, policy = account_desk(100, keep=90, accounts=3, keep_accounts=3)
    check = evaluate_cancellations(plan, s, policy)
    assert (len(check.cancellations), len(check.revocations), check.refused) == (10, 0, False)


def test_a_narrowed_plan_is_judged_by_the_whole_manifests_revocations():
    plan, s, policy = account_desk(100, keep=100, accounts=2, keep_accounts=1)
    narrowed = plan.model_copy(update={"actions": plan.actions[:1]})
    check = evaluate_cancellations(narrowed, s, policy, whole=tuple(plan.actions))
    assert check.judged == 100 and check.refused
    assert (
        "The whole manifest would revoke 100 trading permissions; --allow-cancellations counts"
        in check.message()
    )
    assert not evaluate_cancellations(narrowed, s, policy, 100, whole=tuple(plan.actions)).refused


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(0, 12),
    st.integers(0, 2),
    st.integers(0, 2),
    st.integers(0, 30),
    st.floats(0, 100),
    st.none() | st.integers(0, 30),
)
def test_the_budget_judges_cancellations_and_revocations_together(
    active, keep, accounts, keep_accounts, max_cancellations, percent, allowed
):
    keep = min(keep, active)
    keep_accounts = min(keep_accounts, accounts)
    plan, s, policy = account_desk(
        active,
        keep,
        accounts,
        keep_accounts,
        maxCancellations=max_cancellations,
        maxCancellationPercent=percent,
    )
    check = evaluate_cancellations(plan, s, policy, allowed)
    users, revokes = active - keep, keep * (accounts - keep_accounts)
    assert (len(check.cancellations), len(check.revocations)) == (users, revokes)
    total = users + revokes
    if total == 0:
        assert not check.refused
    elif allowed is not None:
        assert check.refused == (total > allowed)
    elif total > budget_for(policy, active) or users == active:
        assert check.refused
    else:
        permissions = active * accounts
        assert check.refused == (revokes > 0 and revokes >= permissions)
