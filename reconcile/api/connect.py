"""Open a PartnerClient for an endpoint label: a real host, a loopback server or an in-process app.

The caller resolves the label (:func:`reconcile.api.endpoints.resolve_endpoint`) and the
credentials; for the embedded simulator it also hands in the transport that reaches it (see
:mod:`reconcile.operations.clients`). This module reads no environment and knows no simulator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import httpx

from reconcile.api.auth import TokenAuth
from reconcile.api.client import PartnerClient
from reconcile.api.credentials import Credentials
from reconcile.api.endpoints import EMBEDDED_SIM
from reconcile.api.events import OnEvent
from reconcile.api.pacing import Pacer
from reconcile.api.token_cache import TokenCache

EMBEDDED_BASE_URL = "http://sim.embedded/v1"
"""The base URL requests carry inside the process; nothing listens there."""


def open_client(
    label: str,
    *,
    credentials: Credentials,
    transport: httpx.BaseTransport | None = None,
    token_scope: str | None = None,
    on_event: OnEvent | None = None,
    cache: TokenCache | None = None,
    sleep: Callable[[float], None] = time.sleep,
    closers: Sequence[Callable[[], None]] = (),
    time_scale: float = 1.0,
) -> PartnerClient:
    """Return a client for the endpoint ``label``, logged in with ``credentials``.

    ``sim:embedded`` needs ``transport`` (requests never leave the process). Every endpoint is
    paced to the published hourly limits, a simulator too, in hours ``time_scale`` times shorter
    (token lifetimes as well). Cached tokens are kept in ``cache`` (default: the user cache
    folder) per ``token_scope`` (default: the label). ``closers`` run when the client closes.
    """
    if label == EMBEDDED_SIM:
        if transport is None:
            raise ValueError("the embedded simulator is reached only through the transport it is given")
        base_url = EMBEDDED_BASE_URL
    else:
        base_url = label
    pacer = Pacer(on_event=on_event, sleep=sleep, time_scale=time_scale)
    auth = TokenAuth(
        credentials, endpoint=token_scope or label, cache=cache or TokenCache(), time_scale=time_scale
    )
    client = PartnerClient(
        base_url,
        transport=transport,
        auth=auth,
        sleep=sleep,
        on_event=on_event,
        pacer=pacer,
        endpoint_label=label,
    )
    client.closers.extend(closers)
    return client
