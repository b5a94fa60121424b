"""All terminal output goes through here: colour only on a TTY and never with NO_COLOR."""

from __future__ import annotations

import json
import os
import sys
from typing import IO, TYPE_CHECKING, Any

import click

from reconcile.errors import printable

if TYPE_CHECKING:
    from reconcile.operations.inputs import Reporter
    from reconcile.planning.plan import Plan


_KEPT: list[object] = []


def keep_until_exit(value: object) -> None:
    """Keep ``value`` alive until the process ends, which frees it all at once (:func:`run`).

    A 100k-user plan is millions of objects; freeing them one by one when the command returns
    takes about a second after the last line is printed. Each :func:`main` starts with none kept,
    so a process running commands in turn (the tests) holds only the last one's.
    """
    _KEPT.append(value)


def release_kept() -> None:
    """Let go of what :func:`keep_until_exit` kept (a new command starts)."""
    _KEPT.clear()


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
    """Print a warning to stderr, control characters escaped (it may quote untrusted input)."""
    label = style("Warning: ", fg="yellow", bold=True, stream=sys.stderr)
    echo_err(label + printable(text, keep_newlines=True))


def echo_error(text: str) -> None:
    """Print an error to stderr, control characters escaped (it may quote untrusted input)."""
    label = style("Error: ", fg="red", bold=True, stream=sys.stderr)
    echo_err(label + printable(text, keep_newlines=True))


def echo_json(value: object) -> None:
    """Print ``value`` to stdout as indented JSON with sorted keys (stable for scripts and diffs)."""
    echo(json.dumps(value, indent=2, sort_keys=True))


def print_plan(plan: Plan, fmt: str, show_pii: bool, *, err: bool = False) -> None:
    """Render ``plan`` to stdout (stderr with ``err``); colour only for text on a TTY without NO_COLOR.

    Written a piece at a time: a plan of 300k actions is 150 MB of JSON, and one string of it
    (plus click's copies) would double the memory a large plan takes.
    """
    from reconcile.render import RenderOptions, render_pieces

    stream = sys.stderr if err else sys.stdout
    options = RenderOptions(colour=fmt == "text" and use_colour(stream), show_pii=show_pii)
    for piece in render_pieces(plan, fmt, options):  # whole lines; the last ends with the one newline
        click.echo(piece, nl=False, err=err)


def stderr_reporter(**more: Any) -> Reporter:
    """A Reporter that says an operation's progress and warnings on stderr (``more``: other callbacks)."""
    from reconcile.operations.inputs import Reporter

    return Reporter(say=echo_err, warn=echo_warning, **more)
