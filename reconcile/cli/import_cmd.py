"""``reconcile import``: adopt users that already exist in the organization into recorded state."""

from __future__ import annotations

import click

from reconcile.cli.options import format_option, remote_inputs
from reconcile.cli.output import echo, echo_json, stderr_reporter
from reconcile.errors import ReconcileError, counted
from reconcile.operations.inputs import RemoteInputs
from reconcile.render.describe import safe


@click.command("import")
@click.argument("names", nargs=-1)
@click.option("--all", "all_users", is_flag=True, help="Adopt every organization user the manifest names.")
@remote_inputs("Manifest file or folder; only users it names can be adopted.")
@format_option()
def command(names: tuple[str, ...], all_users: bool, inputs: RemoteInputs, fmt: str) -> None:
    """Adopt existing users NAME... (or --all) into state, so reconcile manages them from now on.

    \b
    Each NAME must be in the manifest and active in the organization; nothing is changed remotely.
    The record takes the user's id, email, contact, names and granted entitlements from the API.
    --all adopts every active organization user the manifest names and lists the organization
    users it leaves unmanaged because the manifest does not name them. Runs under the state lock.
    """
    from reconcile.operations.remote import import_

    if all_users == bool(names):
        raise ReconcileError("name the users to import, or pass --all (not both)")
    imported = import_(inputs, None if all_users else list(names), stderr_reporter())
    result, where = imported.result, imported.where
    if fmt == "json":
        echo_json(
            {
                "adopted": result.adopted,
                "already_managed": result.already_managed,
                "skipped_closed": result.skipped_closed,
                "left_unmanaged": result.left_unmanaged,
                "accounts_adopted": result.accounts_adopted,
                "accounts_elsewhere": result.accounts_elsewhere,
                "state_serial": result.serial,
            }
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
    if result.accounts_elsewhere:
        echo(f"Not adopted, held by another user: {listing(result.accounts_elsewhere)}")
    if result.accounts_adopted:
        adopted = result.accounts_adopted
        echo(f"Adopted {counted(len(adopted), 'account')}: {listing(adopted)}")
    if result.adopted:
        echo(
            f"Adopted {counted(len(result.adopted), 'user')} into {where} "
            f"(state serial {result.serial}): "
            f"{listing(result.adopted)}"
        )
    elif not result.accounts_adopted:
        echo(f"Nothing to adopt; {where} is unchanged.")
