"""An exclusive lock on one state, held for a whole plan or apply.

The lock itself is a ``filelock`` lock on ``<state>.lock`` (flock: the kernel drops it when the
holder dies, so a crashed run never leaves the state stuck). Next to it, ``<state>.lock.json``
records who holds it (lock id, pid, host, since, purpose) so a waiter can name the holder. The
record is advisory: it is overwritten by the next holder and removed on release; ``reconcile
state unlock LOCK_ID`` removes one left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import filelock
from pydantic import BaseModel, ConfigDict, ValidationError

from reconcile.errors import LockError
from reconcile.state import atomic_write_text


class LockHolder(BaseModel):
    """Who holds a state lock."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    lock_id: str
    pid: int
    host: str
    since: datetime
    purpose: str

    def describe(self) -> str:
        return (
            f"lock {self.lock_id} held by pid {self.pid} on {self.host} since "
            f"{self.since.isoformat(timespec='seconds')} ({self.purpose})"
        )


def lock_paths(state_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Return (lock file, holder record) for a state file."""
    path = Path(state_path)
    return path.with_name(path.name + ".lock"), path.with_name(path.name + ".lock.json")


def read_holder(state_path: str | os.PathLike[str]) -> LockHolder | None:
    """Return the recorded holder of the state's lock, if a record exists and is readable."""
    _, record = lock_paths(state_path)
    try:
        return LockHolder.model_validate_json(record.read_bytes())
    except (FileNotFoundError, ValidationError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def state_lock(
    state_path: str | os.PathLike[str],
    *,
    timeout: float = 0.0,
    purpose: str = "apply",
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[LockHolder]:
    """Hold the exclusive lock on ``state_path`` for the ``with`` block.

    Waits up to ``timeout`` seconds (0 = fail at once, negative = forever), then raises
    :class:`LockError` naming the holder. ``on_wait`` is told once, with the holder, when the
    lock is busy and the wait begins.
    """
    lock_file, record = lock_paths(state_path)
    lock_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = filelock.FileLock(lock_file, timeout=timeout, thread_local=False)
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if timeout == 0:
                raise
            if on_wait is not None:
                holder = read_holder(state_path)
                who = holder.describe() if holder else "another run (it left no holder record)"
                on_wait(f"waiting for the lock on state {state_path}: {who}")
            lock.acquire()
    except filelock.Timeout:
        holder = read_holder(state_path)
        who = holder.describe() if holder else "another run (it left no holder record)"
        hint = ""
        if holder is not None and holder.host == socket.gethostname() and not _pid_alive(holder.pid):
            hint = f"; pid {holder.pid} is gone, so the lock is held by a process it started"
        raise LockError(
            f"state {state_path} is locked: {who}{hint}. Wait for it to finish, or raise "
            "--lock-timeout to wait longer"
        ) from None
    holder = LockHolder(
        lock_id=str(uuid.uuid4()),
        pid=os.getpid(),
        host=socket.gethostname(),
        since=datetime.now(UTC),
        purpose=purpose,
    )
    try:
        atomic_write_text(record, json.dumps(holder.model_dump(mode="json"), sort_keys=True) + "\n")
        yield holder
    finally:
        current = read_holder(state_path)
        if current is not None and current.lock_id == holder.lock_id:
            with contextlib.suppress(FileNotFoundError):
                record.unlink()
        lock.release()


def unlock(state_path: str | os.PathLike[str], lock_id: str) -> LockHolder:
    """Remove the holder record ``lock_id`` left behind; refuse while its holder still holds the lock."""
    holder = read_holder(state_path)
    if holder is None:
        raise LockError(f"state {state_path} has no lock record; nothing to unlock")
    if holder.lock_id != lock_id:
        raise LockError(
            f"state {state_path} is recorded as {holder.describe()}, not lock {lock_id}; "
            "check the id with `reconcile state show`"
        )
    lock_file, record = lock_paths(state_path)
    probe = filelock.FileLock(lock_file, timeout=0, thread_local=False)
    try:
        probe.acquire()
    except filelock.Timeout:
        raise LockError(
            f"{holder.describe()} is still running and holds the lock; stop that run first "
            "(unlock only removes records left behind by runs that are gone)"
        ) from None
    try:
        with contextlib.suppress(FileNotFoundError):
            record.unlink()
    finally:
        probe.release()
    return holder
