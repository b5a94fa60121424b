"""A stop is a stop (DESIGN §8.9): once a run meets a condition that needs a person, nothing more is sent.

Every API call of a run goes through :class:`GuardedClient` (the companion's through
:class:`GuardedCancelClient`), which checks the run's one shared :class:`Stop` before sending,
from any phase and any worker thread, so no phase can forget it.
A refused login, a login that cannot succeed now (its hourly limit reached), a captcha or an
account the API locks trips the stop by itself; the executor
trips it for an outcome it cannot settle (an unknown answer to a create or a cancel whose users
it cannot look up).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, TypeVar

from reconcile.apply.ports import (
    AccountLike,
    ApplyClient,
    CancelClient,
    CreateAccountResultLike,
    CreateResultLike,
    GrantResultLike,
    PacedCreates,
    PermissionLike,
    PluginLike,
    ProbedCreates,
    SignalLike,
    UserLike,
)
from reconcile.errors import ApiError, AuthError, CaptchaRequired, LoginUnavailable, ReconcileError
from reconcile.manifest.models import CancelFlags

T = TypeVar("T")

NEEDS_A_PERSON: tuple[type[ApiError], ...] = (AuthError, CaptchaRequired)
"""Errors no retry of this run can fix: refused credentials, a locked account, a captcha, and a
login that cannot succeed now (:class:`LoginUnavailable`, an :class:`AuthError`)."""


class RunStopped(ReconcileError):
    """The run stopped on a condition that needs a person; nothing was sent after it."""


class Stop:
    """One flag per run, shared by every phase and worker thread; the first reason wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._tripped = threading.Event()

    @property
    def reason(self) -> str | None:
        return self._reason

    def trip(self, reason: str) -> bool:
        """Stop the run for ``reason`` (kept only if it is the first); return whether it was."""
        with self._lock:
            if self._reason is None:
                self._reason = reason
                self._tripped.set()
                return True
            return False

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` unless the run stops first; then raise :class:`RunStopped`.

        The clients of a run sleep through this (pacing slots, retries, penalty tickets): a wait
        for the next hour's slot ends at once on SIGTERM, and what waited is never sent.
        """
        # Clamped: a wait longer than the platform's timeout (an absurd time scale, a hostile
        # Retry-After) would raise OverflowError instead of waiting.
        if self._tripped.wait(min(max(seconds, 0.0), threading.TIMEOUT_MAX)):
            raise self.error()

    def error(self) -> RunStopped:
        """The one error the run ends with."""
        return RunStopped(
            f"{self._reason}\napply stopped here: nothing was sent to the API after this; what was done "
            "before it is recorded in state. Fix the cause, then run apply again"
        )

    def check(self) -> None:
        """Raise :class:`RunStopped` when the run is stopped (call before each send)."""
        if self._reason is not None:
            raise self.error()


class GuardedCancelClient:
    """A :class:`~reconcile.apply.ports.CancelClient` that checks ``stop`` before every call.

    An error that needs a person trips the stop before it is raised to the caller.
    """

    def __init__(self, client: CancelClient, stop: Stop) -> None:
        self._client = client
        self.stop = stop

    @property
    def endpoint_label(self) -> str:
        return self._client.endpoint_label

    @property
    def last_request_id(self) -> str | None:
        return self._client.last_request_id

    def _send(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.stop.check()
        try:
            return call(*args, **kwargs)
        except NEEDS_A_PERSON as exc:
            first = self.stop.trip(str(exc))
            if not first and isinstance(exc, LoginUnavailable):
                # Another worker already stopped the run on this login; this call was never sent,
                # so it is no failure of its own (one message, not one per user).
                raise self.stop.error() from None
            raise

    def cancel_everything(
        self, user_ids: Sequence[int], flags: CancelFlags, *, users: Sequence[str] = ()
    ) -> Any:
        return self._send(self._client.cancel_everything, user_ids, flags, users=users)


class GuardedClient(GuardedCancelClient):
    """An :class:`~reconcile.apply.ports.ApplyClient` that checks ``stop`` before every call."""

    def __init__(self, client: ApplyClient, stop: Stop) -> None:
        super().__init__(client, stop)
        self._full = client

    def create_evaluation_users(self, users: Sequence[Any]) -> Sequence[CreateResultLike]:
        return self._send(self._full.create_evaluation_users, users)

    def await_create_slot(self) -> float:
        """Wait for the create limit's next slot, if the client paces (a fake need not); return the wait."""
        if isinstance(self._full, PacedCreates):
            return self._send(self._full.await_create_slot)
        return 0.0

    def create_slot_free(self) -> bool:
        """Whether a create may go now without waiting: a client that paces without saying cannot tell."""
        if isinstance(self._full, ProbedCreates):
            return self._full.create_slot_free()
        return not isinstance(self._full, PacedCreates)

    def modify_email_address(self, user_id: int, email: str, *, user: str | None = None) -> Any:
        return self._send(self._full.modify_email_address, user_id, email, user=user)

    def update_contact_info(self, req: Any, *, user: str | None = None) -> Any:
        return self._send(self._full.update_contact_info, req, user=user)

    def add_entitlement_subscription(
        self, entitlement_id: int, user_id: int, account_id: int, *, user: str | None = None
    ) -> GrantResultLike:
        return self._send(
            self._full.add_entitlement_subscription, entitlement_id, user_id, account_id, user=user
        )

    def agreement_signals(self, alert_id: int) -> Sequence[SignalLike]:
        return self._send(self._full.agreement_signals, alert_id)

    def complete_alert_signal(self, signal_id: int, *, user: str | None = None) -> Any:
        return self._send(self._full.complete_alert_signal, signal_id, user=user)

    def find_user(self, name: str) -> UserLike | None:
        return self._send(self._full.find_user, name)

    def user_items(self, ids: Sequence[int]) -> Sequence[UserLike]:
        return self._send(self._full.user_items, ids)

    def user_plugins_of(self, user_ids: Sequence[int]) -> Sequence[PluginLike]:
        return self._send(self._full.user_plugins_of, user_ids)

    def create_evaluation_accounts(self, accounts: Sequence[Any]) -> Sequence[CreateAccountResultLike]:
        return self._send(self._full.create_evaluation_accounts, accounts)

    def update_user_auto_liqs(self, items: Sequence[Any], *, accounts: Sequence[str] = ()) -> Any:
        return self._send(self._full.update_user_auto_liqs, items, accounts=accounts)

    def switch_risk_category(
        self, account_ids: Sequence[int], category_id: int, *, accounts: Sequence[str] = ()
    ) -> Any:
        return self._send(self._full.switch_risk_category, account_ids, category_id, accounts=accounts)

    def set_admin_auto_liq_action(
        self,
        account_id: int,
        action: str,
        *,
        reason_code: str = "Other",
        reason: str | None = None,
        account: str | None = None,
    ) -> Any:
        return self._send(
            self._full.set_admin_auto_liq_action,
            account_id,
            action,
            reason_code=reason_code,
            reason=reason,
            account=account,
        )

    def reset_demo_account_state(
        self, account_ids: Sequence[int], trade_date: date, *, accounts: Sequence[str] = ()
    ) -> Any:
        return self._send(self._full.reset_demo_account_state, account_ids, trade_date, accounts=accounts)

    def revoke_trading_permissions(
        self, permission_ids: Sequence[int], *, accounts: Sequence[str] = ()
    ) -> Any:
        return self._send(self._full.revoke_trading_permissions, permission_ids, accounts=accounts)

    def list_accounts(self) -> Sequence[AccountLike]:
        return self._send(self._full.list_accounts)

    def list_trading_permissions(self) -> Sequence[PermissionLike]:
        return self._send(self._full.list_trading_permissions)
