"""Open what a command that reads the API into state works with: manifest, locked store, client."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from reconcile.cli.options import RemoteInputs
from reconcile.cli.output import echo_err
from reconcile.manifest.models import Manifest
from reconcile.state.model import StateBinding
from reconcile.state.store import StateStore

if TYPE_CHECKING:
    from reconcile.api.client import PartnerClient


@contextlib.contextmanager
def remote_session(
    inputs: RemoteInputs, purpose: str
) -> Iterator[tuple[Manifest, StateStore, PartnerClient]]:
    """Load the manifest, hold its state lock (waits are said on stderr) and open its API client."""
    from reconcile.api.connect import open_client
    from reconcile.api.endpoints import resolve_endpoint
    from reconcile.manifest.loader import load_manifest
    from reconcile.operations.adopt import state_dir_of, state_locked
    from reconcile.state.open import open_store

    manifest = load_manifest(list(inputs.paths)).manifest
    store = open_store(
        manifest.environment,
        state_path=inputs.state_path,
        backend_url=inputs.backend,
        manifest_backend=manifest.backend,
    )
    label = resolve_endpoint(manifest.environment, inputs.endpoint)
    store.bind(StateBinding(endpoint=label, dataAccountId=manifest.partner.dataAccountId))
    with (
        state_locked(store, timeout=inputs.lock_timeout, purpose=purpose, on_wait=echo_err),
        open_client(manifest.environment, endpoint=inputs.endpoint, state_dir=state_dir_of(store)) as client,
    ):
        yield manifest, store, client
