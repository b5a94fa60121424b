"""Leadership among ``watch`` processes sharing one state: one leads (acts), the others stand by.

The leader holds a lock of its own beside the state's, for as long as it lives: a PostgreSQL
session advisory lock (its own key, its own connection) or an ``flock`` on ``<state>.watch.lock``.
Either dies with the process, so a standby that asks again within one interval takes over. The
state's own lock is still taken for every cycle, so the leadership only decides who acts; it is
never what keeps two writers apart, and ``plan`` works between cycles.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconcile.errors import StateError
from reconcile.state.file import FileStateStore
from reconcile.state.store import StateStore

if TYPE_CHECKING:
    import psycopg


class Leadership(abc.ABC):
    """Whether this process leads the watches of one state."""

    def __init__(self, where: str) -> None:
        self.where = where
        """What is led, for messages (a path or a masked DSN)."""

    @abc.abstractmethod
    def lead(self) -> bool:
        """Take the leadership if it is free; True while this process holds it."""

    @abc.abstractmethod
    def close(self) -> None:
        """Give the leadership up (a standby takes it at its next try)."""


class FileLeadership(Leadership):
    """An exclusive ``flock`` on ``<state>.watch.lock``, released by the kernel when the holder dies."""

    def __init__(self, state_path: Path) -> None:
        super().__init__(str(state_path))
        self.path = state_path.with_name(state_path.name + ".watch.lock")
        self._fd: int | None = None

    def lead(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class PostgresLeadership(Leadership):
    """A session advisory lock on a key of its own, on a connection kept open while leading."""

    def __init__(self, dsn: str, environment: str, where: str) -> None:
        super().__init__(where)
        self._dsn = dsn
        digest = hashlib.blake2b(f"reconcile:watch:{environment}".encode(), digest_size=8).digest()
        self.key = int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF
        self._conn: psycopg.Connection[Any] | None = None

    def lead(self) -> bool:
        import psycopg

        from reconcile.state.postgres import connect

        if self._conn is not None:
            try:
                # A leader whose connection broke has lost the lock with it: it must ask again.
                self._conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                self.close()
        conn = connect(self._dsn)  # a StateError, without the password, when it cannot
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise StateError(f"asking {self.where} who leads failed: {type(exc).__name__}") from None
        if row and row[0]:
            self._conn = conn
            return True
        conn.close()
        return False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def leadership_for(store: StateStore) -> Leadership:
    """The leadership of the watches of ``store``'s state."""
    if isinstance(store, FileStateStore):
        return FileLeadership(store.path)
    from reconcile.state.postgres import PostgresStateStore

    if isinstance(store, PostgresStateStore):
        return PostgresLeadership(store.dsn, store.environment, store.describe())
    raise StateError(f"{store.describe()}: watch runs only on a state file or PostgreSQL")
