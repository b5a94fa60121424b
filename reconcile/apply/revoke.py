"""Revoke trading permissions in bulk, each confirmed first by one read of the permissions.

Nothing irreversible on a guess (DESIGN §8.8): before the first call, ``/tradingPermission/list``
is read once; a permission is sent only while it still belongs to the recorded account and user
and is active. Revoking is idempotent at the API, so no journal is needed: a run that dies
before saving leaves the next plan to confirm (and find it revoked) again.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconcile.apply.account_create import ACTIVE_PERMISSIONS
from reconcile.apply.crashpoints import checkpoint
from reconcile.apply.ports import PermissionLike
from reconcile.apply.run import ExecuteOptions, Run, chunks, lost
from reconcile.apply.stop import NEEDS_A_PERSON
from reconcile.errors import ApiError, OutcomeUnknown
from reconcile.planning.plan import RevokeTrading


def run_revokes(run: Run, actions: Sequence[RevokeTrading], options: ExecuteOptions) -> None:
    """Confirm ``actions`` with one read, then revoke the confirmed ≤ ``options.batch_size`` per call."""
    if not actions:
        return
    run.progress.phase("revoke_trading", len(actions))
    run.stop.check()
    permissions = _read_permissions(run, actions)
    confirmed = [a for a in actions if _confirmed(run, a, permissions)]
    run.save((), (a.account for a in actions))
    done = len(actions) - len(confirmed)
    for batch in chunks(confirmed, options.batch_size):
        run.stop.check()
        checkpoint("before_revoke_call")
        _revoke_batch(run, batch)
        run.save((), (a.account for a in batch))
        done += len(batch)
        run.progress.advance(done)


def _read_permissions(run: Run, actions: Sequence[RevokeTrading]) -> dict[int, PermissionLike]:
    try:
        return {p.id: p for p in run.client.list_trading_permissions()}
    except ApiError as exc:
        names = ", ".join(a.account for a in actions[:5])
        run.stop.trip(
            f"revoketradingpermissions for {names}: not sent, because confirming the permissions "
            f"first failed: {exc}"
        )
        raise run.stop.error() from None


def _confirmed(run: Run, action: RevokeTrading, permissions: dict[int, PermissionLike]) -> bool:
    """True when ``action`` may be sent; an already revoked one is recorded, a mismatch reported."""
    found = permissions.get(action.tradingPermissionId)
    problem = _against_state(run, action) or _mismatch(action, found)
    if problem is None:
        return True
    if problem == "revoked":
        problem = _another_active(action, permissions)
    if found is not None and problem == "revoked":
        # Already revoked (outside, or by a run that died before saving): what the manifest wants.
        record_revoked(run, action.account)
        return False
    run.audit.record("revoke_trading", users=[action.account], outcome="not_sent", detail={"error": problem})
    run.result.fail(action.account, "revoke_trading", f"not sent: {problem}")
    return False


def _against_state(run: Run, action: RevokeTrading) -> str | None:
    """Why ``action`` must not be sent given what state records (None: state agrees with it).

    The read below confirms the ids ``action`` carries, so they must be the ones state records
    (a plan file edited after its review could name one account and carry another's ids), and the
    record's user id must be its user's (a hand-edited record must not be confirmed by the API
    agreeing with an id copied from another trader).
    """
    record = run.state.accounts.get(action.account)
    if (
        record is None
        or (record.user, record.userId, record.accountId) != (action.user, action.userId, action.accountId)
        # None: a refreshed plan read the id state lacks; the read confirms it is this account's.
        or record.tradingPermissionId not in (None, action.tradingPermissionId)
    ):
        return differs_from_state(action.account)
    owner = run.state.users.get(action.user)
    if owner is None or owner.userId != action.userId:
        return (
            f"state records account {action.account} for {action.user} with user id {action.userId}, "
            f"but {action.user}'s id is {owner.userId if owner else None}; the state is wrong about this "
            "account: check it (reconcile state show) before revoking anything"
        )
    return None


def _another_active(action: RevokeTrading, permissions: dict[int, PermissionLike]) -> str:
    """``revoked``, or why not: the account holds another live permission (granted outside)."""
    for other in permissions.values():
        same = (other.accountId, other.userId) == (action.accountId, action.userId)
        if same and other.status.lower() in ACTIVE_PERMISSIONS:
            # Recording it revoked would say the trader cannot trade while they can.
            return (
                f"trading permission {action.tradingPermissionId} is revoked, but account {action.account} "
                f"holds another, {other.id} ({other.status}), that state does not record: run `reconcile "
                "refresh` to record it, then plan again"
            )
    return "revoked"


def differs_from_state(account: str) -> str:
    """Why an irreversible action whose ids are not the ones state records for ``account`` is not sent."""
    return (
        f"the plan's ids for account {account} are not the ones state records (the plan file was "
        "changed after it was made, or state was): make a new plan and review it"
    )


def _mismatch(action: RevokeTrading, found: PermissionLike | None) -> str | None:
    """Why ``action`` must not be sent given what the API shows for its permission (None: send it)."""
    permission = f"trading permission {action.tradingPermissionId}"
    if found is None:
        return (
            f"the API has no {permission}, which state records for account {action.account}; check the "
            "state (reconcile state show) and `reconcile plan --refresh`"
        )
    if found.accountId != action.accountId or found.userId != action.userId:
        return (
            f"{permission} belongs to account id {found.accountId} and user id {found.userId} at the API, "
            f"not to {action.account} (id {action.accountId}) of {action.user} (id {action.userId}) as "
            "state records; the state is wrong about this account: check it before revoking anything"
        )
    if found.status.lower() not in ACTIVE_PERMISSIONS:
        return (
            "revoked" if found.status.lower() == "revoked" else f"{permission} is {found.status}, not active"
        )
    return None


def _revoke_batch(run: Run, batch: Sequence[RevokeTrading]) -> None:
    names = [a.account for a in batch]
    try:
        run.client.revoke_trading_permissions([a.tradingPermissionId for a in batch], accounts=names)
    except NEEDS_A_PERSON:
        run.audit.record("revoke_trading", users=names, outcome="refused")
        raise run.stop.error() from None
    except (OutcomeUnknown, ApiError) as exc:
        run.audit.record("revoke_trading", users=names, outcome="failed", detail={"error": str(exc)})
        why = lost("revoketradingpermissions", exc) if isinstance(exc, OutcomeUnknown) else str(exc)
        for action in batch:
            # Idempotent: the next plan confirms it again and finds it revoked, or sends it again.
            run.result.fail(action.account, "revoke_trading", f"{why}; the next apply checks it again")
        return
    run.audit.record("revoke_trading", users=names, outcome="revoked", request_id=run.client.last_request_id)
    for action in batch:
        record_revoked(run, action.account)


def record_revoked(run: Run, name: str) -> None:
    """Record account ``name``'s trading permission as revoked (final)."""
    record = run.state.accounts.get(name)
    if record is None or record.permission == "revoked":
        return
    now = run.clock()
    run.state.accounts[name] = record.model_copy(
        update={"permission": "revoked", "revokedAt": now, "updatedAt": now}
    )
    run.result.trading_revoked.append(name)
