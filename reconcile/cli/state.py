"""``reconcile state show | list | unlock`` (and the PostgreSQL commands of cli/state_pg.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from reconcile.cli import state_pg
from reconcile.cli.options import backend_option, environment_option, format_option, options, state_option
from reconcile.cli.output import echo, echo_json
from reconcile.errors import LockError, StateError
from reconcile.locking import unlock
from reconcile.render.describe import safe
from reconcile.state import FileStateStore, State, StateStore
from reconcile.stores import BACKEND_VARIABLE, open_store

_state_options = options(
    environment_option(),
    backend_option(f"State in PostgreSQL at this DSN instead of a file (default ${BACKEND_VARIABLE})."),
    state_option("State file (default state/<environment>.json)."),
)


def _load(store: StateStore, environment: str) -> State:
    state = store.read()
    if state is None:
        raise StateError(f"no state at {store.describe()}; nothing was applied to {environment} yet")
    return state


@click.group("state")
def command() -> None:
    """Inspect recorded state and its lock."""


@command.command("show")
@_state_options
@format_option()
def show_command(environment: str, state_path: Path | None, backend: str | None, fmt: str) -> None:
    """Show the state's identity, counts, lock holder and open journal intents."""
    store = open_store(environment, state_path=state_path, backend_url=backend)
    state = _load(store, environment)
    holder = store.lock_holder()
    intents = store.journal(environment).unsettled()
    lifecycle = {"active": 0, "cancelled": 0}
    awaiting = 0
    for record in state.users.values():
        lifecycle[record.lifecycle] += 1
        awaiting += sum(1 for g in record.entitlements.values() if g.status == "awaiting_agreement")
    info: dict[str, Any] = {
        "path": store.describe(),
        "environment": state.environment,
        "lineage": state.lineage,
        "serial": state.serial,
        "users": {"total": len(state.users), **lifecycle, "awaiting_agreement": awaiting},
        "lock": holder.model_dump(mode="json") if holder else None,
        "open_intents": [{"id": i.id, "call": i.call, "users": len(i.actions)} for i in intents],
    }
    if fmt == "json":
        echo_json(info)
        return
    echo(
        f"{store.describe()}: environment {state.environment}, lineage {state.lineage}, serial {state.serial}"
    )
    echo(
        f"users: {len(state.users)} ({lifecycle['active']} active, {lifecycle['cancelled']} cancelled, "
        f"{awaiting} awaiting the agreement)"
    )
    echo(f"lock: {safe(holder.describe())}" if holder else "lock: not held")
    for intent in intents:
        echo(
            f"open intent {intent.id}: {intent.call} of {len(intent.actions)} user(s); "
            "the next apply settles it"
        )


@command.command("list")
@_state_options
@format_option()
def list_command(environment: str, state_path: Path | None, backend: str | None, fmt: str) -> None:
    """List the managed users: name, id, lifecycle, grants."""
    state = _load(open_store(environment, state_path=state_path, backend_url=backend), environment)
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "userId": record.userId,
            "lifecycle": record.lifecycle,
            "origin": record.origin,
            "entitlements": {k: g.status for k, g in sorted(record.entitlements.items())},
        }
        for name, record in sorted(state.users.items())
    ]
    if fmt == "json":
        echo_json(rows)
        return
    for row in rows:
        grants = ", ".join(f"{k}={v}" for k, v in row["entitlements"].items()) or "-"
        # Names come from state (and the API, for adopted users): escaped, never raw to a terminal.
        echo(f"{safe(row['name'])}\t{row['userId']}\t{row['lifecycle']}\t{safe(grants)}")


@command.command("unlock")
@click.argument("lock_id")
@_state_options
def unlock_command(lock_id: str, environment: str, state_path: Path | None, backend: str | None) -> None:
    """Remove the lock record LOCK_ID left behind by a run that is gone."""
    store = open_store(environment, state_path=state_path, backend_url=backend)
    if not isinstance(store, FileStateStore):
        raise LockError(
            f"{store.describe()} needs no unlock: its lock is released the moment the holder's "
            "connection closes, and `reconcile state show` names only a holder that is still running"
        )
    holder = unlock(store.path, lock_id)
    echo(f"removed {holder.describe()}")


# The PostgreSQL commands (migrate, push, pull) live in their own module; psycopg itself is
# imported only when one of them runs.
for _backend_command in (state_pg.migrate_command, state_pg.push_command, state_pg.pull_command):
    command.add_command(_backend_command)
