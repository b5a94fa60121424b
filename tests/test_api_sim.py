"""PartnerClient against the real simulator: in-process (contract-checked) and over a loopback socket."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reconcile.api.auth import TokenAuth
from reconcile.api.client import PartnerClient
from reconcile.api.credentials import Credentials
from reconcile.api.models import EvaluationUser
from reconcile.api.token_cache import TokenCache
from reconcile.errors import AuthError, CaptchaRequired, OutcomeUnknown
from reconcile.operations.clients import open_client
from reconcile.operations.settings import Settings
from reconcile.sim import admin
from reconcile.sim.app import SimApp, create_app
from reconcile.sim.config import RateLimit, SimConfig
from reconcile.sim.testing import ContractCheckingTransport, ManualClock, login

BASE = "http://sim.test/v1"
CREATE = "/user/createevaluationusers"


def trader(name: str) -> EvaluationUser:
    return EvaluationUser(
        name=name, email=f"{name}@example.com", password="Trader-Pa55!", firstName="Tess", lastName="Trader"
    )


class Counting(ContractCheckingTransport):
    """The contract-checking transport, also counting requests per path."""

    def __init__(self, app: SimApp) -> None:
        super().__init__(app)
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path.removeprefix("/v1").lower())
        return super().handle_request(request)

    def count(self, path: str) -> int:
        return self.paths.count(path.lower())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def config() -> SimConfig:
    return SimConfig()


@pytest.fixture
def app(config: SimConfig, clock: ManualClock, tmp_path: Path) -> Iterator[SimApp]:
    sim = create_app(config, tmp_path / "sim.sqlite", clock=clock, sleep=clock.advance)
    yield sim
    sim.store.close()


@pytest.fixture
def transport(app: SimApp) -> Iterator[Counting]:
    counting = Counting(app)
    yield counting
    assert not counting.violations


def client_for(
    app: SimApp,
    transport: httpx.BaseTransport,
    clock: ManualClock,
    cache: TokenCache | None = None,
    **kw: object,
) -> PartnerClient:
    creds = Credentials(username=app.config.admin_name, password=app.config.admin_password)
    auth = TokenAuth(creds, endpoint=BASE, cache=cache, wallclock=clock)
    return PartnerClient(
        BASE,
        transport=transport,
        auth=auth,
        sleep=clock.advance,
        wallclock=clock,
        **kw,  # type: ignore[arg-type]
    )


def test_two_clients_share_one_login_through_the_cache(
    app: SimApp, transport: Counting, clock: ManualClock, tmp_path: Path
) -> None:
    cache = TokenCache(tmp_path / "tokens")
    first = client_for(app, transport, clock, cache)
    assert first.create_evaluation_users([trader("alice")])[0].userId is not None
    second = client_for(app, transport, clock, cache)
    found = second.find_user("alice")
    assert found is not None and found.email == "alice@example.com"
    assert transport.count("/auth/accesstokenrequest") == 1


def test_token_is_renewed_before_expiry(app: SimApp, transport: Counting, clock: ManualClock) -> None:
    client = client_for(app, transport, clock)
    client.list_users()
    clock.advance(80 * 60)  # the token lives 85 minutes
    client.list_users()
    clock.advance(80 * 60)  # would be dead without the renewal
    client.list_users()
    assert transport.count("/auth/accesstokenrequest") == 1
    assert transport.count("/auth/renewaccesstoken") == 2


def test_a_session_closed_by_a_third_login_is_replaced(
    app: SimApp, transport: Counting, clock: ManualClock
) -> None:
    client = client_for(app, transport, clock)
    client.list_users()
    with httpx.Client(transport=transport, base_url=BASE) as other:
        login(other, app.config)
        login(other, app.config)  # the third session closes ours
    assert client.list_users() == []
    assert transport.count("/user/list") == 3  # ok, 401, resent
    assert client.auth is not None and client.auth.logins == 2


def test_penalty_ticket_is_survived(app: SimApp, transport: Counting, clock: ManualClock) -> None:
    client = client_for(app, transport, clock)
    admin.arm_fault(app.store, "penalty", CREATE, 1, 30.0)
    start = clock()
    assert client.create_evaluation_users([trader("alice")])[0].userId is not None
    assert transport.count(CREATE) == 2 and clock() - start == pytest.approx(30.0)
    assert [u.name for u in client.list_users()] == ["alice"]


def test_captcha_from_the_simulator_stops(app: SimApp, transport: Counting, clock: ManualClock) -> None:
    client = client_for(app, transport, clock)
    admin.arm_fault(app.store, "captcha", CREATE, 1, 3600.0)
    with pytest.raises(CaptchaRequired, match="A person must"):
        client.create_evaluation_users([trader("alice")])
    assert client.list_users() == []


@pytest.mark.parametrize("config", [SimConfig(rate_limits={CREATE: RateLimit(per_hour=1)})])
def test_rate_limit_429_is_survived(app: SimApp, transport: Counting, clock: ManualClock) -> None:
    client = client_for(app, transport, clock, max_retry_after=4000.0)
    client.create_evaluation_users([trader("alice")])
    client.create_evaluation_users([trader("bobby")])
    assert transport.count(CREATE) == 3  # one 429 in between
    assert sorted(u.name for u in client.list_users()) == ["alice", "bobby"]


def test_drop_after_apply_is_an_unknown_outcome_and_not_resent(
    app: SimApp, transport: Counting, clock: ManualClock
) -> None:
    client = client_for(app, transport, clock)
    admin.arm_fault(app.store, "drop_after_apply", CREATE, 1)
    with pytest.raises(OutcomeUnknown, match="alice"):
        client.create_evaluation_users([trader("alice")])
    assert transport.count(CREATE) == 1
    assert client.find_user("alice") is not None  # it was applied: the lookup settles it


def test_500_on_a_read_is_retried(app: SimApp, transport: Counting, clock: ManualClock) -> None:
    client = client_for(app, transport, clock)
    admin.arm_fault(app.store, "http500", "/user/list", 2)
    assert client.list_users() == []
    assert transport.count("/user/list") == 3


def test_open_client_embedded_sim_needs_no_credentials_and_logs_in_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILE_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("TRADOVATE_USERNAME", "TRADOVATE_PASSWORD", "RECONCILE_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    settings = Settings.from_environ(os.environ)
    with open_client("sim", state_dir=tmp_path / "state", settings=settings) as first:
        assert first.endpoint_label == "sim:embedded"
        first.create_evaluation_users([trader("alice")])
        assert first.auth is not None and first.auth.logins == 1
    with open_client("sim", state_dir=tmp_path / "state", settings=settings) as second:
        assert [u.name for u in second.list_users()] == ["alice"]
        assert second.auth is not None and second.auth.logins == 0
    assert (tmp_path / "state" / "sim.sqlite").exists()


def test_open_client_for_a_real_host_lists_missing_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TRADOVATE_USERNAME", "TRADOVATE_PASSWORD", "TRADOVATE_SEC", "RECONCILE_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(AuthError, match=r"TRADOVATE_USERNAME.*TRADOVATE_PASSWORD"):
        open_client("demo")


def test_over_a_real_socket(
    sim_server: str, sim_app: SimApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TRADOVATE_USERNAME", raising=False)
    with open_client("sim", endpoint=sim_server, settings=Settings.from_environ(os.environ)) as client:
        assert client.endpoint_label == sim_server and client.pacer is not None  # every endpoint is paced
        assert client.create_evaluation_users([trader("alice")])[0].userId is not None
        admin.arm_fault(sim_app.store, "drop_after_apply", CREATE, 1)
        with pytest.raises(OutcomeUnknown):
            client.create_evaluation_users([trader("bobby")])
        admin.arm_fault(sim_app.store, "http500", "/user/find", 1)
        assert client.find_user("bobby") is not None
