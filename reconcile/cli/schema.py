"""``reconcile schema``: print the manifest's JSON Schema, generated from the models."""

from __future__ import annotations

import json

import click

from reconcile.cli.output import echo
from reconcile.manifest.loader import manifest_schema


def schema_text() -> str:
    """The schema as shipped in reconcile/schema/manifest.schema.json (stable key order)."""
    return json.dumps(manifest_schema(), indent=2, sort_keys=True) + "\n"


@click.command("schema")
def command() -> None:
    """Print the manifest JSON Schema (for editors and CI checks).

    \b
    reconcile schema > reconcile/schema/manifest.schema.json
    Editors pick it up from a first line such as:
    # yaml-language-server: $schema=../reconcile/schema/manifest.schema.json
    """
    echo(schema_text().removesuffix("\n"))
