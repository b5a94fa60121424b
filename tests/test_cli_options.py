"""Options shared by several commands are spelled, typed and defaulted the same everywhere."""

from __future__ import annotations

import click
import pytest

from reconcile.cli import all_commands


def _leaf_commands() -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in all_commands().items():
        if isinstance(command, click.Group):
            found.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            found[name] = command
    return found


@pytest.mark.parametrize("flag", ["--file", "--state", "--backend", "--endpoint", "--lock-timeout"])
def test_a_shared_option_means_the_same_in_every_command(flag: str) -> None:
    shapes = {}
    for name, command in _leaf_commands().items():
        for param in command.params:
            if isinstance(param, click.Option) and flag in param.opts:
                shapes[name] = (tuple(param.opts), param.name, param.type.name, param.multiple, param.default)
    assert len(shapes) >= 2, f"{flag} is no longer shared"
    assert len(set(shapes.values())) == 1, shapes


def test_lock_timeout_waits_zero_seconds_by_default_and_says_negative_waits_forever() -> None:
    checked = []
    for name, command in _leaf_commands().items():
        for param in command.params:
            if isinstance(param, click.Option) and "--lock-timeout" in param.opts:
                assert param.default == 0.0 and param.metavar == "SECONDS", name
                assert param.help is not None and "negative: forever" in param.help, name
                checked.append(name)
    assert {"plan", "apply"} <= set(checked), checked
