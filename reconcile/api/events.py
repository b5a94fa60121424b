"""What the client tells its caller while it works (waits, retries), for progress displays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

EventKind = Literal["rate_limit_wait", "penalty_wait", "retry", "login", "renew"]


@dataclass(frozen=True)
class ClientEvent:
    """One thing worth showing: ``message`` is for people, the rest for programs.

    ``until`` is the wall-clock time (epoch seconds) a wait ends, when there is a wait.
    Never carries a secret: messages name calls and users only.
    """

    kind: EventKind
    call: str
    message: str
    seconds: float = 0.0
    until: float | None = None


OnEvent = Callable[[ClientEvent], None]


def emit_wait(
    on_event: OnEvent | None,
    kind: EventKind,
    call: str,
    message: str,
    seconds: float,
    wallclock: Callable[[], float],
) -> None:
    """Tell ``on_event`` that a wait of ``seconds`` starts now.

    ``message`` carries no time: whoever shows it adds ``until``, in its own format.
    """
    if on_event is not None:
        on_event(
            ClientEvent(kind=kind, call=call, message=message, seconds=seconds, until=wallclock() + seconds)
        )
