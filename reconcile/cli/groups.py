"""The click group class every ``reconcile`` group uses: summaries whole, never cut at a width."""

from __future__ import annotations

import sys

import click


class SummaryGroup(click.Group):
    """A group whose command list shows each command's summary whole, wrapped rather than cut off."""

    def summary(self, ctx: click.Context, name: str) -> str | None:
        """Return the one line ``--help`` lists for ``name`` (None: not listed)."""
        command = self.get_command(ctx, name)
        if command is None or command.hidden:
            return None
        # click cuts summaries to fit the terminal ("…exactly what a..."); the formatter wraps instead.
        return command.get_short_help_str(limit=sys.maxsize)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, text) for name in self.list_commands(ctx) if (text := self.summary(ctx, name))]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
