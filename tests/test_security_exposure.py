"""Nothing secret rides in an endpoint URL, and the simulator's admin routes stay off the network."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from apply_support import served_sim
from cli_support import run
from test_planner_support import user, write_manifest

from reconcile.errors import ReconcileError
from reconcile.sim.app import SimApp
from reconcile.sim.server import ADMIN_TOKEN_ENV, check_exposure, serve

SECRET = "Hunter2-in-the-url"


_CREDENTIALS = "holds credentials (user:password@host); remove them"
_QUERY = "the endpoint URL has a query string or fragment"


@pytest.mark.parametrize(
    ("option", "refusal"),
    [
        (("--endpoint", f"https://admin:{SECRET}@demo.tradovateapi.com/v1"), _CREDENTIALS),
        (("--endpoint", f"http://{SECRET}@127.0.0.1:8765/v1"), _CREDENTIALS),
        (
            ("--endpoint", "https://127.0.0.1/v1", "--companion-endpoint", f"https://u:{SECRET}@h.test/v1"),
            _CREDENTIALS,
        ),
        (("--endpoint", f"http://127.0.0.1:8765/v1?token={SECRET}"), _QUERY),
        (("--endpoint", f"http://127.0.0.1:8765/v1#u:{SECRET}"), _QUERY),
        (("--endpoint", f"http://127.0.0.1:8765/v1?{SECRET}#x"), _QUERY),
        (
            ("--endpoint", "https://127.0.0.1/v1", "--companion-endpoint", f"https://h.test/v1?key={SECRET}"),
            _QUERY,
        ),
    ],
    ids=["user-password", "token-only", "companion", "query", "fragment", "both", "companion-query"],
)
def test_an_endpoint_with_a_secret_in_its_url_is_refused_without_echoing_it(
    tmp_path: Path, option: tuple[str, ...], refusal: str
) -> None:
    """Credentials, a query or a fragment in the URL would be written into plans: refused."""
    desk = write_manifest(tmp_path / "desk.yaml", [user("trader001")])
    plan_file = tmp_path / "plan.json"
    result = run("plan", "-f", desk, "--state", tmp_path / "s.json", "--out", plan_file, *option)
    assert result.exit_code == 1, result.output
    assert refusal in result.stderr
    assert SECRET not in result.output and not plan_file.exists()


@pytest.mark.parametrize("variable", ["RECONCILE_ENDPOINT", "RECONCILE_COMPANION_ENDPOINT"])
def test_the_endpoint_variables_refuse_a_query_alike(tmp_path: Path, variable: str) -> None:
    desk = write_manifest(tmp_path / "desk.yaml", [user("trader001")])
    env = {
        "RECONCILE_ENDPOINT": "http://127.0.0.1:8765/v1",
        variable: f"http://127.0.0.1:9/v1?token={SECRET}",
    }
    result = run("plan", "-f", desk, "--state", tmp_path / "s.json", env=env)
    assert result.exit_code == 1 and SECRET not in result.output
    assert "query string or fragment" in result.stderr


def test_the_endpoint_variable_is_checked_alike(tmp_path: Path) -> None:
    desk = write_manifest(tmp_path / "desk.yaml", [user("trader001")])
    result = run(
        "plan", "-f", desk, "--state", tmp_path / "s.json",
        env={"RECONCILE_ENDPOINT": f"https://admin:{SECRET}@demo.tradovateapi.com/v1"},
    )  # fmt: skip
    assert result.exit_code == 1 and SECRET not in result.output
    assert "holds credentials" in result.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "sim.example.com"])
def test_serving_beyond_loopback_needs_an_admin_token(host: str) -> None:
    with pytest.raises(ReconcileError, match=f"refusing to serve the simulator on {host}.*{ADMIN_TOKEN_ENV}"):
        check_exposure(host, None)
    check_exposure(host, "a-long-admin-token")  # allowed: the token guards /_sim/


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]"])
def test_loopback_needs_no_token(host: str) -> None:
    check_exposure(host, None)


def test_sim_serve_on_all_interfaces_is_refused_before_binding(tmp_path: Path) -> None:
    # The refusal comes before any socket: this test never binds 0.0.0.0.
    result = run("sim", "serve", "--host", "0.0.0.0", "--port", "0", "--db", tmp_path / "sim.sqlite",
                 env={ADMIN_TOKEN_ENV: ""})  # fmt: skip
    assert result.exit_code == 1
    assert "refusing to serve the simulator on 0.0.0.0" in result.stderr
    assert "listening" not in result.stdout


def test_with_a_token_every_sim_route_requires_it(sim_app: SimApp, tmp_path: Path) -> None:
    token = "admin-token-for-this-test"
    with serve(sim_app, token=token) as url:
        root = url.removesuffix("/v1")
        for method, route in (("GET", "users"), ("GET", "config"), ("GET", "faults"), ("POST", "reset")):
            assert httpx.request(method, f"{root}/_sim/{route}").status_code == 401
            wrong = httpx.request(method, f"{root}/_sim/{route}", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        good = httpx.get(f"{root}/_sim/users", headers={"Authorization": f"Bearer {token}"})
        assert good.status_code == 200 and good.json() == []
        # The partner API itself keeps its own login.
        assert httpx.get(f"{url}/user/list").status_code == 401

        refused = run("sim", "users", "--url", url, env={ADMIN_TOKEN_ENV: ""})
        assert refused.exit_code == 1 and f"set {ADMIN_TOKEN_ENV}" in refused.stderr
        added = run("sim", "add-user", "outside01", "--email", "o@example.com", "--url", url,
                    env={ADMIN_TOKEN_ENV: token})  # fmt: skip
        assert added.exit_code == 0, added.output
        listed = run("sim", "users", "--url", url, env={ADMIN_TOKEN_ENV: token})
        assert listed.exit_code == 0 and "outside01" in listed.stdout


def _spellings(route: str) -> list[str]:
    """Every way the router reaches ``route``: letter case, the /v1 prefix, doubled and trailing slashes."""
    return [
        route,
        route.upper(),
        route.replace("/_sim/", "/_Sim/"),
        route.title(),
        f"/v1{route}",
        f"/V1{route.upper()}",
        f"/{route}",
        f"{route}/",
    ]


def test_no_spelling_of_an_admin_route_skips_the_token(sim_app: SimApp, tmp_path: Path) -> None:
    # Every route the router sends to an admin handler, in every spelling the router accepts,
    # answers 401 from a token-guarded `sim serve`; and the simulator's data stays as it was.
    token = "admin-token-for-this-test"
    routes = [
        (method, rule.rule)
        for rule in sim_app.url_map.iter_rules()
        if str(rule.endpoint).startswith("_sim_")
        for method in sorted(rule.methods or ()) if method in ("GET", "POST")
    ]  # fmt: skip
    assert len(routes) >= 9, routes
    authorized = {"Authorization": f"Bearer {token}"}
    with served_sim(tmp_path, env={ADMIN_TOKEN_ENV: token}) as url:
        root = url.removesuffix("/v1")
        added = {"name": "keepme01", "email": "k@example.com"}
        assert httpx.post(f"{root}/_sim/users", json=added, headers=authorized).status_code == 200
        for method, route in routes:
            for spelling in _spellings(route):
                answer = httpx.request(method, f"{root}{spelling}", json={})
                assert answer.status_code == 401, (method, spelling, answer.text)
        users = httpx.get(f"{root}/_sim/users", headers=authorized).json()
        assert [u["name"] for u in users] == ["keepme01"]  # no reset, no add got through


@pytest.mark.parametrize("token", ["s3cr3t\r\nX-Leak: 1", "s3cr3t\x01", "s3cr3té"])
def test_an_admin_token_no_header_can_carry_is_refused_without_printing_it(token: str) -> None:
    # httpx's refusal quoted the header value, so the error printed the token itself.
    result = run("sim", "users", "--url", "http://127.0.0.1:9/v1", env={ADMIN_TOKEN_ENV: token})
    assert result.exit_code == 1
    assert f"{ADMIN_TOKEN_ENV} holds a line break" in result.stderr
    assert "s3cr3t" not in result.stderr
