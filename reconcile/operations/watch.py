"""Watch: plan and apply in a loop, like a GitOps controller (the library behind ``reconcile watch``).

One cycle: load the manifests again (a ``git pull`` beside the process is picked up), make sure
this process leads the watches of the state (:mod:`reconcile.state.leader`), then run one
:func:`reconcile.operations.apply.apply` — under the state lock for that cycle only (``plan``
works between cycles), settling the journal, planning (``refresh``: against the live
organization, so drift is repaired), judging the budgets, applying, auditing. The grant phase
reads the agreement signals once, so a trader who signed is granted Sim+ by the next cycle.

What ends a cycle, and what follows:

* nothing to do, or done → wait one interval;
* refused by the budgets, the lock busy, the manifest written while it was read, a standby →
  reported, wait one interval;
* any other error (the API down, a broken manifest, failed actions) → reported, retry after a
  backoff that doubles up to :data:`MAX_BACKOFF` (or the interval, if longer);
* a condition that needs a person (refused credentials, a captcha, an outcome that cannot be
  settled) → reported, and :func:`watch` raises it (exit 1);
* :meth:`Shutdown.request` (SIGTERM/SIGINT) → the run stops after the calls in flight, what
  they left in the journal is settled by reading, and :func:`watch` returns.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from reconcile.apply.stop import NEEDS_A_PERSON, RunStopped, Stop
from reconcile.errors import LockError, PolicyError, ReconcileError, describe_os_error
from reconcile.manifest.loader import files_digest
from reconcile.operations.apply import ApplyOutcome, ApplyRequest, apply, settle_open
from reconcile.operations.inputs import PlanInputs, Reporter
from reconcile.operations.opening import Opened, open_inputs
from reconcile.state.leader import Leadership, leadership_for
from reconcile.state.store import StateStore

MAX_BACKOFF = 300.0
"""The longest wait after failed cycles, in seconds (unless the interval is longer)."""

Outcome = Literal["applied", "in_sync", "refused", "busy", "standby", "failed", "stopped", "needs_person"]
"""How a cycle ended (see the module docstring)."""


@dataclass(frozen=True)
class WatchRequest:
    """What to watch, and how often."""

    inputs: PlanInputs
    interval: float = 60.0
    refresh: bool = False
    batch_size: int = 100
    generated_passwords: Path | None = None
    """A folder: each cycle that creates users writes a new file (mode 0600) there."""
    lock_timeout: float = 0.0


@dataclass(frozen=True)
class CycleReport:
    """What one cycle did: one line of the watch's log, and what the metrics count."""

    cycle: int
    started: datetime
    seconds: float
    outcome: Outcome
    planned: dict[str, int] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    awaiting_agreement: int = 0
    drift: int | None = None
    """Differences between state and the live organization (None: the cycle did not refresh)."""
    generated_passwords: str | None = None
    state_serial: int | None = None
    message: str | None = None
    next_in: float = 0.0

    @property
    def succeeded(self) -> bool:
        """True when the cycle did what a cycle should (nothing to do counts; a standby does too)."""
        return self.outcome in ("applied", "in_sync", "standby")

    def to_json_dict(self) -> dict[str, Any]:
        """The cycle as one JSON object (the watch's log line without a terminal)."""
        return {
            "cycle": self.cycle,
            "started": self.started.isoformat().replace("+00:00", "Z"),
            "seconds": round(self.seconds, 3),
            "outcome": self.outcome,
            "planned": self.planned,
            "applied": self.applied,
            "failures": self.failures,
            "awaiting_agreement": self.awaiting_agreement,
            "drift": self.drift,
            "generated_passwords": self.generated_passwords,
            "state_serial": self.state_serial,
            "message": self.message,
            "next_in": round(self.next_in, 3),
        }


class Shutdown:
    """A request to end the watch: the wait between cycles ends at once, a running apply after
    the calls in flight (through the cycle's :class:`~reconcile.apply.stop.Stop`)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._stop: Stop | None = None
        self.reason: str | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str) -> None:
        """End the watch (safe from a signal handler: it only sets flags)."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
            self._event.set()
            if self._stop is not None:
                self._stop.trip(reason)

    def wait(self, seconds: float) -> bool:
        """Wait ``seconds`` or until requested; True when requested."""
        return self._event.wait(max(0.0, seconds))

    @contextlib.contextmanager
    def stopping(self) -> Iterator[Stop]:
        """A Stop for one cycle's run, tripped by a request made while it runs (or before)."""
        stop = Stop()
        with self._lock:
            self._stop = stop
            if self.reason is not None:
                stop.trip(self.reason)
        try:
            yield stop
        finally:
            with self._lock:
                self._stop = None

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[None]:
        """Turn SIGTERM and SIGINT into a request while the block runs; a second one interrupts."""

        def handle(signum: int, _frame: FrameType | None) -> None:
            if self.requested:
                raise KeyboardInterrupt
            reason = f"{signal.Signals(signum).name} received: stopping after the call in flight"
            # From a thread: the handler interrupts the main thread, which may hold the very locks
            # request() takes.
            threading.Thread(target=self.request, args=(reason,), name="shutdown").start()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@dataclass
class _Loop:
    """What the watch keeps from cycle to cycle."""

    request: WatchRequest
    reporter: Reporter
    shutdown: Shutdown
    cycle: int = 0
    failed_in_a_row: int = 0
    leadership: Leadership | None = None

    def delay(self, report: CycleReport) -> float:
        """How long to wait before the next cycle."""
        if report.outcome != "failed":
            self.failed_in_a_row = 0
            return self.request.interval
        self.failed_in_a_row += 1
        ceiling = max(MAX_BACKOFF, self.request.interval)
        return float(min(self.request.interval * 2 ** (self.failed_in_a_row - 1), ceiling))


def watch(
    request: WatchRequest,
    on_cycle: Callable[[CycleReport], None],
    *,
    reporter: Reporter | None = None,
    shutdown: Shutdown | None = None,
) -> None:
    """Run cycles until ``shutdown`` is requested; ``on_cycle`` hears each one as it ends.

    Raises the :class:`~reconcile.errors.ReconcileError` of a condition that needs a person,
    after ``on_cycle`` heard its cycle.
    """
    loop = _Loop(request, reporter or Reporter(), shutdown or Shutdown())
    try:
        while not loop.shutdown.requested:
            loop.cycle += 1
            report, error = _cycle(loop)
            report = replace(report, next_in=0.0 if error else loop.delay(report))
            on_cycle(report)
            if error is not None:
                raise error
            loop.shutdown.wait(report.next_in)
    finally:
        if loop.leadership is not None:
            loop.leadership.close()


def _cycle(loop: _Loop) -> tuple[CycleReport, ReconcileError | None]:
    """Run one cycle; return its report and the error that must end the watch, if any."""
    started, clock = datetime.now(UTC), time.monotonic()
    passwords: Path | None = None

    def report(outcome: Outcome, message: str | None = None, **more: Any) -> CycleReport:
        written = str(passwords) if passwords is not None and passwords.exists() else None
        return CycleReport(
            loop.cycle, started, time.monotonic() - clock, outcome, message=message,
            generated_passwords=written, **more,
        )  # fmt: skip

    opened: Opened | None = None
    try:
        passwords = _passwords_file(loop.request.generated_passwords, started)
        opened = open_inputs(loop.request.inputs)
        if files_digest(opened[0]) != opened[0].digest:
            # Written while it was read (a git pull beside the watch): what was read may be half
            # a manifest, whose missing users the plan would cancel.
            return report("busy", "the manifest changed while it was read; it is read again next cycle"), None
        if not _leads(loop, opened):
            where = loop.leadership.where if loop.leadership is not None else "the state"
            return report("standby", f"another watch leads {where}"), None
        outcome = _apply(loop, opened, passwords)
    except PolicyError as exc:
        return report("refused", str(exc)), None
    except LockError as exc:
        return report("busy", str(exc)), None
    except RunStopped as exc:
        if loop.shutdown.requested:
            _settle_after_stop(loop, opened, passwords)
            return report("stopped", loop.shutdown.reason), None
        return report("needs_person", str(exc)), exc
    except NEEDS_A_PERSON as exc:
        return report("needs_person", str(exc)), exc
    except ReconcileError as exc:
        return report("failed", str(exc)), None
    except OSError as exc:
        return report("failed", describe_os_error(exc, "use a file", option=None)), None
    finally:
        if opened is not None:
            _close(opened[2])
    return report(**_applied(outcome)), None


def _close(store: StateStore) -> None:
    """Close the cycle's store connection, if it has one: a watch opens a store per cycle for hours."""
    close = getattr(store, "close", None)
    if close is not None:
        close()


def _leads(loop: _Loop, opened: Opened) -> bool:
    """True when this process leads the watches of ``opened``'s state (asked every cycle)."""
    store = opened[2]
    if loop.leadership is not None and loop.leadership.where != store.describe():
        loop.leadership.close()  # the manifest moved the state elsewhere
        loop.leadership = None
    if loop.leadership is None:
        loop.leadership = leadership_for(store)
    return loop.leadership.lead()


def _apply(loop: _Loop, opened: Opened, passwords: Path | None) -> ApplyOutcome:
    with loop.shutdown.stopping() as stop:
        return apply(_apply_request(loop.request, opened, passwords, stop), loop.reporter)


def _apply_request(
    request: WatchRequest, opened: Opened | None, passwords: Path | None, stop: Stop | None
) -> ApplyRequest:
    return ApplyRequest(
        request.inputs,
        batch_size=request.batch_size,
        generated_passwords=passwords,
        lock_timeout=request.lock_timeout,
        refresh=request.refresh,
        stop=stop,
        opened=opened,
    )


def _settle_after_stop(loop: _Loop, opened: Opened | None, passwords: Path | None) -> None:
    """Settle what the stopped run left in the journal, by reading; say so when it cannot."""
    try:
        settle_open(_apply_request(loop.request, opened, passwords, None), loop.reporter)
    except ReconcileError as exc:
        loop.reporter.say(f"the journal keeps what the stopped run left open; the next run settles it: {exc}")


def _applied(outcome: ApplyOutcome) -> dict[str, Any]:
    """The report fields of a cycle that ran its apply."""
    result, plan = outcome.result, outcome.plan
    applied = {
        kind: n for kind, n in result.counts().items() if n and kind not in ("failed", "awaiting_agreement")
    }
    failed = len(result.failures)
    if failed:
        kind: Outcome = "failed"
    else:
        kind = "applied" if applied else "in_sync"
    return {
        "outcome": kind,
        "message": "; ".join(str(f) for f in result.failures[:5]) or None,
        "planned": {k: n for k, n in plan.summary.items() if n},
        "applied": applied,
        "failures": failed,
        "awaiting_agreement": len(set(result.awaiting_agreement)),
        "drift": len(plan.refresh.drift) if plan.refresh is not None else None,
        "state_serial": result.state_serial,
    }


def _passwords_file(folder: Path | None, started: datetime) -> Path | None:
    """This cycle's own generated-passwords file in ``folder`` (written only if it creates users)."""
    if folder is None:
        return None
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:  # a failed cycle like any other: the folder may be fixed by the next
        raise ReconcileError(
            f"cannot make the --generated-passwords folder {folder}: {exc.strerror or exc}; "
            "fix that path (a folder this user may write), the watch tries again"
        ) from None
    return folder / f"passwords-{started:%Y%m%dT%H%M%S%f}Z.txt"
