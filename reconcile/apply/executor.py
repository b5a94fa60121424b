"""Execute a plan through the partner API: one executor per kind of action, in a fixed order.

Order (DESIGN §5): creates in batches, then email and contact updates (a few at a time), then
grants (Sim+ after one read of the agreement signals), then evaluation accounts (creates, risk
settings, categories, locks, resets, revocations), then cancellations in batches. Every group
ends with ``store.save``, so a run that dies keeps all it did; every non-idempotent call is
announced in the journal first, so the next run can settle what the dead one left open
(:mod:`reconcile.apply.recovery`). A new kind of action gets its own module and one line in
:data:`EXECUTORS`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from reconcile.apply.account_create import run_account_creates
from reconcile.apply.account_settings import run_category_switches, run_risk_updates, run_trading_changes
from reconcile.apply.cancel import run_cancels
from reconcile.apply.create import run_creates
from reconcile.apply.grant import run_grants
from reconcile.apply.reset import run_resets
from reconcile.apply.result import ApplyResult
from reconcile.apply.revoke import run_revokes
from reconcile.apply.run import ExecuteOptions, Run
from reconcile.apply.update import run_updates
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
    Executor[CreateUser]((CreateUser,), run_creates),
    Executor[UpdateEmail | UpdateContact]((UpdateEmail, UpdateContact), run_updates),
    Executor[GrantEntitlement]((GrantEntitlement,), run_grants),
    Executor[CreateAccount]((CreateAccount,), run_account_creates),
    Executor[UpdateRisk]((UpdateRisk,), run_risk_updates),
    Executor[SwitchRiskCategory]((SwitchRiskCategory,), run_category_switches),
    Executor[SetTrading]((SetTrading,), run_trading_changes),
    Executor[ResetAccount]((ResetAccount,), run_resets),
    Executor[RevokeTrading]((RevokeTrading,), run_revokes),
    Executor[CancelEverything]((CancelEverything,), run_cancels),
)
"""Every kind of action, each once, in the order they are applied."""


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
    with run.recording_stop():
        for executor in EXECUTORS:
            executor(run, actions, options)
    run.audit.record(
        "apply",
        outcome="ok" if run.result.ok else "failed",
        detail={**run.result.counts(), "seconds": round(time.monotonic() - started, 3)},
    )
    run.audit.sync()
    return run.result
