"""Generated passwords: every one that was set is in exactly one named file; none that wasn't is.

A generated password is a *candidate* until its create's outcome is known. Before the create call
the candidates are appended (fsynced, mode 0600) to a pending file next to the
``--generated-passwords`` file, ``FILE.pending``, keyed by the journal intent (which names the
pending file, so a later run finds it; it is never next to the state, which may be committed).
When the outcome is known, the
password of each user the call created (or that a look-up adopted) is appended to that file,
and every decided candidate leaves the pending file; the password of a create that definitely
failed is dropped. A run that dies in between leaves its candidates pending with its journal
intent; the next apply settles the intent and moves the passwords of the users it adopts into
the file the dead run was given, and says so. Moving is idempotent (a line already in the file is
not written twice), so a kill at any point leaves no password twice and no stale password.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from reconcile.errors import ReconcileError, StateError
from reconcile.fsutil import append_whole, fsync_dir
from reconcile.manifest.passwords import GENERATED_HEADER


def pending_path_for(target: Path) -> Path:
    """``FILE.pending``: where the candidates meant for ``FILE`` wait."""
    return target.absolute().with_name(target.name + ".pending")


def _symlink_refused(path: Path) -> ReconcileError:
    return ReconcileError(
        f"{path} is a symbolic link; generated passwords are written only to a regular file "
        "(mode 0600), never through a link, which could send them anywhere: remove the link, or "
        "name another file with --generated-passwords"
    )


def refuse_symlink(path: Path) -> None:
    """Refuse ``path`` when it is a symbolic link (dangling or not)."""
    if path.is_symlink():
        raise _symlink_refused(path)


def _open_file(path: Path, flags: int) -> int:
    """``os.open`` of a password file, refusing a symbolic link at ``path`` (no check-then-use race)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _symlink_refused(path) from None
        raise


def _read_text(path: Path) -> str | None:
    """The text of a password file, None when there is none; a symbolic link is refused."""
    try:
        fd = _open_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, encoding="utf-8") as fh:
        return fh.read()


class PasswordLedger:
    """Candidates per journal intent, and the files confirmed passwords went to in this process."""

    def __init__(self, target: Path | None = None, on_new_file: Callable[[Path], None] | None = None) -> None:
        self.target = target.absolute() if target is not None else None
        """Where this run's confirmed generated passwords go (``--generated-passwords``)."""
        self.pending = pending_path_for(target) if target is not None else None
        """Where this run's candidates wait (the journal intent names it too)."""
        for path in (self.target, self.pending):
            if path is not None:
                refuse_symlink(path)  # before any create is sent; the opens refuse one made later
        self.written: dict[Path, list[str]] = {}
        """File → users whose passwords this process wrote there."""
        self.on_new_file = on_new_file
        """Told each file before this process first writes to it, so even a run killed right after
        has named where its passwords are."""

    # -- the pending file -------------------------------------------------------------------------

    @staticmethod
    def _entries(pending: Path) -> list[dict[str, str]]:
        text = _read_text(pending)
        if text is None:
            return []
        entries: list[dict[str, str]] = []
        lines = text.splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except ValueError:
                if number == len(lines):
                    continue  # torn last line: its create was never sent (the call follows the fsync)
                raise StateError(
                    f"{pending} line {number} is not JSON; it is written only by reconcile: "
                    "inspect it before running apply again"
                ) from None
            entries.append(entry)
        return entries

    def hold(self, intent: str, passwords: Mapping[str, str]) -> None:
        """Record ``passwords`` as candidates of ``intent`` (call before the create is sent)."""
        if not passwords:
            return
        if self.target is None or self.pending is None:
            raise StateError("generated passwords need a --generated-passwords file")
        data = "".join(
            json.dumps({"intent": intent, "user": name, "file": str(self.target), "password": pw}) + "\n"
            for name, pw in sorted(passwords.items())
        ).encode("utf-8")
        self.pending.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _open_file(self.pending, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            append_whole(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def resolve(
        self, pending: Path | None, intent: str, *, set_for: Iterable[str] = (), not_set: Iterable[str] = ()
    ) -> None:
        """Move the candidates of users ``set_for`` to their file; drop those of ``not_set``.

        ``pending`` is the file the intent names (None: it held no generated password). Users in
        neither list stay pending (their outcome is still unknown).
        """
        if pending is None:
            return
        confirmed, dropped = set(set_for), set(not_set)
        entries = self._entries(pending)
        mine = [e for e in entries if e["intent"] == intent and e["user"] in confirmed | dropped]
        if not mine:
            return
        by_file: dict[Path, dict[str, str]] = {}
        for entry in mine:
            if entry["user"] in confirmed:
                by_file.setdefault(Path(entry["file"]), {})[entry["user"]] = entry["password"]
        for path, passwords in by_file.items():
            self._append_final(path, passwords)
        # Only after the passwords are safely in their file do the candidates leave the pending one.
        self._rewrite(pending, [e for e in entries if e not in mine])

    @staticmethod
    def _rewrite(pending: Path, entries: list[dict[str, str]]) -> None:
        if not entries:
            pending.unlink(missing_ok=True)
            return
        tmp = pending.with_name(pending.name + ".tmp")
        fd = _open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(e) + "\n" for e in entries)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, pending)
        fsync_dir(pending.parent)

    def _append_final(self, path: Path, passwords: Mapping[str, str]) -> None:
        """Append ``name<TAB>password`` lines (0600, fsynced), skipping lines already there."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        present = set((_read_text(path) or "").splitlines())
        lines = [f"{name}\t{pw}" for name, pw in sorted(passwords.items())]
        new = [line for line in lines if line not in present]
        if path not in self.written and self.on_new_file is not None:
            self.on_new_file(path)
        if new:
            fd = _open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                if not present:
                    fh.write(GENERATED_HEADER)
                fh.writelines(line + "\n" for line in new)
                fh.flush()
                os.fsync(fh.fileno())
        self.written.setdefault(path, []).extend(sorted(passwords))
