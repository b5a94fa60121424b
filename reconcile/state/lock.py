"""An exclusive lock on one state, held for a whole plan or apply.

The lock is a ``flock`` on ``<state>.lock``: the kernel drops it when the holder dies, so a
crashed run never leaves the state stuck. The file exists only while someone holds it (the
holder removes it on release; a crashed holder's is taken over and removed by the next run),
so no empty ``*.lock`` is left beside the state. Next to it, ``<state>.lock.json`` records who
holds it (lock id, pid, host, since, purpose) so a waiter can name the holder; ``reconcile
state unlock LOCK_ID`` removes one left behind.

A lock file removed by hand while held (a stray ``rm``, even of both files) must not let a second
run in: the holder also keeps a mark on the state folder itself (:mod:`reconcile.state.lock_mark`),
which no removal of files can take away, and a run finding another's mark does not start. Where
such marks are not available, a run that takes the lock checks the holder record (a live holder on
this host means its file was removed). The holder checks its file before every state write
(:func:`check_held`), taking the lock again on a new file, and writing its record again, when they
vanished.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from reconcile.errors import LockError, StateError, describe_os_error
from reconcile.fsutil import atomic_write_text
from reconcile.state import lock_mark

_POLL_SECONDS = 0.05


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


@dataclass
class _Hold:
    """A lock this process holds: the flock's descriptor, the folder it marks, its record."""

    fd: int
    folder: int | None
    holder: LockHolder


# Lock file (absolute) -> the lock this process holds on it.
_HELD: dict[Path, _Hold] = {}


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


def _is_at(fd: int, path: Path) -> bool:
    """True when ``path`` still names the file open on ``fd`` (not removed, not replaced)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _try_flock(lock_file: Path, purpose: str = "apply") -> int | None:
    """Take the flock on ``lock_file`` without waiting; return its descriptor, or None when busy."""
    while True:
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            hint = " (a plan can read state without the lock: --lock=false)" if purpose == "plan" else ""
            raise StateError(describe_os_error(exc, "create the lock file", lock_file) + hint) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _is_at(fd, lock_file):
            return fd
        # Removed (a holder releasing) or replaced between open and flock: lock what is there now.
        os.close(fd)


def _release(fd: int, lock_file: Path) -> None:
    """Remove the lock file if it is still this one (under the flock), then drop the flock."""
    try:
        if _is_at(fd, lock_file):
            with contextlib.suppress(FileNotFoundError):
                lock_file.unlink()
    finally:
        os.close(fd)


def _try_acquire(lock_file: Path, folder: int | None, purpose: str) -> int | None:
    """Take the flock and the folder mark without waiting; return the flock's descriptor, or None."""
    if lock_mark.other_holder(folder, lock_file.name) is not None:
        return None  # a live run holds this state, whatever became of its files
    fd = _try_flock(lock_file, purpose)
    if fd is None:
        return None
    lock_mark.set_mark(folder, lock_file.name)
    if lock_mark.other_holder(folder, lock_file.name) is not None:
        # Another run marked it after our first look (its file removed under it): back off.
        lock_mark.clear_mark(folder, lock_file.name)
        _release(fd, lock_file)
        return None
    return fd


def _who(state_path: str | os.PathLike[str], marked: int | None) -> str:
    """Name the holder: by its record, else by the pid its folder mark carries."""
    holder = read_holder(state_path)
    if holder is not None:
        return holder.describe()
    if marked is not None:
        return f"pid {marked} on {socket.gethostname()} (its holder record was removed)"
    return "another run (it left no holder record)"


def _stray(state_path: str | os.PathLike[str], removed: str, who: str, pid: int, hint: str = "") -> LockError:
    """Refuse to start beside a live run whose lock files were removed."""
    return LockError(
        f"state {state_path}: {removed} removed while {who} was running; refusing to start a "
        f"second run beside it. Wait for pid {pid} to finish{hint}"
    )


def _busy(state_path: str | os.PathLike[str], lock_file: Path, folder: int | None) -> LockError:
    marked = lock_mark.other_holder(folder, lock_file.name)
    holder = read_holder(state_path)
    if marked is not None and not lock_file.exists():
        if holder is not None:
            return _stray(state_path, f"its lock file {lock_file.name} was", holder.describe(), marked)
        removed = f"its lock files {lock_file.name} and {lock_paths(state_path)[1].name} were"
        return _stray(state_path, removed, f"pid {marked} on {socket.gethostname()}", marked)
    hint = ""
    if holder is not None and holder.host == socket.gethostname() and not _pid_alive(holder.pid):
        hint = f"; pid {holder.pid} is gone, so the lock is held by a process it started"
    return LockError(
        f"state {state_path} is locked: {_who(state_path, marked)}{hint}. Wait for it to finish, "
        "or raise --lock-timeout to wait longer"
    )


def _live_other_holder(state_path: str | os.PathLike[str]) -> LockHolder | None:
    """The recorded holder when it is another process still running on this host."""
    holder = read_holder(state_path)
    if holder is None or holder.host != socket.gethostname() or holder.pid == os.getpid():
        return None
    return holder if _pid_alive(holder.pid) else None


def _write_record(record: Path, holder: LockHolder) -> None:
    try:
        atomic_write_text(record, json.dumps(holder.model_dump(mode="json"), sort_keys=True) + "\n")
    except OSError as exc:
        raise StateError(describe_os_error(exc, "record the lock holder in", record)) from None


def _acquire_waiting(
    state_path: str | os.PathLike[str],
    lock_file: Path,
    folder: int | None,
    timeout: float,
    purpose: str,
    on_wait: Callable[[str], None] | None,
) -> int:
    """Take the lock on ``lock_file``, waiting as :func:`state_lock` says; return the flock's descriptor."""
    fd = _try_acquire(lock_file, folder, purpose)
    if fd is not None:
        return fd
    if timeout == 0:
        raise _busy(state_path, lock_file, folder)
    if on_wait is not None:
        who = _who(state_path, lock_mark.other_holder(folder, lock_file.name))
        on_wait(f"waiting for the lock on state {state_path}: {who}")
    deadline = None if timeout < 0 else time.monotonic() + timeout
    while fd is None:
        if deadline is not None and time.monotonic() >= deadline:
            raise _busy(state_path, lock_file, folder)
        time.sleep(_POLL_SECONDS)
        fd = _try_acquire(lock_file, folder, purpose)
    return fd


def _record_holder(
    state_path: str | os.PathLike[str], lock_file: Path, record: Path, purpose: str
) -> LockHolder:
    """Under a fresh flock: refuse when a live run lost its lock file, else record this process."""
    stray = _live_other_holder(state_path)
    if stray is not None:
        hint = (
            f" (if it is no reconcile run, remove the record with `reconcile state unlock {stray.lock_id}`)"
        )
        removed = f"its lock file {lock_file.name} was"
        raise _stray(state_path, removed, stray.describe(), stray.pid, hint)
    holder = LockHolder(
        lock_id=str(uuid.uuid4()),
        pid=os.getpid(),
        host=socket.gethostname(),
        since=datetime.now(UTC),
        purpose=purpose,
    )
    _write_record(record, holder)
    return holder


def _take(
    state_path: str | os.PathLike[str], timeout: float, purpose: str, on_wait: Callable[[str], None] | None
) -> _Hold:
    """Take the lock on ``state_path`` and record this process as its holder."""
    lock_file, record = lock_paths(state_path)
    lock_file = lock_file.absolute()
    try:
        lock_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(describe_os_error(exc, "create the state folder", lock_file.parent)) from None
    folder = lock_mark.open_folder(lock_file.parent)
    try:
        fd = _acquire_waiting(state_path, lock_file, folder, timeout, purpose, on_wait)
        try:
            return _Hold(fd, folder, _record_holder(state_path, lock_file, record, purpose))
        except BaseException:
            _release(fd, lock_file)
            raise
    except BaseException:
        if folder is not None:
            os.close(folder)
        raise


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
    lock_file = lock_file.absolute()
    hold = _take(state_path, timeout, purpose, on_wait)
    _HELD[lock_file] = hold
    try:
        yield hold.holder
    finally:
        _HELD.pop(lock_file, None)
        try:
            current = read_holder(state_path)
            if current is not None and current.lock_id == hold.holder.lock_id:
                with contextlib.suppress(FileNotFoundError):
                    record.unlink()
        finally:
            try:
                _release(hold.fd, lock_file)
            finally:  # the mark goes last, so no one finds the state free while the file is ours
                if hold.folder is not None:
                    os.close(hold.folder)


def check_held(state_path: str | os.PathLike[str]) -> None:
    """Before writing state: if this process holds its lock, make sure the lock file is still there.

    A lock file removed by hand is locked again at once (on a new file) and the holder record
    written again; when another run got there first, raise :class:`LockError` rather than write
    beside it.
    """
    lock_file, record = lock_paths(state_path)
    lock_file = lock_file.absolute()
    hold = _HELD.get(lock_file)
    if hold is None or _is_at(hold.fd, lock_file):
        return
    again = _try_flock(lock_file)
    if again is None:
        other = read_holder(state_path)
        who = other.describe() if other else "no holder record"
        raise LockError(
            f"the lock file {lock_file} of state {state_path} was removed during this run and "
            f"another run holds it now ({who}); this run stops before writing state beside it. "
            "The journal keeps what it sent: apply again once that run is done, and it settles them"
        )
    os.close(hold.fd)
    hold.fd = again
    if read_holder(state_path) != hold.holder:  # removed with it: `state show` names us again
        _write_record(record, hold.holder)


def _marked_by_another(lock_file: Path) -> int | None:
    """The pid of another process's mark on this state's folder, if any."""
    folder = lock_mark.open_folder(lock_file.parent)
    try:
        return lock_mark.other_holder(folder, lock_file.name)
    finally:
        if folder is not None:
            os.close(folder)


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
    probe = None if _marked_by_another(lock_file.absolute()) is not None else _try_flock(lock_file)
    if probe is None:
        raise LockError(
            f"{holder.describe()} is still running and holds the lock; stop that run first "
            "(unlock only removes records left behind by runs that are gone)"
        )
    try:
        with contextlib.suppress(FileNotFoundError):
            record.unlink()
    finally:
        _release(probe, lock_file)
    return holder
