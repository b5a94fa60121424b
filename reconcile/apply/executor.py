"""Execute a plan through the partner API: one executor per kind of action, in a fixed order.

Order (DESIGN §5): nothing waits behind the create limit that does not need to. First everything
about users that exist already, in :data:`EXECUTORS` order (cancellations and revocations first,
then email and contact updates, grants, and evaluation accounts: creates, risk settings,
categories, locks, resets); then the creates, batch by batch, each batch followed at once by what
its own users need (contact updates, grants, accounts), so the first traders are complete while
later batches still wait for their slot; the next batch's create goes out beside those
follow-ups when its slot is free now (see :func:`_start_next_create`), and the create before it
is settled then too (:meth:`Run.when_busy`): the workers do not wait for that bookkeeping.

Every group ends with ``store.save``, so a run that dies keeps all it did, with one exception: the
users a batch's idempotent follow-ups changed (updates, grants recorded as awaiting the agreement)
are saved with the next batch's create, or at the run's end (:meth:`Run.save_later`); a run that
dies between loses nothing the next plan does not send again. Every non-idempotent call is
announced in the journal first, so the next run can settle what the dead one left open
(:mod:`reconcile.apply.recovery`). A new kind of action gets its own module and one line in
:data:`EXECUTORS`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from reconcile.apply.account_create import run_account_creates
from reconcile.apply.account_settings import run_category_switches, run_risk_updates, run_trading_changes
from reconcile.apply.cancel import run_cancels
from reconcile.apply.create import StartedCreate, finish_create, run_creates, start_create
from reconcile.apply.grant import recheck_signatures, run_grants
from reconcile.apply.reset import run_resets
from reconcile.apply.result import ApplyResult, PhaseTally
from reconcile.apply.revoke import run_revokes
from reconcile.apply.run import ExecuteOptions, Run, chunks
from reconcile.apply.update import run_updates
from reconcile.bulk import freeze_survivors
from reconcile.planning.plan import (
    Action,
    CancelEverything,
    CreateAccount,
    CreateUser,
    GrantEntitlement,
    ResetAccount,
    RevokeTrading,
    SetTrading,
    SwitchRiskCategory,
    UpdateContact,
    UpdateEmail,
    UpdateRisk,
)

MAX_BATCH = 100

A = TypeVar("A")


class ActionExecutor(Protocol):
    """Runs every action of the kinds it takes (the rest of the plan is not its business)."""

    @property
    def kinds(self) -> tuple[type[Action], ...]: ...
    def __call__(self, run: Run, actions: Sequence[Action], options: ExecuteOptions) -> None: ...


@dataclasses.dataclass(frozen=True)
class Executor(Generic[A]):
    """An :class:`ActionExecutor` from a function over the actions of ``kinds``, in plan order."""

    kinds: tuple[type[A], ...]
    function: Callable[[Run, Sequence[A], ExecuteOptions], None]

    def __call__(self, run: Run, actions: Sequence[Action], options: ExecuteOptions) -> None:
        self.function(run, [a for a in actions if isinstance(a, self.kinds)], options)


EXECUTORS: tuple[ActionExecutor, ...] = (
    Executor[CancelEverything]((CancelEverything,), run_cancels),
    Executor[RevokeTrading]((RevokeTrading,), run_revokes),
    Executor[UpdateEmail | UpdateContact]((UpdateEmail, UpdateContact), run_updates),
    Executor[GrantEntitlement]((GrantEntitlement,), run_grants),
    Executor[CreateAccount]((CreateAccount,), run_account_creates),
    Executor[UpdateRisk]((UpdateRisk,), run_risk_updates),
    Executor[SwitchRiskCategory]((SwitchRiskCategory,), run_category_switches),
    Executor[SetTrading]((SetTrading,), run_trading_changes),
    Executor[ResetAccount]((ResetAccount,), run_resets),
    Executor[CreateUser]((CreateUser,), run_creates),
)
"""Every kind of action, each once, in the order they are applied to users that exist already."""
_GRANTS = next(e for e in EXECUTORS if GrantEntitlement in e.kinds)
_UPDATES = next(e for e in EXECUTORS if UpdateContact in e.kinds)
_CREATES = next(e for e in EXECUTORS if CreateUser in e.kinds)

Step = tuple[ActionExecutor, Sequence[Action]]


def schedule(actions: Sequence[Action], batch_size: int) -> list[Step]:
    """The executor calls that carry out ``actions``: existing users first, then batch by batch.

    An action of a user this plan creates waits for that user's create batch, and follows it
    before the next batch is created (the next batch may wait an hour for its slot).
    """
    creates = [a for a in actions if isinstance(a, CreateUser)]
    new = {a.user for a in creates}
    others = [e for e in EXECUTORS if CreateUser not in e.kinds]
    creator = next(e for e in EXECUTORS if CreateUser in e.kinds)
    # Each action is sorted once into its executors' lists (one pass, in plan order), not
    # filtered again by every executor for every batch: 30k actions took 450k isinstance calls.
    takers = _Takers(others)
    existing: list[list[Action]] = [[] for _ in others]
    waiting: dict[str, list[Action]] = {}
    for action in actions:
        if isinstance(action, CreateUser):
            continue
        if action.user in new:
            waiting.setdefault(action.user, []).append(action)
        else:
            takers.sort(action, existing)
    steps: list[Step] = list(zip(others, existing, strict=True))
    for batch in chunks(creates, batch_size):
        follow: list[list[Action]] = [[] for _ in others]
        for create in batch:
            for action in waiting.get(create.user, ()):
                takers.sort(action, follow)
        steps.append((creator, batch))
        steps.extend(zip(others, follow, strict=True))
    return [(e, chunk) for e, chunk in steps if chunk]


def _start_next_create(
    run: Run, steps: Sequence[Step], index: int, options: ExecuteOptions
) -> tuple[int, StartedCreate] | None:
    """Send the next create batch now, while the follow-ups of the batch at ``index`` are made.

    The create is one call the API answers alone, with every worker idle behind it; sent beside
    the follow-ups, its latency is hidden behind theirs (5k users whose creates are answered in
    0.2 s: 15.7 -> 12.2 s, ``bench/apply.py --create-latency 0.2``).
    Only when its hourly slot is free now: a batch whose follow-ups would otherwise wait an hour
    for the next create's slot is followed up first (DESIGN §5). Its answer is recorded at its own
    step, after those follow-ups, as if it had been sent then.
    """
    following = next((i for i in range(index + 1, len(steps)) if steps[i][0] is _CREATES), None)
    if following is None or following == index + 1:
        return None  # nothing to send it beside
    batch = [a for a in steps[following][1] if isinstance(a, CreateUser)]
    started = start_create(run, batch, options)
    return None if started is None else (following, started)


def _finish_in_flight(run: Run, started: StartedCreate, failure: BaseException) -> None:
    """Record the create sent ahead when the follow-ups before it failed (a stop, a failed save).

    Its users may exist now: what it answered must reach state like any other answer, and its
    intent is settled once they are saved. The stop keeps anything more from being sent (a look-up
    of a lost answer too: then the intent stays open for the next run). The run then ends with
    ``failure``.
    """
    run.stop.trip(f"the run ended while a create was in flight ({type(failure).__name__}: {failure})")
    # Its own refusal (the stop a look-up meets, a save failing again) must not hide the first failure.
    with contextlib.suppress(Exception):
        finish_create(run, started, stopped_before=True)


class _Takers:
    """Which of ``executors`` take an action, by its type (found once per type)."""

    def __init__(self, executors: Sequence[ActionExecutor]) -> None:
        self._executors = executors
        self._by_type: dict[type, tuple[int, ...]] = {}

    def sort(self, action: Action, lists: list[list[Action]]) -> None:
        """Append ``action`` to the list of each executor taking it (``lists`` run parallel to them)."""
        kind = type(action)
        found = self._by_type.get(kind)
        if found is None:
            found = tuple(i for i, e in enumerate(self._executors) if issubclass(kind, e.kinds))
            self._by_type[kind] = found
        for index in found:
            lists[index].append(action)


def execute(run: Run, actions: Sequence[Action], options: ExecuteOptions) -> ApplyResult:
    """Run ``actions`` (a plan's) in the documented order; return what happened.

    Raises :class:`~reconcile.apply.stop.RunStopped` when a condition that needs a person stopped
    the run; everything done before it is saved, and nothing was sent after it.
    """
    taken = {kind for executor in EXECUTORS for kind in executor.kinds}
    strays = sorted({type(a).__name__ for a in actions if type(a) not in taken})
    if strays:
        raise TypeError(f"no executor for {', '.join(strays)}")
    options = dataclasses.replace(options, batch_size=max(1, min(options.batch_size, MAX_BATCH)))
    started = time.monotonic()
    steps = schedule(actions, options.batch_size)
    gated = [a for a in actions if isinstance(a, GrantEntitlement) and a.agreement_gated]
    left = {id(e): sum(len(chunk) for step, chunk in steps if step is e) for e in EXECUTORS}
    display = run.progress
    run.progress = tally = PhaseTally(display)
    ahead: tuple[int, StartedCreate] | None = None
    """The next create batch, sent while the follow-ups before its step are made: (its step, it)."""
    following = False
    """Whether a create step came: the steps after one are its batch's follow-ups, up to the next."""

    def look_ahead(index: int) -> None:
        nonlocal ahead
        ahead = _start_next_create(run, steps, index, options)
        run.next_create_sent = ahead is not None

    try:
        with run.recording_stop():
            try:
                for index, (executor, chunk) in enumerate(steps):
                    left[id(executor)] -= len(chunk)
                    creating = executor is _CREATES
                    # A batch's follow-ups leave their users' saves to its next create's own save.
                    run.saving_later = following and not creating
                    following = following or creating
                    with tally.step(left[id(executor)]):
                        if ahead is not None and ahead[0] == index:
                            sent, ahead = ahead[1], None
                            run.next_create_sent = False
                            # Contact updates may go out before the create's users are saved.
                            updates_next = index + 1 < len(steps) and steps[index + 1][0] is _UPDATES
                            run_creates(run, sent.batch, options, started=sent, idempotent_next=updates_next)
                        else:
                            if creating:
                                run.busy()
                                run.record_carried()
                                run.save_left()  # it may wait an hour for its slot: nothing waits unsaved
                            executor(run, chunk, options)
                    if run.waited_for_slot:
                        with tally.step(left[id(_GRANTS)]):
                            recheck_signatures(run, gated, options)
                    if creating:
                        run.when_busy(functools.partial(look_ahead, index))
                    else:
                        run.busy()  # what the step's own calls did not do (it sent none)
                    freeze_survivors()  # what the step recorded lives on: no collection walks it again
                run.busy()
                run.record_carried()
                run.saving_later = False
                run.save_left()
            except BaseException as exc:
                run.saving_later = False
                if ahead is not None:
                    _finish_in_flight(run, ahead[1], exc)
                run.record_carried_after(exc)
                for task in (run.settle_recorded, run.save_left):  # it saves before it settles
                    with contextlib.suppress(Exception):  # their own failure must not hide the first
                        task()
                raise
    finally:
        run.progress = display
        run.close()
    run.audit.record(
        "apply",
        outcome="ok" if run.result.ok else "failed",
        detail={**run.result.counts(), "seconds": round(time.monotonic() - started, 3)},
    )
    run.audit.sync()
    return run.result
