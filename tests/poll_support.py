"""Poll with a deadline, so a test that waits for something fails with a message instead of hanging."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

# Far above what any wait needs on a loaded 2-core machine; only a hang ever reaches it.
PATIENCE = 120.0


def polling(
    what: str,
    *,
    timeout: float = PATIENCE,
    interval: float = 0.01,
    on_timeout: Callable[[], str | None] | None = None,
) -> Iterator[int]:
    """Yield until the caller breaks out; fail saying ``what`` was awaited once ``timeout`` s pass.

    ``on_timeout`` may clean up (kill a process) and return details to add to the failure.
    """
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        yield attempt
        attempt += 1
        if time.monotonic() >= deadline:
            message = f"gave up after {timeout:g} s waiting for {what}"
            details = on_timeout() if on_timeout is not None else None
            pytest.fail(f"{message}:\n{details}" if details else message)
        time.sleep(interval)
