"""Change what governs an account's trading: auto-liquidation settings, risk category, admin lock.

These calls are idempotent (sending one again sets the same value), so none is journaled: a run
that dies before saving leaves the plan to send it again. Each sends as few requests as the API
allows: settings in bulk (≤ 100 items), one category switch per category (≤ 100 ids), and one
lock or unlock per account (the API has no bulk form).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

from reconcile.apply.crashpoints import checkpoint
from reconcile.apply.run import GROUP, ExecuteOptions, Run, chunks
from reconcile.apply.stop import NEEDS_A_PERSON
from reconcile.apply.wire import auto_liq_item
from reconcile.errors import ApiError
from reconcile.planning.plan import SetTrading, SwitchRiskCategory, UpdateRisk

ADMIN_ACTIONS = {"locked": "LockTradingImmediately", "active": "Normal"}
"""``trading`` in the manifest → the adminAction setadminautoliqaction sets."""
REASON_CODE = "Other"
REASON = "reconcile: manifest"

A = TypeVar("A", UpdateRisk, SwitchRiskCategory, SetTrading)


def _with_account_ids(run: Run, actions: Sequence[A]) -> list[tuple[A, int]]:
    """Each action with its account id (planned, or recorded by this run's create); the rest fail."""
    ready: list[tuple[A, int]] = []
    for action in actions:
        account_id = run.account_id(action.account, action.accountId)
        if account_id is None:
            run.result.fail(action.account, action.action.value, "skipped: the account was not created")
        else:
            ready.append((action, account_id))
    return ready


def _send_batch(
    run: Run, batch: Sequence[tuple[A, int]], send: Callable[[], object], record: Callable[[A], None]
) -> None:
    """Make one call for ``batch``; record every action of it, or fail them all with the API's words."""
    names = [a.account for a, _ in batch]
    kind = batch[0][0].action.value
    try:
        send()
    except NEEDS_A_PERSON:
        run.audit.record(kind, users=names, outcome="refused")
        raise run.stop.error() from None
    except ApiError as exc:
        run.audit.record(kind, users=names, outcome="failed", detail={"error": str(exc)})
        for action, _ in batch:
            run.result.fail(action.account, kind, str(exc))
        return
    run.audit.record(kind, users=names, outcome="ok", request_id=run.client.last_request_id)
    for action, _ in batch:
        record(action)


def run_risk_updates(run: Run, actions: Sequence[UpdateRisk], options: ExecuteOptions) -> None:
    """Send ``actions`` with updateuserautoliqs, ≤ ``options.batch_size`` items per call."""

    def send(batch: Sequence[tuple[UpdateRisk, int]]) -> object:
        items = [auto_liq_item(account_id, action.risk) for action, account_id in batch]
        return run.client.update_user_auto_liqs(items, accounts=[a.account for a, _ in batch])

    ready = _with_account_ids(run, actions)
    _run_batches(
        run,
        list(chunks(ready, options.batch_size)),
        send,
        lambda action: _record(run, action.account, "risk_updated", risk=dict(action.risk)),
    )


def run_category_switches(run: Run, actions: Sequence[SwitchRiskCategory], options: ExecuteOptions) -> None:
    """Send ``actions`` with switchriskcategory: one call per category, ≤ ``options.batch_size`` ids."""

    def send(batch: Sequence[tuple[SwitchRiskCategory, int]]) -> object:
        ids = [account_id for _, account_id in batch]
        return run.client.switch_risk_category(
            ids, batch[0][0].riskCategoryId, accounts=[a.account for a, _ in batch]
        )

    by_category: dict[int, list[tuple[SwitchRiskCategory, int]]] = {}
    for action, account_id in _with_account_ids(run, actions):
        by_category.setdefault(action.riskCategoryId, []).append((action, account_id))
    batches = [b for _, same in sorted(by_category.items()) for b in chunks(same, options.batch_size)]
    _run_batches(
        run,
        batches,
        send,
        lambda action: _record(
            run, action.account, "risk_categories_switched", riskCategory=action.riskCategory
        ),
    )


def _run_batches(
    run: Run,
    batches: Sequence[Sequence[tuple[A, int]]],
    send: Callable[[Sequence[tuple[A, int]]], object],
    record: Callable[[A], None],
) -> None:
    """One call per batch (the stop checked first), each recorded and saved as it lands."""
    if not batches:
        return
    run.progress.phase(batches[0][0][0].action.value, sum(map(len, batches)))
    done = 0
    for batch in batches:
        run.stop.check()
        _send_batch(run, batch, functools.partial(send, batch), record)
        run.save((), (a.account for a, _ in batch))
        done += len(batch)
        run.progress.advance(done)


def run_trading_changes(run: Run, actions: Sequence[SetTrading], options: ExecuteOptions) -> None:
    """Lock or unlock each account with setadminautoliqaction (one call each); save every group."""
    if not actions:
        return
    run.progress.phase("set_trading", len(actions))
    done = 0
    for group in chunks(_with_account_ids(run, actions), GROUP):
        for action, account_id in group:
            run.stop.check()
            _send_batch(
                run,
                [(action, account_id)],
                functools.partial(
                    run.client.set_admin_auto_liq_action,
                    account_id,
                    ADMIN_ACTIONS[action.after],
                    reason_code=REASON_CODE,
                    reason=REASON,
                    account=action.account,
                ),
                lambda action: _record(run, action.account, "trading_set", trading=action.after),
            )
        checkpoint("after_trading_calls")
        run.save((), (a.account for a, _ in group))
        done += len(group)
        run.progress.advance(done)


def _record(run: Run, name: str, outcome: str, **update: object) -> None:
    """Record ``update`` on account ``name`` and list it under ``outcome`` in the result."""
    record = run.state.accounts.get(name)
    if record is not None:
        run.state.accounts[name] = record.model_copy(update={**update, "updatedAt": run.clock()})
    getattr(run.result, outcome).append(name)
