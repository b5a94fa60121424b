"""``reconcile import``: adopt users that already exist in the organization into recorded state."""

from __future__ import annotations

import json
from pathlib import Path

import click

from reconcile.cli.output import echo, echo_err
from reconcile.errors import ReconcileError
from reconcile.render.describe import safe


@click.command("import")
@click.argument("names", nargs=-1)
@click.option("--all", "all_users", is_flag=True, help="Adopt every organization user the manifest names.")
@click.option(
    "-f",
    "--file",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Manifest file or folder; only users it names can be adopted.",
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
    names: tuple[str, ...],
    all_users: bool,
    paths: tuple[Path, ...],
    state_path: Path | None,
    backend: str | None,
    endpoint: str | None,
    lock_timeout: float,
    fmt: str,
) -> None:
    """Adopt existing users NAME... (or --all) into state, so reconcile manages them from now on.

    \b
    Each NAME must be in the manifest and active in the organization; nothing is changed remotely.
    The record takes the user's id, email, contact, names and granted entitlements from the API.
    --all adopts every active organization user the manifest names and lists the organization
    users it leaves unmanaged because the manifest does not name them. Runs under the state lock.
    """
    from reconcile.adopt import import_users, state_dir_of, state_locked
    from reconcile.api.connect import open_client
    from reconcile.loader import load_manifest
    from reconcile.stores import open_store

    if all_users == bool(names):
        raise ReconcileError("name the users to import, or pass --all (not both)")
    manifest = load_manifest(list(paths)).manifest
    store = open_store(
        manifest.environment, state_path=state_path, backend_url=backend, manifest_backend=manifest.backend
    )
    with (
        state_locked(store, timeout=lock_timeout, purpose="import", on_wait=echo_err),
        open_client(manifest.environment, endpoint=endpoint, state_dir=state_dir_of(store)) as client,
    ):
        result = import_users(manifest, store, client, None if all_users else list(names))
    if fmt == "json":
        echo(
            json.dumps(
                {
                    "adopted": result.adopted,
                    "already_managed": result.already_managed,
                    "skipped_closed": result.skipped_closed,
                    "left_unmanaged": result.left_unmanaged,
                    "state_serial": result.serial,
                },
                indent=2,
                sort_keys=True,
            )
        )
        return

    def listing(items: list[str]) -> str:
        return ", ".join(safe(n) for n in items)

    if result.already_managed:
        echo(f"Already managed (left as recorded): {listing(result.already_managed)}")
    if result.skipped_closed:
        echo(f"Not adopted, closed in the organization: {listing(result.skipped_closed)}")
    if result.left_unmanaged:
        echo(
            f"Left unmanaged, the manifest does not name them ({len(result.left_unmanaged)}): "
            f"{listing(result.left_unmanaged)}"
        )
    if result.adopted:
        users = "user" if len(result.adopted) == 1 else "users"
        echo(
            f"Adopted {len(result.adopted)} {users} into {store.describe()} (state serial {result.serial}): "
            f"{listing(result.adopted)}"
        )
    else:
        echo(f"Nothing to adopt; {store.describe()} is unchanged.")
