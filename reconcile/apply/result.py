"""What an apply reports: progress as it goes, and per-user outcomes at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


class Progress(Protocol):
    """Where the applier reports progress (the CLI prints it on stderr)."""

    def phase(self, name: str, total: int) -> None: ...
    def advance(self, done: int) -> None: ...


class NoProgress:
    """Progress nobody watches."""

    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, done: int) -> None:
        pass


class PhaseTally:
    """Whole-run counts for ``display`` while each executor call reports only its own chunk.

    Creates are applied batch by batch with their follow-ups between them, so one executor is
    called many times; the display sees one line per phase, counting over the run. A phase's total
    is what its executor calls so far said they would do (a grant that only waits for the
    agreement is not counted), plus the actions still to come.
    """

    def __init__(self, display: Progress) -> None:
        self.display = display
        self._done: dict[str, int] = {}
        self._name: str | None = None
        self._total = self._later = 0
        self._shown: tuple[str | None, int] = (None, -1)
        """The phase and total the display last got, and each phase's count (nothing is said twice)."""
        self._counts: dict[str, int] = {}

    @contextlib.contextmanager
    def step(self, later: int) -> Iterator[None]:
        """One executor call; ``later`` actions of its kinds are left for later calls."""
        self._name, self._total, self._later = None, 0, later
        yield
        if self._name is not None:
            self._done[self._name] = self._done.get(self._name, 0) + self._total
            self._total = 0
            self._show(0)

    def phase(self, name: str, total: int) -> None:
        self._name, self._total = name, total
        self._show(0)

    def advance(self, done: int) -> None:
        self._show(min(done, self._total))

    def _show(self, done: int) -> None:
        name = self._name
        if name is None:
            return
        before = self._done.get(name, 0)
        total, count = before + self._total + self._later, before + done
        if self._shown != (name, total):
            self.display.phase(name, total)
            self._shown = (name, total)
        if self._counts.get(name, 0) != count:
            self.display.advance(count)
            self._counts[name] = count


@dataclass(frozen=True)
class Failure:
    """One user's or account's action that did not happen, and why (the API's words where it gave some)."""

    user: str
    action: str
    message: str

    def __str__(self) -> str:
        return f"{self.user}: {self.action}: {self.message}"


@dataclass
class ApplyResult:
    """What an apply (or a settle) did, per user."""

    created: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    emails_changed: list[str] = field(default_factory=list)
    contacts_updated: list[str] = field(default_factory=list)
    granted: list[str] = field(default_factory=list)
    awaiting_agreement: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    accounts_created: list[str] = field(default_factory=list)
    """Account names, as every ``accounts_*`` and ``risk_*`` list below."""
    accounts_adopted: list[str] = field(default_factory=list)
    risk_updated: list[str] = field(default_factory=list)
    risk_categories_switched: list[str] = field(default_factory=list)
    trading_set: list[str] = field(default_factory=list)
    accounts_reset: list[str] = field(default_factory=list)
    trading_revoked: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    settled_intents: int = 0
    settled_users: list[str] = field(default_factory=list)
    """The users of the settled intents (a user may appear in several)."""
    state_serial: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing failed (users awaiting the agreement are not failures)."""
        return not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def _outcomes(self) -> dict[str, list[str]]:
        """The per-user outcome lists, in the order reports show them."""
        return {
            "created": self.created,
            "adopted": self.adopted,
            "emails_changed": self.emails_changed,
            "contacts_updated": self.contacts_updated,
            "granted": self.granted,
            "awaiting_agreement": self.awaiting_agreement,
            "cancelled": self.cancelled,
            "accounts_created": self.accounts_created,
            "accounts_adopted": self.accounts_adopted,
            "risk_updated": self.risk_updated,
            "risk_categories_switched": self.risk_categories_switched,
            "trading_set": self.trading_set,
            "accounts_reset": self.accounts_reset,
            "trading_revoked": self.trading_revoked,
        }

    def fail(self, user: str, action: str, message: str) -> None:
        """Report that ``user``'s ``action`` did not happen."""
        self.failures.append(Failure(user, action, message))

    def failed(self, user: str) -> bool:
        """True when a failure of ``user`` is reported already."""
        return any(f.user == user for f in self.failures)

    def merge(self, other: ApplyResult) -> None:
        """Add what ``other`` (a settle run before this apply) did."""
        theirs = other._outcomes()
        for outcome, users in self._outcomes().items():
            users.extend(theirs[outcome])
        self.failures.extend(other.failures)
        self.settled_intents += other.settled_intents
        self.settled_users.extend(other.settled_users)

    def counts(self) -> dict[str, int]:
        return {
            **{outcome: len(users) for outcome, users in self._outcomes().items()},
            "failed": len(self.failures),
        }

    def to_json_dict(self) -> dict[str, Any]:
        """The ``--format json`` result: counts, users per outcome (sorted), failures."""
        return {
            "ok": self.ok,
            "summary": self.counts(),
            **{outcome: sorted(users) for outcome, users in self._outcomes().items()},
            "failures": [
                {"user": f.user, "action": f.action, "message": f.message}
                for f in sorted(self.failures, key=lambda f: (f.user, f.action))
            ],
            "settled_intents": self.settled_intents,
            "state_serial": self.state_serial,
        }
