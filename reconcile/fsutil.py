"""Files that are always whole: the one place that writes state, plans, caches and locks to disk."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` atomically: temporary file, fsync, rename, fsync the folder."""
    # A folder made here holds private files (state, plans): only its owner may enter it.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def append_whole(fd: int, data: bytes) -> None:
    """Append all of ``data`` at the end of ``fd`` (O_APPEND, or placed there; one writer), or none of it.

    ``os.write`` may write part of it (a disk filling up): the rest is written after it. A write
    that fails on the way cuts the file back to where it was, so no torn line is left for the
    next append to follow (a journal intent must be whole before its call is sent).
    """
    size = os.fstat(fd).st_size
    try:
        written = os.write(fd, data)
        while written < len(data):
            written += os.write(fd, data[written:])
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise
