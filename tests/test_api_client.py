"""PartnerClient against scripted answers: penalties, retries, unknown outcomes, business errors."""

from __future__ import annotations

import httpx
import pytest
from api_support import Script, make_client, token_answer

from reconcile.api.events import ClientEvent
from reconcile.api.models import EvaluationUser, UpdateContactInfo
from reconcile.api.penalties import MAX_PENALTIES
from reconcile.errors import ApiError, AuthError, CaptchaRequired, OutcomeUnknown, TransportError
from reconcile.manifest.models import CancelFlags

CREATE = "/user/createevaluationusers"


def users(*names: str) -> list[EvaluationUser]:
    return [
        EvaluationUser(name=n, email=f"{n}@example.com", password="Trader-Pa55!", firstName="A", lastName="B")
        for n in names
    ]


def created(*ids: int) -> httpx.Response:
    return httpx.Response(
        200, json={"errorText": "", "results": [{"userId": i, "errorText": ""} for i in ids]}
    )


def test_create_returns_one_result_per_user_and_a_bad_user_fails_alone() -> None:
    script = Script(
        {CREATE: [httpx.Response(200, json={"results": [{"userId": 7}, {"errorText": "email taken"}]})]}
    )
    client, _ = make_client(script)
    results = client.create_evaluation_users(users("alice", "bob"))
    assert [(r.userId, r.errorText) for r in results] == [(7, None), (None, "email taken")]
    sent = script.bodies(CREATE)[0]["users"][0]
    assert set(sent) == {"name", "email", "password", "firstName", "lastName"}  # no None fields sent


def test_create_reads_the_conformance_page_shape() -> None:
    page = {
        "errorText": "",
        "results": [{"id": 12345, "name": "alice", "status": "Active", "createdAt": "x"}],
    }
    client, _ = make_client(Script({CREATE: [httpx.Response(200, json=page)]}))
    assert client.create_evaluation_users(users("alice"))[0].userId == 12345


def test_penalty_ticket_waits_and_resends_the_identical_body_with_the_ticket() -> None:
    ticket = httpx.Response(200, json={"p-ticket": "T1", "p-time": 7, "p-captcha": False})
    script = Script({CREATE: [ticket, created(1)]})
    events: list[ClientEvent] = []
    client, sleeps = make_client(script, on_event=events.append)
    assert client.create_evaluation_users(users("alice"))[0].userId == 1
    first, second = script.bodies(CREATE)
    assert second == {**first, "p-ticket": "T1"}
    assert sleeps == [7]
    assert [e.kind for e in events if e.kind == "penalty_wait"] == ["penalty_wait"]


def test_captcha_stops_and_says_a_person_must_act() -> None:
    captcha = httpx.Response(200, json={"p-ticket": "T", "p-time": 3600, "p-captcha": True})
    script = Script({CREATE: [captcha]})
    client, sleeps = make_client(script)
    with pytest.raises(CaptchaRequired, match="person must") as info:
        client.create_evaluation_users(users("alice"))
    assert info.value.users == ("alice",)
    assert len(script.calls(CREATE)) == 1 and sleeps == []


def test_login_and_calls_give_up_after_the_same_number_of_penalty_waits() -> None:
    endless = httpx.Response(200, json={"p-ticket": "P", "p-time": 2})
    script = Script({"/user/list": [endless]})
    client, sleeps = make_client(script)
    with pytest.raises(ApiError, match="user/list: still penalised after 5 waits") as info:
        client.list_users()
    assert not isinstance(info.value, AuthError)
    assert sleeps == [2] * MAX_PENALTIES
    assert len(script.calls("/user/list")) == MAX_PENALTIES + 1

    script = Script({"/auth/accesstokenrequest": [endless]})
    client, sleeps = make_client(script)
    with pytest.raises(AuthError, match="accesstokenrequest: still penalised after 5 waits"):
        client.list_users()
    assert sleeps == [2] * MAX_PENALTIES
    assert len(script.calls("/auth/accesstokenrequest")) == MAX_PENALTIES + 1
    assert script.calls("/user/list") == []


def test_429_is_retried_after_retry_after_even_for_creates() -> None:
    limited = httpx.Response(429, headers={"Retry-After": "12"}, json={"errorText": "slow down"})
    script = Script({CREATE: [limited, created(5)]})
    client, sleeps = make_client(script)
    assert client.create_evaluation_users(users("alice"))[0].userId == 5
    assert sleeps == [12.0]
    assert len(script.calls(CREATE)) == 2


def test_a_retry_after_longer_than_the_run_waits_fails_and_says_so() -> None:
    limited = httpx.Response(429, headers={"Retry-After": "3000"})
    script = Script({CREATE: [limited]})
    client, sleeps = make_client(script, max_retry_after=600)
    with pytest.raises(ApiError, match="3000 s"):
        client.create_evaluation_users(users("alice"))
    assert sleeps == [] and len(script.calls(CREATE)) == 1


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, text="<html>oops</html>"),
        httpx.Response(503, json={}),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadTimeout("timed out"),
        httpx.Response(200, text='{"results": [{"userId": 1'),
        httpx.Response(200, text="<html><body>Bad gateway</body></html>"),
    ],
    ids=["500", "503", "dropped", "read-timeout", "truncated-json", "html-page"],
)
def test_a_create_that_may_have_reached_the_server_is_never_resent(failure: object) -> None:
    script = Script({CREATE: [failure, created(1)]})  # type: ignore[list-item]
    client, _ = make_client(script)
    with pytest.raises(OutcomeUnknown) as info:
        client.create_evaluation_users(users("alice", "bob"))
    assert len(script.calls(CREATE)) == 1
    assert info.value.users == ("alice", "bob")
    assert "createevaluationusers for alice, bob" in str(info.value)
    assert "look the users up" in str(info.value)


def test_a_create_the_transport_cannot_write_is_refused_not_left_unknown() -> None:
    # Nothing left for the server to apply: reported as not applied (its intent is settled, nobody
    # is looked up), and not sent again (the same bytes would be refused again).
    script = Script({CREATE: [httpx.LocalProtocolError("Illegal header value b'a\\nb'"), created(1)]})
    client, sleeps = make_client(script)
    with pytest.raises(ApiError) as info:
        client.create_evaluation_users(users("alice", "bob"))
    assert not isinstance(info.value, OutcomeUnknown)
    assert len(script.calls(CREATE)) == 1 and sleeps == []
    assert info.value.users == ("alice", "bob")
    assert "could not be sent" in str(info.value) and "nothing was applied" in str(info.value)


def test_a_create_whose_connection_never_opened_is_retried() -> None:
    script = Script({CREATE: [httpx.ConnectError("refused"), created(3)]})
    client, sleeps = make_client(script)
    assert client.create_evaluation_users(users("alice"))[0].userId == 3
    assert len(script.calls(CREATE)) == 2 and len(sleeps) == 1


def test_fewer_results_than_users_is_an_unknown_outcome_naming_the_users() -> None:
    client, _ = make_client(Script({CREATE: [created(1)]}))
    with pytest.raises(OutcomeUnknown, match="1 results for 2 users") as info:
        client.create_evaluation_users(users("alice", "bob"))
    assert info.value.users == ("alice", "bob")


def test_a_refused_request_without_results_is_an_api_error_with_its_text() -> None:
    refused = httpx.Response(200, json={"errorText": "entitlement 22 cannot be assigned", "results": []})
    client, _ = make_client(Script({CREATE: [refused]}))
    with pytest.raises(ApiError, match="entitlement 22 cannot be assigned") as info:
        client.create_evaluation_users(users("alice"))
    assert not isinstance(info.value, OutcomeUnknown)


def test_500_on_a_read_is_retried_with_backoff() -> None:
    ok = httpx.Response(200, json=[{"id": 1, "name": "alice", "email": "a@example.com", "status": "Active"}])
    script = Script({"/user/list": [httpx.Response(500), httpx.Response(502), ok]})
    client, sleeps = make_client(script)
    assert [u.name for u in client.list_users()] == ["alice"]
    assert len(sleeps) == 2 and all(0 < s <= 30 for s in sleeps)


def test_retries_are_bounded() -> None:
    script = Script({"/user/list": [httpx.Response(500, json={"errorText": "down"})]})
    client, sleeps = make_client(script, max_attempts=3)
    with pytest.raises(TransportError, match="HTTP 500"):
        client.list_users()
    assert len(script.calls("/user/list")) == 3 and len(sleeps) == 2


def test_business_error_raises_with_the_apis_message_and_the_user() -> None:
    answer = httpx.Response(200, json={"errorText": "email already in use", "status": "Active"})
    client, _ = make_client(Script({"/user/modifyemailaddress": [answer]}))
    with pytest.raises(ApiError, match="email already in use") as info:
        client.modify_email_address(7, "x@example.com", user="alice")
    assert info.value.users == ("alice",) and "alice" in str(info.value)


def test_violations_are_reported_too() -> None:
    answer = httpx.Response(200, json={"violations": ["phone is invalid"]})
    contact = UpdateContactInfo(
        userId=7, firstName="A", lastName="B", streetAddress1="1 Main St", city="X", country="FR", phone="1"
    )
    client, _ = make_client(Script({"/contactInfo/updatecontactinfo": [answer]}))
    with pytest.raises(ApiError, match="phone is invalid"):
        client.update_contact_info(contact)


def test_entitlement_refusals_are_returned_not_raised() -> None:
    conflict = httpx.Response(200, json={"errorCode": "ConflictWithExisting", "errorText": "already has it"})
    client, _ = make_client(Script({"/userPlugin/addentitlementsubscription": [conflict]}))
    assert client.add_entitlement_subscription(12345, 7, 11111).errorCode == "ConflictWithExisting"


def test_wrong_types_in_an_answer_raise_a_clear_error() -> None:
    bad = httpx.Response(200, json=[{"id": "not-a-number", "name": "alice", "email": "a@example.com"}])
    client, _ = make_client(Script({"/user/list": [bad]}))
    with pytest.raises(TransportError, match=r"user/list.*0\.id"):
        client.list_users()


def test_unknown_enum_values_do_not_break_reads() -> None:
    user = {"id": 1, "name": "alice", "email": "a@example.com", "status": "SomethingNew", "extra": 1}
    client, _ = make_client(Script({"/user/find": [httpx.Response(200, json=user)]}))
    found = client.find_user("alice")
    assert found is not None and found.status == "SomethingNew"


def test_find_user_returns_none_when_missing() -> None:
    client, _ = make_client(Script({"/user/find": [httpx.Response(404, json={"errorText": "not found"})]}))
    assert client.find_user("nobody") is None


def test_cancel_sends_all_four_flags_explicitly() -> None:
    answer = httpx.Response(
        200,
        json={
            "tradovateSubscriptionIds": [1],
            "userPluginIds": [],
            "marketDataSubscriptionIds": [],
            "tradingPermissionIds": [2],
        },
    )
    script = Script({"/user/canceleverything": [answer]})
    client, _ = make_client(script)
    flags = CancelFlags(userPlugins=False)
    assert client.cancel_everything([7, 8], flags).tradingPermissionIds == [2]
    assert script.bodies("/user/canceleverything") == [
        {
            "userIds": [7, 8],
            "tradovateSubscriptions": True,
            "tradingPermissions": True,
            "userPlugins": False,
            "marketDataSubscriptions": True,
        }
    ]


CANCEL = "/user/canceleverything"
CANCELLED = httpx.Response(
    200,
    json={
        "tradovateSubscriptionIds": [],
        "userPluginIds": [],
        "marketDataSubscriptionIds": [],
        "tradingPermissionIds": [],
    },
)


def test_a_call_takes_at_most_100_users_and_a_bigger_one_is_refused_before_sending() -> None:
    """The partner API takes up to 100 users per call: a cap of 101 passed every test before."""
    script = Script({CREATE: [created(*range(1, 101))], CANCEL: [CANCELLED]})
    client, _ = make_client(script)
    names = [f"user{i:03d}" for i in range(101)]

    assert len(client.create_evaluation_users(users(*names[:100]))) == 100
    client.cancel_everything(list(range(1, 101)), CancelFlags())
    assert [len(b["users"]) for b in script.bodies(CREATE)] == [100]
    assert [len(b["userIds"]) for b in script.bodies(CANCEL)] == [100]

    with pytest.raises(ValueError, match="createevaluationusers takes 1 to 100 users, got 101"):
        client.create_evaluation_users(users(*names))
    with pytest.raises(ValueError, match="canceleverything takes 1 to 100 users, got 101"):
        client.cancel_everything(list(range(1, 102)), CancelFlags())
    with pytest.raises(ValueError, match="takes 1 to 100 users, got 0"):
        client.create_evaluation_users([])
    with pytest.raises(ValueError, match="takes 1 to 100 users, got 0"):
        client.cancel_everything([], CancelFlags())
    assert len(script.bodies(CREATE)) == 1 and len(script.bodies(CANCEL)) == 1  # nothing more sent


def test_a_401_logs_in_again_once_and_resends() -> None:
    script = Script(
        {
            "/auth/accesstokenrequest": [token_answer("first"), token_answer("second")],
            "/user/list": [httpx.Response(401, json={"errorText": "closed"}), httpx.Response(200, json=[])],
        }
    )
    client, _ = make_client(script)
    assert client.list_users() == []
    assert [r.headers["Authorization"] for r in script.calls("/user/list")] == [
        "Bearer first",
        "Bearer second",
    ]
    assert len(script.calls("/auth/accesstokenrequest")) == 2


def test_a_401_after_a_fresh_login_is_an_auth_error() -> None:
    script = Script({"/user/list": [httpx.Response(401, json={"errorText": "no"})]})
    client, _ = make_client(script)
    with pytest.raises(AuthError, match="user/list"):
        client.list_users()
    assert len(script.calls("/user/list")) == 2


def test_request_id_is_kept_for_the_audit_log() -> None:
    script = Script({"/user/list": [httpx.Response(200, json=[], headers={"X-Request-Id": "srv-42"})]})
    client, _ = make_client(script)
    client.list_users()
    assert client.last_request_id == "srv-42"
