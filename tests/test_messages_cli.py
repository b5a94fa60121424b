"""What the commands say: counts that match what happened, each finding once, plain words.

Most tests drive the README's desk (examples/desk.yaml) against the embedded simulator, as a new
user would: apply, `reconcile sim sign`, apply again, import, plan --refresh.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import run

import reconcile
from reconcile.apply.crashpoints import CRASH_ENV
from reconcile.apply.generated import PasswordLedger
from reconcile.errors import ReconcileError

DESK = Path(__file__).resolve().parents[1] / "examples" / "desk.yaml"
WAITING = ["trader001", "trader002", "trader004", "trader006"]
"""The desk's users with Sim+: none has signed the Market Data Agreement after the first apply."""


@pytest.fixture
def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """examples/desk.yaml in an empty folder (the embedded simulator keeps its data in state/)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADER001_PASSWORD", "Sim-Passw0rd-001")
    for name in ("TRADOVATE_USERNAME", "TRADOVATE_PASSWORD", "RECONCILE_ENDPOINT", "RECONCILE_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    return Path(shutil.copy(DESK, tmp_path / "desk.yaml"))


def apply_desk(desk: Path) -> tuple[str, str]:
    """The README's first apply; return its stdout and stderr."""
    result = run("apply", "-f", desk, "--auto-approve", "--generated-passwords", desk.parent / "pw.txt")
    assert result.exit_code == 0, result.stderr
    return result.stdout, result.stderr


# --- counts and summaries ---------------------------------------------------------------------------


def test_first_apply_shows_no_grant_progress_for_grants_that_only_wait(desk: Path) -> None:
    """Progress said `grant: 4/4`, then `4 awaiting agreement` with nothing granted."""
    out, err = apply_desk(desk)
    assert "creates 8/8" in err
    assert "grants" not in err
    assert (
        "Apply complete: 8 created, 5 contacts updated, 4 awaiting agreement, 4 accounts created, 2 risk "
        "categories switched, 1 trading set (state serial 5)." in out
    )
    assert (
        "4 users await the Market Data Agreement; Sim+ is granted by a later apply once they sign: "
        f"{', '.join(WAITING)}" in out
    )


def test_agreement_rechecks_are_not_counted_as_changes_by_apply(desk: Path) -> None:
    """`apply` printed "No changes." and then "Apply complete: 1 granted"."""
    apply_desk(desk)
    assert run("sim", "sign", "trader001").exit_code == 0
    result = run("apply", "-f", desk, "--auto-approve")
    assert result.exit_code == 0, result.stderr
    assert "No changes. 4 grants awaiting agreement (checked again on apply)." in result.stdout
    assert (
        "Apply complete: no planned changes; agreement re-checked for 4 grants: 1 signed since and granted, "
        "3 still awaiting (state serial 6)." in result.stdout
    )
    assert "grants 1/1" in result.stderr  # the one grant sent
    assert "3 users await the Market Data Agreement" in result.stdout


def test_after_import_all_grants_awaiting_signatures_are_no_change(desk: Path) -> None:
    """After `import --all`, `plan --refresh --detailed-exitcode` said `Plan: 4 grants.` and exited 2."""
    apply_desk(desk)
    (desk.parent / "state" / "sim.json").unlink()
    imported = run("import", "--all", "-f", desk)
    assert imported.exit_code == 0, imported.stderr
    assert "Adopted 8 users" in imported.stdout

    result = run("plan", "-f", desk, "--refresh", "--detailed-exitcode")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "No drift: the API matches recorded state." in result.stdout
    assert "No changes. 4 grants awaiting agreement (checked again on apply)." in result.stdout

    # A trader who signed before the import has a grant to make: that one is a change.
    (desk.parent / "state" / "sim.json").unlink()
    assert run("sim", "sign", "trader002").exit_code == 0
    assert run("import", "--all", "-f", desk).exit_code == 0
    result = run("plan", "-f", desk, "--detailed-exitcode")
    assert result.exit_code == 2
    assert "Plan: 1 grant. 3 grants awaiting agreement (checked again on apply)." in result.stdout


# Words that are spelled "(s)" for a reason, not a lazy plural.
_NOT_PLURALS = {"http(s)"}


def test_no_message_in_the_package_writes_a_plural_as_s_in_brackets() -> None:
    """`4 user(s) await…`, `1 user(s) to create…`: every count goes through counted()/plural()."""
    package = Path(reconcile.__file__).parent
    found = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        for match in re.finditer(r"\w+\(s\)", line)
        if match.group() not in _NOT_PLURALS
    ]
    assert len(list(package.rglob("*.py"))) > 40  # the walk did see the package
    assert found == []


# --- drift ---------------------------------------------------------------------------------------


def test_drift_names_each_unmanaged_user_once_and_hints_import_only_where_it_works(desk: Path) -> None:
    """An unmanaged user was shown three times, with `reconcile import` though not in the manifest."""
    apply_desk(desk)
    assert run("sim", "add-user", "outsider1", "--email", "outsider1@example.com").exit_code == 0
    result = run("plan", "-f", desk, "--refresh", "--detailed-exitcode")
    assert result.exit_code == 2  # a user created outside is still drift
    assert result.stdout.count("outsider1") == 1
    assert (
        "Unmanaged (in the organization; never changed or cancelled by reconcile): outsider1" in result.stdout
    )
    assert "reconcile import" not in result.stdout + result.stderr
    markdown = run("plan", "-f", desk, "--refresh", "--format", "markdown")
    assert markdown.stdout.count("outsider1") == 1
    refreshed = run("refresh", "-f", desk)
    assert refreshed.stdout.count("outsider1") == 1

    # A manifest user that exists unmanaged gets the hint, and following it works.
    assert run("sim", "add-user", "trader010", "--email", "trader010@example.com").exit_code == 0
    text = desk.read_text(encoding="utf-8")
    desk.write_text(
        text + "\n  - name: trader010\n    email: trader010@example.com\n    password: {generate: true}\n"
        "    firstName: Outside\n    lastName: User\n",
        encoding="utf-8",
    )
    result = run("plan", "-f", desk, "--refresh")
    # Listed unmanaged, and warned about once: the manifest wants it, but it is not created again.
    assert [line.split(":")[0] for line in result.stdout.splitlines() if "trader010" in line] == [
        "Unmanaged (in the organization; never changed or cancelled by reconcile)",
        "Warning",
    ]
    assert "adopt it with `reconcile import trader010`" in result.stdout
    assert run("import", "trader010", "-f", desk).exit_code == 0


# --- messages ------------------------------------------------------------------------------------


def hinted_apply(stderr: str) -> list[str]:
    """The arguments of the `reconcile apply …` that `plan --out` tells the user to run."""
    line = next(x for x in stderr.splitlines() if "apply it with: " in x)
    words = shlex.split(line.split("apply it with: ", 1)[1])
    assert words[:2] == ["reconcile", "apply"]
    return words[1:]


def test_saved_plan_hint_names_generated_passwords_and_following_it_works(desk: Path) -> None:
    """The hint omitted --generated-passwords, which that apply then demanded."""
    planned = run("plan", "-f", desk, "--out", "p.json")
    assert planned.exit_code == 0, planned.stderr
    words = hinted_apply(planned.stderr)
    assert words == ["apply", "p.json", "-f", str(desk), "--generated-passwords", "new-passwords.txt"]
    applied = run(*words)
    assert applied.exit_code == 0, applied.stderr
    assert "Apply complete: 8 created" in applied.stdout


def test_a_stale_plan_is_refused_as_stale_before_its_passwords_are_asked_for(desk: Path) -> None:
    """The password check ran first, so a stale plan reported the wrong problem."""
    assert run("plan", "-f", desk, "--out", "p.json").exit_code == 0
    apply_desk(desk)  # the state moves on
    result = run("apply", "p.json", "-f", desk)
    assert result.exit_code == 1
    assert "the saved plan is stale: the state was written since" in result.stderr
    assert "--generated-passwords" not in result.stderr


def test_validate_warns_of_an_unset_password_variable_and_strict_makes_it_an_error(
    desk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`validate` said OK for `password: {env: NOT_SET}`; only apply noticed."""
    monkeypatch.delenv("TRADER001_PASSWORD")
    problem = (
        f"{desk}:41:5: trader001.password: environment variable TRADER001_PASSWORD is not set: apply needs "
        "it when it creates trader001; export it before applying (plan does not need it)"
    )
    result = run("validate", "-f", desk)
    assert result.exit_code == 0  # a CI plan runs without the traders' secrets
    assert result.stdout.startswith("OK: 9 users")
    assert result.stderr == f"Warning: {problem}\n"
    strict = run("validate", "-f", desk, "--strict")
    assert strict.exit_code == 1
    assert strict.stderr == f"Error: {problem}\n"
    monkeypatch.setenv("TRADER001_PASSWORD", "Sim-Passw0rd-001")
    assert run("validate", "-f", desk, "--strict").stderr == ""


def test_validate_reports_a_section_conflict_and_a_duplicate_user_at_once(tmp_path: Path) -> None:
    """With two files, only the `environment:` conflict was reported, not the duplicate user."""
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(DESK.read_text(encoding="utf-8"), encoding="utf-8")
    second.write_text(
        "environment: demo\nusers:\n  - name: trader001\n    email: other@example.com\n"
        "    password: {generate: true}\n    firstName: A\n    lastName: B\n",
        encoding="utf-8",
    )
    result = run("validate", "-f", first, "-f", second)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {second}:1:1: environment: also set at {first}:5:1 with a different value: set each "
        "top-level section in one file (or identically in every file that sets it)",
        f"{second}:3:11: users[0].name: user 'trader001' is defined twice (first defined at {first}:41:5)",
    ]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("not json at all", "it is not JSON (Expecting value: line 1 column 1 (char 0))"),
        ('{"a": 1}', "(it has no format_version)"),
        ("[]", "(it has no format_version)"),
        ('{"format_version": "1"}', 'its format_version must be a whole number, not "1"'),
        ('{"format_version": true}', "its format_version must be a whole number, not true"),
        ('{"format_version": 1.0}', "its format_version must be a whole number, not 1.0"),
        (
            '{"format_version": "' + "9" * 60 + '"}',
            'its format_version must be a whole number, not "' + "9" * 36 + "...",
        ),
    ],
)
def test_show_says_a_file_that_is_not_a_plan_is_not_one(tmp_path: Path, content: str, said: str) -> None:
    """`show garbage.json` said "has format_version None", and for "1" "this reconcile reads 1"."""
    garbage = tmp_path / "garbage.json"
    garbage.write_text(content, encoding="utf-8")
    result = run("show", garbage)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {garbage} is not a reconcile plan file{' ' if said.startswith('(') else ': '}{said}; "
        "make one with `reconcile plan --out PLANFILE`\n"
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "users: [trader001, trader002\n",
            "4:1: invalid YAML: the list in [brackets] opened at line 3, column 8 is not closed: add the "
            "missing ']', or a ','",
        ),
        (
            "users:\n\t- name: trader001\n",
            "4:1: invalid YAML: a tab character: YAML indents with spaces; replace the tab with spaces",
        ),
        (
            'users:\n  - name: "trader001\n',
            "4:11: invalid YAML: a quoted value is never closed: add the closing quote",
        ),
    ],
)
def test_yaml_syntax_errors_say_what_is_wrong_where_and_the_fix(tmp_path: Path, text: str, said: str) -> None:
    """YAML errors read "while parsing a flow sequence did not find expected ','"; a tab was not named."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("apiVersion: reconcile/v1\nenvironment: sim\n" + text, encoding="utf-8")
    result = run("validate", "-f", manifest)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {manifest}:{said}\n"


def test_an_unknown_entitlement_gets_a_did_you_mean(desk: Path) -> None:
    desk.write_text(desk.read_text(encoding="utf-8").replace("[simplus]", "[simplu]"), encoding="utf-8")
    result = run("validate", "-f", desk)
    assert result.exit_code == 1
    problems = result.stderr.removeprefix("Error: ").splitlines()
    assert len(problems) == 2
    assert all(
        p.endswith(
            "'simplu' is not defined under partner.entitlements (defined: simplus, tradingview); "
            "did you mean 'simplus'?"
        )
        for p in problems
    )


def test_sim_sign_says_what_happened_in_plain_words(desk: Path) -> None:
    """`sim sign` said "(signal 1, alert 68)"."""
    apply_desk(desk)
    result = run("sim", "sign", "trader001")
    assert result.exit_code == 0
    assert result.stderr == (
        "trader001 signed the Market Data Agreement: the next `reconcile apply` grants Sim+ to trader001.\n"
    )


def test_a_penalty_wait_says_once_until_when(desk: Path) -> None:
    """ "waiting until 08:52:11 until 08:52:11 UTC"."""
    fault = run("sim", "fault", "penalty", "--path", "/user/createevaluationusers", "--seconds", "1")
    assert fault.exit_code == 0
    _, err = apply_desk(desk)
    (line,) = [x for x in err.splitlines() if "penalty ticket" in x]
    assert re.fullmatch(r"createevaluationusers: penalty ticket, waiting until \d\d:\d\d:\d\d UTC", line)


def test_settling_an_interrupted_apply_counts_users(desk: Path) -> None:
    """ "settled 1 action(s)" when one create call of 8 users was left open."""
    apply_args = ["apply", "-f", str(desk), "--auto-approve", "--generated-passwords", "pw.txt"]
    killed = subprocess.run(
        [sys.executable, "-m", "reconcile", *apply_args],
        env={**os.environ, CRASH_ENV: "after_create_call"},
        cwd=desk.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL
    result = run("apply", "-f", desk, "--auto-approve", "--generated-passwords", "pw2.txt")
    assert result.exit_code == 0, result.stderr
    assert "settled what an interrupted apply left open for 8 users\n" in result.stderr


def test_control_characters_in_an_error_are_escaped(desk: Path) -> None:
    """A raw NUL from the manifest reached the terminal inside an error."""
    desk.write_text(
        desk.read_text(encoding="utf-8").replace("{env: TRADER001_PASSWORD}", '{env: "TRADER\\0X"}'),
        encoding="utf-8",
    )
    result = run("apply", "-f", desk, "--auto-approve", "--generated-passwords", "pw.txt")
    assert result.exit_code == 1
    # The loader refuses the character where it stands, and never prints it raw.
    assert f"{desk}:43:21: users[0].password.env" in result.stderr
    assert "\x00" not in result.stdout + result.stderr
    # An error that quotes what a person typed (click's own, here) escapes it too.
    missing = run("plan", "-f", "desk\x1b[31m.yaml")
    assert missing.exit_code == 1
    assert "desk\\x1b[31m.yaml" in missing.stderr
    assert "\x1b" not in missing.stdout + missing.stderr


def test_a_refused_login_says_it_in_sentences_with_one_period(
    sim_server: str, monkeypatch: pytest.MonkeyPatch, desk: Path
) -> None:
    """The simulator's "…case-sensitive." became "…case-sensitive.. Check …"."""
    for name, value in {
        "TRADOVATE_USERNAME": "partner-admin",
        "TRADOVATE_PASSWORD": "not-the-password",
        "TRADOVATE_APP_ID": "app",
        "TRADOVATE_CID": "1",
        "TRADOVATE_SEC": "sec",
    }.items():
        monkeypatch.setenv(name, value)
    result = run("plan", "-f", desk, "--refresh", "--endpoint", sim_server)
    assert result.exit_code == 1
    assert "Note that passwords are case-sensitive. Check TRADOVATE_USERNAME" in result.stderr
    assert ".." not in result.stderr
    assert result.stderr.endswith("(TRADOVATE_APP_ID, TRADOVATE_CID, TRADOVATE_SEC).\n")


@pytest.mark.parametrize("linked", ["pw.txt", "pw.txt.pending"])
def test_a_generated_passwords_file_that_is_a_symlink_is_refused_before_anything_is_created(
    desk: Path, linked: str
) -> None:
    """A dangling link was followed: the passwords went to its target while the output named the link."""
    target = desk.parent / "elsewhere" / "stolen.txt"
    target.parent.mkdir()
    (desk.parent / linked).symlink_to(target)
    result = run("apply", "-f", desk, "--auto-approve", "--generated-passwords", desk.parent / "pw.txt")
    assert result.exit_code == 1, result.output
    assert f"{desk.parent / linked} is a symbolic link; generated passwords are written only" in result.stderr
    assert "remove the link, or name another file with --generated-passwords" in result.stderr
    assert not target.exists()
    assert json.loads(run("sim", "users").stdout) == []  # nothing was created


def test_a_link_put_in_place_of_the_passwords_file_during_apply_is_not_followed(tmp_path: Path) -> None:
    """The opens themselves refuse a link (O_NOFOLLOW), not just the check before the run."""
    ledger = PasswordLedger(tmp_path / "pw.txt")
    ledger.hold("intent-1", {"trader001": "Generated-Pw-1"})
    target = tmp_path / "stolen.txt"
    (tmp_path / "pw.txt").symlink_to(target)
    with pytest.raises(ReconcileError, match=r"pw\.txt is a symbolic link"):
        ledger.resolve(ledger.pending, "intent-1", set_for=["trader001"])
    assert not target.exists()
    assert "Generated-Pw-1" in (tmp_path / "pw.txt.pending").read_text()  # still pending, not lost


def test_state_list_and_show_name_each_users_accounts_and_what_the_trader_can_do(desk: Path) -> None:
    apply_desk(desk)
    listed = run("state", "list", "-f", desk, "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    accounts = {a["name"]: (row["name"], a) for row in rows.values() for a in row["accounts"]}
    assert accounts and all(a["accountId"] > 0 and a["permission"] == "active" for _, a in accounts.values())
    assert len({a["accountId"] for _, a in accounts.values()}) == len(accounts)
    owner, first = accounts["FIRMEVAL00001"]
    text = run("state", "list", "-f", desk)
    line = next(x for x in text.stdout.splitlines() if x.startswith(f"{owner}\t"))
    assert f"FIRMEVAL00001={'locked' if first['trading'] == 'locked' else 'trading'}" in line
    shown = run("state", "show", "-f", desk, "--format", "json")
    counts = json.loads(shown.stdout)["accounts"]
    assert counts["total"] == len(accounts) == counts["trading"] + counts["locked"] + counts["revoked"]
    assert f"accounts: {len(accounts)} (" in run("state", "show", "-f", desk).stdout


def test_a_lost_reset_is_forgotten_only_on_purpose_and_then_the_next_plan_resets_again(desk: Path) -> None:
    from reconcile.state.file import FileStateStore

    apply_desk(desk)
    store = FileStateStore(desk.parent / "state" / "sim.json")
    with store.lock(purpose="test"):
        state = store.load("sim")
        record = state.accounts["FIRMEVAL00001"]
        assert record.lastReset is not None
        # What an apply records when a reset's answer is lost: done, unconfirmed, never resent.
        state.accounts["FIRMEVAL00001"] = record.model_copy(update={"resetUnsettled": record.lastReset})
        store.save(state, (), changed_accounts=["FIRMEVAL00001"])

    held = json.loads(run("plan", "-f", desk, "--format", "json").stdout)
    assert not [a for a in held["actions"] if a["action"] == "reset_account"]
    assert any("answer lost" in d["message"] for d in held["diagnostics"])

    forgot = run("state", "forget-reset", "firmeval00001", "-f", desk)
    assert forgot.exit_code == 0, forgot.stderr
    assert "FIRMEVAL00001: the unconfirmed reset to" in forgot.stdout
    again = json.loads(run("plan", "-f", desk, "--format", "json").stdout)
    resets = [a for a in again["actions"] if a["action"] == "reset_account"]
    assert [(a["account"], a["resetTo"]) for a in resets] == [("FIRMEVAL00001", record.lastReset.isoformat())]
    assert any(line["action"] == "forget_reset" for line in store.audit_log("sim").read())

    twice = run("state", "forget-reset", "FIRMEVAL00001", "-f", desk)
    assert twice.exit_code == 1 and "no unconfirmed reset to forget" in twice.stderr
    unknown = run("state", "forget-reset", "FIRMEVAL0001", "-f", desk)
    assert unknown.exit_code == 1 and "did you mean" in unknown.stderr
