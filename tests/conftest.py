"""Shared fixtures. Others may add fixtures here; keep additions additive.

Simulator fixtures (reconcile.sim):

- ``sim_config``     the default organization (matches examples/desk.yaml); override this fixture
                     in a test module to change limits, time scale, ids.
- ``sim_app``        the WSGI app over a fresh SQLite file in ``tmp_path`` (real clock).
- ``sim_transport``  an in-process transport that also checks every answer against the contract;
                     a violation fails the test (at once, and again at teardown if swallowed).
- ``sim_client``     an ``httpx.Client`` on ``sim_transport``, base URL ``http://sim.test/v1``.
- ``sim_token``      an access token of the organization's admin (logged in through ``sim_client``).
- ``sim_server``     the same app on a real loopback server in a thread; yields ``http://127.0.0.1:PORT/v1``.
- ``api``            ``sim_client`` logged in as the organization's admin.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reconcile.sim.app import CHECK_CONTRACT_ENV, SimApp, create_app
from reconcile.sim.config import SimConfig
from reconcile.sim.server import serve
from reconcile.sim.testing import ContractCheckingTransport, login

SIM_BASE_URL = "http://sim.test/v1"


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig()


@pytest.fixture
def sim_app(sim_config: SimConfig, tmp_path: Path) -> Iterator[SimApp]:
    app = create_app(sim_config, tmp_path / "sim.sqlite")
    yield app
    app.store.close()


@pytest.fixture
def sim_transport(sim_app: SimApp) -> Iterator[ContractCheckingTransport]:
    transport = ContractCheckingTransport(sim_app)
    yield transport
    if transport.violations:
        pytest.fail("the simulator broke the contract:\n" + "\n".join(transport.violations))


@pytest.fixture
def sim_client(sim_transport: ContractCheckingTransport) -> Iterator[httpx.Client]:
    with httpx.Client(transport=sim_transport, base_url=SIM_BASE_URL) as client:
        yield client


@pytest.fixture
def sim_token(sim_client: httpx.Client, sim_config: SimConfig) -> str:
    return login(sim_client, sim_config)


@pytest.fixture
def api(sim_client: httpx.Client, sim_token: str) -> httpx.Client:
    sim_client.headers["Authorization"] = f"Bearer {sim_token}"
    return sim_client


@pytest.fixture
def sim_server(sim_app: SimApp) -> Iterator[str]:
    with serve(sim_app) as url:
        yield url


@pytest.fixture(autouse=True)
def _simulator_checks_its_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every simulator of every test (subprocess servers included) checks its answers against the contract."""
    monkeypatch.setenv(CHECK_CONTRACT_ENV, "1")


@pytest.fixture(autouse=True)
def _private_token_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep access tokens of every test (and its subprocesses) out of the user's real cache."""
    monkeypatch.setenv("RECONCILE_CACHE_DIR", str(tmp_path_factory.mktemp("token-cache")))
