"""The simulator's SQLite store: safe across the threads of a server and across processes.

WAL lets readers in other processes (a ``plan``) see what a writer (an ``apply``) committed
without blocking it; every request runs in one ``BEGIN IMMEDIATE`` transaction, which takes the
write lock up front so two writers queue on the busy timeout instead of failing on a lock
upgrade. Each thread gets its own connection.

Simulated time: ``sim_now = sim_anchor + (clock() - real_anchor) * time_scale``. The anchors
live in the database, so every process agrees on simulated time, and changing ``time_scale``
re-anchors instead of jumping.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconcile.errors import ReconcileError
from reconcile.sim.config import RuntimeSettings

Clock = Callable[[], float]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    org_id INTEGER NOT NULL,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    email TEXT NOT NULL COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    origin TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS users_org_email ON users (org_id, email);
CREATE TABLE IF NOT EXISTS contact_info (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL UNIQUE,
    data TEXT NOT NULL
);
-- The four kinds canceleverything knows: tradovateSubscription, tradingPermission, userPlugin,
-- marketDataSubscription. One table, so cancelling is one statement per flag.
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    ref_id INTEGER,
    account_id INTEGER,
    created_at REAL NOT NULL,
    cancelled_at REAL
);
CREATE INDEX IF NOT EXISTS records_user ON records (user_id, kind);
CREATE TABLE IF NOT EXISTS alert_signals (
    id INTEGER PRIMARY KEY,
    admin_alert_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    created_at REAL NOT NULL,
    completed_at REAL
);
CREATE INDEX IF NOT EXISTS alert_signals_alert ON alert_signals (admin_alert_id);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    login TEXT NOT NULL,
    issued_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    closed_at REAL
);
CREATE TABLE IF NOT EXISTS rate_events (key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS rate_events_key ON rate_events (key, at);
-- Every request refused for being over its hourly limit (HTTP 429 or a penalty ticket).
CREATE TABLE IF NOT EXISTS over_limit (path TEXT NOT NULL, at REAL NOT NULL, answer TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    remaining INTEGER NOT NULL,
    seconds REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS penalties (
    ticket TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    body_digest TEXT NOT NULL,
    not_before REAL NOT NULL,
    captcha INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
-- Evaluation accounts (Stage 4). An account's trading permission is a `records` row of kind
-- tradingPermission with its account_id, so canceleverything revokes it like any permission.
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    org_id INTEGER NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    user_id INTEGER NOT NULL,
    template_account_id INTEGER NOT NULL,
    initial_balance REAL NOT NULL,
    balance REAL NOT NULL,
    risk_category_id INTEGER NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    resets INTEGER NOT NULL DEFAULT 0,
    last_reset_trade_date TEXT,
    UNIQUE (org_id, name)
);
CREATE INDEX IF NOT EXISTS accounts_user ON accounts (user_id);
CREATE INDEX IF NOT EXISTS records_account ON records (account_id);
-- One UserAccountAutoLiq and one AccountRiskStatus per account, each sharing the account's id.
CREATE TABLE IF NOT EXISTS auto_liqs (id INTEGER PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS risk_status (
    id INTEGER PRIMARY KEY,
    admin_action TEXT NOT NULL,
    admin_timestamp REAL,
    reason_code TEXT,
    reason TEXT
);
"""

_DATA_TABLES = (
    "users",
    "contact_info",
    "records",
    "alert_signals",
    "sessions",
    "rate_events",
    "over_limit",
    "faults",
    "penalties",
    "accounts",
    "auto_liqs",
    "risk_status",
)


@dataclass(frozen=True)
class Tx:
    """One open transaction: its connection, the simulated time it runs at, the runtime knobs."""

    db: sqlite3.Connection
    now: float
    settings: RuntimeSettings

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(sql, params).fetchone()
        return row

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        row = self.db.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, params).fetchall()

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Execute one statement and return the new row id."""
        return self.db.execute(sql, params).lastrowid or 0


class Store:
    """The simulator's database file; :meth:`transaction` is the only way in."""

    def __init__(self, path: str | Path, *, clock: Clock | None = None, defaults: RuntimeSettings) -> None:
        self.path = Path(path)
        self.clock: Clock = clock or time.time
        self._defaults = defaults
        self._local = threading.local()
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._storage_errors():
            self._connection().executescript(_SCHEMA)

    @contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """Turn SQLite's failures (full disk, unwritable or damaged file) into an error for people."""
        try:
            yield
        except sqlite3.Error as exc:
            # Without this, a full disk under the embedded simulator reaches the user as a
            # traceback from deep inside a partner-API call.
            raise ReconcileError(
                f"the simulator's database {self.path} failed: {exc}. Free space on that disk, "
                "make the file and its folder writable, or move a damaged file away (the simulator "
                "then starts empty); the embedded simulator keeps it next to the state (--state)"
            ) from None

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), never implicit.
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """Run a block in one write transaction at one simulated instant; roll back on error."""
        with self._storage_errors():
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                settings, now = self._time(db)
                yield Tx(db, now, settings)
            except BaseException:
                if db.in_transaction:  # SQLite may already have rolled back (a full disk does)
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _read_settings(self, db: sqlite3.Connection) -> dict[str, Any]:
        row = db.execute("SELECT value FROM settings WHERE key = 'runtime'").fetchone()
        if row is None:
            real = self.clock()
            value = self._defaults.model_dump() | {"real_anchor": real, "sim_anchor": real}
            db.execute("INSERT INTO settings VALUES ('runtime', ?)", (json.dumps(value),))
            return value
        loaded: dict[str, Any] = json.loads(row[0])
        return loaded

    def _time(self, db: sqlite3.Connection) -> tuple[RuntimeSettings, float]:
        raw = self._read_settings(db)
        settings = RuntimeSettings.model_validate({k: raw[k] for k in RuntimeSettings.model_fields})
        now = raw["sim_anchor"] + (self.clock() - raw["real_anchor"]) * settings.time_scale
        return settings, now

    def update_settings(self, tx: Tx, *, advance_seconds: float = 0.0, **changes: Any) -> RuntimeSettings:
        """Change runtime knobs (re-anchoring simulated time) and optionally jump simulated time ahead."""
        current = RuntimeSettings.model_validate(
            {k: v for k, v in self._read_settings(tx.db).items() if k in RuntimeSettings.model_fields}
        )
        updated = RuntimeSettings.model_validate(current.model_dump() | changes)
        value = updated.model_dump() | {"real_anchor": self.clock(), "sim_anchor": tx.now + advance_seconds}
        tx.db.execute("UPDATE settings SET value = ? WHERE key = 'runtime'", (json.dumps(value),))
        return updated

    def reset(self, settings: RuntimeSettings) -> None:
        """Delete every simulated record and restore ``settings``; the file stays in place."""
        self._defaults = settings
        with self.transaction() as tx:
            for table in _DATA_TABLES:
                tx.db.execute(f"DELETE FROM {table}")
            tx.db.execute("DELETE FROM settings")
            self._read_settings(tx.db)

    def close(self) -> None:
        """Close this thread's connection (other threads' connections close with their thread)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
