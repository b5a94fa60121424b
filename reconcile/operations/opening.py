"""Open what every operation starts from: the loaded manifests, the endpoint label, the state store."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from reconcile.api.endpoints import resolve_endpoint
from reconcile.operations.inputs import Sources
from reconcile.state.model import StateBinding
from reconcile.state.store import StateStore

if TYPE_CHECKING:
    from reconcile.manifest.loader import LoadedManifest


Opened = tuple["LoadedManifest", str, StateStore]
"""The loaded manifests, the endpoint label and the state store of one operation."""


def utc_today() -> date:
    """Today's date in UTC, read at the edge: the day ``resetTo`` and ``expiresOn`` are judged by."""
    return datetime.now(UTC).date()


def open_inputs(inputs: Sources, *, bind: bool = True) -> Opened:
    """Load the manifests, then resolve the endpoint label and open the state store they choose.

    With ``bind`` the store refuses state bound to another endpoint or organization (see
    :meth:`StateStore.bind`); ``state rebind`` opens it unbound, to move it.
    """
    from reconcile.manifest.loader import load_manifest
    from reconcile.state.open import open_store

    settings = inputs.settings
    # Today's UTC date is read here, at the edge: the loader refuses a resetTo after it.
    loaded = load_manifest(list(inputs.paths), today=utc_today())
    manifest = loaded.manifest
    label = resolve_endpoint(manifest.environment, inputs.endpoint or settings.endpoint)
    store = open_store(
        manifest.environment,
        state_path=inputs.state_path,
        backend_url=inputs.backend,
        manifest_backend=manifest.backend,
        environ=settings.environ,
    )
    if bind:
        store.bind(StateBinding(endpoint=label, dataAccountId=manifest.partner.dataAccountId))
    return loaded, label, store
