"""Hostile or broken API answers met by `reconcile apply`: a clear error, and state keeps only the truth.

The CLI runs in-process against the embedded simulator, through an ``httpx.MockTransport`` that
corrupts chosen answers (or answers in the simulator's stead, so the request is never applied).
After every bad run the recorded state is compared with the simulator's database, and a clean
apply must then converge: state equals the simulator and one more plan is empty.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from apply_support import PASSWORD, write_desk

import reconcile.api.connect as connect
from reconcile.apply.intents import IntentJournal
from reconcile.cli import main
from reconcile.sim import admin, rules
from reconcile.sim.app import SimApp, create_app
from reconcile.sim.transport import SimTransport
from reconcile.state.file import FileStateStore
from reconcile.state.journal import FileJournal

Corrupt = Callable[[httpx.Request, Callable[[], httpx.Response]], httpx.Response]
"""Given the request and a way to let the simulator answer it, return the answer the client sees."""

HTML_PAGE = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


@dataclass
class Hostile:
    """The embedded simulator behind a transport that corrupts answers to chosen paths."""

    app: SimApp
    rules: dict[str, Corrupt] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/v1").lower()

        def forward() -> httpx.Response:
            response = SimTransport(self.app).handle_request(request)
            response.read()
            return response

        corrupt = self.rules.get(path)
        if corrupt is None:
            return forward()
        self.hits[path] = self.hits.get(path, 0) + 1
        return corrupt(request, forward)


@dataclass
class Desk:
    tmp: Path
    hostile: Hostile
    capsys: pytest.CaptureFixture[str]

    @property
    def state(self) -> Path:
        return self.tmp / "state" / "sim.json"

    def apply(self, *extra: str) -> tuple[int, str, str]:
        return self.run("apply", "--auto-approve", *extra)

    def run(self, command: str, *extra: str) -> tuple[int, str, str]:
        """Run ``reconcile COMMAND -f desk.yaml --state …``; return (exit code, stdout, stderr)."""
        code = 0
        try:
            main([command, "-f", "desk.yaml", "--state", str(self.state), *extra])
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err

    def audit(self) -> list[dict[str, Any]]:
        path = self.tmp / "state" / "sim.audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def unsettled(self) -> list[list[str]]:
        journal = IntentJournal(FileJournal(self.tmp / "state" / "sim.journal.jsonl"))
        return [i.users for i in journal.unsettled()]

    def recorded(self) -> dict[str, Any]:
        if not self.state.exists():
            return {}
        users: dict[str, Any] = json.loads(self.state.read_text())["users"]
        return users

    def assert_state_is_the_truth(self) -> None:
        """Everything state records about a user is what the simulator holds."""
        in_sim = {u["name"]: u for u in admin.dump_users(self.hostile.app.store)}
        recorded = self.recorded()
        assert recorded, "state records nobody: there is nothing to compare"
        for name, record in recorded.items():
            user = in_sim.get(name)
            assert user is not None, f"state records {name}, the simulator has no such user"
            assert (user["id"], user["email"]) == (record["userId"], record["email"]), name
            assert (user["status"] == "Closed") == (record["lifecycle"] == "cancelled"), name
            plugins = {
                r["refId"] for r in user["records"] if r["kind"] == rules.USER_PLUGIN and not r["cancelled"]
            }
            granted = {
                g["entitlementId"] for g in record["entitlements"].values() if g["status"] == "granted"
            }
            assert granted <= plugins | {31}, f"{name}: state says granted {granted}, the API has {plugins}"
            if record.get("contact"):
                assert user["contactInfo"] is not None, f"{name}: state has a contact the API never took"
                assert user["contactInfo"]["phone"] == record["contact"]["phone"], name

    def converge(self) -> None:
        """Without corruption, one apply makes state and the simulator agree, and the next is a no-op."""
        self.hostile.rules.clear()
        code, _, err = self.apply()
        assert code == 0, err
        self.assert_state_is_the_truth()
        names = {u["name"] for u in admin.dump_users(self.hostile.app.store) if u["origin"] != "outside"}
        assert set(self.recorded()) >= names - {"outsider"}
        serial = json.loads(self.state.read_text())["serial"]
        code, out, err = self.apply()
        assert code == 0 and "No changes." in out, out + err
        assert json.loads(self.state.read_text())["serial"] == serial


@pytest.fixture
def desk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Desk]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADER_PASSWORD", PASSWORD)
    (tmp_path / "state").mkdir()
    app = create_app(db_path=tmp_path / "state" / "sim.sqlite")
    hostile = Hostile(app)
    real_open_client = connect.open_client

    def open_client(environment: str, **kwargs: Any) -> Any:
        # Retries of idempotent calls back off for real; these tests must not wait.
        kwargs.update(transport=httpx.MockTransport(hostile.handle), sleep=lambda _s: None)
        return real_open_client(environment, **kwargs)

    monkeypatch.setattr(connect, "open_client", open_client)
    yield Desk(tmp_path, hostile, capsys)
    app.store.close()


def answer(body: Any, status: int = 200) -> Callable[[httpx.Request, Callable[[], httpx.Response]], Any]:
    """Answer in the simulator's stead: the request is never applied."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    kind = "text/html" if content.lstrip().startswith(b"<") else "application/json"
    return lambda _req, _forward: httpx.Response(status, content=content, headers={"Content-Type": kind})


def after_applying(change: Callable[[Any], Any]) -> Corrupt:
    """Let the simulator apply the request, then rewrite its JSON answer with ``change``."""

    def corrupt(_req: httpx.Request, forward: Callable[[], httpx.Response]) -> httpx.Response:
        real = forward()
        changed = change(json.loads(real.content))
        content = changed if isinstance(changed, bytes) else json.dumps(changed).encode()
        return httpx.Response(real.status_code, content=content, headers={"Content-Type": "application/json"})

    return corrupt


CREATE = "/user/createevaluationusers"
NAMES = ["trader0000", "trader0001", "trader0002"]


def test_html_error_page_for_a_create_that_never_ran_fails_each_user_and_records_nobody(
    tmp_path: Path, desk: Desk
) -> None:
    write_desk(tmp_path / "desk.yaml", 3)
    desk.hostile.rules[CREATE] = answer(HTML_PAGE, 502)
    code, _, err = desk.apply()
    assert code == 1
    assert desk.hostile.hits[CREATE] == 1, "a create whose outcome is unknown must not be resent"
    for name in NAMES:
        assert f"{name}: create:" in err
    assert "createevaluationusers" in err and "HTTP 502" in err
    assert desk.recorded() == {} and admin.dump_users(desk.hostile.app.store) == []
    desk.converge()


@pytest.mark.parametrize(
    "garble",
    [
        pytest.param(lambda body: json.dumps(body).encode()[:25], id="truncated-json"),
        pytest.param(
            lambda body: {"results": [{"userId": [r["userId"]]} for r in body["results"]]},
            id="ids-as-lists",
        ),
        pytest.param(lambda body: {"results": body["results"][:-1]}, id="results-list-too-short"),
        pytest.param(lambda body: {"results": {"0": body["results"]}}, id="results-not-a-list"),
    ],
)
def test_garbled_answer_to_an_applied_create_is_settled_by_looking_the_users_up(
    tmp_path: Path, desk: Desk, garble: Callable[[Any], Any]
) -> None:
    write_desk(tmp_path / "desk.yaml", 3)
    desk.hostile.rules[CREATE] = after_applying(garble)
    code, out, err = desk.apply()
    # The users were created: adopting them by name and email is the truth, not an error.
    assert code == 0, err
    assert "3 adopted" in out
    assert desk.hostile.hits[CREATE] == 1
    assert sorted(desk.recorded()) == NAMES
    desk.assert_state_is_the_truth()
    audit = [json.loads(x) for x in (tmp_path / "state" / "sim.audit.jsonl").read_text().splitlines()]
    lost = [ln for ln in audit if ln["action"] == "create"]
    assert [ln["outcome"] for ln in lost] == ["unknown"]
    assert "createevaluationusers for trader0000, trader0001, trader0002" in lost[0]["detail"]["error"]
    desk.converge()


def test_short_results_list_with_a_refused_user_adopts_the_others_and_names_the_conflict(
    tmp_path: Path, desk: Desk
) -> None:
    write_desk(tmp_path / "desk.yaml", 3)
    admin.add_user(
        desk.hostile.app.store, desk.hostile.app.config, {"name": "trader0002", "email": "x@y.example"}
    )
    desk.hostile.rules[CREATE] = after_applying(lambda body: {"results": body["results"][:2]})
    code, _, err = desk.apply()
    assert code == 1
    assert "trader0002: create:" in err and "another email" in err
    assert sorted(desk.recorded()) == ["trader0000", "trader0001"]
    desk.assert_state_is_the_truth()


def test_cancel_answered_200_with_error_text_keeps_the_users_active(tmp_path: Path, desk: Desk) -> None:
    write_desk(tmp_path / "desk.yaml", 4)
    assert desk.apply()[0] == 0
    write_desk(tmp_path / "desk.yaml", 3)
    desk.hostile.rules["/user/canceleverything"] = answer(
        {"errorText": "Internal: cancellation service down"}
    )
    code, _, err = desk.apply()
    assert code == 1
    assert "trader0003: cancel_everything: canceleverything for trader0003" in err
    assert "cancellation service down" in err
    assert desk.recorded()["trader0003"]["lifecycle"] == "active"
    desk.assert_state_is_the_truth()
    desk.converge()
    assert desk.recorded()["trader0003"]["lifecycle"] == "cancelled"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(answer(HTML_PAGE), id="html-page"),
        pytest.param(answer(b'{"contactInfo": {"userId": 1'), id="truncated-json"),
        pytest.param(answer({"contactInfo": {"userId": "me"}}), id="wrong-types"),
    ],
)
def test_broken_answers_to_a_contact_update_fail_that_user_and_record_nothing(
    tmp_path: Path, desk: Desk, bad: Corrupt
) -> None:
    write_desk(tmp_path / "desk.yaml", 2)
    assert desk.apply()[0] == 0
    write_desk(tmp_path / "desk.yaml", 2, contact=True)
    desk.hostile.rules["/contactinfo/updatecontactinfo"] = bad
    code, _, err = desk.apply()
    assert code == 1
    for name in ("trader0000", "trader0001"):
        assert f"{name}: update_contact: updatecontactinfo for {name}:" in err
    assert [r.get("contact") for r in desk.recorded().values()] == [None, None]
    desk.assert_state_is_the_truth()
    desk.converge()


def test_unknown_error_code_for_a_grant_is_a_failure_not_a_grant(tmp_path: Path, desk: Desk) -> None:
    write_desk(tmp_path / "desk.yaml", 2, simplus=True)
    assert desk.apply()[0] == 0
    admin.sign_agreement(desk.hostile.app.store, desk.hostile.app.config, "trader0001")
    desk.hostile.rules["/userplugin/addentitlementsubscription"] = answer(
        {"errorCode": "QuotaFrozenUntilMonday", "errorText": None}
    )
    code, _, err = desk.apply()
    assert code == 1
    assert "trader0001: grant_entitlement: addentitlementsubscription:" in err
    assert "(errorCode QuotaFrozenUntilMonday)" in err
    assert desk.recorded()["trader0001"]["entitlements"]["simplus"]["status"] == "awaiting_agreement"
    desk.assert_state_is_the_truth()
    desk.converge()
    assert desk.recorded()["trader0001"]["entitlements"]["simplus"]["status"] == "granted"


def test_agreement_signals_of_the_wrong_shape_stop_the_grants_and_say_which_call(
    tmp_path: Path, desk: Desk
) -> None:
    write_desk(tmp_path / "desk.yaml", 2, simplus=True)
    assert desk.apply()[0] == 0
    admin.sign_agreement(desk.hostile.app.store, desk.hostile.app.config, "trader0000")
    desk.hostile.rules["/adminalertsignal/deps"] = answer([{"id": "seven", "relatedToUserId": []}])
    code, _, err = desk.apply()
    assert code == 1
    assert "adminAlertSignal/deps" in err and "not what the contract describes" in err
    statuses = [r["entitlements"]["simplus"]["status"] for r in desk.recorded().values()]
    assert statuses == ["awaiting_agreement", "awaiting_agreement"]
    desk.assert_state_is_the_truth()
    desk.converge()


def dropped_after_applying(_req: httpx.Request, forward: Callable[[], httpx.Response]) -> httpx.Response:
    """Let the simulator apply the request, then lose the connection before the answer."""
    forward()
    raise httpx.RemoteProtocolError("Server disconnected without sending a response.")


def log_in(desk: Desk, name: str, password: str) -> int:
    """Log in to the simulator as the trader ``name``; return the HTTP status."""
    with httpx.Client(transport=SimTransport(desk.hostile.app), base_url="http://sim.test/v1") as http:
        return http.post("/auth/accesstokenrequest", json={"name": name, "password": password}).status_code


CAPTCHA = answer({"p-ticket": "t1", "p-time": 0, "p-captcha": True})
FIND = "/user/find"


def test_a_lost_create_whose_users_cannot_be_looked_up_stays_open_until_settled(
    tmp_path: Path, desk: Desk
) -> None:
    write_desk(tmp_path / "desk.yaml", 3)
    desk.hostile.rules[CREATE] = dropped_after_applying
    desk.hostile.rules[FIND] = answer({"errorText": "busy"}, 500)
    code, _, err = desk.apply()
    assert code == 1
    assert "looking the user up failed, so whether it exists is unknown" in err
    assert "nothing was sent to the API after this" in err
    assert desk.recorded() == {}, "no false record"
    assert desk.unsettled() == [NAMES], "an intent whose outcome is unknown must stay in the journal"
    with pytest.raises(SystemExit, match="0"):
        main(["state", "show", "-e", "sim", "--state", str(desk.state)])
    assert "create of 3 users; left by an apply that did not finish" in desk.capsys.readouterr().out

    # Without credentials, plan shows them waiting and plans nothing for them, and says so: no
    # bare "No changes." that reads as in sync.
    code, out, _ = desk.run("plan", "--detailed-exitcode")
    assert code == 2
    assert "waiting to be settled: the create of trader0000, trader0001, trader0002" in out
    assert "was sent by an apply that did not finish" in out
    assert "Plan:" not in out, "users whose create may have happened must not be planned again"
    assert (
        "No changes. The outcome for 3 users waits to be settled (an apply's call for them has no "
        "known answer); the next apply settles it first." in out
    )
    code, out, _ = desk.run("plan", "--format", "json")
    assert code == 0 and json.loads(out)["unsettled"] == NAMES
    # Not in sync: a CI gate must not go green on a create nobody knows the outcome of.
    code, out, err = desk.run("check")
    assert code == 1, out + err
    assert (
        "not in sync: the outcome for 3 users waits to be settled; run `reconcile apply`: it settles "
        "that first, then plans them" in err
    )

    # Planned without the lock while an apply holds it: that apply may still await the answer.
    with FileStateStore(desk.state).lock(purpose="apply"):
        code, out, _ = desk.run("plan", "--no-lock")
    assert code == 0
    assert "was sent by an apply that did not finish" not in out
    assert "(intent " in out and ") may still be in flight: the apply holding the state lock (lock " in out
    assert "(apply)) may still be waiting for its answer, and then settles it itself" in out

    # While the API still cannot answer, apply refuses to plan or send anything.
    code, _, err = desk.apply()
    assert code == 1 and "whether it exists is unknown" in err
    assert desk.hostile.hits[CREATE] == 1 and desk.unsettled() == [NAMES]

    desk.hostile.rules.clear()
    code, out, err = desk.apply()
    assert code == 0, err
    assert "3 adopted" in out and desk.hostile.hits[CREATE] == 1, "settled by looking up, not by a resend"
    assert {r["origin"] for r in desk.recorded().values()} == {"adopted"}
    assert desk.unsettled() == []
    desk.converge()


@pytest.mark.parametrize(
    ("path", "change"),
    [
        pytest.param("/contactinfo/updatecontactinfo", {"contact": True}, id="contact"),
        pytest.param("/userplugin/addentitlementsubscription", {"simplus": True}, id="grant"),
    ],
)
def test_a_captcha_stops_every_later_call_of_the_run(
    tmp_path: Path, desk: Desk, path: str, change: dict[str, bool]
) -> None:
    write_desk(tmp_path / "desk.yaml", 6)
    assert desk.apply()[0] == 0
    for i in range(5):
        admin.sign_agreement(desk.hostile.app.store, desk.hostile.app.config, f"trader{i:04d}")
    write_desk(tmp_path / "desk.yaml", 7, **change)  # trader0006 joins: a create would follow
    desk.hostile.rules[path] = CAPTCHA
    code, out, err = desk.apply()
    assert code == 1
    assert "demands a captcha" in err and "apply stopped here: nothing was sent" in err
    assert err.count("demands a captcha") == 1 and "Apply complete" not in out + err, "one clear message"
    assert "trader0006" not in desk.recorded()
    assert all(u["name"] != "trader0006" for u in admin.dump_users(desk.hostile.app.store))
    audit = desk.audit()
    assert audit[-1]["action"] == "stop" and "captcha" in audit[-1]["detail"]["reason"]
    assert all(a["action"] != "cancel_everything" for a in audit)
    desk.assert_state_is_the_truth()
    desk.converge()


def test_cancel_is_not_sent_for_an_id_that_belongs_to_someone_else(tmp_path: Path, desk: Desk) -> None:
    write_desk(tmp_path / "desk.yaml", 2)
    assert desk.apply()[0] == 0
    outsider = admin.add_user(
        desk.hostile.app.store, desk.hostile.app.config, {"name": "outsider", "email": "o@example.com"}
    )
    state = json.loads(desk.state.read_text())
    state["users"]["trader0001"]["userId"] = outsider["id"]  # state is wrong about trader0001
    desk.state.write_text(json.dumps(state))
    write_desk(tmp_path / "desk.yaml", 1)
    code, _, err = desk.apply()
    assert code == 1
    assert f"trader0001: cancel_everything: not sent: id {outsider['id']} belongs to outsider" in err
    statuses = {u["name"]: u["status"] for u in admin.dump_users(desk.hostile.app.store)}
    assert statuses == {"trader0000": "Active", "trader0001": "Active", "outsider": "Active"}
    assert desk.recorded()["trader0001"]["lifecycle"] == "active"


def test_generated_passwords_are_written_only_for_users_created_with_them(tmp_path: Path, desk: Desk) -> None:
    write_desk(tmp_path / "desk.yaml", 3)
    text = (tmp_path / "desk.yaml").read_text().replace("{env: TRADER_PASSWORD}", "{generate: true}")
    (tmp_path / "desk.yaml").write_text(text)
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    desk.hostile.rules[CREATE] = answer({"errorText": "Partner quota exceeded"})
    code, _, err = desk.apply("--generated-passwords", str(first))
    assert code == 1 and "Partner quota exceeded" in err
    assert not first.exists() and not first.with_name("first.txt.pending").exists()
    # The answer is lost and the users can't be looked up: the candidates wait, presented nowhere.
    desk.hostile.rules[CREATE] = dropped_after_applying
    desk.hostile.rules[FIND] = answer({"errorText": "busy"}, 500)
    assert desk.apply("--generated-passwords", str(first))[0] == 1
    assert not first.exists() and first.with_name("first.txt.pending").stat().st_mode & 0o777 == 0o600
    desk.hostile.rules.clear()
    code, _, err = desk.apply("--generated-passwords", str(second))
    assert code == 0, err
    assert f"Generated passwords of 3 users are in {first} (mode 0600)" in err
    assert not second.exists() and not first.with_name("first.txt.pending").exists()
    lines = [ln.split("\t") for ln in first.read_text().splitlines() if "\t" in ln]
    assert sorted(name for name, _ in lines) == NAMES
    for name, password in lines:
        assert log_in(desk, name, password) == 200, f"{name}'s password in {first} is not the one set"


def test_state_show_says_whether_an_open_intent_may_still_be_in_flight(tmp_path: Path, desk: Desk) -> None:
    write_desk(tmp_path / "desk.yaml", 1)
    assert desk.apply()[0] == 0
    write_desk(tmp_path / "desk.yaml", 2)
    desk.hostile.rules[CREATE] = dropped_after_applying
    desk.hostile.rules[FIND] = answer({"errorText": "busy"}, 500)
    assert desk.apply()[0] == 1
    show = ["state", "show", "-e", "sim", "--state", str(desk.state)]
    with pytest.raises(SystemExit, match="0"):
        main(show)
    out = desk.capsys.readouterr().out
    assert "create of 1 user; left by an apply that did not finish; the next apply settles it" in out
    with FileStateStore(desk.state).lock(purpose="apply"):
        with pytest.raises(SystemExit, match="0"):
            main(show)
        out = desk.capsys.readouterr().out
    assert "(apply) is still running, this is its call in flight and it settles it itself" in out


LOGIN = "/auth/accesstokenrequest"


def login_limited(_req: httpx.Request, _forward: Callable[[], httpx.Response]) -> httpx.Response:
    """The API's answer to a login past its hourly limit: HTTP 429, wait an hour."""
    return httpx.Response(429, headers={"Retry-After": "3600"}, json={"errorText": "Too many requests"})


def forget_cached_tokens() -> None:
    """Drop the access tokens earlier runs cached, so the next run must log in."""
    import os
    import shutil

    shutil.rmtree(Path(os.environ["RECONCILE_CACHE_DIR"]) / "tokens", ignore_errors=True)


def test_a_login_the_api_limits_stops_the_run_with_one_message(tmp_path: Path, desk: Desk) -> None:
    write_desk(tmp_path / "desk.yaml", 8)
    assert desk.apply()[0] == 0
    write_desk(tmp_path / "desk.yaml", 7, contact=True)  # 7 contact updates; trader0007's cancel follows
    forget_cached_tokens()
    desk.hostile.rules[LOGIN] = login_limited
    code, out, err = desk.apply()
    assert code == 1
    assert desk.hostile.hits == {LOGIN: 1}, "one login tried, no call sent, no login tried again per user"
    assert "failed:" not in err and err.count("HTTP 429") == 1, "one message, not one per user"
    assert "Error: login as partner-admin at sim:embedded" in err
    assert (
        " refused: the API's login limit is reached (HTTP 429; "
        "5 logins an hour); it asks to wait about 60 minutes. Nothing can be sent without a login, so "
        "nothing more is tried. Wait until the login limit resets, then run the command again; "
        "reconcile caches the access token it gets, so later runs reuse it instead of logging in." in err
    )
    assert "apply stopped here: nothing was sent" in err and "Apply complete" not in out + err
    audit = desk.audit()
    assert audit[-1]["action"] == "stop" and "login limit" in audit[-1]["detail"]["reason"]
    assert sum(a["action"] == "update_contact" for a in audit) <= 1, "calls never sent are no failures"
    assert all(a["action"] != "cancel_everything" for a in audit)
    desk.converge()


def test_a_login_limited_for_a_moment_is_retried_and_the_run_completes(tmp_path: Path, desk: Desk) -> None:
    write_desk(tmp_path / "desk.yaml", 3)
    hits = 0

    def limited_once(req: httpx.Request, forward: Callable[[], httpx.Response]) -> httpx.Response:
        nonlocal hits
        hits += 1
        if hits == 1:
            return httpx.Response(429, headers={"Retry-After": "2"}, json={"errorText": "Too many requests"})
        return forward()

    forget_cached_tokens()
    desk.hostile.rules[LOGIN] = limited_once
    code, out, err = desk.apply()
    assert code == 0, err
    assert desk.hostile.hits[LOGIN] == 2 and "3 created" in out
