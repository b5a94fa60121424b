"""Auth, rate limits, penalty tickets and injected faults of the simulator, through HTTP."""

from __future__ import annotations

import email.utils
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sim_support import USER

from reconcile.sim.app import SimApp, create_app
from reconcile.sim.config import SimConfig
from reconcile.sim.testing import ContractCheckingTransport, ManualClock, login

LOGIN = {"name": "partner-admin", "password": "sim-admin-password"}


class Sim:
    """An in-process simulator on a manual clock, with the naps it was asked to take recorded."""

    def __init__(self, tmp_path: Path, config: SimConfig) -> None:
        self.clock = ManualClock()
        self.naps: list[float] = []
        self.app: SimApp = create_app(
            config, tmp_path / "sim.sqlite", clock=self.clock, sleep=self.naps.append
        )
        self.transport = ContractCheckingTransport(self.app)
        self.client = httpx.Client(transport=self.transport, base_url="http://sim.test/v1")

    def authorise(self) -> str:
        token = login(self.client)
        self.client.headers["Authorization"] = f"Bearer {token}"
        return token

    def create(self, user: dict[str, Any] = USER) -> httpx.Response:
        return self.client.post("/user/createevaluationusers", json={"users": [user]})


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    sim = Sim(tmp_path, SimConfig())
    yield sim
    assert sim.transport.violations == []


# --- auth -----------------------------------------------------------------------------------------


def test_calls_without_a_valid_token_get_401(sim: Sim) -> None:
    assert sim.client.get("/user/list").status_code == 401
    response = sim.client.get("/user/list", headers={"Authorization": "Bearer made-up"})
    assert response.status_code == 401 and "not valid" in response.json()["errorText"]


def test_bad_credentials_get_the_apis_error_text(sim: Sim) -> None:
    body = sim.client.post("/auth/accesstokenrequest", json=LOGIN | {"password": "wrong"}).json()
    assert body["errorText"].startswith("Incorrect username or password")
    assert "accessToken" not in body


def test_bad_credentials_are_refused_with_401(sim: Sim) -> None:
    response = sim.client.post("/auth/accesstokenrequest", json=LOGIN | {"password": "wrong"})
    assert response.status_code == 401


def test_a_trader_logs_in_with_their_own_name_and_password_and_only_that(sim: Sim) -> None:
    sim.authorise()
    assert sim.create().json()["results"][0]["userId"]
    own = sim.client.post(
        "/auth/accesstokenrequest", json={"name": USER["name"], "password": USER["password"]}
    )
    assert own.status_code == 200 and own.json()["name"] == USER["name"] and own.json()["accessToken"]
    for wrong in ({"name": USER["name"], "password": "Passw0rd!y"}, {"name": "nobody", "password": "x" * 10}):
        refused = sim.client.post("/auth/accesstokenrequest", json=wrong)
        assert refused.status_code == 401 and "Incorrect username or password" in refused.json()["errorText"]
    # A trader's token is theirs: the partner calls still need the administrator's.
    as_trader = {"Authorization": f"Bearer {own.json()['accessToken']}"}
    assert sim.client.get("/user/list", headers=as_trader).status_code == 403


def test_configured_app_credentials_are_checked(tmp_path: Path) -> None:
    sim = Sim(tmp_path, SimConfig(cid="42", sec="s3cret"))
    body = sim.client.post("/auth/accesstokenrequest", json=LOGIN | {"cid": "42", "sec": "nope"}).json()
    assert "Incorrect" in body["errorText"]
    assert (
        "accessToken"
        in sim.client.post("/auth/accesstokenrequest", json=LOGIN | {"cid": "42", "sec": "s3cret"}).json()
    )


def test_token_expires_at_expiration_time_and_renewal_extends_it(sim: Sim) -> None:
    answer = sim.client.post("/auth/accesstokenrequest", json=LOGIN).json()
    sim.client.headers["Authorization"] = f"Bearer {answer['accessToken']}"
    assert answer["expirationTime"].endswith("Z")
    sim.clock.advance(80 * 60)
    renewed = sim.client.get("/auth/renewaccesstoken").json()
    assert renewed["expirationTime"] > answer["expirationTime"]
    sim.clock.advance(80 * 60)  # 160 min after login: alive only thanks to the renewal
    assert sim.client.get("/auth/me").json()["name"] == "partner-admin"
    sim.clock.advance(6 * 60)
    expired = sim.client.get("/user/list")
    assert expired.status_code == 401 and "expired" in expired.json()["errorText"]


def test_third_login_closes_the_oldest_session(sim: Sim) -> None:
    tokens = [login(sim.client) for _ in range(3)]
    status = [
        sim.client.get("/auth/me", headers={"Authorization": f"Bearer {t}"}).status_code for t in tokens
    ]
    assert status == [401, 200, 200]


# --- rate limits and penalties --------------------------------------------------------------------


def test_login_limit_is_5_per_hour_with_retry_after(sim: Sim) -> None:
    for _ in range(5):
        assert sim.client.post("/auth/accesstokenrequest", json=LOGIN).status_code == 200
    refused = sim.client.post("/auth/accesstokenrequest", json=LOGIN)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    sim.clock.advance(3601)
    assert sim.client.post("/auth/accesstokenrequest", json=LOGIN).status_code == 200
    # Counted, for tests and benchmarks that must prove no request ever was over its limit.
    assert sim.client.get("/_sim/config").json()["overLimit"] == {"/auth/accesstokenrequest 429": 1}


def test_every_answer_is_dated_on_the_simulators_clock(tmp_path: Path) -> None:
    sim = Sim(tmp_path, SimConfig(time_scale=600))
    sim.clock.advance(10)  # 100 simulated minutes
    answer = sim.client.post("/auth/accesstokenrequest", json=LOGIN)
    dated = email.utils.parsedate_to_datetime(answer.headers["Date"]).timestamp()
    assert dated == pytest.approx(sim.clock.now + 100 * 60 - 10, abs=1)


def test_create_limit_is_100_per_hour_and_can_be_switched_off(sim: Sim) -> None:
    sim.authorise()
    for i in range(100):
        user = USER | {"name": f"trader{i:03d}", "email": f"t{i}@example.com"}
        assert sim.create(user).status_code == 200
    assert sim.create().status_code == 429
    sim.client.post("/_sim/config", json={"limits_enabled": False})
    assert sim.create(USER | {"name": "late", "email": "late@example.com"}).status_code == 200


def test_retry_after_is_in_real_seconds_under_time_scale(tmp_path: Path) -> None:
    sim = Sim(tmp_path, SimConfig(time_scale=3600))
    for _ in range(5):
        sim.client.post("/auth/accesstokenrequest", json=LOGIN)
    assert sim.client.post("/auth/accesstokenrequest", json=LOGIN).headers["Retry-After"] == "1"


def test_over_limit_penalty_ticket_then_identical_resend_after_p_time(tmp_path: Path) -> None:
    sim = Sim(tmp_path, SimConfig(penalties_enabled=True, penalty_seconds=30))
    for _ in range(5):
        sim.client.post("/auth/accesstokenrequest", json=LOGIN)
    ticket = sim.client.post("/auth/accesstokenrequest", json=LOGIN).json()
    assert ticket["p-time"] == 30 and "p-captcha" not in ticket
    early = sim.client.post("/auth/accesstokenrequest", json=LOGIN | {"p-ticket": ticket["p-ticket"]}).json()
    assert "p-ticket" in early  # too soon: wait again
    sim.clock.advance(30)
    changed = sim.client.post(
        "/auth/accesstokenrequest", json=LOGIN | {"p-ticket": ticket["p-ticket"], "deviceId": "x"}
    )
    assert changed.status_code == 400
    accepted = sim.client.post(
        "/auth/accesstokenrequest", json=LOGIN | {"p-ticket": ticket["p-ticket"]}
    ).json()
    assert "accessToken" in accepted
    reused = sim.client.post("/auth/accesstokenrequest", json=LOGIN | {"p-ticket": ticket["p-ticket"]})
    assert reused.status_code == 400


# --- faults ---------------------------------------------------------------------------------------


def arm(sim: Sim, kind: str, count: int = 1, seconds: float = 0.0) -> None:
    body = {"kind": kind, "path": "/user/createevaluationusers", "count": count, "seconds": seconds}
    assert sim.client.post("/_sim/faults", json=body).status_code == 200


def users(sim: Sim) -> list[str]:
    return [u["name"] for u in sim.client.get("/_sim/users").json()]


def test_http500_fault_does_not_apply_and_counts_down(sim: Sim) -> None:
    sim.authorise()
    arm(sim, "http500", count=2)
    assert [sim.create().status_code for _ in range(3)] == [500, 500, 200]
    assert users(sim) == ["trader001"]


def test_drop_after_apply_raises_remote_protocol_error_but_the_user_exists(sim: Sim) -> None:
    sim.authorise()
    arm(sim, "drop_after_apply")
    with pytest.raises(httpx.RemoteProtocolError):
        sim.create()
    assert users(sim) == ["trader001"]


def test_malformed_answer_is_applied_and_unparseable(sim: Sim) -> None:
    sim.authorise()
    arm(sim, "malformed")
    response = sim.create()
    with pytest.raises(ValueError):
        response.json()
    assert users(sim) == ["trader001"]


def test_slow_answer_delays_or_times_out(sim: Sim) -> None:
    sim.authorise()
    arm(sim, "slow", seconds=2.0)
    assert sim.create().status_code == 200
    arm(sim, "slow", seconds=9.0)
    with pytest.raises(httpx.ReadTimeout):
        sim.client.post(
            "/user/createevaluationusers",
            json={"users": [USER | {"name": "trader002", "email": "t2@e.com"}]},
            timeout=3.0,
        )
    assert sim.naps == [2.0, 3.0]
    assert users(sim) == ["trader001", "trader002"]


def test_penalty_and_captcha_faults(sim: Sim) -> None:
    sim.authorise()
    arm(sim, "captcha")
    ticket = sim.create().json()
    assert ticket["p-captcha"] is True
    refused = sim.client.post(
        "/user/createevaluationusers", json={"users": [USER], "p-ticket": ticket["p-ticket"]}
    )
    assert refused.status_code == 403 and "captcha" in refused.json()["errorText"]
    arm(sim, "penalty", seconds=5)
    ticket = sim.create().json()
    assert ticket["p-time"] == 5
    sim.clock.advance(5)
    resent = sim.client.post(
        "/user/createevaluationusers", json={"users": [USER], "p-ticket": ticket["p-ticket"]}
    )
    assert "userId" in resent.json()["results"][0]
    assert users(sim) == ["trader001"]


def test_unknown_fault_kind_is_refused(sim: Sim) -> None:
    response = sim.client.post("/_sim/faults", json={"kind": "gremlins", "path": "/user/list"})
    assert response.status_code == 400 and "http500" in response.json()["errorText"]


def test_reset_forgets_everything(sim: Sim) -> None:
    sim.authorise()
    sim.create()
    sim.client.post("/_sim/reset")
    assert users(sim) == []
    assert sim.client.get("/user/list").status_code == 401  # sessions are gone too


# --- the real server ------------------------------------------------------------------------------


def test_real_server_drops_the_connection_after_applying(sim_server: str, sim_app: SimApp) -> None:
    with httpx.Client(base_url=sim_server) as client:
        client.headers["Authorization"] = f"Bearer {login(client)}"
        client.post("/_sim/faults", json={"kind": "drop_after_apply", "path": "/user/createevaluationusers"})
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/user/createevaluationusers", json={"users": [USER]})
        assert client.get("/user/find?name=trader001").status_code == 200


def test_another_process_sees_what_this_one_applied(sim_server: str, sim_app: SimApp) -> None:
    with httpx.Client(base_url=sim_server) as client:
        client.headers["Authorization"] = f"Bearer {login(client)}"
        client.post("/user/createevaluationusers", json={"users": [USER]})
    script = (
        "import sys; from reconcile.sim import admin; from reconcile.sim.app import create_app;"
        "print([u['name'] for u in admin.dump_users(create_app(db_path=sys.argv[1]).store)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(sim_app.store.path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "['trader001']"
