"""One command line: every command and option explains itself, the same way, cheaply."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from reconcile.cli import all_commands, cli
from tests.cli_support import run, run_child

ROOT = Path(__file__).resolve().parent.parent
DESK = ROOT / "examples" / "desk.yaml"


def _walk(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _walk(sub, (*path, name))


def every_command() -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name, command in sorted(all_commands().items()):
        found.extend(_walk(command, (name,)))
    return found


def reconcile(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TRADOVATE_", "RECONCILE_"))}
    environ.update(COLUMNS="80", **env)
    return run_child(*args, env=environ, timeout=60)


def test_every_option_of_every_command_has_help() -> None:
    commands = every_command()
    assert len(commands) > 20
    missing = [
        f"reconcile {' '.join(path)} {param.opts[0]}"
        for path, command in commands
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip()
    ]
    assert missing == []


@pytest.mark.parametrize("group", [(), ("sim",), ("state",)], ids=lambda g: " ".join(g) or "reconcile")
def test_command_lists_show_whole_summaries(group: tuple[str, ...]) -> None:
    done = reconcile(*group, "--help")
    assert done.returncode == 0, done.stderr
    listing = done.stdout.split("Commands:", 1)[1]
    assert listing.strip() and "..." not in listing


def test_top_level_help_lists_every_command_without_importing_them() -> None:
    # -X importtime writes every module imported to stderr.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "reconcile", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "reconcile.cli" in imported
    assert not {m for m in imported if m.startswith(("reconcile.sim", "reconcile.apply", "reconcile.api"))}
    assert "httpx" not in imported and "jsonschema" not in imported
    for name in all_commands():
        assert f"\n  {name} " in done.stdout


@pytest.mark.parametrize("path", [p for p, _ in every_command()], ids=" ".join)
def test_usage_line_never_splits_a_word(path: tuple[str, ...]) -> None:
    command = cli
    ctx = click.Context(cli, info_name="reconcile")
    for name in path:
        assert isinstance(command, click.Group)
        sub = command.get_command(ctx, name)
        assert sub is not None
        ctx, command = click.Context(sub, info_name=name, parent=ctx), sub

    def usage(width: int) -> list[str]:
        ctx.terminal_width = width
        return command.get_usage(ctx).split()

    assert set(usage(80)) <= set(usage(1000))


def test_completion_script_is_clicks_own() -> None:
    done = reconcile(_RECONCILE_COMPLETE="bash_source")
    assert done.returncode == 0
    assert "_reconcile_completion()" in done.stdout and "complete -o nosort -F" in done.stdout
    done = reconcile(_RECONCILE_COMPLETE="bash_complete", COMP_WORDS="reconcile state li", COMP_CWORD="2")
    assert done.stdout.split() == ["plain,list"]


def test_usage_errors_exit_1_not_clicks_2() -> None:
    result = run("plan")
    assert result.exit_code == 1
    assert "Missing option '-f' / '--file'" in result.stderr


# --- state commands take -f like every other command ------------------------------------------


def _demo(tmp_path: Path, backend: str = "") -> Path:
    text = DESK.read_text(encoding="utf-8").replace("\nenvironment: sim\n", f"\nenvironment: demo\n{backend}")
    manifest = tmp_path / "demo.yaml"
    manifest.write_text(text, encoding="utf-8")
    return manifest


def test_state_list_takes_the_environment_from_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = _demo(tmp_path)
    for command in ("list", "show"):
        result = run("state", command, "-f", manifest)
        assert result.exit_code == 1
        assert "no state at state/demo.json; nothing was applied to demo yet" in result.stderr
    result = run("state", "list", "-e", "demo")
    assert "nothing was applied to demo yet" in result.stderr
    result = run("state", "list", "-f", manifest, "-e", "live")
    assert result.exit_code == 1
    assert "-e live contradicts the manifest's environment: demo" in result.stderr


def test_state_push_takes_environment_and_backend_from_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECONCILE_BACKEND", raising=False)
    monkeypatch.delenv("DESK_PG_DSN", raising=False)
    manifest = _demo(tmp_path, "backend: {postgres: {dsnEnv: DESK_PG_DSN}}\n")
    result = run("state", "push", "-f", manifest)
    assert result.exit_code == 1
    assert (
        "the manifest's backend.postgres.dsnEnv names DESK_PG_DSN, but DESK_PG_DSN is not set"
        in result.stderr
    )
    result = run("state", "pull")
    assert result.exit_code == 1
    assert "name the state: -f MANIFEST or -e ENVIRONMENT" in result.stderr


# --- plan --lock/--no-lock ----------------------------------------------------------------------


@pytest.fixture
def held_lock(tmp_path: Path) -> Iterator[Path]:
    """Another process holds the lock of tmp_path/state.json until the test ends."""
    state = tmp_path / "state.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom reconcile.state.lock import state_lock\n"
         f"with state_lock({str(state)!r}):\n    print('held', flush=True)\n    sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield state
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_plan_lock_is_a_switch_pair_and_the_old_spelling_still_works(held_lock: Path) -> None:
    base = ("plan", "-f", DESK, "--state", held_lock)
    assert run(*base).exit_code == 1
    assert run(*base, "--lock").exit_code == 1
    for no_lock in ("--no-lock", "--lock=false"):
        result = run(*base, no_lock)
        assert result.exit_code == 0, result.stderr
        assert "to create" in result.stdout


# --- sim reset without a terminal ------------------------------------------------------------------


def test_sim_reset_without_a_terminal_says_to_pass_yes_and_exits_1(tmp_path: Path) -> None:
    db = tmp_path / "sim.sqlite"
    assert run("sim", "add-user", "outsider1", "--email", "o@example.com", "--db", db).exit_code == 0
    result = run("sim", "reset", "--db", db)
    assert result.exit_code == 1
    assert "stdin is not a terminal. Pass --yes to reset it" in result.stderr
    assert "outsider1" in run("sim", "users", "--db", db).stdout
    assert run("sim", "reset", "--db", db, "--yes").exit_code == 0
    assert "outsider1" not in run("sim", "users", "--db", db).stdout
