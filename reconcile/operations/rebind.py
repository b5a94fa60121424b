"""Rebind: move recorded state to another endpoint or organization, on purpose."""

from __future__ import annotations

from dataclasses import dataclass

from reconcile.errors import StateError
from reconcile.operations.inputs import RemoteInputs, Reporter
from reconcile.operations.opening import open_inputs
from reconcile.state.model import StateBinding


@dataclass(frozen=True)
class Rebound:
    """Where the state is (``where``), what it was bound to and is bound to now."""

    where: str
    old: StateBinding | None
    new: StateBinding
    serial: int | None
    """The state serial after the move; None when it was bound there already (nothing written)."""


def rebind(inputs: RemoteInputs, reporter: Reporter | None = None) -> Rebound:
    """Bind the state to the endpoint and partner data account ``inputs`` name, under the lock.

    Raises :class:`StateError` when there is no state yet (the first apply binds it).
    """
    reporter = reporter or Reporter()
    loaded, endpoint, store = open_inputs(inputs, bind=False)
    manifest = loaded.manifest
    environment = manifest.environment
    new = StateBinding(endpoint=endpoint, dataAccountId=manifest.partner.dataAccountId)
    with store.lock(timeout=inputs.lock_timeout, purpose="state rebind", on_wait=reporter.say):
        state = store.load(environment)
        if state.serial == 0:
            raise StateError(f"no state at {store.describe()}; nothing to rebind (the first apply binds it)")
        if state.binding == new:
            return Rebound(store.describe(), state.binding, new, None)
        saved = store.save(state.model_copy(update={"binding": new}))
    return Rebound(store.describe(), state.binding, new, saved.serial)
