"""``reconcile validate``: check manifests (and the password files they name) and change nothing.

Exit 0 when valid (warnings go to stderr), 1 with every problem listed.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from reconcile.cli.options import edge_settings, files_option, format_option
from reconcile.cli.output import echo, echo_warning, keep_until_exit
from reconcile.errors import ManifestError, Problem, counted
from reconcile.operations.validate import validate


def _problem_json(problem: Problem) -> dict[str, object]:
    loc = problem.location
    return {
        "file": loc.file if loc else None,
        "line": loc.line if loc else None,
        "column": loc.column if loc else None,
        "path": problem.path,
        "message": problem.message,
    }


@click.command("validate")
# Missing files are not click's to refuse: the loader lists them with every other problem.
@files_option("A manifest file, or a folder of *.yaml/*.yml files (recursive). Repeatable.", must_exist=False)
@format_option(help="json prints one document with ok, counts, problems and warnings.", dest="output_format")
@click.option(
    "--strict",
    is_flag=True,
    help="Treat warnings as problems (exit 1), e.g. a password variable that is not set.",
)
def command(paths: tuple[Path, ...], output_format: str, strict: bool) -> None:
    """Check manifests against every rule; change nothing, call no API.

    \b
    A password variable ({env: VAR}) that is not set is a warning: a plan needs no secrets.
    With --strict, every warning is a problem.
    reconcile validate -f desk.yaml
    reconcile validate -f users/ -f org.yaml --format json
    reconcile validate -f desk.yaml --strict      # where apply runs, with its secrets
    """
    try:
        validated = validate(paths, strict=strict, environ=edge_settings().environ)
    except ManifestError as exc:
        if output_format == "json":
            echo(
                json.dumps(
                    {
                        "ok": False,
                        "problems": [_problem_json(p) for p in exc.problems],
                        "more_problems": exc.omitted,
                        "warnings": [],
                    },
                    indent=2,
                )
            )
            raise click.exceptions.Exit(1) from None
        raise
    keep_until_exit(validated)
    loaded, warnings, statuses = validated.loaded, validated.warnings, validated.statuses
    for warning in warnings:
        echo_warning(str(warning))
    users = len(loaded.manifest.users)
    files = len(loaded.files)
    if output_format == "json":
        echo(
            json.dumps(
                {
                    "ok": True,
                    "users": users,
                    "active": statuses["active"],
                    "cancelled": statuses["cancelled"],
                    "files": list(loaded.files),
                    "digest": loaded.digest,
                    "problems": [],
                    "warnings": [_problem_json(w) for w in warnings],
                },
                indent=2,
            )
        )
        return
    echo(
        f"OK: {counted(users, 'user')} ({statuses['active']} active, "
        f"{statuses['cancelled']} cancelled) in {counted(files, 'file')}"
    )
