"""Resolve the passwords of users to create, at apply time, from the manifest the plan is bound to.

The plan holds only each password's *source*; the values are read here, just before the create
calls, and live only in memory (and, for ``{generate: true}``, once in the operator's file).
Everything is resolved before the first API call so a missing variable changes nothing.
"""

from __future__ import annotations

import os
import secrets
import stat
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconcile.errors import Location, ReconcileError
from reconcile.manifest import Manifest, PasswordFromEnv, PasswordFromFile, PasswordGenerate, User
from reconcile.plan import CreateUser

MIN_LENGTH = 8
MAX_LENGTH = 64
GENERATED_LENGTH = 24

MAX_PASSWORD_FILE_BYTES = 4096
"""Largest ``{file: …}`` password file read: a password is at most 64 characters on its first line."""

# Symbols every password form accepts; quotes, backslashes and spaces are left out so a generated
# password survives being pasted into a shell or a YAML file.
_SYMBOLS = "!#%+-.:=?@^_~"
_ALPHABET = string.ascii_letters + string.digits + _SYMBOLS


class PasswordError(ReconcileError):
    """A password could not be resolved; nothing was sent to the API."""


def generate_password(length: int = GENERATED_LENGTH) -> str:
    """Return a random password with lower, upper, digit and symbol characters."""
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ValueError(f"length must be {MIN_LENGTH}..{MAX_LENGTH}")
    while True:
        candidate = "".join(secrets.choice(_ALPHABET) for _ in range(length))
        if (
            any(c.islower() for c in candidate)
            and any(c.isupper() for c in candidate)
            and any(c.isdigit() for c in candidate)
            and any(c in _SYMBOLS for c in candidate)
        ):
            return candidate


def _check_length(user: str, value: str, where: str) -> str:
    if not MIN_LENGTH <= len(value) <= MAX_LENGTH:
        raise PasswordError(
            f"user {user}: the password from {where} has {len(value)} characters; "
            f"the API needs {MIN_LENGTH}-{MAX_LENGTH}"
        )
    return value


@dataclass
class ResolvedPasswords:
    """Every create's password, in memory only; ``repr`` never shows them."""

    values: dict[str, str] = field(repr=False)
    generated: list[str]
    generated_file: Path | None

    def write_generated_file(self) -> None:
        """Write the generated passwords to the operator's file (call just before the creates)."""
        if self.generated and self.generated_file is not None:
            write_generated(self.generated_file, {n: self.values[n] for n in self.generated})


def resolve_passwords(
    creates: Iterable[CreateUser],
    manifest: Manifest,
    *,
    base_dir: Path | Callable[[str], Path | None] | None = None,
    generated_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    locate: Callable[[str], object | None] | None = None,
) -> ResolvedPasswords:
    """Return the password of every create, or raise (listing every problem) before anything is sent.

    The source is taken from the manifest (the plan only says which kind it was, and the manifest
    is bound to the plan by digest). A relative ``{file: …}`` path is relative to ``base_dir``,
    or to ``base_dir(user name)`` (the folder of the manifest file that declares the user).
    Generated passwords are only generated here; the caller writes them with
    :meth:`ResolvedPasswords.write_generated_file` right before the create calls.
    ``locate(user name)`` gives where the manifest declares the user (``FILE:LINE:COL``), so each
    problem names the place to fix.
    """
    env = os.environ if environ is None else environ
    creates = list(creates)
    by_name = {u.name: u for u in manifest.users}
    to_generate = [
        c.user
        for c in creates
        if (u := by_name.get(c.user)) is not None and isinstance(u.password, PasswordGenerate)
    ]
    if to_generate and generated_file is None:
        shown = ", ".join(to_generate[:5]) + (" …" if len(to_generate) > 5 else "")
        raise PasswordError(
            f"{len(to_generate)} user(s) to create have password {{generate: true}} ({shown}); "
            "name a file to receive the generated passwords with --generated-passwords FILE "
            "(it is created with mode 0600 and never overwritten)"
        )
    if generated_file is not None and to_generate and generated_file.exists():
        raise PasswordError(
            f"{generated_file} already exists; refusing to overwrite generated passwords. "
            "Move it away or name a new file with --generated-passwords"
        )
    passwords: dict[str, str] = {}
    generated: dict[str, str] = {}
    problems: list[str] = []
    for create in creates:
        try:
            value = _resolve_one(create.user, by_name, base_dir, env)
        except PasswordError as exc:
            where = locate(create.user) if locate is not None else None
            problems.append(f"{where}: {exc}" if where is not None else str(exc))
            continue
        if value is None:
            generated[create.user] = passwords[create.user] = generate_password()
        else:
            passwords[create.user] = value
    if problems:
        # Every missing variable at once: a pipeline fixed one by one would fail once per user.
        raise PasswordError("\n".join(problems))
    return ResolvedPasswords(values=passwords, generated=sorted(generated), generated_file=generated_file)


def _resolve_one(
    name: str,
    by_name: Mapping[str, User],
    base_dir: Path | Callable[[str], Path | None] | None,
    env: Mapping[str, str],
) -> str | None:
    """Return user ``name``'s password, or None when it is to be generated."""
    user = by_name.get(name)
    source = user.password if user is not None else None
    if source is None:
        raise PasswordError(
            f"user {name}: the manifest has no password for this user; the plan does "
            "not match the manifest: make a new plan"
        )
    if isinstance(source, PasswordFromEnv):
        value = env.get(source.env)
        if value is None:
            raise PasswordError(
                f"user {name}: environment variable {source.env} is not set; "
                f"export {source.env} with the password before applying"
            )
        return _check_length(name, value, f"${source.env}")
    if isinstance(source, PasswordFromFile):
        path = password_file_path(source, base_dir(name) if callable(base_dir) else base_dir)
        return _check_length(name, read_password_file(name, path), f"file {path}")
    if isinstance(source, PasswordGenerate):
        return None
    return _check_length(name, source, "the manifest")


def password_file_path(source: PasswordFromFile, folder: Path | None) -> Path:
    """Where a ``{file: …}`` source points: relative paths start at the declaring manifest's folder."""
    path = Path(source.file)
    return folder / path if not path.is_absolute() and folder is not None else path


def read_password_file(user: str, path: Path) -> str:
    """Return the first line of the regular file ``path``; refuse devices, FIFOs and big files.

    Never blocks and never reads more than :data:`MAX_PASSWORD_FILE_BYTES`: ``/dev/zero`` would
    grow without end, a FIFO would hold the run (and its state lock) until someone writes to it.
    """
    where = f"user {user}: password file {path}"
    try:
        _check_regular(where, os.stat(path))
        # O_NONBLOCK: had the path become a FIFO since the stat, opening it still returns at once.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise PasswordError(f"user {user}: cannot read password file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        _check_regular(where, os.fstat(fd))
        raw = handle.read(MAX_PASSWORD_FILE_BYTES + 1)
    if len(raw) > MAX_PASSWORD_FILE_BYTES:
        raise _too_big(where)  # it grew since the stat
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise PasswordError(f"{where}: not UTF-8 text") from None
    return lines[0] if lines else ""


def _check_regular(where: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = next((word for test, word in _NOT_REGULAR if test(info.st_mode)), "not a regular file")
        raise PasswordError(f"{where}: {kind}; a password file must be a regular file")
    if info.st_size > MAX_PASSWORD_FILE_BYTES:
        raise _too_big(where)


_NOT_REGULAR: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISSOCK, "a socket"),
)


def _too_big(where: str) -> PasswordError:
    return PasswordError(
        f"{where}: larger than {MAX_PASSWORD_FILE_BYTES} bytes; put the password alone on its first line"
    )


def declaring_folder(locations: Mapping[str, Location]) -> Callable[[str], Path | None]:
    """User name → folder of the manifest file that declares it (where relative paths start)."""

    def folder(name: str) -> Path | None:
        location = locations.get(name)
        return Path(location.file).parent if location is not None else None

    return folder


def password_file_problems(
    manifest: Manifest,
    folder: Callable[[str], Path | None],
    *,
    missing_ok: bool,
) -> list[tuple[int, str]]:
    """Check every ``{file: …}`` source of ``manifest`` (regular, readable, size, 8-64 characters).

    Returns ``(user index, message)`` pairs. With ``missing_ok``, a file that does not exist is
    not a problem: only creating that user needs it (apply checks before taking its lock, when
    it does not yet know whom it creates).
    """
    problems: list[tuple[int, str]] = []
    for index, user in enumerate(manifest.users):
        if not isinstance(user.password, PasswordFromFile):
            continue
        path = password_file_path(user.password, folder(user.name))
        if missing_ok and not os.path.lexists(path):
            continue
        try:
            _check_length(user.name, read_password_file(user.name, path), f"file {path}")
        except PasswordError as exc:
            problems.append((index, str(exc)))
    return problems


def refuse_unreadable_password_files(manifest: Manifest, locations: Mapping[str, Location]) -> None:
    """Raise PasswordError for every ``{file: …}`` source that exists but cannot serve a password."""
    found = password_file_problems(manifest, declaring_folder(locations), missing_ok=True)
    if found:
        located = [(locations.get(manifest.users[i].name), message) for i, message in found]
        raise PasswordError("\n".join(f"{at}: {message}" if at else message for at, message in located))


def write_generated(path: Path, passwords: Mapping[str, str]) -> None:
    """Write ``name<TAB>password`` lines to a new file with mode 0600; never overwrite."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PasswordError(f"{path} already exists; refusing to overwrite generated passwords") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# generated by reconcile apply: hand each trader their password, then delete this file\n")
        for name in sorted(passwords):
            fh.write(f"{name}\t{passwords[name]}\n")
        fh.flush()
        os.fsync(fh.fileno())
