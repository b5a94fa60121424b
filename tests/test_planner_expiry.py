"""``expiresOn``: from that date the plan cancels everything of the user; soon-due expiries are noted."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from test_planner_support import BINDING, manifest, record, state, user, write_manifest

from reconcile.cli import cli
from reconcile.errors import ManifestError
from reconcile.manifest.loader import load_manifest
from reconcile.planning.plan import CancelEverything, CreateUser
from reconcile.planning.planner import EXPIRY_NOTICE_DAYS, make_plan
from reconcile.planning.policy import evaluate_cancellations

TODAY = date(2026, 12, 31)


def _plan(*users: dict[str, Any], recorded: dict[str, Any] | None = None, today: date | None = TODAY) -> Any:
    return make_plan(manifest(*users), state(**(recorded or {})), binding=BINDING, today=today)


def _infos(plan: Any) -> list[tuple[str | None, str]]:
    return [(d.user, d.message) for d in plan.diagnostics if d.severity == "info"]


@pytest.mark.parametrize("expires", [TODAY, TODAY - timedelta(days=30)])
def test_on_and_after_its_date_an_active_user_is_cancelled_for_expiry(expires: date) -> None:
    plan = _plan(user("trader001", expiresOn=expires), recorded={"trader001": record(2001, "trader001")})
    (action,) = plan.actions
    assert isinstance(action, CancelEverything)
    assert (action.user, action.userId, action.reason) == ("trader001", 2001, "expired")


def test_the_day_before_nothing_is_cancelled_and_the_expiry_is_noted() -> None:
    tomorrow = TODAY + timedelta(days=1)
    plan = _plan(user("trader001", expiresOn=tomorrow), recorded={"trader001": record(2001, "trader001")})
    assert plan.actions == ()
    assert _infos(plan) == [
        (
            "trader001",
            f"expires on {tomorrow} (in 1 day): from that date apply cancels everything of this user",
        )
    ]


def test_only_expiries_within_the_notice_days_are_noted() -> None:
    due = TODAY + timedelta(days=EXPIRY_NOTICE_DAYS)
    later = due + timedelta(days=1)
    plan = _plan(user("trader001", expiresOn=due), user("trader002", expiresOn=later))
    assert [u for u, _ in _infos(plan)] == ["trader001"]
    assert {a.user for a in plan.actions if isinstance(a, CreateUser)} == {"trader001", "trader002"}


def test_an_expired_user_never_created_is_not_created() -> None:
    plan = _plan(user("trader001", expiresOn=TODAY - timedelta(days=1)))
    assert plan.actions == ()
    assert _infos(plan) == [("trader001", f"expired on {TODAY - timedelta(days=1)}: not created")]


def test_an_expired_user_already_cancelled_needs_nothing_and_is_no_error() -> None:
    cancelled = record(2001, "trader001", lifecycle="cancelled")
    plan = _plan(user("trader001", expiresOn=TODAY), recorded={"trader001": cancelled})
    assert plan.actions == () and not plan.has_errors


def test_without_a_date_expiries_are_not_judged() -> None:
    plan = _plan(
        user("trader001", expiresOn=TODAY), recorded={"trader001": record(2001, "trader001")}, today=None
    )
    assert plan.actions == () and plan.diagnostics == ()


def test_expiries_count_against_the_cancellation_budget() -> None:
    users = [user(f"trader{i:03d}", expiresOn=TODAY) for i in range(3)]
    recorded = {f"trader{i:03d}": record(2000 + i, f"trader{i:03d}") for i in range(3)}
    m = manifest(*users, policy={"maxCancellations": 2})
    plan = make_plan(m, state(**recorded), binding=BINDING, today=TODAY)
    check = evaluate_cancellations(plan, state(**recorded), m.policy)
    assert check.refused and len(check.cancellations) == 3
    assert "(id 2000, expiresOn reached)" in check.message()


@pytest.mark.parametrize("written", ["20261231", "31/12/2026", "'2026-13-01'"])
def test_expires_on_must_be_a_date_written_yyyy_mm_dd(tmp_path: Path, written: str) -> None:
    path = write_manifest(tmp_path / "desk.yaml", [user("trader001")])
    text = path.read_text().replace("  lastName: User\n", f"  lastName: User\n  expiresOn: {written}\n")
    path.write_text(text)
    with pytest.raises(ManifestError) as caught:
        load_manifest([path])
    assert "desk.yaml:" in str(caught.value) and "expiresOn" in str(caught.value)


def test_plan_lists_expiries_due_this_week(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    soon = datetime.now(UTC).date() + timedelta(days=3)
    write_manifest(tmp_path / "desk.yaml", [user("trader001", expiresOn=soon.isoformat())])
    result = CliRunner().invoke(cli, ["plan", "-f", "desk.yaml", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert f"expires on {soon} (in 3 days)" in result.output


def _expiring(names: list[str]) -> Any:
    offsets = st.one_of(st.none(), st.integers(-10, 10))
    return st.fixed_dictionaries({n: offsets for n in names})


NAMES = [f"trader{i:03d}" for i in range(1, 6)]


@given(
    _expiring(NAMES),
    st.fixed_dictionaries({n: st.sampled_from([None, "active", "cancelled"]) for n in NAMES}),
)
def test_expired_users_only_ever_get_a_cancel_of_an_active_record_and_others_plan_as_without(
    offsets: dict[str, int | None], lifecycles: dict[str, str | None]
) -> None:
    dated = [
        user(n, **({"expiresOn": TODAY + timedelta(days=o)} if o is not None else {}))
        for n, o in offsets.items()
    ]
    recorded = {
        n: record(2000 + i, n, lifecycle=lc) for i, (n, lc) in enumerate(lifecycles.items()) if lc is not None
    }
    plan = make_plan(manifest(*dated), state(**recorded), binding=BINDING, today=TODAY)
    undated = make_plan(manifest(*(user(n) for n in NAMES)), state(**recorded), binding=BINDING, today=TODAY)
    expired = {n for n, o in offsets.items() if o is not None and o <= 0}
    for action in plan.actions:
        if action.user in expired:
            assert isinstance(action, CancelEverything) and action.reason == "expired"
            assert lifecycles[action.user] == "active"
    assert {a.user for a in plan.actions if isinstance(a, CancelEverything)} == {
        n for n in expired if lifecycles[n] == "active"
    }
    assert [a for a in plan.actions if a.user not in expired] == [
        a for a in undated.actions if a.user not in expired
    ]
