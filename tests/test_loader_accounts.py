"""Manifest rules for evaluation accounts, as a user sees them: FILE:LINE:COL: path: message."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from reconcile.errors import ManifestError
from reconcile.manifest.loader import load_manifest

TODAY = date(2026, 11, 25)

HEADER = """\
apiVersion: reconcile/v1
environment: sim
partner:
  dataAccountId: 11111
  accountTemplates:
    eval50k:
      templateAccountId: 5001
      initialBalance: 50000
      risk: {dailyLossAutoLiq: 1000, doNotUnlock: true}
  riskCategories: {standard: 31, halted: 32}
users:
"""
# Line 12 is the first user's "- name:", 17 its "accounts:", 18 its first account's "- name:".


def trader(name: str, accounts: str, *, status: str = "active") -> str:
    """A user entry (YAML at users' indentation) with ``accounts`` (lines at account indentation)."""
    identity = (
        f"    email: {name}@example.com\n    password: {{env: PW}}\n    firstName: Ada\n    lastName: L\n"
        if status == "active"
        else "    status: cancelled\n    email: null\n    password: null\n    firstName: A\n    lastName: L\n"
    )
    return f"  - name: {name}\n{identity}    accounts:\n{accounts}"


def account(name: str = "FIRMEVAL00001", **fields: str) -> str:
    fields = {"template": "eval50k", **fields}
    lines = [f"name: {name}", *(f"{k}: {v}" for k, v in fields.items())]
    return "      - " + "\n        ".join(lines) + "\n"


def write(tmp_path: Path, users: str, name: str = "m.yaml", header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text(header + users)
    return path


def problems(paths: list[Path], today: date | None = TODAY) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(paths, today=today)
    return [str(p) for p in caught.value.problems]


def test_accounts_load_with_every_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        trader(
            "trader001",
            account(
                risk="{dailyLossAutoLiq: 800}",
                riskCategory="standard",
                trading="locked",
                resetTo="2026-11-20",
            )
            + account("FIRMEVAL00002", resetTo='"2026-11-25"'),
        ),
    )
    first, second = load_manifest([path], today=TODAY).manifest.users[0].accounts
    assert first.risk is not None and first.risk.fields_set() == {"dailyLossAutoLiq": 800}
    assert (first.riskCategory, first.trading, first.resetTo) == ("standard", "locked", date(2026, 11, 20))
    assert second.resetTo == TODAY  # quoted ISO text is a date too; today is not the future


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"template": "eval5k"},
            "19:19: users[0].accounts[0].template: 'eval5k' is not defined under "
            "partner.accountTemplates (defined: eval50k); did you mean 'eval50k'?",
        ),
        (
            {"riskCategory": "halt"},
            "20:23: users[0].accounts[0].riskCategory: 'halt' is not defined under "
            "partner.riskCategories (defined: halted, standard); did you mean 'halted'?",
        ),
        (
            {"resetTo": "2026-11-26"},
            "20:18: users[0].accounts[0].resetTo: resetTo 2026-11-26 is in the "
            "future (today is 2026-11-25, UTC)",
        ),
        ({"resetTo": "2026-02-30"}, "20:18: users[0].accounts[0].resetTo: '2026-02-30' is not a real date"),
        (
            {"resetTo": "2026-11-20T10:00:00Z"},
            "20:18: users[0].accounts[0].resetTo: expected a date such as "
            "2026-11-20 (YYYY-MM-DD), got a date and time: write the date alone",
        ),
        (
            {"resetTo": "20261120"},
            "20:18: users[0].accounts[0].resetTo: expected a date such as 2026-11-20 "
            "(YYYY-MM-DD), got a number",
        ),
        (
            {"trading": "paused"},
            "20:18: users[0].accounts[0].trading: expected 'active', 'locked' or 'revoked'",
        ),
        (
            {"risk": "{dailyLossAutoliq: 5}"},
            "20:16: users[0].accounts[0].risk.dailyLossAutoliq: unknown key "
            "'dailyLossAutoliq' (expected one of:",
        ),
        (
            {"risk": "{dailyLossAutoLiq: '800'}"},
            "20:34: users[0].accounts[0].risk.dailyLossAutoLiq: expected a number, got '800'",
        ),
        (
            {"risk": "{doNotUnlock: 1}"},
            "20:29: users[0].accounts[0].risk.doNotUnlock: expected true or false",
        ),
        (
            {"risk": "{marginPercentageAlert: 101}"},
            "20:39: users[0].accounts[0].risk.marginPercentageAlert: "
            "expected a number at most 100.0, got 101",
        ),
        ({"name": "ab"}, "18:15: users[0].accounts[0].name: too short: expected at least 3 characters"),
    ],
)
def test_account_rule(tmp_path: Path, fields: dict[str, str], expected: str) -> None:
    name = fields.pop("name", "FIRMEVAL00001")
    found = problems([write(tmp_path, trader("trader001", account(name, **fields)))])
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'm.yaml'}:{expected}"), found[0]


def test_future_reset_is_not_checked_without_a_today(tmp_path: Path) -> None:
    path = write(tmp_path, trader("trader001", account(resetTo="2999-01-01")))
    assert load_manifest([path]).manifest.users[0].accounts[0].resetTo == date(2999, 1, 1)


def test_initial_balance_must_be_positive(tmp_path: Path) -> None:
    header = HEADER.replace("initialBalance: 50000", "initialBalance: 0")
    found = problems([write(tmp_path, trader("trader001", account()), header=header)])
    assert found == [
        f"{tmp_path / 'm.yaml'}:8:23: partner.accountTemplates.eval50k.initialBalance: "
        "expected a number greater than 0.0, got 0 (read as a number)"
    ]


def test_duplicate_account_names_ignore_case_and_name_both_places_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, trader("trader001", account("FIRMEVAL00001")), name="a.yaml")
    second = tmp_path / "b.yaml"
    second.write_text("users:\n" + trader("trader002", account("firmeval00001")))
    assert problems([first, second]) == [
        f"{second}:8:15: users[0].accounts[0].name: account 'firmeval00001' is already an account of "
        "user 'trader001' (account names are unique in the organization, ignoring case) "
        f"(first defined at {first}:18:15)"
    ]


def test_duplicate_account_names_within_one_user(tmp_path: Path) -> None:
    found = problems([write(tmp_path, trader("trader001", account("EVAL1") + account("eval1")))])
    assert len(found) == 1 and "users[0].accounts[1].name: account 'eval1' is already" in found[0]


def test_a_cancelled_user_has_no_accounts(tmp_path: Path) -> None:
    found = problems([write(tmp_path, trader("trader001", account(), status="cancelled"))])
    assert found == [
        f"{tmp_path / 'm.yaml'}:19:7: users[0].accounts: a cancelled user has no accounts to manage: "
        "remove accounts (cancel-everything revokes their trading permissions unless "
        "defaults.cancel.tradingPermissions is false)"
    ]


def test_account_references_are_checked_when_other_rules_fail(tmp_path: Path) -> None:
    users = trader("trader001", account(template="nope")) + "  - name: x\n"
    found = problems([write(tmp_path, users)])
    assert any("'nope' is not defined under partner.accountTemplates" in p for p in found), found


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_commands_refuse_a_reset_after_today_read_at_the_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    from cli_support import run

    monkeypatch.chdir(tmp_path)
    today = datetime.now(UTC).date()
    path = write(tmp_path, trader("trader001", account(resetTo=today.isoformat())))
    assert run(command, "-f", path, env={"PW": "Sim-Passw0rd-001"}).exit_code == 0
    tomorrow = (today + timedelta(days=1)).isoformat()
    path = write(tmp_path, trader("trader001", account(resetTo=tomorrow)))
    result = run(command, "-f", path, env={"PW": "Sim-Passw0rd-001"})
    assert result.exit_code == 1
    assert f"resetTo {tomorrow} is in the future (today is {today.isoformat()}, UTC)" in result.stderr
