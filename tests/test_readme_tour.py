"""The README's tour, run start to finish in a fresh clone, works and leaves `git status` clean."""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None, reason="needs git"),
]


def tour() -> list[str]:
    """The commands of the README's "A tour" block, comments dropped."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## A tour", 1)[1].split("```sh\n", 1)[1].split("\n```", 1)[0]
    return [re.sub(r"\s+#\s.*$", "", line) for line in block.splitlines() if line.strip()]


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh clone of the repository as it is now (committed or not), without caches or state."""
    files = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    clone = tmp_path / "clone"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    git(tmp_path, "init", "-q", str(clone))
    git(clone, "add", "-A")
    git(clone, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "clone")
    return clone


def test_the_tour_runs_and_leaves_git_status_clean(clone: Path) -> None:
    commands = tour()
    assert commands[0].startswith("export TRADER001_PASSWORD=") and len(commands) >= 8
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADOVATE_", "RECONCILE_", "TRADER"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", NO_COLOR="1")
    # The tour's first apply asks for confirmation on a terminal: give it one, with the answer typed.
    terminal, keyboard = pty.openpty()
    try:
        os.write(terminal, b"y\n")
        done = subprocess.run(
            ["bash", "-e", "-c", "\n".join(commands)],
            cwd=clone,
            env=env,
            stdin=keyboard,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        os.close(keyboard)
        os.close(terminal)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trader001" in done.stdout  # state list, the last command
    assert (clone / "state" / "new-passwords.txt").exists()
    assert git(clone, "status", "--porcelain", "--ignored=no") == ""
