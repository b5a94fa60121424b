"""``reconcile refresh``: record in state what the API shows for managed users; change nothing remote."""

from __future__ import annotations

import json
from pathlib import Path

import click

from reconcile.cli.output import echo, echo_err
from reconcile.render.describe import describe_drift, safe


@click.command("refresh")
@click.option(
    "-f",
    "--file",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Manifest file or folder (gives the environment and the entitlement names).",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Recorded state file (default: state/<environment>.json).",
)
@click.option(
    "--backend",
    metavar="URL",
    help="Keep state in PostgreSQL at this DSN instead of a file; default $RECONCILE_BACKEND, "
    "then the manifest's backend.postgres.dsnEnv.",
)
@click.option("--endpoint", metavar="URL", help="Partner API base URL (default: the environment's host).")
@click.option(
    "--lock-timeout",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds to wait for another run's lock on the state.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(
    paths: tuple[Path, ...],
    state_path: Path | None,
    backend: str | None,
    endpoint: str | None,
    lock_timeout: float,
    fmt: str,
) -> None:
    """Update recorded state from the API (emails, names, contacts, entitlements, closed users).

    \b
    Nothing remote is changed. Users closed outside reconcile are recorded as cancelled; users
    created outside stay unmanaged (adopt them with `reconcile import`). Needs API credentials
    (for environment sim: the embedded simulator). Runs under the state lock.
    """
    from reconcile.adopt import refresh_state, state_dir_of, state_locked
    from reconcile.api.connect import open_client
    from reconcile.loader import load_manifest
    from reconcile.stores import open_store

    manifest = load_manifest(list(paths)).manifest
    store = open_store(
        manifest.environment, state_path=state_path, backend_url=backend, manifest_backend=manifest.backend
    )
    with (
        state_locked(store, timeout=lock_timeout, purpose="refresh", on_wait=echo_err),
        open_client(manifest.environment, endpoint=endpoint, state_dir=state_dir_of(store)) as client,
    ):
        result = refresh_state(manifest, store, client)
    if fmt == "json":
        echo(
            json.dumps(
                {
                    "changed": list(result.changed),
                    "drift": [d.model_dump(mode="json") for d in result.drift],
                    "unmanaged": list(result.unmanaged),
                    "state_serial": result.serial,
                    "requests": result.requests,
                },
                indent=2,
                sort_keys=True,
            )
        )
        return
    for entry in result.drift:
        echo(f"  ! {safe(entry.user)}  {describe_drift(entry, show_pii=True)}")
    if result.unmanaged:
        echo(f"Unmanaged (never changed or cancelled): {', '.join(safe(n) for n in result.unmanaged)}")
    if result.changed:
        users = "user" if len(result.changed) == 1 else "users"
        echo(
            f"Refreshed {len(result.changed)} {users} in {store.describe()} "
            f"(state serial {result.serial}): {', '.join(safe(n) for n in result.changed)}"
        )
    else:
        echo(f"Recorded state matches the API; {store.describe()} is unchanged (serial {result.serial}).")
