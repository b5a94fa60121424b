"""Compile a checkout's modules before a bench times anything (shared by bench/apply.py and bench/plan.py).

Only the standard library here: bench/plan.py measures its children's peak RSS, which a large
parent process would carry over.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def compile_bytecode(repo: Path) -> None:
    """Compile ``repo``'s ``reconcile`` package once, before anything is timed.

    An installed reconcile runs from its bytecode. Where the environment forbids writing it
    (``PYTHONDONTWRITEBYTECODE``, set on some CI and sandbox machines), every ``reconcile``
    process a bench starts would compile the ~100 modules again, ~0.15-0.3 s counted in each
    run's start.
    """
    argv = [sys.executable, "-m", "compileall", "-q", str(repo / "reconcile")]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
