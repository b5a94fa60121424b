"""Refresh and import: read the API into recorded state, under the state lock; change nothing remote."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconcile.manifest.models import Manifest
from reconcile.operations.adopt import ImportResult, RefreshResult, import_users, refresh_state
from reconcile.operations.inputs import RemoteInputs, Reporter
from reconcile.operations.opening import open_inputs
from reconcile.state.store import StateStore

if TYPE_CHECKING:
    from reconcile.api.client import PartnerClient


@dataclass(frozen=True)
class Refreshed:
    """What :func:`refresh` found and recorded, and where (the store's description)."""

    result: RefreshResult
    where: str


@dataclass(frozen=True)
class Imported:
    """What :func:`import_` adopted, and into which store (its description)."""

    result: ImportResult
    where: str


def refresh(inputs: RemoteInputs, reporter: Reporter | None = None) -> Refreshed:
    """Record in state what the API shows for every managed user."""
    with remote_session(inputs, "refresh", reporter or Reporter()) as (manifest, store, client):
        return Refreshed(refresh_state(manifest, store, client), store.describe())


def import_(
    inputs: RemoteInputs, names: Sequence[str] | None, reporter: Reporter | None = None
) -> Imported:
    """Adopt existing organization users ``names`` (None: every one the manifest names) into state."""
    with remote_session(inputs, "import", reporter or Reporter()) as (manifest, store, client):
        return Imported(import_users(manifest, store, client, names), store.describe())


@contextlib.contextmanager
def remote_session(
    inputs: RemoteInputs, purpose: str, reporter: Reporter
) -> Iterator[tuple[Manifest, StateStore, PartnerClient]]:
    """Load the manifest, hold its state lock (waits go to ``reporter.say``) and open its API client."""
    from reconcile.operations.clients import open_client

    loaded, _label, store = open_inputs(inputs)
    manifest = loaded.manifest
    with (
        store.lock(timeout=inputs.lock_timeout, purpose=purpose, on_wait=reporter.say),
        open_client(
            manifest.environment,
            endpoint=inputs.endpoint,
            state_dir=store.local_dir(),
            settings=inputs.settings,
            on_event=reporter.on_event,
        ) as client,
    ):
        yield manifest, store, client
