"""``reconcile refresh``: record in state what the API shows for managed users; change nothing remote."""

from __future__ import annotations

import click

from reconcile.cli.options import format_option, remote_inputs
from reconcile.cli.output import echo, echo_json, stderr_reporter
from reconcile.errors import counted
from reconcile.operations.inputs import RemoteInputs
from reconcile.render.describe import safe, unmanaged_sentence
from reconcile.render.text import drift_lines


@click.command("refresh")
@remote_inputs("Manifest file or folder (gives the environment and the entitlement names).")
@format_option()
def command(inputs: RemoteInputs, fmt: str) -> None:
    """Update recorded state from the API (emails, names, contacts, entitlements, closed users).

    \b
    Nothing remote is changed. Users closed outside reconcile are recorded as cancelled; users
    created outside stay unmanaged (adopt them with `reconcile import`). Needs API credentials
    (for environment sim: the embedded simulator). Runs under the state lock.
    """
    from reconcile.operations.remote import refresh

    refreshed = refresh(inputs, stderr_reporter())
    result, where = refreshed.result, refreshed.where
    if fmt == "json":
        echo_json(
            {
                "changed": list(result.changed),
                "changed_accounts": list(result.changed_accounts),
                "drift": [d.model_dump(mode="json") for d in result.drift],
                "unmanaged": list(result.unmanaged),
                "state_serial": result.serial,
                "requests": result.requests,
            }
        )
        return
    for line in drift_lines(result.drift):
        echo(line)
    if result.unmanaged:
        echo(unmanaged_sentence(result.unmanaged))
    if result.changed_accounts:
        echo(
            f"Refreshed {counted(len(result.changed_accounts), 'account')} in {where}: "
            f"{', '.join(safe(n) for n in result.changed_accounts)}"
        )
    if result.changed:
        echo(
            f"Refreshed {counted(len(result.changed), 'user')} in {where} "
            f"(state serial {result.serial}): {', '.join(safe(n) for n in result.changed)}"
        )
    elif not result.changed_accounts:
        echo(f"Recorded state matches the API; {where} is unchanged (serial {result.serial}).")
