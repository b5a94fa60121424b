"""What `reconcile apply` imports before its first call: every module costs each run's start."""

from __future__ import annotations

import subprocess
import sys

LAZY = ("tenacity", "deepdiff")
"""Only needed by a retry (tenacity) or a plan comparing nested values (deepdiff): imported then."""


def test_the_apply_command_imports_no_lazy_dependency() -> None:
    code = (
        "import sys\n"
        "import reconcile.cli.apply, reconcile.apply, reconcile.operations.apply, reconcile.api.client\n"
        f"print(sorted(m for m in {LAZY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
