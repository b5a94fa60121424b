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
          ├── CaptchaRequired      a penalty ticket demands a captcha: a person must act
          └── TransportError       network failure / malformed answer after retries
               └── OutcomeUnknown   a non-idempotent call was sent and no answer came
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


def first_invalid(exc: ValidationError) -> str:
    """Say where and why a stored document (state, plan) failed validation: ``loc.path: message``.

    Only the first error: such documents are written by reconcile, so one names the damage.
    """
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}"


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
        self.problems = sorted(
            problems, key=lambda p: (p.location or Location("", 0, 0), p.path, p.message)
        )
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
