"""Faults on demand, armed per path through ``/_sim/faults`` so client tests can meet bad days.

=================== ==========================================================================
kind                what the client sees
=================== ==========================================================================
``http500``         HTTP 500; the request is not applied
``http429``         HTTP 429 with ``Retry-After: seconds``; the request is not applied
``slow``            the answer comes after ``seconds`` (a timeout if the client waits less);
                    the request is applied
``malformed``       HTTP 200 with a truncated JSON body; the request is applied
``drop_after_apply`` the request is applied, then the connection closes without an answer
``penalty``         a penalty ticket (``p-time`` = ``seconds``); not applied until resent with it
``captcha``         a penalty ticket with ``p-captcha: true``; a person must act
=================== ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

FaultKind = Literal["http500", "http429", "slow", "malformed", "drop_after_apply", "penalty", "captcha"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

FAULT_HEADER = "X-Sim-Fault"
"""Response header naming the injected fault, so contract checks skip deliberate garbage."""

CLIENT_GONE_KEY = "reconcile.sim.client_gone"
"""WSGI environ key: a callable saying whether the client hung up (the real server sets it)."""

READ_TIMEOUT_KEY = "reconcile.sim.read_timeout"
"""WSGI environ key: the client's read timeout, passed in by :class:`reconcile.sim.transport.SimTransport`."""


@dataclass(frozen=True)
class Fault:
    """One armed fault, taken by a request to its path."""

    kind: str
    path: str
    seconds: float


class DropConnection(Exception):
    """Raised out of the in-process app: the request was applied and no answer must be given."""


class SimulatedTimeout(Exception):
    """Raised out of the in-process app: the answer is slower than the client's read timeout."""

    def __init__(self, waited: float) -> None:
        self.waited = waited
        super().__init__(f"no answer within {waited:g} s")
