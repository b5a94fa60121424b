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
import io
import os
import sys
import threading
from typing import NoReturn

import click

from reconcile import __version__
from reconcile.cli.groups import SummaryGroup
from reconcile.cli.output import echo_err, echo_error, release_kept
from reconcile.errors import ReconcileError, describe_os_error, printable

# Command name -> (the module that defines it, exposing ``command``; its summary). Modules are
# imported only when their command runs: `reconcile plan` never pays for the simulator,
# jsonschema or psycopg, and `reconcile --help` lists the summaries below without importing any.
_COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("validate", "Check manifests against every rule; change nothing, call no API."),
    "plan": ("plan", "Show what apply would change; needs no API credentials (except with --refresh)."),
    "show": ("show", "Show a plan saved with `reconcile plan --out PLANFILE`."),
    "check": ("check", "Exit 1 (and print the plan) when apply would change something; 0 when in sync."),
    "apply": ("apply", "Make the partner API match the manifest, or do exactly what a saved plan says."),
    "watch": ("watch", "Plan and apply in a loop, like a GitOps controller (metrics, HA on PostgreSQL)."),
    "refresh": ("refresh", "Update recorded state from the API; change nothing remote."),
    "import": ("import_cmd", "Adopt users that already exist in the organization into state."),
    "state": ("state", "Inspect recorded state and its lock; move state to and from PostgreSQL."),
    "sim": ("sim", "Run the partner-API simulator and drive it."),
    "schema": ("schema", "Print the manifest JSON Schema (for editors and CI checks)."),
}


class _LazyGroup(SummaryGroup):
    """A click group that imports a command's module on first use (click's documented pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(_COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _COMMANDS:
            module_name, summary = _COMMANDS[cmd_name]
            command: click.Command = importlib.import_module(f"reconcile.cli.{module_name}").command
            command.short_help = summary
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def summary(self, ctx: click.Context, name: str) -> str | None:
        if name in _COMMANDS and name not in self.commands:
            return _COMMANDS[name][1]
        return super().summary(ctx, name)


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


def _lock_switch(args: list[str]) -> list[str]:
    """Return ``args`` with the old ``--lock=false`` / ``--lock=true`` as ``--no-lock`` / ``--lock``."""
    switched = []
    for arg in args:
        name, _, value = arg.partition("=")
        if name == "--lock" and value.lower() in ("false", "no", "0", "off", "true", "yes", "1", "on"):
            arg = "--lock" if value.lower() in ("true", "yes", "1", "on") else "--no-lock"
        switched.append(arg)
    return switched


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and map errors to exit codes."""
    release_kept()
    args = _lock_switch(sys.argv[1:] if argv is None else list(argv))
    try:
        # Without standalone mode, click returns ctx.exit(code)'s code instead of exiting.
        code = cli.main(args=args, prog_name="reconcile", standalone_mode=False)
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
    except MemoryError:
        # The manifest loader names the file; this is the net for the rest (a large state, a plan).
        echo_error(
            "ran out of memory: the manifest or the state is too large for the memory this process "
            "may use; split the users into manifests with their own state (see Limits in the "
            "README), or allow the process more memory"
        )
        sys.exit(1)
    except OSError as exc:
        # The last net under every file the run writes (journal, audit log, passwords, …).
        if not isinstance(exc, BrokenPipeError):  # a closed pipe (`| head`) needs no message
            doing = "connect" if isinstance(exc, ConnectionError) else "use a file"
            echo_error(describe_os_error(exc, doing, option=None))
        sys.exit(1)
    except click.ClickException as exc:
        # click quotes the offending argument: escape control characters like every other error.
        shown = io.StringIO()
        exc.show(file=shown)
        echo_err(printable(shown.getvalue().rstrip("\n"), keep_newlines=True))
        # click's usage errors exit 2, which pipelines read as "changes present" (plan
        # --detailed-exitcode): every error is 1 here.
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(0)


def run() -> NoReturn:
    """Run :func:`main` as a process, then leave without tearing the heap down object by object.

    A plan of a large desk leaves millions of objects alive; freeing them one by one at exit took
    about a second of a 100k-user plan (bench/plan.py) after the last line was printed. As mypy
    does, the process ends with :func:`os._exit` once the output is flushed and every non-daemon
    thread has finished (what the interpreter's own shutdown waits for). Nothing here registers
    ``atexit`` handlers; files and locks are closed by the ``with`` blocks that opened them.
    """
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what the interpreter does with sys.exit("message")
    status = code if isinstance(code, int) else 0 if code is None else 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (`reconcile plan | head`) among them: nothing more can be said
        status = status or 1
    os._exit(status)
