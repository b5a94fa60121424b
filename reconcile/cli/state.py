"""``reconcile state show | list | unlock | rebind`` (and the PostgreSQL commands of cli/state_pg.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from reconcile.cli import state_pg
from reconcile.cli.groups import SummaryGroup
from reconcile.cli.options import (
    StateScope,
    backend_option,
    edge_settings,
    format_option,
    lock_timeout_option,
    options,
    remote_inputs,
    state_option,
    state_scope,
)
from reconcile.cli.output import echo, echo_json, stderr_reporter
from reconcile.errors import StateError, counted, printable
from reconcile.operations.inputs import RemoteInputs
from reconcile.state.model import State
from reconcile.state.open import BACKEND_VARIABLE, open_store
from reconcile.state.store import StateStore

_state_options = options(
    state_scope(),
    backend_option(f"State in PostgreSQL at this DSN instead of a file (default ${BACKEND_VARIABLE})."),
    state_option("State file (default state/<environment>.json)."),
)


def _open(scope: StateScope, state_path: Path | None, backend: str | None) -> StateStore:
    return open_store(
        scope.environment,
        state_path=state_path,
        backend_url=backend,
        manifest_backend=scope.manifest_backend,
        environ=edge_settings().environ,
    )


def _load(store: StateStore, environment: str) -> State:
    state = store.read()
    if state is None:
        raise StateError(f"no state at {store.describe()}; nothing was applied to {environment} yet")
    return state


@click.group("state", cls=SummaryGroup)
def command() -> None:
    """Inspect recorded state and its lock."""


@command.command("show")
@_state_options
@format_option()
def show_command(scope: StateScope, state_path: Path | None, backend: str | None, fmt: str) -> None:
    """Show the state's identity, counts, lock holder and open journal intents."""
    from reconcile.apply.intents import IntentJournal

    store = _open(scope, state_path, backend)
    environment = scope.environment
    intents = IntentJournal(store.journal(environment)).unsettled()
    # An interrupted first apply may have saved nothing yet: its open intents still need showing.
    state = store.load(environment) if intents else _load(store, environment)
    holder = store.lock_holder()
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
        "binding": state.binding.model_dump(mode="json") if state.binding else None,
        "users": {"total": len(state.users), **lifecycle, "awaiting_agreement": awaiting},
        "accounts": _account_counts(state),
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
        f"bound to: {state.binding.describe()}"
        if state.binding
        else "bound to: nothing yet (state written before bindings; the next write binds it)"
    )
    echo(
        f"users: {len(state.users)} ({lifecycle['active']} active, {lifecycle['cancelled']} cancelled, "
        f"{awaiting} awaiting the agreement)"
    )
    if state.accounts:
        counts = info["accounts"]
        echo(
            f"accounts: {counts['total']} ({counts['trading']} trading, {counts['locked']} locked, "
            f"{counts['revoked']} revoked)"
        )
    echo(f"lock: {printable(holder.describe())}" if holder else "lock: not held")
    for intent in intents:
        # The lock's holder may be the very apply that wrote the intent, still waiting for its answer.
        when = (
            f"if {holder.describe()} is still running, this is its call in flight and it settles it "
            "itself; if that apply died, the next apply settles it before anything else"
            if holder
            else "left by an apply that did not finish; the next apply settles it before anything else"
        )
        echo(f"open intent {intent.id}: {intent.call} of {counted(len(intent.actions), 'user')}; {when}")


@command.command("list")
@_state_options
@format_option()
def list_command(scope: StateScope, state_path: Path | None, backend: str | None, fmt: str) -> None:
    """List the managed users: name, id, lifecycle, grants, and their evaluation accounts."""
    state = _load(_open(scope, state_path, backend), scope.environment)
    accounts_of: dict[str, list[dict[str, Any]]] = {}
    for account, record in sorted(state.accounts.items()):
        accounts_of.setdefault(record.user, []).append(
            {
                "name": account,
                "accountId": record.accountId,
                "permission": record.permission,
                "trading": record.trading,
                "riskCategory": record.riskCategory,
                "lastReset": record.lastReset.isoformat() if record.lastReset else None,
            }
        )
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "userId": record.userId,
            "lifecycle": record.lifecycle,
            "origin": record.origin,
            "entitlements": {k: g.status for k, g in sorted(record.entitlements.items())},
            "accounts": accounts_of.get(name, []),
        }
        for name, record in sorted(state.users.items())
    ]
    if fmt == "json":
        echo_json(rows)
        return
    for row in rows:
        grants = ", ".join(f"{k}={v}" for k, v in row["entitlements"].items()) or "-"
        accounts = ", ".join(f"{a['name']}={_account_status(a)}" for a in row["accounts"]) or "-"
        # Names come from state (and the API, for adopted users): escaped, never raw to a terminal.
        echo(
            f"{printable(row['name'])}\t{row['userId']}\t{row['lifecycle']}\t{printable(grants)}"
            f"\t{printable(accounts)}"
        )


def _account_status(account: dict[str, Any]) -> str:
    return _status(account["permission"], account["trading"])


def _status(permission: str, trading: str) -> str:
    """``revoked``, ``locked`` or ``trading``: what the trader can do in the account."""
    if permission == "revoked":
        return "revoked"
    return "locked" if trading == "locked" else "trading"


def _account_counts(state: State) -> dict[str, int]:
    counts = {"total": len(state.accounts), "trading": 0, "locked": 0, "revoked": 0}
    for record in state.accounts.values():
        counts[_status(record.permission, record.trading)] += 1
    return counts


@command.command("unlock")
@click.argument("lock_id")
@_state_options
def unlock_command(lock_id: str, scope: StateScope, state_path: Path | None, backend: str | None) -> None:
    """Remove the lock record LOCK_ID left behind by a run that is gone."""
    holder = _open(scope, state_path, backend).unlock(lock_id)
    echo(f"removed {holder.describe()}")


@command.command("forget-reset")
@click.argument("account")
@_state_options
@lock_timeout_option()
def forget_reset_command(
    account: str, scope: StateScope, state_path: Path | None, backend: str | None, lock_timeout: float
) -> None:
    """Forget ACCOUNT's reset whose answer was lost, so the next apply resets it again.

    \b
    Only after checking the account: if its balance is back at the initial balance, the reset
    happened and must not be forgotten (a second reset undoes the trading done since).
    """
    from reconcile.operations.forget_reset import forget_reset

    store = _open(scope, state_path, backend)
    done = forget_reset(store, scope.environment, account, lock_timeout=lock_timeout)
    echo(
        f"account {printable(done.account)}: the unconfirmed reset to {done.reset_to} is forgotten "
        f"(serial {done.serial}); the next apply resets it to its resetTo again"
    )


@command.command("rebind")
@remote_inputs("Manifest of the organization the state moves to (its partner.dataAccountId).")
def rebind_command(inputs: RemoteInputs) -> None:
    """Move the state to another endpoint or organization, on purpose.

    plan and apply refuse state bound elsewhere; use this when the organization really moved
    (a new --endpoint URL, a new partner data account). Then check the state against it with
    `reconcile plan --refresh`.
    """
    from reconcile.operations.rebind import rebind

    rebound = rebind(inputs, stderr_reporter())
    where, new = rebound.where, rebound.new
    if rebound.serial is None:
        echo(f"{where} is already bound to {new.describe()}; nothing to do")
        return
    was = rebound.old.describe() if rebound.old else "nothing (written before bindings)"
    echo(
        f"{where}: rebound from {was} to {new.describe()} (serial {rebound.serial}). "
        "Check it against the organization there with `reconcile plan --refresh`."
    )


# The PostgreSQL commands (migrate, push, pull) live in their own module; psycopg itself is
# imported only when one of them runs.
for _backend_command in (state_pg.migrate_command, state_pg.push_command, state_pg.pull_command):
    command.add_command(_backend_command)
