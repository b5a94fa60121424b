"""All terminal output goes through here: colour only on a TTY and never with NO_COLOR."""

from __future__ import annotations

import json
import os
import sys
from typing import IO

import click


def use_colour(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` is a terminal and NO_COLOR is unset (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def style(text: str, *, fg: str | None = None, bold: bool = False, stream: IO[str] | None = None) -> str:
    """Colour ``text`` when colour is allowed on ``stream``."""
    if not use_colour(stream):
        return text
    return click.style(text, fg=fg, bold=bold)


def echo(text: str = "") -> None:
    """Print to stdout (results)."""
    click.echo(text)


def echo_err(text: str = "") -> None:
    """Print to stderr (progress, warnings)."""
    click.echo(text, err=True)


def echo_warning(text: str) -> None:
    echo_err(style("Warning: ", fg="yellow", bold=True, stream=sys.stderr) + _escaped_lines(text))


def echo_error(text: str) -> None:
    echo_err(style("Error: ", fg="red", bold=True, stream=sys.stderr) + _escaped_lines(text))


def _escaped_lines(text: str) -> str:
    """Escape what a terminal would act on (ANSI escapes, bidi overrides) in names an error quotes."""
    from reconcile.render.describe import safe

    return "\n".join(safe(line) for line in text.split("\n"))


def echo_json(value: object) -> None:
    """Print ``value`` to stdout as indented JSON with sorted keys (stable for scripts and diffs)."""
    echo(json.dumps(value, indent=2, sort_keys=True))
