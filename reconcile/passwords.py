"""Resolve the passwords of users to create, at apply time, from the manifest the plan is bound to.

The plan holds only each password's *source*; the values are read here, just before the create
calls, and live only in memory (and, for ``{generate: true}``, once in the operator's file).
Everything is resolved before the first API call so a missing variable changes nothing.
"""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconcile.errors import Location, Problem, ReconcileError, counted, plural
from reconcile.manifest import Manifest, PasswordFromEnv, PasswordFromFile, PasswordGenerate, User
from reconcile.plan import CreateUser

MIN_LENGTH = 8
MAX_LENGTH = 64
GENERATED_LENGTH = 24

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
            f"{counted(len(to_generate), 'user')} to create {plural(len(to_generate), 'has', 'have')} "
            f"password {{generate: true}} ({shown}); "
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
        path = Path(source.file)
        folder = base_dir(name) if callable(base_dir) else base_dir
        if not path.is_absolute() and folder is not None:
            path = folder / path
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise PasswordError(f"user {name}: cannot read password file {path}: {exc.strerror}") from None
        return _check_length(name, lines[0] if lines else "", f"file {path}")
    if isinstance(source, PasswordGenerate):
        return None
    return _check_length(name, source, "the manifest")


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


def unreadable_sources(
    manifest: Manifest,
    locate: Mapping[str, Location],
    *,
    environ: Mapping[str, str] | None = None,
) -> list[Problem]:
    """The password sources apply could not read now: variables not set, files missing.

    For ``validate``: a plan needs no secrets (CI plans without them), so these are warnings
    there, and errors with ``--strict``. ``locate`` gives where each user is declared; a
    relative ``{file: …}`` is relative to that file's folder, as apply reads it.
    """
    env = os.environ if environ is None else environ
    problems: list[Problem] = []
    for user in manifest.users:
        source = user.password
        where = locate.get(user.name)
        if user.status != "active":
            continue
        if isinstance(source, PasswordFromEnv) and source.env not in env:
            problems.append(
                Problem(
                    where,
                    f"{user.name}.password",
                    f"environment variable {source.env} is not set: apply needs it when it creates "
                    f"{user.name}; export it before applying (plan does not need it)",
                )
            )
        elif isinstance(source, PasswordFromFile):
            path = Path(source.file)
            if not path.is_absolute() and where is not None:
                path = Path(where.file).parent / path
            if not path.is_file():
                problems.append(
                    Problem(
                        where,
                        f"{user.name}.password",
                        f"password file {path} does not exist: apply needs it when it creates {user.name}",
                    )
                )
    return problems
