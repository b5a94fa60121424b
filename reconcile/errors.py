"""The exception tree of reconcile.

ReconcileError                 every error meant for a person; carries a message that says
 │                             what went wrong, where, and what to do
 ├── ManifestError             the manifest is invalid; .problems holds every located problem
 ├── StateError                recorded state cannot be read or written (corrupt, wrong version)
 │    └── LockError            the state is locked by another run (names the holder)
 ├── PlanError                 a saved plan cannot be used (stale, corrupt, wrong version)
 ├── PolicyError               refused by policy (cancellation budget); exit code 3
 └── ApiError                  the partner API failed or refused (names the call and users)
      ├── AuthError            login / token renewal failed
      │    └── LoginUnavailable no login can succeed now (limit reached, locked, API failing)
      ├── CaptchaRequired      a penalty ticket demands a captcha: a person must act
      └── TransportError       network failure / malformed answer after retries
           └── OutcomeUnknown   a non-idempotent call was sent and no answer came
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import ValidationError


# --- words for people: every message is built with these -----------------------------------------


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``noun`` for one, its plural otherwise (``many``, or ``noun`` + s): the word without the count."""
    return noun if n == 1 else many or noun + "s"


def counted(n: int, noun: str, many: str | None = None) -> str:
    """``1 user``, ``3 users``: a count with its noun, singular for one (``many`` when not noun + s)."""
    return f"{n} {plural(n, noun, many)}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """Return ``text`` with control characters escaped (``\\x00``, ``\\t``…), so none reaches a terminal.

    Names and values come from untrusted manifests, state and API answers; a raw NUL or escape
    sequence would corrupt or forge what a person reads. ``keep_newlines`` keeps line breaks
    (multi-line messages) and escapes everything else in each line.
    """
    if keep_newlines:
        return "\n".join(printable(line) for line in text.split("\n"))
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def sentences(*parts: str) -> str:
    """Join message parts as sentences: each ends with exactly one period (or its own ! or ?).

    Messages quote other messages (an API's ``errorText`` often ends with a period already), so
    parts are joined here rather than with ``". "`` in place.
    """
    done = [p.strip().rstrip(".").rstrip() for p in parts if p and p.strip().rstrip(".")]
    return " ".join(p if p.endswith(("!", "?")) else p + "." for p in done)


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """``; did you mean 'simplus'?`` for the closest of ``choices``, or empty when none is close."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def first_invalid(exc: ValidationError) -> str:
    """Say where and why a stored document (state, plan) failed validation: ``loc.path: message``.

    Only the first error: such documents are written by reconcile, so one names the damage.
    """
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}"


def describe_os_error(
    exc: OSError, doing: str, path: object | None = None, *, option: str | None = "--state PATH"
) -> str:
    """Say what failed on which path, why in plain words, and what to do: ``cannot DOING PATH: …``.

    ``option`` is the command-line option that moves that path (None: none does), so the advice
    never points a person at ``--state`` for a plan file or a folder of passwords.
    """
    import errno

    where = path if path is not None else (exc.filename or "")
    reason = exc.strerror or str(exc)
    elsewhere = f", or pass {option} to one it may use" if option else ""
    advice = {
        errno.EACCES: f"check that this user may use that folder (its owner and permissions){elsewhere}",
        errno.EPERM: f"check that this user may use that folder (its owner and permissions){elsewhere}",
        errno.ENOSPC: "the disk is full: free space on it, then run again",
        errno.EDQUOT: "the disk quota is used up: free space in it, then run again",
        errno.EROFS: "the file system is read-only: run from a writable checkout"
        + (f", or pass {option}" if option else ""),
        errno.ENOTDIR: "a part of that path is a file, not a folder: fix the path"
        + (f" ({option})" if option else ""),
    }.get(exc.errno or 0, "fix the cause, then run again")
    return f"cannot {doing}{f' {where}' if where else ''}: {reason}; {advice}"


class ReconcileError(Exception):
    """An error meant for a person; ``str(exc)`` is the full message."""

    exit_code = 1


@dataclass(frozen=True, order=True)
class Location:
    """A place in a manifest file (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One located manifest problem: ``FILE:LINE:COL: path: message``."""

    location: Location | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        path = f"{self.path}: " if self.path else ""
        return f"{where}{path}{self.message}"


class ManifestError(ReconcileError):
    """The manifest is invalid; every problem is listed, nothing is changed."""

    def __init__(self, problems: list[Problem], *, omitted: int = 0) -> None:
        self.problems = sorted(problems, key=lambda p: (p.location or Location("", 0, 0), p.path, p.message))
        self.omitted = omitted
        """Problems found but not listed (past the loader's MAX_PROBLEMS)."""
        lines = [str(p) for p in self.problems]
        if omitted:
            lines.append(f"… and {omitted} more problem{'s' * (omitted != 1)}: fix these first")
        super().__init__("\n".join(lines))


class StateError(ReconcileError):
    """Recorded state cannot be read or written."""


class LockError(StateError):
    """The state is locked by another run."""


class PlanError(ReconcileError):
    """A saved plan cannot be applied."""


class PolicyError(ReconcileError):
    """Refused by policy."""

    exit_code = 3


class ApiError(ReconcileError):
    """The partner API failed or refused a call."""

    def __init__(self, message: str, *, call: str = "", users: tuple[str, ...] = ()) -> None:
        self.call = call
        self.users = users
        super().__init__(message)


class AuthError(ApiError):
    """Login or token renewal failed."""


class LoginUnavailable(AuthError):
    """No login can succeed now (its limit is reached, the account locked, the API failing): nothing
    can be sent until it can, so a run stops on it rather than trying again for every user."""


class CaptchaRequired(ApiError):
    """A penalty ticket asks for a captcha: a person must log in on the web and solve it."""


class TransportError(ApiError):
    """The network failed or the answer was malformed, after retries."""


class OutcomeUnknown(TransportError):
    """A non-idempotent call was sent but no answer came (dropped connection, timeout).

    The server may or may not have applied it: never resend blindly; settle it by looking the
    users up (the applier's journal does this).
    """

    def __init__(
        self, message: str, *, call: str = "", users: tuple[str, ...] = (), reason: str = ""
    ) -> None:
        super().__init__(message, call=call, users=users)
        self.reason = reason
        """Why the outcome is unknown, in a few words ("the API answered HTTP 502"), for per-user reports."""
