"""Refresh and import: read the API into recorded state, under the state lock; change nothing remote."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconcile.manifest.models import Manifest
from reconcile.operations.adopt import ImportResult, RefreshResult, import_users, refresh_state
from reconcile.operations.inputs import RemoteInputs, Reporter
from reconcile.state.model import StateBinding, StateStore

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
    from reconcile.api.endpoints import resolve_endpoint
    from reconcile.manifest.loader import load_manifest
    from reconcile.operations.clients import open_client
    from reconcile.state.open import open_store

    settings = inputs.settings
    manifest = load_manifest(list(inputs.paths)).manifest
    store = open_store(
        manifest.environment,
        state_path=inputs.state_path,
        backend_url=inputs.backend,
        manifest_backend=manifest.backend,
        environ=settings.environ,
    )
    label = resolve_endpoint(manifest.environment, inputs.endpoint or settings.endpoint)
    store.bind(StateBinding(endpoint=label, dataAccountId=manifest.partner.dataAccountId))
    with (
        store.lock(timeout=inputs.lock_timeout, purpose=purpose, on_wait=reporter.say),
        open_client(
            manifest.environment,
            endpoint=inputs.endpoint,
            state_dir=store.local_dir(),
            settings=settings,
            on_event=reporter.on_event,
        ) as client,
    ):
        yield manifest, store, client
