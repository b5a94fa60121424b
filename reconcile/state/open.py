"""Choose where recorded state lives, and move it between places.

Precedence, first found wins: ``--backend URL`` (``backend_url``), then ``RECONCILE_BACKEND``
(in the ``environ`` the caller read), then the manifest's ``backend: {postgres: {dsnEnv: VAR}}``,
else the local file ``state/<environment>.json`` (or ``--state PATH``).

The PostgreSQL backend lives in :mod:`reconcile.state.postgres`; it is imported only when
chosen, so the file backend works without psycopg installed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from reconcile.errors import StateError
from reconcile.manifest.models import Backend
from reconcile.state.file import FileStateStore, default_state_path
from reconcile.state.model import State
from reconcile.state.store import StateStore

if TYPE_CHECKING:
    from reconcile.state.postgres import PostgresStateStore

BACKEND_VARIABLE = "RECONCILE_BACKEND"


def _postgres(dsn: str, environment: str) -> PostgresStateStore:
    try:
        from reconcile.state.postgres import PostgresStateStore
    except ImportError:
        raise StateError(
            "the PostgreSQL backend needs psycopg: pip install 'reconcile-partner[postgres]'"
        ) from None
    return PostgresStateStore(dsn, environment)


def _check_url(url: str, source: str) -> str:
    if not url.startswith(("postgresql://", "postgres://")):
        scheme = url.split("://", 1)[0] if "://" in url else "a path"
        raise StateError(
            f"{source}: unsupported backend ({scheme}); expected a postgresql://user@host/db URL, "
            "or leave it unset to use the local state file"
        )
    return url


def backend_dsn(
    *,
    backend_url: str | None = None,
    manifest_backend: Backend | None = None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Return the PostgreSQL DSN chosen by option, environment or manifest; None = file store.

    ``environ`` is the environment the edge read (None: none); it gives ``RECONCILE_BACKEND``
    and the variable the manifest's ``dsnEnv`` names.
    """
    env: Mapping[str, str] = {} if environ is None else environ
    if backend_url:
        return _check_url(backend_url, "--backend")
    from_env = env.get(BACKEND_VARIABLE, "").strip()
    if from_env:
        return _check_url(from_env, BACKEND_VARIABLE)
    if manifest_backend is not None:
        variable = manifest_backend.postgres.dsnEnv
        dsn = env.get(variable, "").strip()
        if not dsn:
            raise StateError(
                f"the manifest's backend.postgres.dsnEnv names {variable}, but {variable} is not set; "
                f"export it with the PostgreSQL DSN (postgresql://user:password@host/db)"
            )
        return _check_url(dsn, variable)
    return None


def open_store(
    environment: str,
    *,
    state_path: str | os.PathLike[str] | None = None,
    backend_url: str | None = None,
    manifest_backend: Backend | None = None,
    environ: Mapping[str, str] | None = None,
) -> StateStore:
    """Return the state store of ``environment``: PostgreSQL when one is configured, else a file.

    ``environ`` is passed on to :func:`backend_dsn`.
    """
    dsn = backend_dsn(backend_url=backend_url, manifest_backend=manifest_backend, environ=environ)
    if dsn is None:
        return FileStateStore(state_path if state_path is not None else default_state_path(environment))
    if state_path is not None:
        raise StateError(
            "both --state and a PostgreSQL backend are given; pass one (use `reconcile state push` "
            "to move a state file into PostgreSQL)"
        )
    return _postgres(dsn, environment)


@dataclass(frozen=True)
class Transfer:
    """What a push or pull did: ``outcome`` and the (lineage, serial) on each side afterwards."""

    outcome: Literal["copied", "up_to_date", "forced"]
    source: str
    target: str
    lineage: str
    serial: int

    def describe(self) -> str:
        if self.outcome == "up_to_date":
            return (
                f"{self.target} is already at serial {self.serial} of lineage {self.lineage}; nothing to do"
            )
        how = "overwrote (forced)" if self.outcome == "forced" else "copied"
        return f"{how} {self.source} → {self.target}: lineage {self.lineage}, serial {self.serial}"


def transfer_state(
    source: StateStore, target: StateStore, environment: str, *, force: bool = False
) -> Transfer:
    """Copy the state of ``source`` into ``target`` exactly (lineage and serial kept).

    Refused, unless ``force``, when the target holds another lineage, a newer serial, or the
    same serial with other content (the two have diverged). The caller holds the locks.
    """
    state = source.read()
    if state is None:
        raise StateError(f"{source.describe()} holds no state; nothing to copy")
    if state.environment != environment:
        raise StateError(
            f"{source.describe()} holds state of environment {state.environment!r}, not {environment!r}"
        )
    current = target.read()
    refusal = None if current is None else _refusal(state, current, target.describe())
    if current is not None and refusal is None and current.serial == state.serial:
        return Transfer("up_to_date", source.describe(), target.describe(), state.lineage, state.serial)
    if refusal is not None and not force:
        raise StateError(f"refusing to copy {source.describe()} over {refusal}; pass --force to overwrite it")
    target.replace(state, expected=None if current is None else (current.lineage, current.serial))
    outcome: Literal["copied", "forced"] = "forced" if refusal is not None else "copied"
    return Transfer(outcome, source.describe(), target.describe(), state.lineage, state.serial)


def _refusal(state: State, current: State, where: str) -> str | None:
    """Say why copying ``state`` over ``current`` loses data, or None when it is safe."""
    if current.lineage != state.lineage:
        return f"{where}: it holds another lineage ({current.lineage}, copying {state.lineage})"
    if current.serial > state.serial:
        return f"{where}: it is newer (serial {current.serial}, copying serial {state.serial})"
    if current.serial == state.serial and not current.content_equals(state):
        return f"{where}: both are at serial {state.serial} but hold different users (they diverged)"
    return None
