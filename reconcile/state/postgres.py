"""Recorded state in PostgreSQL: tables, not a blob (issue 7).

Layout (schema ``reconcile``, version :data:`SCHEMA_VERSION`)::

    schema_version   one row: the schema version this database is at
    environments     one header row per environment: lineage, serial, format version, and
                     the endpoint and partner data account the state is bound to
    users            one row per managed user          (environment, name)
    grants           one row per entitlement of a user (environment, name, entitlement)
    accounts         one row per managed evaluation account (environment, name)
    lock_holders     who holds each environment's advisory lock (host, pid, since, pipeline)
    journal          unsettled intents of API calls    (id, environment, intent_id)
    audit            the audit log, append-only        (id, environment, time, line)

A save writes only the users and accounts it is told changed, and moves the header's serial in the same
transaction with ``UPDATE ... WHERE lineage = $1 AND serial = $old``: of two concurrent writers
based on one serial, exactly one wins. The lock is a session-level advisory lock on its own
connection, so the server drops it the moment the holder's connection dies: a killed pipeline
never leaves a stuck lock.

The DSN's password never leaves this module: messages use :func:`mask_dsn`, and driver errors
are scrubbed before they are wrapped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from reconcile import __version__
from reconcile.bulk import gc_paused, share_fields_sets
from reconcile.errors import LockError, StateError, first_invalid
from reconcile.state.audit import AuditLog, Clock
from reconcile.state.changelog import record_models
from reconcile.state.decode import CancelledSource, read_whole
from reconcile.state.journal import JournalEntry
from reconcile.state.lock import LockHolder
from reconcile.state.model import (
    STATE_FORMAT_VERSION,
    AccountRecord,
    State,
    StateBinding,
    UserRecord,
    refuse_repeated_names,
    refuse_shared_ids,
)
from reconcile.state.sends import KEEP, recent
from reconcile.state.store import GuardedStore, StateStore, moved_under_write

SCHEMA = "reconcile"

_MIGRATION_1 = """
CREATE SCHEMA IF NOT EXISTS reconcile;
CREATE TABLE reconcile.schema_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version integer NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT now(),
    migrated_by text NOT NULL
);
CREATE TABLE reconcile.environments (
    environment text PRIMARY KEY,
    format_version integer NOT NULL,
    lineage text NOT NULL,
    serial bigint NOT NULL CHECK (serial >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE reconcile.users (
    environment text NOT NULL REFERENCES reconcile.environments ON DELETE CASCADE,
    name text NOT NULL,
    user_id bigint NOT NULL,
    origin text NOT NULL CHECK (origin IN ('created', 'adopted')),
    lifecycle text NOT NULL CHECK (lifecycle IN ('active', 'cancelled')),
    email text NOT NULL,
    first_name text NOT NULL,
    last_name text NOT NULL,
    subscription_plan_id integer,
    contact jsonb,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    cancelled_at timestamptz,
    PRIMARY KEY (environment, name)
);
CREATE TABLE reconcile.grants (
    environment text NOT NULL,
    name text NOT NULL,
    entitlement text NOT NULL,
    entitlement_id integer NOT NULL,
    status text NOT NULL CHECK (status IN ('granted', 'awaiting_agreement')),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (environment, name, entitlement),
    FOREIGN KEY (environment, name) REFERENCES reconcile.users ON DELETE CASCADE
);
CREATE TABLE reconcile.lock_holders (
    environment text PRIMARY KEY,
    backend_pid integer NOT NULL,
    lock_id text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    since timestamptz NOT NULL,
    purpose text NOT NULL,
    pipeline_id text
);
CREATE TABLE reconcile.journal (
    id bigserial PRIMARY KEY,
    environment text NOT NULL,
    intent_id text NOT NULL,
    intent jsonb NOT NULL,
    UNIQUE (environment, intent_id)
);
CREATE TABLE reconcile.audit (
    id bigserial PRIMARY KEY,
    environment text NOT NULL,
    line jsonb NOT NULL
);
CREATE INDEX audit_environment_id ON reconcile.audit (environment, id);
"""

_MIGRATION_2 = """
-- The hosts that already cancelled a user (live and demo must both, DESIGN §7).
ALTER TABLE reconcile.users ADD COLUMN cancelled_on text[] NOT NULL DEFAULT '{}';
"""

_MIGRATION_3 = """
-- The organization and endpoint the state belongs to (DESIGN §8.10); NULL until the next write.
ALTER TABLE reconcile.environments ADD COLUMN bound_endpoint text;
ALTER TABLE reconcile.environments ADD COLUMN bound_data_account bigint;
"""

_MIGRATION_4 = """
-- Evaluation accounts (partner Stage 4), keyed by name; ids are checked on read, as users' are.
CREATE TABLE reconcile.accounts (
    environment text NOT NULL REFERENCES reconcile.environments ON DELETE CASCADE,
    name text NOT NULL,
    account_id bigint NOT NULL,
    user_name text NOT NULL,
    user_id bigint NOT NULL,
    origin text NOT NULL CHECK (origin IN ('created', 'adopted')),
    template text,
    trading_permission_id bigint,
    permission text NOT NULL CHECK (permission IN ('active', 'revoked')),
    risk jsonb NOT NULL,
    risk_category text,
    trading text NOT NULL CHECK (trading IN ('active', 'locked')),
    last_reset date,
    reset_unsettled date,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    revoked_at timestamptz,
    PRIMARY KEY (environment, name)
);
"""

_MIGRATION_5 = """
-- When the rate-limited calls of the last hour were sent and answered (reconcile.state.sends).
CREATE TABLE reconcile.sends (
    environment text NOT NULL,
    call text NOT NULL,
    path text NOT NULL,
    sent double precision NOT NULL,
    answered double precision,
    PRIMARY KEY (environment, call)
);
"""

MIGRATIONS: tuple[str, ...] = (_MIGRATION_1, _MIGRATION_2, _MIGRATION_3, _MIGRATION_4, _MIGRATION_5)
"""``MIGRATIONS[i]`` takes a database from schema version ``i`` to ``i + 1``; append only."""

SCHEMA_VERSION = len(MIGRATIONS)

PIPELINE_ID_VARIABLES = ("RECONCILE_PIPELINE_ID", "CI_PIPELINE_ID", "GITHUB_RUN_ID")
"""Environment variables naming the pipeline run that holds a lock, first one set wins."""

# Serializes concurrent `migrate` runs (and first-use schema creation) on one database.
_MIGRATE_LOCK_KEY = 0x7265636F6E63696C  # "reconcil"

_USER_COLUMNS = (
    "environment", "name", "user_id", "origin", "lifecycle", "email", "first_name", "last_name",
    "subscription_plan_id", "contact", "created_at", "updated_at", "cancelled_at", "cancelled_on",
)  # fmt: skip
_GRANT_COLUMNS = ("environment", "name", "entitlement", "entitlement_id", "status", "updated_at")
_ACCOUNT_FIELDS = {
    "accountId": "account_id", "user": "user_name", "userId": "user_id", "origin": "origin",
    "template": "template", "tradingPermissionId": "trading_permission_id", "permission": "permission",
    "risk": "risk", "riskCategory": "risk_category", "trading": "trading", "lastReset": "last_reset",
    "resetUnsettled": "reset_unsettled", "createdAt": "created_at", "updatedAt": "updated_at",
    "revokedAt": "revoked_at",
}  # fmt: skip
"""AccountRecord field → column of reconcile.accounts."""
_ACCOUNT_COLUMNS = ("environment", "name", *_ACCOUNT_FIELDS.values())


def is_postgres_url(url: str) -> bool:
    """True when ``url`` names a PostgreSQL database (``postgres://`` or ``postgresql://``)."""
    return url.startswith(("postgresql://", "postgres://"))


def mask_dsn(dsn: str) -> str:
    """Return ``dsn`` as ``postgresql://user:***@host:port/db``: never the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "postgresql://<unparsable DSN>"
    user = str(params.get("user") or "")
    if user and params.get("password"):
        user += ":***"
    host = str(params.get("host") or "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user + '@' if user else ''}{host}{port}/{params.get('dbname') or ''}"


def _scrub(text: str, dsn: str) -> str:
    """Remove the DSN and its password from a driver message (libpq echoes bad conninfo)."""
    text = text.replace(dsn, mask_dsn(dsn))
    with contextlib.suppress(psycopg.Error):
        password = conninfo_to_dict(dsn).get("password")
        if password:
            text = text.replace(str(password), "***")
    return text.strip()


def advisory_key(environment: str) -> int:
    """The advisory-lock key of an environment: stable across processes, non-negative 63 bits."""
    digest = hashlib.blake2b(f"reconcile:state:{environment}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def pipeline_id_from_environment() -> str | None:
    """The CI pipeline run id, when one of :data:`PIPELINE_ID_VARIABLES` is set."""
    for name in PIPELINE_ID_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value[:200]
    return None


class PostgresLockHolder(LockHolder):
    """Who holds an environment's advisory lock; adds the pipeline run id when one was given."""

    pipeline_id: str | None = None

    def describe(self) -> str:
        pipeline = f", pipeline {self.pipeline_id}" if self.pipeline_id else ""
        return (
            f"lock {self.lock_id} held by pid {self.pid} on {self.host}{pipeline} since "
            f"{self.since.isoformat(timespec='seconds')} ({self.purpose})"
        )


def _read_schema_version(cur: psycopg.Cursor[Any]) -> int | None:
    """Return the schema version, or None when the database has no reconcile schema yet."""
    # A plain scan of pg_tables (not to_regclass, whose catalog cache can miss a table created
    # by a concurrent first use that committed while this session waited for the migrate lock).
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables "
        "WHERE schemaname = 'reconcile' AND tablename = 'schema_version')"
    )
    row = cur.fetchone()
    if row is None or not row[0]:
        return None
    cur.execute("SELECT version FROM reconcile.schema_version")
    row = cur.fetchone()
    return 0 if row is None else int(row[0])


def _too_new(version: int, where: str) -> StateError:
    return StateError(
        f"{where} has state schema version {version}; this reconcile ({__version__}) knows "
        f"versions up to {SCHEMA_VERSION}: upgrade reconcile"
    )


def _migrate(conn: psycopg.Connection[Any], where: str) -> tuple[int, int]:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK_KEY,))
        before = _read_schema_version(cur) or 0
        if before > SCHEMA_VERSION:
            raise _too_new(before, where)
        for script in MIGRATIONS[before:]:
            cur.execute(script)
        if before < SCHEMA_VERSION:
            cur.execute(
                "INSERT INTO reconcile.schema_version (version, migrated_by) VALUES (%s, %s) "
                "ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, "
                "migrated_at = now(), migrated_by = EXCLUDED.migrated_by",
                (SCHEMA_VERSION, f"reconcile {__version__}"),
            )
    return before, SCHEMA_VERSION


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open an autocommit connection in UTC; failures become :class:`StateError` without secrets."""
    params: dict[str, Any] = {"application_name": "reconcile", "connect_timeout": 10}
    with contextlib.suppress(psycopg.Error):
        params = {k: v for k, v in params.items() if k not in conninfo_to_dict(dsn)}
    try:
        conn = psycopg.connect(dsn, autocommit=True, **params, **kwargs)
    except psycopg.Error as exc:
        raise StateError(
            f"cannot connect to PostgreSQL at {mask_dsn(dsn)}: {_scrub(str(exc), dsn)}; check the "
            "DSN (--backend / RECONCILE_BACKEND) and that the server is reachable"
        ) from None
    conn.execute("SET TimeZone = 'UTC'")
    return conn


def migrate(dsn: str) -> tuple[int, int]:
    """Create or upgrade the schema; return (version before, version after)."""
    with connect(dsn) as conn:
        return _migrate(conn, mask_dsn(dsn))


def _user_row(environment: str, name: str, user: UserRecord) -> tuple[Any, ...]:
    contact = Jsonb(user.contact.model_dump(mode="json")) if user.contact is not None else None
    return (
        environment, name, user.userId, user.origin, user.lifecycle, user.email, user.firstName,
        user.lastName, user.tradovateSubscriptionPlanId, contact, user.createdAt, user.updatedAt,
        user.cancelledAt, list(user.cancelledOn),
    )  # fmt: skip


def _account_row(environment: str, name: str, account: AccountRecord) -> tuple[Any, ...]:
    values = {field: getattr(account, field) for field in _ACCOUNT_FIELDS}
    values["risk"] = Jsonb(account.risk)
    return (environment, name, *values.values())


def _copy_batch(state: State, serial: int, names: Sequence[str], accounts: Sequence[str]) -> State:
    """A new State at ``serial`` with fresh copies of the ``names`` users and ``accounts`` (others shared)."""
    users = dict(state.users)
    for name in names:
        if name in users:
            users[name] = users[name].model_copy(deep=True)
    copied = dict(state.accounts)
    for name in accounts:
        if name in copied:
            copied[name] = copied[name].model_copy(deep=True)
    return state.model_copy(update={"serial": serial, "users": users, "accounts": copied})


_NOT_CANCELLED = (  # an anti-join: NOT IN (subquery) may compare every grant with every row
    " AND NOT EXISTS (SELECT 1 FROM reconcile.users u WHERE u.environment = grants.environment"
    " AND u.name = grants.name AND u.lifecycle = 'cancelled')"
)
_LEAN_USER_COLUMNS = tuple(
    c
    if c in ("name", "user_id", "lifecycle")
    else f"CASE WHEN lifecycle = 'cancelled' THEN NULL ELSE {c} END"
    for c in _USER_COLUMNS[1:]
)
"""The users' columns, only name, id and lifecycle for a cancelled user (read whole on first use)."""


def _read_grants(
    cur: psycopg.Cursor[Any], where: str, args: tuple[Any, ...]
) -> dict[str, dict[str, dict[str, Any]]]:
    """The grants of the users ``where`` selects, by user name and entitlement."""
    cur.execute(
        f"SELECT name, entitlement, entitlement_id, status, updated_at FROM reconcile.grants WHERE {where}",
        args,
    )
    grants: dict[str, dict[str, dict[str, Any]]] = {}
    for name, entitlement, entitlement_id, status, updated_at in cur:
        grants.setdefault(name, {})[entitlement] = {
            "entitlementId": entitlement_id,
            "status": status,
            "updatedAt": updated_at,
        }
    return grants


class _CancelledRows(CancelledSource):
    """The cancelled users of one read of a PostgreSQL store: each row is read whole on first use.

    That read is a transaction of its own, after the one that read the rest: a row whose id or
    lifecycle changed in between (a run that wrote since) is refused, so nothing acts on a mix.
    """

    def __init__(self, store: PostgresStateStore) -> None:
        super().__init__(store.describe())
        self._store = store
        self._ahead: dict[int, UserRecord | None] = {}

    def read_ahead(self, indexes: Sequence[int]) -> None:
        store = self._store
        with store._errors("reading"):
            conn = store._connection()
            with conn.transaction(), conn.cursor() as cur:
                found = store._read_users(cur, [self.names[i] for i in indexes])
        self._ahead.update((i, found.get(self.names[i])) for i in indexes)

    def record(self, index: int) -> UserRecord:
        name = self.names[index]
        if index not in self._ahead:
            self.read_ahead([index])
        record = self._ahead.pop(index)
        if record is None or record.userId != self.user_ids[index] or record.lifecycle != "cancelled":
            raise StateError(
                f"{self.where}: user {name!r} changed since this run read the state (another run "
                "wrote it): run the command again"
            )
        return record


class PostgresStateStore(GuardedStore, StateStore):
    """The state of one environment in a PostgreSQL database (see the module docstring)."""

    def __init__(self, dsn: str, environment: str, *, auto_create: bool = True) -> None:
        self._dsn = dsn
        self.environment = environment
        self._auto_create = auto_create
        self._conn: psycopg.Connection[Any] | None = None

    # Connection ---------------------------------------------------------------------------

    def describe(self) -> str:
        return f"{mask_dsn(self._dsn)} (environment {self.environment})"

    @property
    def dsn(self) -> str:
        """The DSN, password and all: for this process's own connections, never for messages."""
        return self._dsn

    def local_dir(self) -> Path:
        """``state``: the state is on the server; the embedded simulator's files stay local."""
        return Path("state")

    def close(self) -> None:
        """Close the data connection (the store reconnects on next use)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PostgresStateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = connect(self._dsn)
        try:
            with conn.cursor() as cur:
                version = _read_schema_version(cur)
            if version is None:
                # A database never used by reconcile gets the current schema; upgrades of an
                # existing one are left to `reconcile state migrate`, run on purpose.
                if not self._auto_create:
                    raise StateError(
                        f"{self.describe()} has no reconcile schema: run `reconcile state migrate` first"
                    )
                version = _migrate(conn, self.describe())[1]
            if version > SCHEMA_VERSION:
                raise _too_new(version, self.describe())
            if version < SCHEMA_VERSION:
                raise StateError(
                    f"{self.describe()} has state schema version {version}, this reconcile needs "
                    f"{SCHEMA_VERSION}: run `reconcile state migrate` first"
                )
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            self.close()
            raise StateError(f"{doing} {self.describe()} failed: {_scrub(str(exc), self._dsn)}") from None

    # Reading ------------------------------------------------------------------------------

    def read_header(self) -> tuple[str, int] | None:
        with self._errors("reading the header of"):
            row = (
                self._connection()
                .execute(
                    "SELECT lineage, serial FROM reconcile.environments WHERE environment = %s",
                    (self.environment,),
                )
                .fetchone()
            )
        return None if row is None else (str(row[0]), int(row[1]))

    def read(self) -> State | None:
        with gc_paused():  # many small records, none cyclic garbage (reconcile.bulk)
            return self._read()

    def _read(self) -> State | None:
        with self._errors("reading"):
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                # One snapshot for header, users and grants, so a concurrent save is seen whole or not at all.
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute(
                    "SELECT format_version, lineage, serial, bound_endpoint, bound_data_account "
                    "FROM reconcile.environments WHERE environment = %s",
                    (self.environment,),
                )
                header = cur.fetchone()
                if header is None:
                    return None
                users = self._read_users(cur, None)
                accounts = self._read_accounts(cur, None)
        format_version, lineage, serial, bound_endpoint, bound_data_account = header
        if format_version not in (1, STATE_FORMAT_VERSION):
            raise StateError(
                f"{self.describe()} holds state format_version {format_version}; this reconcile "
                f"reads versions up to {STATE_FORMAT_VERSION}: upgrade reconcile"
            )
        binding = None
        if bound_endpoint is not None and bound_data_account is not None:
            binding = StateBinding(endpoint=bound_endpoint, dataAccountId=bound_data_account)
        state = State(
            format_version=STATE_FORMAT_VERSION,
            lineage=lineage,
            serial=serial,
            environment=self.environment,
            binding=binding,
            users=users,
            accounts=accounts,
        )
        refuse_shared_ids(state, self.describe())
        share_fields_sets(record_models(users, accounts))
        return state

    def _read_users(self, cur: psycopg.Cursor[Any], names: Sequence[str] | None) -> dict[str, UserRecord]:
        """Return the stored users (all, or only ``names``), grants included, by name.

        Reading them all, a cancelled user's row is read for its id and lifecycle only (all a
        plan needs of it), the rest on first use (:class:`_CancelledRows`).
        """
        lazy = _CancelledRows(self) if names is None else None
        where = "environment = %s" + ("" if names is None else " AND name = ANY(%s)")
        args: tuple[Any, ...] = (self.environment,) if names is None else (self.environment, list(names))
        grants = _read_grants(cur, where + (_NOT_CANCELLED if lazy else ""), args)
        columns = ", ".join(_USER_COLUMNS[1:] if lazy is None else _LEAN_USER_COLUMNS)
        cur.execute(f"SELECT {columns} FROM reconcile.users WHERE {where} ORDER BY name", args)
        users: dict[str, UserRecord] = {}
        repeated: dict[str, list[object]] = {}
        for row in cur:
            name = row[0]
            if name in users:  # only without the primary key (a restored dump, a hand edit)
                repeated.setdefault(name, [users[name].userId]).append(row[1])
            if lazy is not None and row[3] == "cancelled":
                users[name] = lazy.add(name, row[1])
                continue
            data = {
                "userId": row[1], "origin": row[2], "lifecycle": row[3], "email": row[4],
                "firstName": row[5], "lastName": row[6], "tradovateSubscriptionPlanId": row[7],
                "contact": row[8], "createdAt": row[9], "updatedAt": row[10], "cancelledAt": row[11],
                "cancelledOn": list(row[12]), "entitlements": grants.get(name, {}),
            }  # fmt: skip
            try:
                users[name] = UserRecord.model_validate(data)
            except ValidationError as exc:
                raise StateError(
                    f"{self.describe()}: user {name!r} is not a valid record: {first_invalid(exc)}"
                ) from None
        refuse_repeated_names(repeated, self.describe())
        return users

    def _read_accounts(
        self, cur: psycopg.Cursor[Any], names: Sequence[str] | None
    ) -> dict[str, AccountRecord]:
        """Return the stored accounts (all, or only ``names``), by name."""
        where = "environment = %s" + ("" if names is None else " AND name = ANY(%s)")
        args: tuple[Any, ...] = (self.environment,) if names is None else (self.environment, list(names))
        columns = ", ".join(_ACCOUNT_COLUMNS[1:])
        cur.execute(f"SELECT {columns} FROM reconcile.accounts WHERE {where} ORDER BY name", args)
        accounts: dict[str, AccountRecord] = {}
        repeated: dict[str, list[object]] = {}
        for name, *values in cur:
            if name in accounts:  # only without the primary key (a restored dump, a hand edit)
                repeated.setdefault(name, [accounts[name].accountId]).append(values[0])
            try:
                accounts[name] = AccountRecord.model_validate(dict(zip(_ACCOUNT_FIELDS, values, strict=True)))
            except ValidationError as exc:
                raise StateError(
                    f"{self.describe()}: account {name!r} is not a valid record: {first_invalid(exc)}"
                ) from None
        refuse_repeated_names(repeated, self.describe(), kind="account", key="accountId")
        return accounts

    def _differs(
        self, state: State, changed: Collection[str] | None, changed_accounts: Collection[str] | None = None
    ) -> bool:
        if changed is None or changed_accounts is None:
            return super()._differs(state, changed, changed_accounts)
        names, accounts = sorted(changed), sorted(changed_accounts)
        with self._errors("reading"), self._connection().cursor() as cur:
            stored = self._read_users(cur, names)
            stored_accounts = self._read_accounts(cur, accounts)
        return any(stored.get(name) != state.users.get(name) for name in names) or any(
            stored_accounts.get(name) != state.accounts.get(name) for name in accounts
        )

    # Writing ------------------------------------------------------------------------------

    def save(
        self,
        state: State,
        changed: Collection[str] | None = None,
        *,
        changed_accounts: Collection[str] | None = None,
    ) -> State:
        """Persist ``state`` as :meth:`StateStore.save` does, at the cost of the batch alone.

        With ``changed`` and ``changed_accounts`` given, only those users and accounts are
        compared, written and copied: the result is a new State whose other records are the
        argument's own objects (copying every record of a 100k desk would cost more than the
        save). Treat the argument as spent and go on with the result.
        """
        header = self.read_header()
        if changed is None or changed_accounts is None or header != (state.lineage, state.serial):
            # Full saves, first saves, and refusals (with their messages) are the base class's.
            return super().save(state, changed, changed_accounts=changed_accounts)
        names, accounts = sorted(changed), sorted(changed_accounts)
        if not self._differs(state, names, accounts):
            return _copy_batch(state, state.serial, names, accounts)
        new = _copy_batch(state, state.serial + 1, names, accounts)
        self._write(new, names, accounts)
        return new

    def _write(
        self, state: State, changed: Collection[str] | None, changed_accounts: Collection[str] | None = None
    ) -> None:
        self._write_rows(state, changed, changed_accounts, expected=(state.lineage, state.serial - 1))

    def replace(self, state: State, *, expected: tuple[str, int] | None) -> None:
        """Store ``state`` exactly (lineage and serial included), if the header is still ``expected``.

        ``expected`` None means the environment must not exist yet. Used by ``state push``.
        """
        self._write_rows(state, None, None, expected=expected, exact=True)

    def _write_rows(
        self,
        state: State,
        changed: Collection[str] | None,
        changed_accounts: Collection[str] | None,
        *,
        expected: tuple[str, int] | None,
        exact: bool = False,
    ) -> None:
        if state.environment != self.environment:
            raise StateError(
                f"refusing to write state of environment {state.environment!r} into {self.describe()}"
            )
        # The rows written are deleted first: a cancelled user still unread reads its row now (read
        # on first use inside the write, it would wait on this connection's COPY forever).
        read_whole(
            state.users.values() if changed is None else [state.users[n] for n in changed if n in state.users]
        )
        try:
            with self._errors("writing"):
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    if not self._move_header(cur, state, expected, exact):
                        raise _Conflict  # leaves the transaction: nothing of this write is kept
                    names = self._delete_rows(cur, "users", state.users, changed)
                    self._insert_users(cur, state, [n for n in names if n in state.users])
                    accounts = self._delete_rows(cur, "accounts", state.accounts, changed_accounts)
                    self._insert_accounts(cur, state, [n for n in accounts if n in state.accounts])
            if changed is None and len(state.users) + len(state.accounts) > 1000:
                # Fresh statistics after a bulk write, so batch saves keep using the primary keys.
                conn.execute("ANALYZE reconcile.users, reconcile.grants, reconcile.accounts")
        except _Conflict:
            raise moved_under_write(self.describe(), self.read_header(), expected) from None

    def _delete_rows(
        self, cur: psycopg.Cursor[Any], table: str, records: Collection[str], changed: Collection[str] | None
    ) -> list[str]:
        """Delete the stored rows about to be written (all, or the ``changed`` ones); return their names."""
        target = sql.SQL("DELETE FROM {} WHERE environment = %s").format(sql.Identifier(SCHEMA, table))
        if changed is None:
            cur.execute(target, (self.environment,))
            return sorted(records)
        names = sorted(changed)
        cur.execute(target + sql.SQL(" AND name = ANY(%s)"), (self.environment, names))
        return names

    def _move_header(
        self, cur: psycopg.Cursor[Any], state: State, expected: tuple[str, int] | None, exact: bool
    ) -> bool:
        """Set the header to ``state``'s lineage and serial iff it is still ``expected``."""
        bound = state.binding
        endpoint, data_account = (None, None) if bound is None else (bound.endpoint, bound.dataAccountId)
        if expected is not None:
            cur.execute(
                "UPDATE reconcile.environments SET serial = %s, lineage = %s, format_version = %s, "
                "bound_endpoint = %s, bound_data_account = %s, updated_at = now() "
                "WHERE environment = %s AND lineage = %s AND serial = %s",
                (state.serial, state.lineage, STATE_FORMAT_VERSION, endpoint, data_account,
                 self.environment, *expected),
            )  # fmt: skip
            if cur.rowcount == 1:
                return True
            # A first save has serial 1 and nothing stored; anything else had to match.
            if exact or state.serial != 1:
                return False
        cur.execute(
            "INSERT INTO reconcile.environments (environment, format_version, lineage, serial, "
            "bound_endpoint, bound_data_account) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (environment) DO NOTHING",
            (self.environment, STATE_FORMAT_VERSION, state.lineage, state.serial, endpoint, data_account),
        )
        return cur.rowcount == 1

    def _insert_users(self, cur: psycopg.Cursor[Any], state: State, names: list[str]) -> None:
        if not names:
            return
        env = self.environment
        users = sql.SQL("COPY reconcile.users ({}) FROM STDIN").format(
            sql.SQL(", ").join(map(sql.Identifier, _USER_COLUMNS))
        )
        with cur.copy(users) as copy:
            for name in names:
                copy.write_row(_user_row(env, name, state.users[name]))
        grants = sql.SQL("COPY reconcile.grants ({}) FROM STDIN").format(
            sql.SQL(", ").join(map(sql.Identifier, _GRANT_COLUMNS))
        )
        with cur.copy(grants) as copy:
            for name in names:
                for entitlement, grant in sorted(state.users[name].entitlements.items()):
                    row = (env, name, entitlement, grant.entitlementId, grant.status, grant.updatedAt)
                    copy.write_row(row)

    def _insert_accounts(self, cur: psycopg.Cursor[Any], state: State, names: list[str]) -> None:
        if not names:
            return
        accounts = sql.SQL("COPY reconcile.accounts ({}) FROM STDIN").format(
            sql.SQL(", ").join(map(sql.Identifier, _ACCOUNT_COLUMNS))
        )
        with cur.copy(accounts) as copy:
            for name in names:
                copy.write_row(_account_row(self.environment, name, state.accounts[name]))

    # Lock ---------------------------------------------------------------------------------

    def lock_holder(self) -> PostgresLockHolder | None:
        """Return who holds this environment's lock now, or None when nobody does."""
        key = advisory_key(self.environment)
        with self._errors("reading the lock of"):
            return _read_holder(self._connection(), self.environment, key)

    @contextlib.contextmanager
    def lock(
        self,
        *,
        timeout: float = 0.0,
        purpose: str = "apply",
        on_wait: Callable[[str], None] | None = None,
    ) -> Iterator[PostgresLockHolder]:
        """Hold this environment's advisory lock for the ``with`` block.

        Same contract as :func:`reconcile.state.lock.state_lock`: waits up to ``timeout`` seconds
        (0 = fail at once, negative = forever), then raises :class:`LockError` naming the
        holder. ``on_wait`` is told once, with the holder, when the lock is busy.
        """
        key = advisory_key(self.environment)
        conn = connect(self._dsn)
        try:
            # A holder whose host vanishes (no FIN) is noticed by the server in about 30 s.
            for setting, value in (("tcp_keepalives_idle", 10), ("tcp_keepalives_interval", 5),
                                   ("tcp_keepalives_count", 4)):  # fmt: skip
                conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(setting), sql.Literal(value)))
            holder = self._acquire(conn, key, timeout, purpose, on_wait)
            try:
                conn.execute(
                    "INSERT INTO reconcile.lock_holders (environment, backend_pid, lock_id, host, pid, "
                    "since, purpose, pipeline_id) VALUES (%s, pg_backend_pid(), %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (environment) DO UPDATE SET backend_pid = EXCLUDED.backend_pid, "
                    "lock_id = EXCLUDED.lock_id, host = EXCLUDED.host, pid = EXCLUDED.pid, "
                    "since = EXCLUDED.since, purpose = EXCLUDED.purpose, pipeline_id = EXCLUDED.pipeline_id",
                    (self.environment, holder.lock_id, holder.host, holder.pid, holder.since,
                     holder.purpose, holder.pipeline_id),
                )  # fmt: skip
                yield holder
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(
                        "DELETE FROM reconcile.lock_holders WHERE environment = %s AND lock_id = %s",
                        (self.environment, holder.lock_id),
                    )
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        except psycopg.Error as exc:
            raise StateError(f"locking {self.describe()} failed: {_scrub(str(exc), self._dsn)}") from None
        finally:
            conn.close()

    def _acquire(
        self,
        conn: psycopg.Connection[Any],
        key: int,
        timeout: float,
        purpose: str,
        on_wait: Callable[[str], None] | None,
    ) -> PostgresLockHolder:
        self._connection()  # the schema must exist before lock_holders is read or written
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not (row and row[0]):
            holder = _read_holder(conn, self.environment, key)
            if timeout == 0:
                raise self._busy(holder)
            if on_wait is not None:
                who = holder.describe() if holder else "another session (no holder record)"
                on_wait(f"waiting for the lock on {self.describe()}: {who}")
            # A blocking wait is woken by the server the moment the holder's session ends.
            millis = 0 if timeout < 0 else max(1, int(timeout * 1000))
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(millis)))
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            except psycopg.errors.LockNotAvailable:
                raise self._busy(_read_holder(conn, self.environment, key)) from None
            finally:
                conn.execute("SET lock_timeout = 0")
        return PostgresLockHolder(
            lock_id=str(uuid.uuid4()),
            pid=os.getpid(),
            host=socket.gethostname(),
            since=datetime.now(UTC),
            purpose=purpose,
            pipeline_id=pipeline_id_from_environment(),
        )

    def read_lock(
        self, *, timeout: float = 0.0, on_wait: Callable[[str], None] | None = None
    ) -> contextlib.AbstractContextManager[PostgresLockHolder]:
        """Hold the lock as :meth:`lock` does, for a plan (the advisory lock takes no folder)."""
        return self.lock(timeout=timeout, purpose="plan", on_wait=on_wait)

    def unlock(self, lock_id: str) -> LockHolder:
        """Refuse: nothing is ever left behind to remove."""
        raise LockError(
            f"{self.describe()} needs no unlock: its lock is released the moment the holder's "
            "connection closes, and `reconcile state show` names only a holder that is still running"
        )

    def _busy(self, holder: PostgresLockHolder | None) -> LockError:
        who = holder.describe() if holder else "another session (it left no holder record)"
        return LockError(
            f"{self.describe()} is locked: {who}. Wait for it to finish, or raise --lock-timeout "
            "to wait longer; the lock is released the moment that run's connection closes"
        )

    # Journal and audit ----------------------------------------------------------------------

    def journal(self, environment: str | None = None) -> PostgresJournal:
        """The intent journal of this environment (a :class:`reconcile.state.journal.Journal`)."""
        self._check_environment(environment)
        return PostgresJournal(self)

    def audit_log(self, environment: str | None = None, *, clock: Clock | None = None) -> PostgresAuditLog:
        """The audit log of this environment (interface: :class:`reconcile.state.audit.AuditLog`)."""
        self._check_environment(environment)
        return PostgresAuditLog(self, clock=clock)

    def send_log(self, environment: str | None = None) -> PostgresSendLog:
        """The send times of this environment's rate-limited calls (rows of ``sends``)."""
        self._check_environment(environment)
        return PostgresSendLog(self)

    def _check_environment(self, environment: str | None) -> None:
        if environment is not None and environment != self.environment:
            raise StateError(f"{self.describe()} keeps the journal of {self.environment}, not {environment}")


class _Conflict(Exception):
    """The header moved under a write (internal: turned into a StateError with the new header)."""


def _read_holder(conn: psycopg.Connection[Any], environment: str, key: int) -> PostgresLockHolder | None:
    # The record is trusted only while its backend really holds the advisory lock: a killed
    # holder's row stays behind, but its lock does not.
    row = conn.execute(
        "SELECT h.lock_id, h.pid, h.host, h.since, h.purpose, h.pipeline_id "
        "FROM reconcile.lock_holders h WHERE h.environment = %s AND EXISTS ("
        " SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.pid = h.backend_pid AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid"
        " AND l.objsubid = 1)",
        (environment, key >> 32, key & 0xFFFF_FFFF),
    ).fetchone()
    if row is None:
        return None
    lock_id, pid, host, since, purpose, pipeline_id = row
    return PostgresLockHolder(
        lock_id=lock_id, pid=pid, host=host, since=since, purpose=purpose, pipeline_id=pipeline_id
    )


class PostgresAuditLog(AuditLog):
    """Audit lines in the ``audit`` table (interface: :class:`reconcile.state.audit.AuditLog`).

    Each line commits as it is inserted, so :meth:`sync` and :meth:`close` have nothing to do.
    """

    def __init__(self, store: PostgresStateStore, *, clock: Clock | None = None) -> None:
        super().__init__(clock=clock)
        self._store = store

    def _append(self, line: dict[str, Any]) -> None:
        """Insert one line into the ``audit`` table."""
        store = self._store
        with store._errors("appending to the audit log of"):
            store._connection().execute(
                "INSERT INTO reconcile.audit (environment, line) VALUES (%s, %s)",
                (store.environment, Jsonb(line, dumps=_dumps)),
            )

    def sync(self) -> None:
        """Nothing to do: every line committed when it was recorded."""

    def close(self) -> None:
        """Nothing to do: the log holds nothing open beyond the store's connection."""

    def read(self) -> list[dict[str, Any]]:
        """Return every line recorded so far, oldest first."""
        store = self._store
        with store._errors("reading the audit log of"):
            rows = (
                store._connection()
                .execute(
                    "SELECT line FROM reconcile.audit WHERE environment = %s ORDER BY id",
                    (store.environment,),
                )
                .fetchall()
            )
        return [dict(row[0]) for row in rows]


class PostgresJournal:
    """Unsettled intents as rows of the ``journal`` table (a :class:`reconcile.state.journal.Journal`).

    An intent is a row from ``append`` until ``settle`` deletes it; each statement commits on its
    own, so an intent is durable before the call it announces is made.
    """

    def __init__(self, store: PostgresStateStore) -> None:
        self._store = store

    def append(self, entry: JournalEntry) -> None:
        """Insert ``entry`` as a row (committed when this returns)."""
        store = self._store
        with store._errors("recording an intent in the journal of"):
            store._connection().execute(
                "INSERT INTO reconcile.journal (environment, intent_id, intent) VALUES (%s, %s, %s)",
                (store.environment, entry.id, Jsonb(entry.to_json_dict())),
            )

    def settle(self, entry_id: str) -> None:
        """Delete the row of ``entry_id``: its outcome is in state."""
        store = self._store
        with store._errors("settling an intent in the journal of"):
            store._connection().execute(
                "DELETE FROM reconcile.journal WHERE environment = %s AND intent_id = %s",
                (store.environment, entry_id),
            )

    def clear(self) -> None:
        """Forget every intent of this environment."""
        store = self._store
        with store._errors("clearing the journal of"):
            store._connection().execute(
                "DELETE FROM reconcile.journal WHERE environment = %s", (store.environment,)
            )

    def unsettled(self) -> list[JournalEntry]:
        """Return the intents not settled yet, oldest first."""
        store = self._store
        with store._errors("reading the journal of"):
            rows = (
                store._connection()
                .execute(
                    "SELECT intent_id, intent FROM reconcile.journal WHERE environment = %s ORDER BY id",
                    (store.environment,),
                )
                .fetchall()
            )
        entries = []
        for intent_id, data in rows:
            try:
                entries.append(JournalEntry.from_json_dict(dict(data)))
            except ValueError as exc:
                raise StateError(
                    f"journal of {store.describe()}: intent {intent_id} is not a valid entry: {exc}"
                ) from None
        return entries


class PostgresSendLog:
    """Send times as rows of the ``sends`` table (a :class:`reconcile.api.pacing.SendLog`).

    Each statement commits on its own, so a call is recorded before it is sent.
    """

    def __init__(self, store: PostgresStateStore) -> None:
        self._store = store

    def load(self, now: float) -> list[tuple[str, float]]:
        """The calls of the last hour (older rows are deleted); unanswered ones count from ``now`` on."""
        store = self._store
        with store._errors("reading the send times of"):
            conn = store._connection()
            # The run that sent them is gone (this one holds the lock), or the clock was set back
            # since: they count from now on.
            conn.execute(
                "UPDATE reconcile.sends SET answered = %s "
                "WHERE environment = %s AND (answered IS NULL OR answered > %s)",
                (now, store.environment, now),
            )
            conn.execute(
                "DELETE FROM reconcile.sends WHERE environment = %s AND answered <= %s",
                (store.environment, now - KEEP),
            )
            rows = conn.execute(
                "SELECT path, sent, answered FROM reconcile.sends WHERE environment = %s ORDER BY sent",
                (store.environment,),
            ).fetchall()
        return recent(((p, s, a) for p, s, a in rows), now)

    def sent(self, key: str, path: str, at: float) -> None:
        """Insert the row of call ``key`` (committed before the call is sent)."""
        store = self._store
        with store._errors("recording a send time in"):
            store._connection().execute(
                "INSERT INTO reconcile.sends (environment, call, path, sent) VALUES (%s, %s, %s, %s)",
                (store.environment, key, path, at),
            )

    def answered(self, key: str, at: float) -> None:
        """Record when call ``key`` was answered."""
        store = self._store
        with store._errors("recording a send time in"):
            store._connection().execute(
                "UPDATE reconcile.sends SET answered = %s WHERE environment = %s AND call = %s",
                (at, store.environment, key),
            )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
