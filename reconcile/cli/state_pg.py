"""``reconcile state migrate | push | pull``: the PostgreSQL backend's schema, and moving state.

The ``state`` group (reconcile/cli/state.py) attaches these commands.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from reconcile.cli.options import (
    StateScope,
    backend_option,
    edge_settings,
    lock_timeout_option,
    options,
    state_option,
    state_scope,
)
from reconcile.cli.output import echo, echo_err
from reconcile.errors import StateError
from reconcile.state.file import FileStateStore, default_state_path
from reconcile.state.lock import state_lock
from reconcile.state.open import BACKEND_VARIABLE, Transfer, backend_dsn, transfer_state


def _require_dsn(backend: str | None, scope: StateScope | None = None) -> str:
    dsn = backend_dsn(
        backend_url=backend,
        manifest_backend=scope.manifest_backend if scope else None,
        environ=edge_settings().environ,
    )
    if dsn is None:
        raise StateError(
            f"no PostgreSQL backend given: pass --backend postgresql://… or set {BACKEND_VARIABLE}"
        )
    return dsn


_backend_option = backend_option(f"PostgreSQL DSN (postgresql://user@host/db); default ${BACKEND_VARIABLE}.")


@click.command("migrate")
@_backend_option
def migrate_command(backend: str | None) -> None:
    """Create or upgrade the state schema in PostgreSQL.

    Safe to run at any time and from several places at once: it does nothing when the schema is
    current, and refuses a schema newer than this reconcile knows.
    """
    from reconcile.state.postgres import mask_dsn, migrate

    dsn = _require_dsn(backend)
    before, after = migrate(dsn)
    if before == after:
        echo(f"{mask_dsn(dsn)}: state schema is at version {after}; nothing to do")
    else:
        echo(f"{mask_dsn(dsn)}: state schema migrated from version {before} to {after}")


_transfer_options = options(
    state_scope(required=True),
    state_option("The state file (default state/<environment>.json)."),
    _backend_option,
    click.option(
        "--force", is_flag=True, help="Overwrite even another lineage, a newer serial or diverged content."
    ),
    lock_timeout_option("How long to wait for a running apply's lock (negative: forever)."),
)


@contextlib.contextmanager
def _locked_pair(
    scope: StateScope, state_path: Path | None, backend: str | None, timeout: float, purpose: str
) -> Iterator[tuple[FileStateStore, Any]]:
    """Open and lock both stores (file first, then PostgreSQL: one order everywhere, no deadlock)."""
    from reconcile.state.postgres import PostgresStateStore

    environment = scope.environment
    dsn = _require_dsn(backend, scope)
    path = state_path if state_path is not None else default_state_path(environment)
    file_store = FileStateStore(path)
    with (
        PostgresStateStore(dsn, environment) as pg_store,
        state_lock(path, timeout=timeout, purpose=purpose),
        pg_store.lock(timeout=timeout, purpose=purpose, on_wait=echo_err),
    ):
        yield file_store, pg_store


def _report(result: Transfer) -> None:
    echo(result.describe())


@click.command("push")
@_transfer_options
def push_command(
    scope: StateScope, state_path: Path | None, backend: str | None, force: bool, lock_timeout: float
) -> None:
    """Copy the local state file into PostgreSQL (lineage and serial kept).

    Refused when PostgreSQL holds another lineage, a newer serial, or diverged content, unless
    --force. Both sides are locked while copying.
    """
    with _locked_pair(scope, state_path, backend, lock_timeout, "state push") as (file_store, pg_store):
        _report(transfer_state(file_store, pg_store, scope.environment, force=force))


@click.command("pull")
@_transfer_options
def pull_command(
    scope: StateScope, state_path: Path | None, backend: str | None, force: bool, lock_timeout: float
) -> None:
    """Copy the state in PostgreSQL into the local state file (lineage and serial kept).

    Refused when the file holds another lineage, a newer serial, or diverged content, unless
    --force. Both sides are locked while copying.
    """
    with _locked_pair(scope, state_path, backend, lock_timeout, "state pull") as (file_store, pg_store):
        _report(transfer_state(pg_store, file_store, scope.environment, force=force))
