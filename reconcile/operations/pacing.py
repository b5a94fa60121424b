"""What an apply adds to its client's pacing: the window of earlier runs, and the ETA it implies."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from reconcile.api.pacing import CREATE_PATH

if TYPE_CHECKING:
    from reconcile.api.client import PartnerClient
    from reconcile.operations.inputs import Progress
    from reconcile.state.store import StateStore

Schedule = Callable[[str, float, float], None]
"""``(phase, next_slot, finish)``: when the phase's next limited call may go, and its last (epoch s)."""


def remember_sends(client: PartnerClient, store: StateStore, environment: str) -> None:
    """Make ``client`` count what this state's earlier runs sent in the last hour, and record its own."""
    if client.pacer is not None:
        client.pacer.remember(store.send_log(environment))


class PacedProgress:
    """Pass the applier's progress on to ``display``, and say when the create phase's calls may go."""

    def __init__(
        self, display: Progress, client: PartnerClient, batch_size: int, schedule: Schedule | None
    ) -> None:
        self.display = display
        self.client = client
        self.batch_size = max(1, batch_size)
        self.schedule = schedule
        self._totals: dict[str, int] = {}
        self._name = ""

    def phase(self, name: str, total: int) -> None:
        self._name, self._totals[name] = name, total
        self.display.phase(name, total)

    def advance(self, done: int) -> None:
        self.display.advance(done)
        self.forecast(self._name, done)

    def forecast(self, name: str, done: int) -> None:
        """Tell ``schedule`` when the creates still to send may go (the published limit paces them)."""
        pacer = self.client.pacer
        if name != "create" or pacer is None or self.schedule is None:
            return
        calls = math.ceil((self._totals.get(name, 0) - done) / self.batch_size)
        slots = pacer.forecast(CREATE_PATH, calls)
        if slots is not None:
            self.schedule(name, *slots)
