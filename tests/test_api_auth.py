"""Credentials, the token cache and the auth flow: one login, renewal before expiry, no secrets leaked."""

from __future__ import annotations

import email.utils
import json
import logging
import os
import stat
import threading
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from api_support import (
    BASE,
    NOW,
    SECRET_PASSWORD,
    SECRET_SEC,
    SECRET_TOKEN,
    Script,
    credentials,
    make_client,
    token_answer,
)

from reconcile.api.credentials import Credentials
from reconcile.api.events import ClientEvent
from reconcile.api.models import EvaluationUser
from reconcile.api.token_cache import CachedToken, TokenCache
from reconcile.errors import ApiError, AuthError, ReconcileError
from reconcile.operations.clients import open_client
from reconcile.operations.settings import Settings

LOGIN = "/auth/accesstokenrequest"
RENEW = "/auth/renewaccesstoken"
ENV = {
    "TRADOVATE_USERNAME": "partner-admin",
    "TRADOVATE_PASSWORD": SECRET_PASSWORD,
    "TRADOVATE_APP_ID": "app",
    "TRADOVATE_CID": "42",
    "TRADOVATE_SEC": SECRET_SEC,
}


def test_credentials_from_the_environment() -> None:
    creds = Credentials.from_env(ENV)
    assert creds.login_body()["name"] == "partner-admin" and creds.login_body()["sec"] == SECRET_SEC
    assert SECRET_PASSWORD not in repr(creds) and SECRET_SEC not in repr(creds)


def test_missing_variables_are_all_listed() -> None:
    with pytest.raises(AuthError) as info:
        Credentials.from_env({"TRADOVATE_USERNAME": "x"})
    message = str(info.value)
    for var in ("TRADOVATE_PASSWORD", "TRADOVATE_APP_ID", "TRADOVATE_CID", "TRADOVATE_SEC"):
        assert var in message
    assert "TRADOVATE_USERNAME" not in message


def test_credentials_file_must_be_private(tmp_path: Path) -> None:
    file = tmp_path / "creds.yaml"
    file.write_text(
        f"username: partner-admin\npassword: {SECRET_PASSWORD}\nappId: app\ncid: 42\nsec: {SECRET_SEC}\n"
    )
    file.chmod(0o644)
    with pytest.raises(AuthError, match="chmod 600") as info:
        Credentials.from_file(file)
    assert SECRET_PASSWORD not in str(info.value)
    file.chmod(0o600)
    assert Credentials.from_file(file) == credentials()


def test_credentials_file_accepts_json_and_environment_names(tmp_path: Path) -> None:
    file = tmp_path / "creds.json"
    file.write_text(json.dumps(ENV))
    file.chmod(0o600)
    assert Credentials.from_file(file) == credentials()


def test_credentials_file_errors_do_not_quote_the_file(tmp_path: Path) -> None:
    file = tmp_path / "creds.yaml"
    file.write_text(f"password: [{SECRET_PASSWORD}\n")
    file.chmod(0o600)
    with pytest.raises(AuthError, match="not valid YAML") as info:
        Credentials.from_file(file)
    assert SECRET_PASSWORD not in str(info.value)


def test_token_cache_is_private_keyed_and_never_holds_the_password(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path / "tokens")
    cache.save(BASE, credentials(), CachedToken(SECRET_TOKEN, NOW))
    files = list((tmp_path / "tokens").iterdir())
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tokens").stat().st_mode) == 0o700
    assert "partner-admin" not in files[0].name and "partner.test" not in files[0].name
    assert SECRET_PASSWORD not in files[0].read_text() and SECRET_SEC not in files[0].read_text()
    assert cache.load(BASE, credentials()) == CachedToken(SECRET_TOKEN, NOW)
    assert cache.load(BASE, replace(credentials(), username="someone-else")) is None
    assert cache.load("https://other.test/v1", credentials()) is None
    files[0].chmod(0o644)  # someone else could have read (or planted) it: do not trust it
    assert cache.load(BASE, credentials()) is None


@pytest.mark.parametrize("token", ["tok\nen", "tok en", "tok\x00en", "", "tok\x7fen"])
def test_a_cached_token_no_header_can_carry_is_ignored_and_a_login_replaces_it(
    tmp_path: Path, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    # An earlier version cached such a login answer: every call of every run failed with it.
    cache = TokenCache(tmp_path)
    cache.save(BASE, credentials(), CachedToken(token, NOW + 3600))
    with caplog.at_level(logging.WARNING):
        assert cache.load(BASE, credentials()) is None
    assert "cannot be sent in a header" in caplog.text
    script = Script({"/user/list": [httpx.Response(200, json=[])]})
    make_client(script, cache=cache)[0].list_users()
    assert len(script.calls(LOGIN)) == 1
    kept = cache.load(BASE, credentials())
    assert kept is not None and kept.token == SECRET_TOKEN


@pytest.mark.parametrize(
    "changed",
    [
        {"password": "a-wrong-password"},
        {"sec": "another-secret"},
        {"app_id": "another-app"},
        {"cid": "43"},
        {"device_id": "another-device"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_cached_token_serves_only_the_credentials_that_obtained_it(
    tmp_path: Path, changed: dict[str, str]
) -> None:
    cache = TokenCache(tmp_path)
    cache.save(BASE, credentials(), CachedToken(SECRET_TOKEN, NOW + 3600))
    assert cache.load(BASE, replace(credentials(), **changed)) is None
    assert cache.load(BASE, credentials()) == CachedToken(SECRET_TOKEN, NOW + 3600)


def test_a_wrong_password_is_refused_even_while_a_token_is_cached(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    good = Script({"/user/list": [httpx.Response(200, json=[])]})
    make_client(good, cache=cache)[0].list_users()
    assert len(good.calls(LOGIN)) == 1
    wrong = Script({LOGIN: [httpx.Response(200, json={"errorText": "Incorrect username or password"})]})
    client, _ = make_client(wrong, cache=cache, creds=replace(credentials(), password="wrong"))
    with pytest.raises(AuthError):
        client.list_users()
    assert len(wrong.calls(LOGIN)) == 1  # it tried to log in, instead of riding the cached token
    assert wrong.calls("/user/list") == []


def test_cache_dir_follows_reconcile_cache_dir(tmp_path: Path) -> None:
    assert TokenCache.from_env({"RECONCILE_CACHE_DIR": str(tmp_path)}).directory == tmp_path / "tokens"


def test_one_login_serves_two_clients_through_the_cache(tmp_path: Path) -> None:
    script = Script({"/user/list": [httpx.Response(200, json=[])]})
    cache = TokenCache(tmp_path)
    for _ in range(2):
        client, _ = make_client(script, cache=cache)
        client.list_users()
    assert len(script.calls(LOGIN)) == 1
    assert {r.headers["Authorization"] for r in script.calls("/user/list")} == {f"Bearer {SECRET_TOKEN}"}


def test_token_is_renewed_before_it_expires_not_replaced_by_a_login(tmp_path: Path) -> None:
    now = [NOW]
    script = Script(
        {
            RENEW: [token_answer("renewed", expires=NOW + 2 * 85 * 60)],
            "/user/list": [httpx.Response(200, json=[])],
        }
    )
    client, _ = make_client(script, cache=TokenCache(tmp_path), now=lambda: now[0])
    client.list_users()
    now[0] = NOW + 80 * 60  # five minutes before expiry: inside the renewal margin
    client.list_users()
    client.list_users()
    assert len(script.calls(LOGIN)) == 1 and len(script.calls(RENEW)) == 1
    assert script.calls(RENEW)[0].headers["Authorization"] == f"Bearer {SECRET_TOKEN}"
    assert script.calls("/user/list")[-1].headers["Authorization"] == "Bearer renewed"


def test_a_failed_renewal_falls_back_to_a_login(tmp_path: Path) -> None:
    now = [NOW]
    script = Script(
        {
            LOGIN: [token_answer("first"), token_answer("second", expires=NOW + 200 * 60)],
            RENEW: [httpx.Response(401, json={"errorText": "session closed"})],
            "/user/list": [httpx.Response(200, json=[])],
        }
    )
    client, _ = make_client(script, now=lambda: now[0])
    client.list_users()
    now[0] = NOW + 80 * 60
    client.list_users()
    assert len(script.calls(RENEW)) == 1 and len(script.calls(LOGIN)) == 2
    assert script.calls("/user/list")[-1].headers["Authorization"] == "Bearer second"


def test_a_renewed_token_no_header_can_carry_is_not_kept_a_login_follows() -> None:
    now = [NOW]
    script = Script(
        {
            LOGIN: [token_answer("first"), token_answer("second", expires=NOW + 200 * 60)],
            RENEW: [token_answer("renewed\r\nX-Injected: 1", expires=NOW + 200 * 60)],
            "/user/list": [httpx.Response(200, json=[])],
        }
    )
    client, _ = make_client(script, now=lambda: now[0])
    client.list_users()
    now[0] = NOW + 80 * 60
    client.list_users()
    assert len(script.calls(RENEW)) == 1 and len(script.calls(LOGIN)) == 2
    assert script.calls("/user/list")[-1].headers["Authorization"] == "Bearer second"


def test_an_expired_cached_token_means_a_login_not_a_renewal(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    cache.save(BASE, credentials(), CachedToken("old", NOW - 10))
    script = Script({"/user/list": [httpx.Response(200, json=[])]})
    client, _ = make_client(script, cache=cache)
    client.list_users()
    assert len(script.calls(RENEW)) == 0 and len(script.calls(LOGIN)) == 1


def test_a_refused_login_says_what_to_check() -> None:
    refused = httpx.Response(200, json={"errorText": "Incorrect username or password."})
    script = Script({LOGIN: [refused], "/user/list": [httpx.Response(200, json=[])]})
    client, _ = make_client(script)
    with pytest.raises(AuthError, match=r"Incorrect username or password.*TRADOVATE_USERNAME"):
        client.list_users()
    assert script.calls("/user/list") == []


def test_a_rate_limited_login_is_retried_and_the_call_then_sent_once() -> None:
    script = Script(
        {
            LOGIN: [httpx.Response(429, headers={"Retry-After": "30"}), token_answer()],
            "/user/createevaluationusers": [httpx.Response(200, json={"results": [{"userId": 1}]})],
        }
    )
    client, sleeps = make_client(script)
    user = EvaluationUser(
        name="alice", email="a@example.com", password="Pw-123456!", firstName="A", lastName="B"
    )
    assert client.create_evaluation_users([user])[0].userId == 1
    assert sleeps == [30.0] and len(script.calls("/user/createevaluationusers")) == 1


def test_a_dropped_login_does_not_make_a_create_unknown() -> None:
    script = Script(
        {
            LOGIN: [httpx.ReadTimeout("slow"), token_answer()],
            "/user/createevaluationusers": [httpx.Response(200, json={"results": [{"userId": 1}]})],
        }
    )
    client, _ = make_client(script)
    user = EvaluationUser(
        name="alice", email="a@example.com", password="Pw-123456!", firstName="A", lastName="B"
    )
    assert client.create_evaluation_users([user])[0].userId == 1


def test_a_penalised_login_waits_and_resends_with_the_ticket() -> None:
    ticket = httpx.Response(200, json={"p-ticket": "LT", "p-time": 4})
    script = Script({LOGIN: [ticket, token_answer()], "/user/list": [httpx.Response(200, json=[])]})
    client, sleeps = make_client(script)
    client.list_users()
    first, second = script.bodies(LOGIN)
    assert second == {**first, "p-ticket": "LT"} and sleeps == [4]


def test_no_secret_reaches_logs_events_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Send known secrets through login, renewal, penalties and errors; grep everything we produced."""
    caplog.set_level(logging.DEBUG)
    now = [NOW]
    events: list[ClientEvent] = []
    errors: list[str] = []
    script = Script(
        {
            LOGIN: [httpx.Response(200, json={"p-ticket": "P", "p-time": 1}), token_answer()],
            RENEW: [httpx.Response(500), token_answer(expires=NOW + 300 * 60)],
            "/user/list": [
                httpx.Response(200, json={"p-ticket": "Q", "p-time": 1}),
                httpx.Response(429),
                httpx.Response(200, json=[]),
            ],
            "/user/modifyemailaddress": [httpx.Response(200, json={"errorText": "bad email"})],
            "/user/createevaluationusers": [
                httpx.Response(200, json={"p-ticket": "C", "p-time": 1, "p-captcha": True})
            ],
        }
    )
    cache = TokenCache(tmp_path)
    client, _ = make_client(script, cache=cache, now=lambda: now[0], on_event=events.append)
    client.list_users()
    now[0] = NOW + 80 * 60
    client.list_users()
    user = EvaluationUser(
        name="alice", email="a@example.com", password=SECRET_PASSWORD, firstName="A", lastName="B"
    )
    for attempt in (
        lambda: client.modify_email_address(1, "x@example.com"),
        lambda: client.create_evaluation_users([user]),
        lambda: Credentials.from_env({"TRADOVATE_PASSWORD": SECRET_PASSWORD}),
    ):
        with pytest.raises(ReconcileError) as info:
            attempt()
        errors.append(str(info.value) + repr(info.value))
    bad_login = Script({LOGIN: [httpx.Response(200, json={"errorText": "Incorrect password"})]})
    with pytest.raises(ApiError) as info:
        make_client(bad_login)[0].list_users()
    errors.append(str(info.value))
    out, err = capsys.readouterr()
    produced = "\n".join(
        [
            out,
            err,
            caplog.text,
            *errors,
            *(repr(e) for e in events),
            repr(client.auth),
            repr(user),
            repr(credentials()),
        ]
    )
    # Every path ran: login, renewal (after a 500), penalties and a retry.
    assert {"login", "renew", "penalty_wait", "retry"} <= {e.kind for e in events}
    assert len(caplog.records) >= 4
    for secret in (SECRET_PASSWORD, SECRET_SEC, SECRET_TOKEN):
        assert secret not in produced


def test_concurrent_calls_share_one_login() -> None:
    script = Script({"/user/list": [httpx.Response(200, json=[])]})
    client, _ = make_client(script)
    threads = [threading.Thread(target=client.list_users) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(script.calls("/user/list")) == 8 and len(script.calls(LOGIN)) == 1


def test_open_client_reads_the_credentials_file_named_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "creds.json"
    file.write_text(json.dumps(ENV))
    file.chmod(0o640)
    monkeypatch.setenv("TRADOVATE_CREDENTIALS_FILE", str(file))
    monkeypatch.delenv("RECONCILE_ENDPOINT", raising=False)
    with pytest.raises(AuthError, match="chmod 600"):
        open_client("demo", settings=Settings.from_environ(os.environ))
    file.chmod(0o600)
    with open_client("demo", settings=Settings.from_environ(os.environ)) as client:
        assert client.auth is not None and client.auth.credentials == credentials()
        assert client.endpoint_label == "https://demo.tradovateapi.com/v1" and client.pacer is not None


def test_a_login_the_api_keeps_refusing_is_given_up_once_for_the_whole_client() -> None:
    from reconcile.errors import LoginUnavailable

    script = Script({LOGIN: [httpx.Response(503)] * 5, "/user/list": [httpx.Response(200, json=[])]})
    client, sleeps = make_client(script)
    with pytest.raises(LoginUnavailable) as info:
        client.list_users()
    assert str(info.value).startswith("login as partner-admin at ")
    assert "failed: the API answered HTTP 503, 5 times in a row. Nothing can be sent without a login" in str(
        info.value
    )
    assert "Wait until the API answers again, then run the command again" in str(info.value)
    assert len(script.calls(LOGIN)) == 5 and len(sleeps) == 4, "transient errors are retried"
    # The next call of the same run does not try (and burn) another login.
    with pytest.raises(LoginUnavailable):
        client.list_users()
    assert len(script.calls(LOGIN)) == 5 and script.calls("/user/list") == []


def test_a_token_lives_on_the_servers_clock_which_may_run_faster_than_ours() -> None:
    # A simulator ten days ahead of us whose hour is 6 of our seconds (time scale 600).
    server_now = NOW + 10 * 86400
    login = token_answer(expires=server_now + 85 * 60)
    login.headers["Date"] = email.utils.formatdate(server_now, usegmt=True)
    renewed = token_answer("tok-renewed", server_now + 2 * 85 * 60)
    script = Script({LOGIN: [login], RENEW: [renewed], "/user/list": [httpx.Response(200, json=[])]})
    clock = [NOW]
    client, _ = make_client(script, now=lambda: clock[0])
    assert client.auth is not None
    client.auth.time_scale, client.auth.renew_margin = 600.0, 15 * 60 / 600
    client.auth.expiry_guard = 60 / 600
    client.list_users()
    assert client.auth.renewal_due_in() == pytest.approx(85 * 60 / 600 - 1.5)
    clock[0] = NOW + 7.5  # 75 of the server's minutes later: due for renewal, not expired
    client.list_users()
    assert (client.auth.logins, client.auth.renewals) == (1, 1)
    assert script.calls("/user/list")[-1].headers["Authorization"] == "Bearer tok-renewed"


def test_the_time_scale_is_refused_for_the_real_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings.from_environ({**ENV, "RECONCILE_TIME_SCALE": "600"})
    for environment in ("live", "demo", "staging"):
        with pytest.raises(ReconcileError, match="RECONCILE_TIME_SCALE=600 is refused for environment"):
            open_client(environment, settings=settings, cache=TokenCache(tmp_path))
    for bad in ("0", "-2", "fast", "inf", "nan"):
        with pytest.raises(ReconcileError, match="is not a positive number"):
            Settings.from_environ({"RECONCILE_TIME_SCALE": bad})
    with open_client("sim", state_dir=tmp_path, settings=settings, cache=TokenCache(tmp_path)) as client:
        assert client.pacer is not None and client.pacer.window == 6.0
