"""What a state store is: small interfaces that every backend implements whole.

After Terraform's ``statemgr``: a store reads (:class:`StateReader`), writes
(:class:`StateWriter`), locks (:class:`StateLocker`) and keeps what a run records beside the state
(:class:`RunRecords`); :class:`StateStore` is all four, and is what commands hold. The backends are
:class:`reconcile.state.file.FileStateStore` and
:class:`reconcile.state.postgres.PostgresStateStore`; both pass ``tests/test_state_contract.py``.
:class:`GuardedStore` holds the lineage, serial and binding checks they share.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path
from typing import Protocol

from reconcile.errors import StateError
from reconcile.state.audit import AuditLog
from reconcile.state.journal import Journal
from reconcile.state.lock import LockHolder
from reconcile.state.model import STATE_FORMAT_VERSION, State, StateBinding
from reconcile.state.sends import SendLog


class StateReader(Protocol):
    """Reads the state of one environment."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A short, secret-free description for messages (a path or a masked DSN)."""

    @abc.abstractmethod
    def read(self) -> State | None:
        """Return a copy of the stored state, or None when nothing was ever saved."""

    @abc.abstractmethod
    def read_header(self) -> tuple[str, int] | None:
        """Return the stored (lineage, serial), or None when nothing was ever saved."""

    @abc.abstractmethod
    def bind(self, binding: StateBinding) -> None:
        """From now on, :meth:`load` refuses state bound elsewhere and binds unbound state here."""

    @abc.abstractmethod
    def load(self, environment: str) -> State:
        """Return the stored state, or a new empty one for ``environment``.

        After :meth:`bind`, state bound to another organization or endpoint is refused, and state
        not bound yet (new, or written before version 2) comes back bound, for its next write.
        """


class StateWriter(Protocol):
    """Writes the state of one environment, refusing to overwrite what it has not seen."""

    @abc.abstractmethod
    def save(
        self,
        state: State,
        changed: Collection[str] | None = None,
        *,
        changed_accounts: Collection[str] | None = None,
    ) -> State:
        """Persist ``state`` if it differs from what is stored; return what is stored now.

        The serial moves only when content changes; the lineage is never changed by a save; a
        save based on an older serial is refused (another run wrote in between). ``changed``
        names the users that differ and ``changed_accounts`` the accounts (None = unknown);
        treat the argument as spent and go on with the result.
        """

    def will_change(self, state: State) -> None:
        """``state`` was just loaded, and a run is about to change it and save it batch by batch.

        Called before anything in it changes. A backend that writes only what changed may take
        it as the base its saves compare with; by default nothing happens.
        """
        return None

    @abc.abstractmethod
    def replace(self, state: State, *, expected: tuple[str, int] | None) -> None:
        """Store ``state`` exactly (lineage and serial included) if the header is still ``expected``.

        ``expected`` None means nothing may be stored yet. Used by ``state push`` and ``pull``.
        """


class StateLocker(Protocol):
    """The exclusive lock of one environment's state, held for a whole plan or apply."""

    @abc.abstractmethod
    def lock(
        self,
        *,
        timeout: float = 0.0,
        purpose: str = "apply",
        on_wait: Callable[[str], None] | None = None,
    ) -> contextlib.AbstractContextManager[LockHolder]:
        """Hold this state's exclusive lock for the ``with`` block.

        Waits up to ``timeout`` seconds (0 = fail at once, negative = forever), then raises
        :class:`~reconcile.errors.LockError` naming the holder; ``on_wait`` hears once who holds
        it when the wait begins.
        """

    @abc.abstractmethod
    def read_lock(
        self, *, timeout: float = 0.0, on_wait: Callable[[str], None] | None = None
    ) -> contextlib.AbstractContextManager[LockHolder | None]:
        """Hold the lock while a reader (plan) reads, so it never sees a run half-way.

        Yields None when there is nothing a run could be writing (no lock was taken).
        """

    @abc.abstractmethod
    def lock_holder(self) -> LockHolder | None:
        """Return who holds this state's lock, as far as the backend records it."""

    @abc.abstractmethod
    def unlock(self, lock_id: str) -> LockHolder:
        """Remove the holder record ``lock_id`` left behind by a run that is gone.

        Raises :class:`~reconcile.errors.LockError` while the holder still holds the lock, and
        where the backend never leaves a record behind.
        """


class RunRecords(Protocol):
    """What a run keeps with the state: its intent journal, its audit log, its send times, its local files."""

    @abc.abstractmethod
    def journal(self, environment: str) -> Journal:
        """Return the intent journal kept with this state."""

    @abc.abstractmethod
    def audit_log(self, environment: str, *, clock: Callable[[], datetime] | None = None) -> AuditLog:
        """Return the audit log kept with this state."""

    @abc.abstractmethod
    def send_log(self, environment: str) -> SendLog:
        """Return the record of when this state's limited calls were sent (:mod:`reconcile.state.sends`)."""

    @abc.abstractmethod
    def local_dir(self) -> Path:
        """The local folder for files that go with this state (the embedded simulator's data)."""


class StateStore(StateReader, StateWriter, StateLocker, RunRecords, Protocol):
    """Where recorded state lives: everything a command needs of it, whichever the backend."""


def moved_under_write(where: str, now: tuple[str, int] | None, was: tuple[str, int] | None) -> StateError:
    """The refusal of a write whose expected header moved since it was read."""

    def header(value: tuple[str, int] | None) -> str:
        return "no state" if value is None else f"lineage {value[0]} serial {value[1]}"

    return StateError(
        f"refusing to overwrite {where}: it holds {header(now)}, not {header(was)} as when it "
        "was read; another run wrote it"
    )


class GuardedStore(StateReader, StateWriter):
    """The checks both backends share: lineage and serial on save, environment and binding on load.

    A backend supplies :meth:`describe`, :meth:`read`, :meth:`replace` and :meth:`_write`; it may
    answer :meth:`read_header` and :meth:`_differs` more cheaply than by reading everything.
    """

    _expected: StateBinding | None = None

    @abc.abstractmethod
    def _write(
        self, state: State, changed: Collection[str] | None, changed_accounts: Collection[str] | None = None
    ) -> None:
        """Persist ``state`` atomically (all of it, or nothing).

        ``changed`` names the users and ``changed_accounts`` the accounts that differ from what
        is stored (None = unknown, write all); a backend that stores rows may write only those.
        """

    def read_header(self) -> tuple[str, int] | None:
        """Return the stored (lineage, serial), or None when nothing was ever saved."""
        state = self.read()
        return None if state is None else (state.lineage, state.serial)

    def _differs(
        self, state: State, changed: Collection[str] | None, changed_accounts: Collection[str] | None = None
    ) -> bool:
        """True when ``state`` holds content the store does not have yet."""
        current = self.read()
        return current is None or not current.content_equals(state)

    def bind(self, binding: StateBinding) -> None:
        """See :meth:`StateReader.bind`."""
        self._expected = binding

    def load(self, environment: str) -> State:
        """See :meth:`StateReader.load`."""
        state = self.read()
        if state is None:
            state = State.empty(environment)
        elif state.environment != environment:
            raise StateError(
                f"{self.describe()} holds state of environment {state.environment!r}, "
                f"not {environment!r}; pass --state for the right file"
            )
        expected = self._expected
        if expected is None or state.binding == expected:
            return state
        if state.binding is None:
            return state.model_copy(update={"binding": expected})
        raise StateError(
            f"{self.describe()} belongs to {state.binding.describe()}, not {expected.describe()}: "
            "its users are recorded there, and acting on them elsewhere would report or change "
            f"users that are not there. Pass --endpoint {state.binding.endpoint} (and the manifest "
            "of that organization) to use it where it belongs; if the organization really moved, "
            "move the state on purpose with `reconcile state rebind -f MANIFEST --endpoint URL`"
        )

    def save(
        self,
        state: State,
        changed: Collection[str] | None = None,
        *,
        changed_accounts: Collection[str] | None = None,
    ) -> State:
        """See :meth:`StateWriter.save`; the caller's object is never mutated."""
        header = self.read_header()
        if header is not None:
            lineage, serial = header
            if lineage != state.lineage:
                raise StateError(
                    f"refusing to overwrite {self.describe()}: its lineage {lineage} "
                    f"differs from the state being saved ({state.lineage})"
                )
            if serial != state.serial:
                raise StateError(
                    f"refusing to overwrite {self.describe()}: it moved to serial {serial} "
                    f"since it was read at serial {state.serial}; another run wrote it"
                )
            if not self._differs(state, changed, changed_accounts):
                return state.model_copy()
        # A shallow copy: copying the 100k records of a large desk (or even its mappings) per
        # batch would cost more than the save. Records and mappings are shared with the caller's
        # spent object; the store keeps its own serialized copy, so nothing the caller does later
        # reaches stored state.
        new = state.model_copy(update={"serial": state.serial + 1, "format_version": STATE_FORMAT_VERSION})
        self._write(new, changed, changed_accounts)
        return new
