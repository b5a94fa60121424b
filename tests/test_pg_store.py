"""The PostgreSQL state store beyond the shared contract: rows, schema versions, lock, secrets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from pg_fixtures import new_database
from poll_support import polling

from reconcile.errors import LockError, StateError
from reconcile.manifest.models import Backend, PostgresBackend
from reconcile.state.file import FileStateStore
from reconcile.state.model import GrantRecord, State, StateBinding, UserRecord
from reconcile.state.open import open_store
from reconcile.state.postgres import SCHEMA_VERSION, PostgresStateStore, mask_dsn, migrate

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


def _user(user_id: int, email: str | None = None) -> UserRecord:
    return UserRecord(
        userId=user_id,
        email=email or f"t{user_id}@example.com",
        firstName="Test",
        lastName="User",
        entitlements={"simplus": GrantRecord(entitlementId=12345, status="granted", updatedAt=NOW)},
        createdAt=NOW,
        updatedAt=NOW,
    )


@pytest.fixture
def dsn() -> str:
    return new_database()


@pytest.fixture
def store(dsn: str) -> Iterator[PostgresStateStore]:
    with PostgresStateStore(dsn, "sim") as s:
        yield s


def _rows(dsn: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


# Rows, not a blob -----------------------------------------------------------------------


def test_state_lives_in_rows_per_user_and_grant(store: PostgresStateStore, dsn: str) -> None:
    state = store.load("sim")
    state.users["trader001"] = _user(1)
    state.users["trader002"] = _user(2)
    saved = store.save(state)
    assert _rows(dsn, "SELECT name, user_id, email FROM reconcile.users ORDER BY name") == [
        ("trader001", 1, "t1@example.com"),
        ("trader002", 2, "t2@example.com"),
    ]
    assert _rows(dsn, "SELECT name, entitlement, status FROM reconcile.grants ORDER BY name") == [
        ("trader001", "simplus", "granted"),
        ("trader002", "simplus", "granted"),
    ]
    assert _rows(dsn, "SELECT environment, lineage, serial FROM reconcile.environments") == [
        ("sim", saved.lineage, 1)
    ]


# () is how an apply saves (no account changed: the batch path); None means "accounts unknown".
ACCOUNTS_NAMED = pytest.mark.parametrize("accounts", [(), None], ids=["accounts-named", "accounts-unknown"])


@ACCOUNTS_NAMED
def test_save_writes_only_the_users_named_as_changed(
    store: PostgresStateStore, dsn: str, accounts: tuple[str, ...] | None
) -> None:
    state = store.load("sim")
    state.users["a"] = _user(1)
    state.users["b"] = _user(2)
    saved = store.save(state)
    saved.users["a"].email = "new-a@example.com"
    # "b" differs too but is not named: a row store must not rewrite (or even read) it.
    saved.users["b"].email = "new-b@example.com"
    after = store.save(saved, changed={"a"}, changed_accounts=accounts)
    assert after.serial == 2
    assert _rows(dsn, "SELECT name, email FROM reconcile.users ORDER BY name") == [
        ("a", "new-a@example.com"),
        ("b", "t2@example.com"),
    ]


@ACCOUNTS_NAMED
def test_unchanged_named_users_do_not_move_the_serial(
    store: PostgresStateStore, accounts: tuple[str, ...] | None
) -> None:
    state = store.load("sim")
    state.users["a"] = _user(1)
    saved = store.save(state)
    assert store.save(saved, changed={"a"}, changed_accounts=accounts).serial == saved.serial


def test_environments_share_a_database_without_touching_each_other(dsn: str) -> None:
    with PostgresStateStore(dsn, "sim") as sim, PostgresStateStore(dsn, "demo") as demo:
        s = sim.load("sim")
        s.users["a"] = _user(1)
        sim.save(s)
        d = demo.load("demo")
        d.users["b"] = _user(2)
        demo.save(d)
        sim_state, demo_state = sim.read(), demo.read()
        assert sim_state is not None and set(sim_state.users) == {"a"}
        assert demo_state is not None and set(demo_state.users) == {"b"}


def test_concurrent_writer_from_the_same_serial_loses_inside_the_transaction(dsn: str) -> None:
    # Both writers passed the header check; only the conditional UPDATE stands between them.
    with PostgresStateStore(dsn, "sim") as one, PostgresStateStore(dsn, "sim") as two:
        base = one.save(one.load("sim"))
        first = base.model_copy(deep=True, update={"serial": base.serial + 1})
        first.users["a"] = _user(1)
        second = base.model_copy(deep=True, update={"serial": base.serial + 1})
        second.users["b"] = _user(2)
        one._write(first, {"a"})
        with pytest.raises(StateError, match="another run wrote it"):
            two._write(second, {"b"})
        stored = one.read()
        assert stored is not None and set(stored.users) == {"a"} and stored.serial == 2


# Schema versions -----------------------------------------------------------------------


def test_migrate_creates_then_finds_nothing_to_do(dsn: str) -> None:
    assert migrate(dsn) == (0, SCHEMA_VERSION)
    assert migrate(dsn) == (SCHEMA_VERSION, SCHEMA_VERSION)


def test_a_newer_schema_is_refused_with_upgrade_advice(dsn: str) -> None:
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE reconcile.schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StateError, match="upgrade reconcile"):
        PostgresStateStore(dsn, "sim").read()
    with pytest.raises(StateError, match="upgrade reconcile"):
        migrate(dsn)


def test_an_older_schema_asks_for_migrate(dsn: str) -> None:
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE reconcile.schema_version SET version = 0")
    with pytest.raises(StateError, match="reconcile state migrate"):
        PostgresStateStore(dsn, "sim").read_header()


def test_a_version_1_database_with_users_migrates_and_keeps_them(dsn: str) -> None:
    from reconcile.state.postgres import MIGRATIONS

    with psycopg.connect(dsn, autocommit=True) as conn:  # a database made by schema version 1
        conn.execute(MIGRATIONS[0])
        conn.execute("INSERT INTO reconcile.schema_version (version, migrated_by) VALUES (1, 'test')")
        conn.execute(
            "INSERT INTO reconcile.environments (environment, format_version, lineage, serial) "
            "VALUES ('sim', 1, 'lineage-1', 4)"
        )
        conn.execute(
            "INSERT INTO reconcile.users (environment, name, user_id, origin, lifecycle, email, "
            "first_name, last_name, created_at, updated_at) VALUES ('sim', 'trader001', 100001, "
            "'created', 'active', 't@example.com', 'Test', 'User', now(), now())"
        )
    with pytest.raises(StateError, match="reconcile state migrate"):
        PostgresStateStore(dsn, "sim").read_header()
    assert migrate(dsn) == (1, SCHEMA_VERSION)
    with PostgresStateStore(dsn, "sim") as store:
        before = store.read()
        assert before is not None and before.binding is None, "written before bindings"
        here = StateBinding(endpoint="https://live.tradovateapi.com/v1", dataAccountId=11111)
        store.bind(here)
        state = store.load("sim")
        assert state.serial == 4 and state.binding == here
        assert state.users["trader001"].userId == 100001 and state.users["trader001"].cancelledOn == []
        state.users["trader001"].cancelledOn = ["https://live.tradovateapi.com/v1"]
        store.save(state, changed={"trader001"})  # the next write binds it
        again = store.read()
    assert again is not None and again.users["trader001"].cancelledOn == ["https://live.tradovateapi.com/v1"]
    assert again.binding == here


def test_a_name_stored_in_two_rows_is_refused_as_corrupt(store: PostgresStateStore, dsn: str) -> None:
    state = store.load("sim")
    state.users["trader001"] = _user(100001)
    store.save(state)
    with psycopg.connect(dsn, autocommit=True) as conn:  # a restore without the primary key
        conn.execute("ALTER TABLE reconcile.grants DROP CONSTRAINT grants_environment_name_fkey")
        conn.execute("ALTER TABLE reconcile.users DROP CONSTRAINT users_pkey")
        conn.execute(
            "INSERT INTO reconcile.users (environment, name, user_id, origin, lifecycle, email, "
            "first_name, last_name, created_at, updated_at) VALUES ('sim', 'trader001', 100002, "
            "'created', 'active', 't@example.com', 'Test', 'User', now(), now())"
        )
    with pytest.raises(StateError) as info:
        store.load("sim")
    message = str(info.value)
    assert "is corrupt: user 'trader001' is recorded 2 times (userId 100001 and 100002)" in message
    assert mask_dsn(dsn) in message


# Secrets --------------------------------------------------------------------------------


def test_describe_masks_the_password(dsn: str) -> None:
    password = str(psycopg.conninfo.conninfo_to_dict(dsn)["password"])
    described = PostgresStateStore(dsn, "sim").describe()
    assert password not in described
    assert "reconcile:***@127.0.0.1" in described and "(environment sim)" in described
    assert mask_dsn("host=db user=u password=hunter22 dbname=x") == "postgresql://u:***@db/x"


def test_connection_errors_never_show_the_password(dsn: str) -> None:
    wrong = dsn.replace("reconcile:", "reconcile:x", 1)
    secret = str(psycopg.conninfo.conninfo_to_dict(wrong)["password"])
    with pytest.raises(StateError) as info:
        PostgresStateStore(wrong, "sim").read()
    assert "cannot connect" in str(info.value) and secret not in str(info.value)
    garbled = "postgresql://u:hunter22@127.0.0.1:1/db?nonsense=1"
    with pytest.raises(StateError) as info:
        PostgresStateStore(garbled, "sim").read()
    assert "hunter22" not in str(info.value)


# Choosing the backend -------------------------------------------------------------------


def test_open_store_precedence_option_then_env_then_manifest(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECONCILE_BACKEND", raising=False)
    from_manifest = Backend(postgres=PostgresBackend(dsnEnv="DESK_DSN"))
    with pytest.raises(StateError, match="DESK_DSN is not set"):
        open_store("sim", manifest_backend=from_manifest, environ=os.environ)
    monkeypatch.setenv("DESK_DSN", dsn)
    chosen = open_store("sim", manifest_backend=from_manifest, environ=os.environ)
    assert isinstance(chosen, PostgresStateStore)
    monkeypatch.setenv("RECONCILE_BACKEND", "mysql://nope")
    with pytest.raises(StateError, match="RECONCILE_BACKEND: unsupported backend"):
        open_store("sim", manifest_backend=from_manifest, environ=os.environ)
    chosen = open_store("sim", backend_url=dsn, manifest_backend=from_manifest, environ=os.environ)
    assert isinstance(chosen, PostgresStateStore)
    with pytest.raises(StateError, match="both --state and a PostgreSQL backend"):
        open_store("sim", backend_url=dsn, state_path=tmp_path / "s.json")
    monkeypatch.delenv("RECONCILE_BACKEND")
    assert isinstance(open_store("sim", state_path=tmp_path / "s.json", environ=os.environ), FileStateStore)


def test_manifest_backend_takes_only_an_env_variable_name() -> None:
    assert Backend.model_validate({"postgres": {"dsnEnv": "DESK_DSN"}}).postgres.dsnEnv == "DESK_DSN"
    for bad in ({"postgres": {"dsn": "postgresql://u:p@h/db"}}, {"postgres": {"dsnEnv": "postgresql://x"}}):
        with pytest.raises(ValueError):
            Backend.model_validate(bad)


# Lock -----------------------------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from reconcile.state.postgres import PostgresStateStore
    store = PostgresStateStore(sys.argv[1], "sim")
    with store.lock(timeout=-1, purpose="apply"):
        print("locked", flush=True)
        time.sleep(600)
    """
)


@pytest.fixture
def holder_process(dsn: str) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "RECONCILE_PIPELINE_ID": "pipeline-4711"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, dsn], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield proc
    proc.kill()
    proc.wait()


def test_busy_lock_names_the_holder_with_its_pipeline(
    store: PostgresStateStore, holder_process: subprocess.Popen[str]
) -> None:
    holder = store.lock_holder()
    assert holder is not None and holder.pid == holder_process.pid and holder.pipeline_id == "pipeline-4711"
    with pytest.raises(LockError) as info, store.lock(timeout=0):
        pass
    message = str(info.value)
    assert f"pid {holder_process.pid}" in message and "pipeline pipeline-4711" in message
    assert "(apply)" in message


def test_waiter_times_out_with_the_holder_named(
    store: PostgresStateStore, holder_process: subprocess.Popen[str]
) -> None:
    told: list[str] = []
    with (
        pytest.raises(LockError, match=f"pid {holder_process.pid}"),
        store.lock(timeout=0.2, on_wait=told.append),
    ):
        pass
    assert len(told) == 1 and f"pid {holder_process.pid}" in told[0]


def test_killed_holder_releases_the_lock_to_a_waiter(
    store: PostgresStateStore, holder_process: subprocess.Popen[str]
) -> None:
    told: list[str] = []
    acquired = threading.Event()
    failure: list[BaseException] = []

    def wait() -> None:
        try:
            with store.lock(timeout=30, on_wait=told.append):
                acquired.set()
        except BaseException as exc:
            failure.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    # The waiter is blocked while the holder lives (it reported whom it waits for).
    for _ in polling("the waiter to report whom it waits for"):
        if told or not waiter.is_alive():
            break
    assert not acquired.is_set()
    os.kill(holder_process.pid, signal.SIGKILL)
    waiter.join(30)
    assert not failure and acquired.is_set(), failure
    assert f"pid {holder_process.pid}" in told[0]
    assert store.lock_holder() is None, "a dead holder's record must not be reported"


def test_lock_is_free_again_after_the_block(store: PostgresStateStore) -> None:
    with store.lock(timeout=0) as holder:
        assert store.lock_holder() == holder
    assert store.lock_holder() is None
    with store.lock(timeout=0):
        pass


_WORKER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from reconcile.state.model import UserRecord
    from reconcile.state.postgres import PostgresStateStore
    dsn, tag, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    now = datetime.now(UTC)
    with PostgresStateStore(dsn, "sim") as store:
        for i in range(rounds):
            with store.lock(timeout=-1):
                state = store.load("sim")
                name = f"{tag}-{i:03d}"
                state.users[name] = UserRecord(userId=len(state.users) + 1, email=f"{name}@example.com",
                    firstName="T", lastName="U", createdAt=now, updatedAt=now)
                store.save(state, changed={name})
    """
)


def test_two_processes_take_turns_and_nothing_interleaves(dsn: str) -> None:
    rounds = 15
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, dsn, tag, str(rounds)], cwd=REPO)
        for tag in ("x", "y")
    ]
    assert [p.wait(120) for p in procs] == [0, 0]
    with PostgresStateStore(dsn, "sim") as store:
        state = store.read()
    assert state is not None
    assert state.serial == 2 * rounds
    assert len(state.users) == 2 * rounds
    # Each save saw every earlier one: user ids were handed out 1..N with no duplicate.
    assert sorted(u.userId for u in state.users.values()) == list(range(1, 2 * rounds + 1))


# Audit ----------------------------------------------------------------------------------


def test_audit_log_appends_and_reads_back_in_order(store: PostgresStateStore) -> None:
    log = store.audit_log(clock=lambda: NOW)
    log.record("create", users=["a", "b"], outcome="ok", request_id="r1")
    log.record("cancel_everything", users=["c"], outcome="failed", detail={"errorText": "nope"})
    assert log.read() == [
        {"time": "2026-11-27T12:00:00.000+00:00", "action": "create", "users": ["a", "b"],
         "outcome": "ok", "request_id": "r1"},
        {"time": "2026-11-27T12:00:00.000+00:00", "action": "cancel_everything", "users": ["c"],
         "outcome": "failed", "detail": {"errorText": "nope"}},
    ]  # fmt: skip
    with PostgresStateStore(store._dsn, "demo") as other:
        assert other.audit_log().read() == []


def test_state_read_back_equals_what_was_saved_field_by_field(store: PostgresStateStore) -> None:
    state = State.empty("sim")
    user = _user(7)
    user.contact = None
    state.users["x"] = user.model_copy(
        update={"lifecycle": "cancelled", "cancelledAt": NOW, "origin": "adopted"}
    )
    saved = store.save(state)
    assert store.read() == saved


# Journal --------------------------------------------------------------------------------


def test_journal_keeps_unsettled_intents_across_connections(store: PostgresStateStore, dsn: str) -> None:
    from reconcile.apply.intents import IntentJournal
    from reconcile.planning.plan import GrantEntitlement

    grant = GrantEntitlement(
        user="a", userId=1, entitlement="simplus", entitlementId=12345, accountId=11111, agreement_gated=True
    )
    journal = IntentJournal(store.journal())
    first = journal.begin("grant", [grant])
    second = journal.begin("grant", [grant.model_copy(update={"user": "b"})])
    journal.settle(first)
    # A run that died: a new connection (the next run) sees what was left open, as it was.
    with PostgresStateStore(dsn, "sim") as next_run:
        reopened = IntentJournal(next_run.journal())
        assert [(i.id, i.users) for i in reopened.unsettled()] == [(second.id, ["b"])]
        assert reopened.unsettled()[0] == second
        reopened.clear()
    assert journal.unsettled() == []
