"""One run of the applier: the state it changes, the clients it calls, what it reports.

Every action executor (:mod:`reconcile.apply.create`, ``update``, ``grant``, ``cancel``) and the
journal's settling (:mod:`reconcile.apply.recovery`) work on a :class:`Run`; only its thread
changes ``run.state``, and every group of calls ends with :meth:`Run.save`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from reconcile.apply.crashpoints import checkpoint
from reconcile.apply.generated import PasswordLedger
from reconcile.apply.intents import Intent, IntentJournal
from reconcile.apply.ports import ApplyClient, CancelClient
from reconcile.apply.result import ApplyResult, NoProgress, Progress
from reconcile.apply.stop import NEEDS_A_PERSON, GuardedCancelClient, GuardedClient, RunStopped, Stop
from reconcile.errors import ApiError, OutcomeUnknown
from reconcile.state.audit import AuditLog
from reconcile.state.journal import Journal
from reconcile.state.model import State
from reconcile.state.store import StateStore

T = TypeVar("T")
R = TypeVar("R")
G = TypeVar("G")
S = TypeVar("S")

NOT_SENT = "not sent: the run stopped"
"""A worker's answer when the stop was tripped before its call (nothing to record)."""

GROUP = 100
"""Updates and grants are saved to state every this many users."""


@dataclass(frozen=True)
class ExecuteOptions:
    """What the executors need beside the run and their actions."""

    passwords: Mapping[str, str] = field(default_factory=dict)
    """User name → password, for every create."""
    generated: Collection[str] = ()
    """The users whose password was generated (they wait in the ledger until their create settles)."""
    batch_size: int = 100
    """Creates and cancels per call."""
    agreement_alert_id: int = 0
    """Where the agreement signals of grants gated by it are filed."""


class Run:
    """One apply (or settle) against one state: holds the current state and saves it as it goes."""

    def __init__(
        self,
        *,
        store: StateStore,
        state: State,
        client: ApplyClient,
        journal: Journal,
        audit: AuditLog,
        progress: Progress | None = None,
        concurrency: int = 6,
        clock: Callable[[], datetime] | None = None,
        companion: CancelClient | None = None,
        stop: Stop | None = None,
        ledger: PasswordLedger | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.stop = stop or Stop()
        """Shared by every phase and worker: once tripped, no call of this run is sent."""
        self.client = GuardedClient(client, self.stop)
        self.companion = GuardedCancelClient(companion, self.stop) if companion is not None else None
        """The other host of the pair (DESIGN §7): it only ever receives cancel-everything."""
        self.journal = IntentJournal(journal)
        self.audit = audit
        self.ledger = ledger or PasswordLedger()
        """Where generated passwords wait for their create's outcome, and where they go then."""
        self.progress: Progress = progress or NoProgress()
        self.concurrency = max(1, concurrency)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.result = ApplyResult(state_serial=state.serial)
        self.pending_signals: dict[int, dict[int, list[int]]] = {}
        """Agreement alert id → user id → pending signal ids, read once per run (grants are
        applied in several steps, one per create batch; a trader created in this run has not
        signed yet, so a second read would only cost)."""
        self.saving_later = False
        """True while the follow-ups of a create batch are made: :meth:`save_later` then leaves its
        users to the next save (the batch's next create records its own users at once)."""
        self._unsaved: set[str] = set()
        self.waited_for_slot = False
        """True when a create waited for its hourly slot since the signals were last read: traders
        created earlier in the run may have signed meanwhile (see executor.recheck_signatures)."""
        self._pool: ThreadPoolExecutor | None = None
        self._caller: ThreadPoolExecutor | None = None
        self._when_busy: list[Callable[[], None]] = []
        self._recorded: list[Intent] = []
        self._carried: list[Callable[[], None]] = []
        self.next_create_sent = False
        """True while the next batch's create is in flight beside a batch's follow-ups (the
        executor's look-ahead): their last group may then be carried (:meth:`carry`)."""

    @contextlib.contextmanager
    def workers(self) -> Iterator[Callable[[Callable[..., R], Iterable[tuple[Any, ...]]], list[Future[R]]]]:
        """Yield ``send(fn, argsets)``: one call of ``fn`` per argument tuple on the run's worker threads.

        ``send`` returns one Future per call, in order. The ``concurrency`` threads start once and
        serve every group of every phase (a pool per group of a 100-user create batch started and
        joined six threads per batch); :meth:`close` ends them. Leaving on an error waits for
        every call taken, so nothing is sent after the run has reported how it ended; leaving
        normally does not: each group was recorded (its Futures waited for), or is carried to a
        later step that waits for them (:meth:`carry`).
        """
        pool, taken = self._threads(), list[Future[Any]]()

        def send(fn: Callable[..., R], argsets: Iterable[tuple[Any, ...]]) -> list[Future[R]]:
            calls: list[tuple[Future[R], tuple[Any, ...]]] = [(Future(), args) for args in argsets]
            # A few threads take the calls in order from one iterator (atomic under the GIL)
            # instead of one pool task per call: the pool's per-task bookkeeping and wake-ups
            # cost the main thread ~25 us of CPU per call beside the workers.
            pending = iter(calls)
            for _ in range(min(self.concurrency, len(calls))):
                pool.submit(_take_calls, fn, pending)
            futures = [future for future, _ in calls]
            taken.extend(futures)
            return futures

        try:
            yield send
        except BaseException:
            concurrent.futures.wait(taken)
            raise

    def submit(self, fn: Callable[..., R], *args: Any) -> Future[R]:
        """Run ``fn(*args)`` on a thread of its own, beside whatever group of calls is in flight.

        One call at a time (a create batch): sent while a group holds every worker, it does not
        wait for them. The caller waits for the Future and records its outcome.
        """
        if self._caller is None:
            self._caller = ThreadPoolExecutor(max_workers=1, thread_name_prefix="apply-call")
        return self._caller.submit(fn, *args)

    def when_busy(self, task: Callable[[], None]) -> None:
        """Do ``task`` on this thread once the workers carry calls again (see :meth:`busy`).

        For bookkeeping that the next calls do not depend on (settling a recorded intent, sending
        the next create): done while they are in flight, it no longer keeps the workers idle. A
        task is dropped when a task before it fails or the run ends on an error, so each must be
        safe never to run.
        """
        self._when_busy.append(task)

    def busy(self) -> None:
        """Do the tasks :meth:`when_busy` queued, in order; called right after a group is handed
        to the workers (:func:`overlapped`), and by the executor after a step that sent none."""
        tasks, self._when_busy = self._when_busy, []
        for task in tasks:
            task()

    def carry(self, record: Callable[[], None]) -> None:
        """Leave ``record`` (a group of idempotent calls already sent) to :meth:`record_carried`.

        A create batch's last group of follow-ups: its calls are answered while this thread
        records the next create and hands its follow-ups to the workers, so the workers no longer
        drain and wait at each batch's end. A run killed before it is recorded loses nothing:
        the next plan sends the same idempotent calls again.
        """
        self._carried.append(record)

    def record_carried(self) -> None:
        """Record the groups :meth:`carry` left, in order (each waits for its calls)."""
        while self._carried:
            self._carried.pop(0)()

    def record_carried_after(self, failure: BaseException) -> None:
        """Record the carried groups when the run ends on ``failure``: their calls were made, and
        must reach the audit log and state; the stop keeps anything more from being sent."""
        if self._carried:
            self.stop.trip(f"the run ended with calls to record ({type(failure).__name__}: {failure})")
        while self._carried:
            with contextlib.suppress(Exception):  # its own refusal must not hide the first failure
                self._carried.pop(0)()

    def settle_when_busy(self, intent: Intent, *, unsaved: bool = False) -> None:
        """Settle ``intent``, whose outcomes are all recorded, once the workers are busy.

        ``unsaved``: its users are saved then too, before it is settled, instead of before its
        follow-ups are sent. Only when those follow-ups are idempotent calls: a run killed before
        that save leaves the intent open, the next run finds its users by name and adopts them,
        and its plan sends the follow-ups again (see :func:`reconcile.apply.executor.execute`).

        Every outcome of the intent is known (the caller leaves one whose look-up failed open).
        When the run stopped meanwhile (a captcha in the follow-ups beside it), this raises the
        stop's error: the run's end saves and settles it (:meth:`settle_recorded`), as it does
        for a run that fails before the task runs.
        """
        if unsaved:
            self._unsaved.update(intent.users)
        self._recorded.append(intent)
        self.when_busy(self.settle_recorded)
        if self.stop.reason is not None:
            raise self.stop.error()

    def settle_recorded(self) -> None:
        """Save what is left unsaved, then settle the intents :meth:`settle_when_busy` left for later.

        Never settles an intent before its users are saved: when the save fails, they stay open.
        """
        if self._recorded and self._unsaved:
            checkpoint("before_create_save")
            self.save(())
            checkpoint("after_create_save")
        while self._recorded:
            self.journal.settle(self._recorded[0])
            del self._recorded[0]

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="apply")
        return self._pool

    def close(self) -> None:
        """End the worker threads (after the calls they carry)."""
        for pool in (self._pool, self._caller):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._caller = None
        self._when_busy.clear()

    def settle_unless_stopped(self, intent: Intent) -> None:
        """Settle ``intent`` once its batch is recorded; raise when the run stopped on it.

        A stopped batch may hold an outcome still unknown: its intent stays in the journal until
        a run settles it by reading.
        """
        if self.stop.reason is not None:
            raise self.stop.error()
        self.journal.settle(intent)

    def save(self, changed: Iterable[str], accounts: Iterable[str] = ()) -> None:
        """Save the users ``changed`` and the ``accounts`` (after the audit log, which never lags state).

        Users left to a later save by :meth:`save_later` are saved with them.
        """
        names = sorted(self._unsaved.union(changed))
        account_names = sorted(set(accounts))
        self.audit.sync()
        if not names and not account_names:
            return
        self.state = self.store.save(self.state, names, changed_accounts=account_names)
        self._unsaved.clear()
        self.result.state_serial = self.state.serial

    def save_later(self, changed: Iterable[str]) -> None:
        """Save ``changed`` with the next save while :attr:`saving_later`, else now.

        Only for what idempotent calls changed (updates, a grant recorded as awaiting the
        agreement): a run killed before that save left nothing open, and the next plan sends the
        same calls again. A batch's follow-ups are made between two create steps, and the second
        saves its own users at once: their saves become one, and the workers no longer wait for two
        fsyncs at each batch's end (see :func:`reconcile.apply.executor.execute`).
        """
        if self.saving_later:
            self._unsaved.update(changed)
        else:
            self.save(changed)

    def save_left(self) -> None:
        """Save what :meth:`save_later` left, if anything."""
        if self._unsaved:
            self.save(())

    def accounts_of(self, users: Iterable[str]) -> list[str]:
        """The names of the accounts state records for ``users``."""
        wanted = set(users)
        return [name for name, record in self.state.accounts.items() if record.user in wanted]

    def account_id(self, name: str, planned: int | None) -> int | None:
        """The id the plan gives, else the one state records (None: the account was not created)."""
        if planned is not None:
            return planned
        record = self.state.accounts.get(name)
        return record.accountId if record is not None else None

    def user_id(self, name: str, planned: int | None) -> int | None:
        """The id the plan gives, else the one state records (None: the user was not created)."""
        if planned is not None:
            return planned
        record = self.state.users.get(name)
        return record.userId if record is not None else None

    @contextlib.contextmanager
    def recording_stop(self) -> Iterator[None]:
        """Write the stop to the audit log as its last line, then let it end the run."""
        try:
            yield
        except RunStopped:
            self.audit.record("stop", outcome="stopped", detail={"reason": self.stop.reason})
            self.audit.sync()
            raise


def _take_calls(fn: Callable[..., R], calls: Iterator[tuple[Future[R], tuple[Any, ...]]]) -> None:
    """Make the calls left in ``calls`` one by one, each answering its Future (as a pool task would)."""
    for future, args in calls:
        if not future.set_running_or_notify_cancel():
            continue
        try:
            result = fn(*args)
        except BaseException as exc:  # the Future hands it to whoever records the call
            future.set_exception(exc)
        else:
            future.set_result(result)


def overlapped(
    run: Run,
    groups: Sequence[G],
    send: Callable[[G], S],
    record: Callable[[G, S], None],
    *,
    carry_last: Callable[[], bool] = lambda: False,
) -> None:
    """``send`` each group, then ``record`` it; the next group is sent before this one is recorded.

    Recording (audit lines, a state save and its fsync) keeps the main thread; meanwhile the
    workers already carry the next group's calls instead of idling behind the save. Each group is
    still recorded and saved whole, in order, and nothing is sent once the run stopped. Groups
    an earlier step carried are recorded once this step's first group is in flight.
    ``carry_last``: whether the last group is carried in turn, asked once it is sent
    (:meth:`Run.carry`: idempotent calls only).
    """
    if not groups:
        return
    run.stop.check()
    pending = send(groups[0])
    try:
        run.busy()
        run.record_carried()
    except BaseException as exc:
        _record_in_flight(run, groups[0], pending, record, exc)
        raise
    for index, group in enumerate(groups):
        sent, more = pending, index + 1 < len(groups)
        stopped = more and run.stop.reason is not None
        if more and not stopped:
            pending = send(groups[index + 1])
        if not more and carry_last():
            run.carry(functools.partial(record, group, sent))
            return
        try:
            record(group, sent)
        except BaseException as exc:
            if more and not stopped:
                _record_in_flight(run, groups[index + 1], pending, record, exc)
            raise
        if stopped:
            raise run.stop.error()


def _record_in_flight(
    run: Run, group: G, sent: S, record: Callable[[G, S], None], failure: BaseException
) -> None:
    """Record the group sent while the one before failed to record (a stop, a failed save).

    Its calls already made must reach the audit log and state like any other; the stop keeps
    the ones not yet made from being sent. The run then ends with ``failure``.
    """
    run.stop.trip(f"the run ended with a group of calls in flight ({type(failure).__name__}: {failure})")
    # Its own refusal (the stop it checks, a save failing again) must not hide the first failure.
    with contextlib.suppress(Exception):
        record(group, sent)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def send_once(
    run: Run,
    kind: str,
    names: Sequence[str],
    send: Callable[[], T],
    *,
    unknown: Callable[[str], None],
    refused: Callable[[], None] = lambda: None,
) -> T | None:
    """Make a call that is never resent; return its answer, or None when it failed as a whole.

    An error that needs a person runs ``refused`` (the call did not run), then stops the run; a
    lost answer is handed to ``unknown`` with the reason; an API refusal fails every name of
    ``names`` (accounts) with the API's words. Each is written to the audit log as ``kind``.
    """
    try:
        return send()
    except NEEDS_A_PERSON:
        run.audit.record(kind, users=names, outcome="refused")
        refused()
        raise run.stop.error() from None
    except OutcomeUnknown as exc:
        run.audit.record(kind, users=names, outcome="unknown", detail={"error": str(exc)})
        unknown(lost(exc.call or kind, exc))
    except ApiError as exc:
        run.audit.record(kind, users=names, outcome="failed", detail={"error": str(exc)})
        for name in names:
            run.result.fail(name, kind, str(exc))
    return None


def lost(call: str, exc: OutcomeUnknown) -> str:
    """Say, for each user's report, which call lost its answer and how."""
    return f"{exc.call or call}: {exc.reason or 'no usable answer'} after the request was sent"
