"""The options several commands share, defined once so every command spells them the same way.

Each factory returns a click decorator; :func:`options` stacks several in the order they are
listed (first listed = first in ``--help``). Help texts may be tailored per command (``help=``);
names, defaults and types are fixed here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar, cast, get_args

import click

from reconcile.manifest.models import Backend, Environment
from reconcile.operations.inputs import PlanInputs, RemoteInputs
from reconcile.operations.settings import Settings
from reconcile.render import formats
from reconcile.state.open import BACKEND_VARIABLE

F = TypeVar("F", bound=Callable[..., Any])


def options(*decorators: Callable[[Any], Any]) -> Callable[[F], F]:
    """Stack ``decorators`` so they appear in ``--help`` in the order given."""

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def environment_option(
    help: str | None = None, *, required: bool = False, default_sim: bool = True
) -> Callable[[F], F]:
    """-e/--environment (``environment``), for commands without a manifest; sim unless ``required``.

    With ``default_sim=False`` it is None when not given (a manifest may name the environment).
    """
    default: dict[str, Any] = {"default": "sim", "show_default": True} if default_sim and not required else {}
    return click.option(
        "-e",
        "--environment",
        type=click.Choice(get_args(Environment)),
        required=required,
        help=help,
        **default,
    )


def files_option(
    help: str = "Manifest file or folder of *.yaml files (repeatable; merged into one desired set).",
    *,
    must_exist: bool = True,
    required: bool = True,
) -> Callable[[F], F]:
    """-f/--file (``paths``): manifest files or folders, at least one unless not ``required``."""
    return click.option(
        "-f",
        "--file",
        "paths",
        multiple=True,
        required=required,
        type=click.Path(exists=must_exist, path_type=Path),
        help=help,
    )


def state_option(help: str = "Recorded state file (default: state/<environment>.json).") -> Callable[[F], F]:
    """--state (``state_path``): the state file, when state is kept in a file."""
    return click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), help=help)


def backend_option(
    help: str = "Keep state in PostgreSQL at this DSN (postgresql://user@host/db) instead of a file; "
    f"default ${BACKEND_VARIABLE}, then the manifest's backend.postgres.dsnEnv.",
) -> Callable[[F], F]:
    """--backend (``backend``): a PostgreSQL DSN; the variable is read by :func:`edge_settings`."""
    return click.option("--backend", metavar="URL", help=help)


def endpoint_option(
    help: str = "Partner API base URL (default: the environment's host).",
) -> Callable[[F], F]:
    """--endpoint (``endpoint``): override the environment's partner-API host."""
    return click.option("--endpoint", metavar="URL", help=help)


def lock_timeout_option(
    help: str = "How long to wait for another run's lock on the state (negative: forever).",
) -> Callable[[F], F]:
    """--lock-timeout (``lock_timeout``): seconds, 0 = fail at once."""
    return click.option(
        "--lock-timeout", type=float, default=0.0, show_default=True, metavar="SECONDS", help=help
    )


def format_option(
    choices: tuple[str, ...] = ("text", "json"),
    help: str = "text for people; json prints one JSON document on stdout for scripts.",
    *,
    dest: str = "fmt",
) -> Callable[[F], F]:
    """--format (``fmt``), text by default."""
    return click.option(
        "--format", dest, type=click.Choice(choices), default="text", show_default=True, help=help
    )


def edge_settings() -> Settings:
    """The process environment, read here once per command: the library never reads it."""
    return Settings.from_environ(os.environ)


def _option_names(inputs: type[Any]) -> tuple[str, ...]:
    """The fields of an inputs dataclass that options give (settings come from the environment)."""
    return tuple(field.name for field in fields(inputs) if field.name != "settings")


def _with_settings(inputs: Callable[..., Any]) -> Callable[..., Any]:
    return lambda **given: inputs(**given, settings=edge_settings())


def _gather(function: F, names: tuple[str, ...], into: str, build: Callable[..., Any]) -> F:
    """Call ``function`` with the options ``names`` replaced by ``into=build(**those options)``."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs[into] = build(**{name: kwargs.pop(name) for name in names})
        return function(*args, **kwargs)

    return cast(F, wrapper)


_planning_options = options(
    files_option(),
    state_option(),
    backend_option(),
    endpoint_option(
        "Partner API base URL the plan is bound to (default: the environment's host). "
        "plan never contacts it; apply does."
    ),
    click.option(
        "--target",
        "targets",
        multiple=True,
        metavar="PATTERN",
        help="Plan only users whose name matches this glob (repeatable).",
    ),
    click.option(
        "--exclude",
        "excludes",
        multiple=True,
        metavar="PATTERN",
        help="Leave out users whose name matches this glob (repeatable).",
    ),
    click.option(
        "--companion-endpoint",
        metavar="URL",
        help="Second host that also receives every cancel-everything (env "
        "RECONCILE_COMPANION_ENDPOINT; default: demo for live, live for demo, the staging pair "
        "likewise; none with --endpoint unless given).",
    ),
)


def plan_inputs(function: F) -> F:
    """Add -f, --state, --backend, --endpoint, --target, --exclude and --companion-endpoint.

    They are passed as ``inputs: PlanInputs``.
    """
    names = _option_names(PlanInputs)
    return _planning_options(_gather(function, names, "inputs", _with_settings(PlanInputs)))


_lock_options = options(
    click.option(
        "--lock/--no-lock",
        default=True,
        show_default=True,
        help="--no-lock reads state without its lock, for read-only checkouts (the older --lock=false "
        "too); by default the lock is held while planning, so a running apply is never seen half-way.",
    ),
    lock_timeout_option("How long to wait for a running apply's lock on the state (negative: forever)."),
)


def lock_options(function: F) -> F:
    """Add --lock and --lock-timeout (commands that only read state), passed as ``lock_timeout``.

    ``lock_timeout`` is None with --no-lock: read state without taking the lock.
    """

    def timeout(lock: bool, lock_timeout: float) -> float | None:
        return lock_timeout if lock else None

    return _lock_options(_gather(function, ("lock", "lock_timeout"), "lock_timeout", timeout))


format_options = options(
    format_option(
        formats(),
        "text for people, json for machines (docs/plan-format.md), markdown for pull requests.",
    ),
    click.option(
        "--show-pii",
        is_flag=True,
        help="Show emails, phones and street addresses in Markdown (masked by default).",
    ),
)
"""--format (any renderer) and --show-pii."""


def remote_inputs(files_help: str) -> Callable[[F], F]:
    """Add -f, --state, --backend, --endpoint and --lock-timeout, passed as ``inputs: RemoteInputs``."""
    add_options = options(
        files_option(files_help), state_option(), backend_option(), endpoint_option(), lock_timeout_option()
    )
    names = _option_names(RemoteInputs)

    def decorate(function: F) -> F:
        return add_options(_gather(function, names, "inputs", _with_settings(RemoteInputs)))

    return decorate


@dataclass(frozen=True)
class StateScope:
    """Which state a ``state`` command works on: the environment, and the manifest's backend if any."""

    environment: str
    manifest_backend: Backend | None = None


def state_scope(*, required: bool = False) -> Callable[[F], F]:
    """Add -f (a manifest names environment and backend) and -e, passed as ``scope: StateScope``.

    Without either, the environment is sim unless ``required``.
    """
    default = "required unless -f is given" if required else "default: sim"
    add_options = options(
        files_option(
            "Manifest file or folder: take the environment and the state backend from it "
            "(repeatable; as for plan and apply).",
            required=False,
        ),
        environment_option(
            f"The environment whose state to use, without a manifest ({default}).", default_sim=False
        ),
    )

    def build(paths: tuple[Path, ...], environment: str | None) -> StateScope:
        if not paths:
            if environment is None and required:
                raise click.UsageError("name the state: -f MANIFEST or -e ENVIRONMENT")
            return StateScope(environment or "sim")
        from reconcile.manifest.loader import load_manifest

        manifest = load_manifest(list(paths)).manifest
        if environment is not None and environment != manifest.environment:
            raise click.UsageError(
                f"-e {environment} contradicts the manifest's environment: {manifest.environment}; "
                "give -f or -e, not both"
            )
        return StateScope(manifest.environment, manifest.backend)

    def decorate(function: F) -> F:
        return add_options(_gather(function, ("paths", "environment"), "scope", build))

    return decorate
