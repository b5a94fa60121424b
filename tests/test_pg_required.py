"""Where a PostgreSQL server is required (.ci/run), its absence fails the PostgreSQL tests, never skips."""

from __future__ import annotations

from pathlib import Path

import pg_fixtures
import pytest


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """No server binaries, no DSN given, no cluster started yet, not in CI."""
    monkeypatch.setattr(pg_fixtures, "_bin_dir", lambda: None)
    monkeypatch.setattr(pg_fixtures, "_cluster", None)
    for variable in (pg_fixtures.DSN_VARIABLE, pg_fixtures.REQUIRE_VARIABLE, "CI"):
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.usefixtures("no_server")
def test_without_a_server_the_postgresql_tests_skip_on_a_developers_machine() -> None:
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL server: initdb not found"):
        pg_fixtures.admin_dsn()


@pytest.mark.usefixtures("no_server")
@pytest.mark.parametrize("variable", ["RECONCILE_REQUIRE_PG", "CI"])
def test_without_a_server_the_postgresql_tests_fail_where_one_is_required(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "1")
    with pytest.raises(pytest.fail.Exception, match=r"PostgreSQL is required here .*initdb not found"):
        pg_fixtures.admin_dsn()


def test_ci_requires_the_server() -> None:
    script = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "export RECONCILE_REQUIRE_PG=1" in script
