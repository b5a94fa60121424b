"""A throwaway PostgreSQL server for the tests: started once per test process, torn down at exit.

``RECONCILE_TEST_PG_DSN`` points the tests at an existing server instead (a superuser postgresql:// URL:
each test gets a database of its own). Otherwise the server binaries are found on PATH or under
/usr/lib/postgresql (``.ci/postgres.sh`` installs them), a cluster is initialised in a temp dir
with a real password (scram), and started on 127.0.0.1 on a free port. As root, the server runs
as the ``postgres`` OS user (PostgreSQL refuses to run as root).

When no server can be had, PostgreSQL tests skip, except where a server is required, where they
fail: ``RECONCILE_REQUIRE_PG=1`` (set by ``.ci/run``) or ``CI`` set.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

DSN_VARIABLE = "RECONCILE_TEST_PG_DSN"
REQUIRE_VARIABLE = "RECONCILE_REQUIRE_PG"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_VARIABLE) or os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required here ({REQUIRE_VARIABLE} or CI is set): {reason}")
    pytest.skip(f"no PostgreSQL server: {reason}")


def _bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A throwaway cluster; ``durable=False`` turns fsync off (tests), True keeps it (benchmarks)."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.admin_dsn: str | None = None
        self.error: str | None = None
        self._dir: Path | None = None
        self._pg_ctl: list[str] = []

    def start(self) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            self.error = "initdb not found (run .ci/postgres.sh to install PostgreSQL)"
            return
        prefix: list[str] = []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                self.error = "running as root and there is no 'postgres' OS user to run the server"
                return
            prefix = ["runuser", "-u", "postgres", "--"]
        base = Path(tempfile.mkdtemp(prefix="reconcile-pg-"))
        self._dir = base
        password = secrets.token_urlsafe(16)
        (base / "pw").write_text(password + "\n")
        if owner is not None:
            for path in (base, base / "pw"):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        port = _free_port()
        run = {"check": True, "capture_output": True, "text": True}
        try:
            subprocess.run(
                [*prefix, str(bin_dir / "initdb"), "-D", str(base / "data"), "-U", "reconcile",
                 f"--pwfile={base / 'pw'}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync",
                 "--no-instructions"],
                **run,  # type: ignore[call-overload]
            )  # fmt: skip
            options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c max_connections=300"
            if not self.durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            self._pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(base / "data")]
            subprocess.run(
                [*self._pg_ctl, "-o", options, "-l", str(base / "log"), "-w", "-t", "60", "start"],
                **run,  # type: ignore[call-overload]
            )
        except (subprocess.CalledProcessError, OSError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            log = base / "log"
            server_log = log.read_text() if log.exists() else ""
            self.error = f"could not start a cluster: {detail.strip()} {server_log}"
            return
        atexit.register(self.stop)
        self.admin_dsn = f"postgresql://reconcile:{password}@127.0.0.1:{port}/postgres"

    def stop(self) -> None:
        if self._pg_ctl:
            subprocess.run([*self._pg_ctl, "-m", "immediate", "stop"], capture_output=True, check=False)
            self._pg_ctl = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


_cluster: Cluster | None = None


def admin_dsn() -> str:
    """Return a superuser DSN of the test server, starting it on first use (skips when impossible)."""
    global _cluster
    from_env = os.environ.get(DSN_VARIABLE)
    if from_env:
        return from_env
    if _cluster is None:
        _cluster = Cluster()
        _cluster.start()
    if _cluster.admin_dsn is None:
        _unavailable(_cluster.error or "unknown error")
    assert _cluster.admin_dsn is not None
    return _cluster.admin_dsn


def new_database() -> str:
    """Create an empty database on the test server and return its DSN (a URL)."""
    import psycopg

    admin = admin_dsn()
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return urlsplit(admin)._replace(path=f"/{name}").geturl()
