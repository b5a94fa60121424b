"""What an operation is asked to work on, and how it tells its caller what happens (callbacks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from reconcile.operations.settings import Settings

if TYPE_CHECKING:
    from reconcile.api.events import ClientEvent
    from reconcile.planning.plan import Plan


@dataclass(frozen=True, kw_only=True)
class Sources:
    """Where an operation finds the manifests, the state and the endpoint; the environment read."""

    paths: tuple[Path, ...]
    state_path: Path | None
    backend: str | None
    endpoint: str | None
    settings: Settings = field(default_factory=Settings)


@dataclass(frozen=True, kw_only=True)
class PlanInputs(Sources):
    """What to plan: the sources, targeting, and the host that also receives cancellations."""

    targets: tuple[str, ...]
    excludes: tuple[str, ...]
    companion_endpoint: str | None = None


@dataclass(frozen=True, kw_only=True)
class RemoteInputs(Sources):
    """What reading the API into state needs: the sources, and how long to wait for the lock."""

    lock_timeout: float


class Progress(Protocol):
    """Counts of a long phase (apply's creates, grants, cancels)."""

    def phase(self, name: str, total: int) -> None: ...
    def advance(self, done: int) -> None: ...


def _ignore(_text: str) -> None:
    pass


@dataclass(frozen=True)
class Reporter:
    """Where an operation reports while it runs; every callback does nothing unless given."""

    say: Callable[[str], None] = _ignore
    """A line of progress for people: lock waits, what was settled or read, password files."""
    warn: Callable[[str], None] = _ignore
    """A warning of the manifest loader (a literal password in live, …)."""
    on_event: Callable[[ClientEvent], None] | None = None
    """What the API client is waiting for (rate limit, penalty, retry)."""
    progress: Progress | None = None
    schedule: Callable[[str, float, float], None] | None = None
    """``(phase, next_slot, finish)``: when a paced phase's next call may go and its last (epoch s)."""
    show_plan: Callable[[Plan], None] | None = None
    """apply shows the plan it made under the lock here, before asking to apply it."""
    confirm: Callable[[Plan], bool] | None = None
    """apply asks here before changing anything (None: approved without asking)."""
