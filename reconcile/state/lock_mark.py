"""A per-state mark held on the state folder itself, which no ``rm`` of lock files can remove.

The lock file's ``flock`` goes with its file: ``rm st/*.lock*`` while a run holds it would let a
second run lock a fresh file. So a holder also keeps a read lock (an open-file-description
``fcntl`` lock, Linux) on one byte of the state folder's own descriptor: the byte at
``base(state name) + pid``. A folder cannot be opened for writing, so such locks are shared; the
exclusion comes from the lock file's ``flock`` (only its holder sets a mark) plus a check, before
and after setting the mark, that no other process holds one for the same state. The byte found
names the other holder's pid even when its holder record is gone. The kernel drops the mark when
its holder dies, and states in one folder mark disjoint ranges, so they do not wait on each other.

Where these locks are not available (another OS, a file system that refuses them) the functions
report "no mark" and the lock works as before: a removed lock file is then caught by its holder
record and by the holder's check before each state write.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
from pathlib import Path

_PID_SLOTS = 1 << 22  # Linux pids are below pid_max, at most 2**22
_GETLK = getattr(fcntl, "F_OFD_GETLK", None)
_SETLK = getattr(fcntl, "F_OFD_SETLK", None)


class _Flock(ctypes.Structure):
    _fields_ = [
        ("l_type", ctypes.c_short),
        ("l_whence", ctypes.c_short),
        ("l_start", ctypes.c_int64),
        ("l_len", ctypes.c_int64),
        ("l_pid", ctypes.c_int),
    ]


def _base(name: str) -> int:
    """The first byte of the range that marks state ``name`` (40 bits of hash, then a pid slot)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=5).digest(), "big") * _PID_SLOTS


def _own_byte(name: str) -> int:
    return _base(name) + os.getpid() % _PID_SLOTS


def _fcntl(fd: int, cmd: int, kind: int, start: int, length: int) -> _Flock:
    request = _Flock(kind, os.SEEK_SET, start, length, 0)
    return _Flock.from_buffer_copy(fcntl.fcntl(fd, cmd, bytes(request)))


def open_folder(folder: Path) -> int | None:
    """Open ``folder`` to hold marks on, or None where marks are not available."""
    if _GETLK is None or _SETLK is None:
        return None
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def other_holder(folder_fd: int | None, name: str) -> int | None:
    """The pid marked on state ``name`` by another holder (another descriptor), or None."""
    if folder_fd is None or _GETLK is None:
        return None
    try:
        found = _fcntl(folder_fd, _GETLK, fcntl.F_WRLCK, _base(name), _PID_SLOTS)
    except OSError:  # this file system keeps no such locks: nothing to find
        return None
    return None if found.l_type == fcntl.F_UNLCK else found.l_start - _base(name)


def set_mark(folder_fd: int | None, name: str) -> None:
    """Mark state ``name`` as held by this process (dropped when ``folder_fd`` is closed)."""
    if folder_fd is None or _SETLK is None:
        return
    with contextlib.suppress(OSError):  # unsupported here: the lock file alone guards the state
        _fcntl(folder_fd, _SETLK, fcntl.F_RDLCK, _own_byte(name), 1)


def clear_mark(folder_fd: int | None, name: str) -> None:
    """Drop this process's mark on state ``name`` while keeping ``folder_fd`` open."""
    if folder_fd is None or _SETLK is None:
        return
    with contextlib.suppress(OSError):
        _fcntl(folder_fd, _SETLK, fcntl.F_UNLCK, _own_byte(name), 1)
