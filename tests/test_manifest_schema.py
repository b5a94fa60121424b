"""The shipped JSON Schema is the generated one, and the example manifest passes it and the loader."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml
from click.testing import CliRunner

from reconcile.cli import cli
from reconcile.cli.schema import schema_text
from reconcile.manifest.loader import load_manifest

ROOT = Path(__file__).parent.parent
SHIPPED = ROOT / "reconcile" / "schema" / "manifest.schema.json"
DESK = ROOT / "examples" / "desk.yaml"


def test_shipped_schema_is_what_reconcile_schema_prints() -> None:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    assert result.output == SHIPPED.read_text() == schema_text(), (
        "regenerate: reconcile schema > reconcile/schema/manifest.schema.json"
    )


def test_example_points_editors_at_the_schema() -> None:
    first = DESK.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../reconcile/schema/manifest.schema.json"
    assert (DESK.parent / first.split("=", 1)[1]).resolve() == SHIPPED.resolve()


def test_example_loads_cleanly_and_passes_the_schema() -> None:
    loaded = load_manifest([DESK])
    assert len(loaded.manifest.users) == 9
    assert loaded.warnings == ()
    jsonschema.Draft202012Validator(json.loads(SHIPPED.read_text())).validate(
        yaml.safe_load(DESK.read_text())
    )


def test_schema_rejects_unknown_keys_for_editors() -> None:
    data = yaml.safe_load(DESK.read_text())
    data["users"][0]["emial"] = data["users"][0].pop("email")
    errors = list(jsonschema.Draft202012Validator(json.loads(SHIPPED.read_text())).iter_errors(data))
    assert any("emial" in e.message for e in errors)
