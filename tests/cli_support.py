"""Run the real `reconcile` entry point, in-process or in a child, as the command-line tests do (no tests)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from reconcile.cli import main


class _Entry(click.Command):
    """Run the real entry point, so exit codes come from its error mapping."""

    def main(self, args: Any = None, prog_name: Any = None, **extra: Any) -> Any:  # type: ignore[override]
        main(list(args or ()))


def call(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """``reconcile ARGS…`` through :func:`reconcile.cli.main`, output read from ``capsys``: code, out, err.

    Unlike :func:`run`, the command shares this process's environment and streams (for tests
    that patch them with ``monkeypatch`` and read them with ``capsys``).
    """
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    else:
        code = 0
    out, err = capsys.readouterr()
    return code, out, err


def sim_serve_argv(db: Path, *options: str) -> list[str]:
    """The command line of ``reconcile sim serve`` on a free loopback port over ``db``."""
    return [sys.executable, "-m", "reconcile", "sim", "serve", "--port", "0", *options, "--db", str(db)]


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """``reconcile ARGS…`` through :func:`reconcile.cli.main`; stdout and stderr kept apart."""
    return CliRunner().invoke(_Entry("reconcile"), [str(a) for a in args], env=env)


def run_child(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m reconcile ARGS…`` in a child process; output as text, any exit code returned."""
    return subprocess.run(
        [sys.executable, "-m", "reconcile", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )
