"""Create evaluation accounts in batches, each announced in the journal; settle lost answers by name.

One createevaluationaccounts call makes the account and its trading permission; both ids are
recorded as each batch lands. A call whose answer is lost, or an account the API says already
exists, is settled by reading ``/account/list`` and ``/tradingPermission/list`` once: an account of
that name held by the same user is recorded (no second account is ever created, no id lost);
one held by anyone else is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from reconcile.apply.crashpoints import checkpoint
from reconcile.apply.intents import Intent
from reconcile.apply.ports import AccountLike, CreateAccountResultLike, PermissionLike
from reconcile.apply.run import ExecuteOptions, Run, chunks, send_once
from reconcile.apply.wire import evaluation_account
from reconcile.errors import ApiError
from reconcile.planning.plan import CreateAccount
from reconcile.state.model import AccountRecord

ACTIVE_PERMISSIONS = frozenset({"requested", "approved", "accepted"})
"""Trading permission statuses that still let the account trade (Declined and Revoked do not)."""


def run_account_creates(run: Run, actions: Sequence[CreateAccount], options: ExecuteOptions) -> None:
    """Create ``actions`` in batches of ``options.batch_size``; save state after each batch."""
    if not actions:
        return
    run.progress.phase("create_account", len(actions))
    ready = [a for a in (_with_user_id(run, a) for a in actions) if a is not None]
    done = len(actions) - len(ready)
    for batch in chunks(ready, options.batch_size):
        run.stop.check()
        intent = run.journal.begin("create_account", batch)
        checkpoint("before_account_create_call")
        _create_batch(run, intent, batch)
        run.save((), (a.account for a in batch))
        checkpoint("after_account_create_save")
        run.settle_unless_stopped(intent)
        done += len(batch)
        run.progress.advance(done)


def _with_user_id(run: Run, action: CreateAccount) -> CreateAccount | None:
    """``action`` with its user's id (from the plan, or recorded by this run's create); None: not sendable."""
    user_id = run.user_id(action.user, action.userId)
    record = run.state.users.get(action.user)
    if user_id is None or (record is not None and record.lifecycle != "active"):
        run.result.fail(action.account, "create_account", f"skipped: user {action.user} was not created")
        return None
    return action if action.userId == user_id else action.model_copy(update={"userId": user_id})


def _user_id_of(action: CreateAccount) -> int:
    if action.userId is None:  # the intent holds actions whose user id was resolved
        raise ValueError(f"create_account {action.account} has no user id")
    return action.userId


def _create_batch(run: Run, intent: Intent, batch: Sequence[CreateAccount]) -> None:
    """Send one create call and record its answers (or settle it when the answer is lost)."""
    names = [a.account for a in batch]
    # Refused before it ran (a stop): the intent stays open and the next run settles it by name.
    results = send_once(
        run,
        "create_account",
        names,
        lambda: run.client.create_evaluation_accounts([evaluation_account(a, _user_id_of(a)) for a in batch]),
        unknown=lambda why: settle_account_creates(run, batch, why),
    )
    if results is None:
        return
    checkpoint("after_account_create_call")
    if len(results) != len(batch):
        settle_account_creates(
            run, batch, f"the API answered {len(results)} results for {len(batch)} accounts"
        )
        return
    _record_results(run, batch, results)
    run.audit.record(
        "create_account",
        users=names,
        outcome=f"answered {len(results)}",
        request_id=run.client.last_request_id,
    )


def _record_results(
    run: Run, batch: Sequence[CreateAccount], results: Sequence[CreateAccountResultLike]
) -> None:
    exists: list[CreateAccount] = []
    for action, res in zip(batch, results, strict=True):
        if res.accountId is not None and not res.errorText:
            record_account(run, action, res.accountId, res.tradingPermissionId)
        elif res.errorText and "already exist" in res.errorText.lower():
            exists.append(action)  # perhaps ours, from a run whose answer was lost: look it up
        else:
            run.result.fail(action.account, "create_account", res.errorText or "the API gave no account id")
    if exists:
        settle_account_creates(run, exists, "the API said an account of that name already exists")


def record_account(
    run: Run,
    action: CreateAccount,
    account_id: int,
    permission_id: int | None,
    origin: Literal["created", "adopted"] = "created",
) -> None:
    """Record the account ``action`` created (or found) with both its ids."""
    now = run.clock()
    run.state.accounts[action.account] = AccountRecord(
        accountId=account_id,
        user=action.user,
        userId=_user_id_of(action),
        origin=origin,
        template=action.template,
        tradingPermissionId=permission_id,
        risk=dict(action.risk),
        lastReset=action.resetTo,
        createdAt=now,
        updatedAt=now,
    )
    (run.result.accounts_created if origin == "created" else run.result.accounts_adopted).append(
        action.account
    )


def read_organization(run: Run, why: str) -> tuple[dict[str, AccountLike], dict[int, PermissionLike]] | None:
    """The organization's accounts by lowercased name and permissions by account id; None: unreadable.

    Two list calls, whatever the number of accounts. When they fail the run is stopped: an
    outcome that cannot be learned is not guessed.
    """
    try:
        accounts = {a.name.lower(): a for a in run.client.list_accounts()}
        permissions: dict[int, PermissionLike] = {}
        for permission in run.client.list_trading_permissions():
            # An account's active permission wins over an older revoked one.
            held = permissions.get(permission.accountId)
            if held is None or permission.status.lower() in ACTIVE_PERMISSIONS:
                permissions[permission.accountId] = permission
    except ApiError as exc:
        run.stop.trip(
            f"{why}; reading the organization's accounts failed, so whether they exist is unknown: "
            f"{exc}. The intent stays in the journal: the next apply settles it before anything else"
        )
        return None
    return accounts, permissions


def settle_account_creates(
    run: Run, batch: Sequence[CreateAccount], why: str, *, report: bool = True
) -> None:
    """Record each account of ``batch`` that exists under its user; report the rest.

    Without ``report`` an account that does not exist is no failure (the plan that follows creates it).
    """
    todo = [a for a in batch if a.account not in run.state.accounts]
    if not todo:
        return
    found = read_organization(run, f"{todo[0].account}: {why}")
    if found is None:
        return
    accounts, permissions = found
    for action in todo:
        account = accounts.get(action.account.lower())
        if account is None:
            if report:
                run.result.fail(
                    action.account,
                    "create_account",
                    f"{why}; the account does not exist, the next apply creates it",
                )
        elif account.userId != action.userId:
            run.result.fail(
                action.account,
                "create_account",
                f"{why}: an account named {account.name} already exists (id {account.id}) for user id "
                f"{account.userId}, not {action.user} (id {action.userId}); not recorded. Rename the "
                "account in the manifest",
            )
        else:
            permission = permissions.get(account.id)
            record_account(run, action, account.id, permission.id if permission is not None else None)
            if permission is not None and permission.status.lower() not in ACTIVE_PERMISSIONS:
                # Revoked since (outside): recorded so, never as an account its trader can trade in.
                record = run.state.accounts[action.account]
                update = {"permission": "revoked", "revokedAt": record.createdAt}
                run.state.accounts[action.account] = record.model_copy(update=update)


def settle_account_create_intent(run: Run, intent: Intent) -> None:
    """Settle a create a dead run announced: record whichever accounts exist (none absent is a failure)."""
    creates = [a for a in intent.actions if isinstance(a, CreateAccount)]
    settle_account_creates(run, creates, "an interrupted apply may have created it", report=False)
