"""Run the real `reconcile` entry point in-process, as the command-line tests do (holds no tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner, Result

from reconcile.cli import main


class _Entry(click.Command):
    """Run the real entry point, so exit codes come from its error mapping."""

    def main(self, args: Any = None, prog_name: Any = None, **extra: Any) -> Any:  # type: ignore[override]
        main(list(args or ()))


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """``reconcile ARGS…`` through :func:`reconcile.cli.main`; stdout and stderr kept apart."""
    return CliRunner().invoke(_Entry("reconcile"), [str(a) for a in args], env=env)
