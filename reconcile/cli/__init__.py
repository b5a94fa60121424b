"""The command line: a thin adapter over the library.

Each command lives in its own module, turns options into plain values, calls one library
function and prints through :mod:`reconcile.cli.output`. Errors map to exit codes in one place
(:func:`main`): ReconcileError → its ``exit_code`` (1, or 3 for policy), a usage error (missing
file, unknown option or command) → 1, Ctrl-C → 130. Exit 2 is reserved for
``--detailed-exitcode``'s "changes present": click's own 2 for usage errors would let a CI step
``… --detailed-exitcode || test $? -eq 2`` pass on a typo or a missing manifest.
"""

from __future__ import annotations

import importlib
import sys

import click

from reconcile import __version__
from reconcile.cli.output import echo_error
from reconcile.errors import ReconcileError

# Command name -> the module that defines it (each exposes ``command``). Modules are imported
# only when their command runs (or help lists them): `reconcile plan` never pays for the
# simulator, jsonschema or psycopg.
_COMMAND_MODULES = {
    "validate": "validate",
    "plan": "plan",
    "show": "show",
    "check": "check",
    "apply": "apply",
    "refresh": "refresh",
    "import": "import_cmd",
    "state": "state",
    "sim": "sim",
    "schema": "schema",
}


class _LazyGroup(click.Group):
    """A click group that imports a command's module on first use (click's documented pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(_COMMAND_MODULES) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _COMMAND_MODULES:
            module = importlib.import_module(f"reconcile.cli.{_COMMAND_MODULES[cmd_name]}")
            self.add_command(module.command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="reconcile")
def cli() -> None:
    """Keep partner-API evaluation users in line with YAML manifests in Git.

    \b
    reconcile validate -f desk.yaml        check a manifest, change nothing
    reconcile plan -f desk.yaml            show what would change
    reconcile apply -f desk.yaml           make the partner API match
    """


def all_commands() -> dict[str, click.Command]:
    """Every top-level command, imported (for tests and documentation)."""
    ctx = click.Context(cli)
    found = {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}
    return {name: command for name, command in found.items() if command is not None}


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and map errors to exit codes."""
    try:
        # Without standalone mode, click returns ctx.exit(code)'s code instead of exiting.
        code = cli.main(args=argv, prog_name="reconcile", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except ReconcileError as exc:
        echo_error(str(exc))
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        echo_error("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        echo_error("interrupted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(0)
