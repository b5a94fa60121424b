"""``reconcile show PLANFILE``: draw a saved plan in any format."""

from __future__ import annotations

from pathlib import Path

import click

from reconcile.cli.options import format_options
from reconcile.cli.output import print_plan
from reconcile.planning.plan import load_plan


@click.command("show")
@click.argument("planfile", type=click.Path(dir_okay=False, path_type=Path))
@format_options
def command(planfile: Path, fmt: str, show_pii: bool) -> None:
    """Show a plan saved with `reconcile plan --out PLANFILE`."""
    print_plan(load_plan(planfile), fmt, show_pii)
