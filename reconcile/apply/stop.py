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
from typing import Any, TypeVar

from reconcile.apply.ports import (
    ApplyClient,
    CancelClient,
    CreateResultLike,
    GrantResultLike,
    PluginLike,
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

    @property
    def reason(self) -> str | None:
        return self._reason

    def trip(self, reason: str) -> bool:
        """Stop the run for ``reason`` (kept only if it is the first); return whether it was."""
        with self._lock:
            if self._reason is None:
                self._reason = reason
                return True
            return False

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
