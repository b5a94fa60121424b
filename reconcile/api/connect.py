"""Open a PartnerClient for an environment: the embedded simulator, a loopback server or a real host."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from reconcile.api.auth import TokenAuth
from reconcile.api.client import PartnerClient
from reconcile.api.credentials import Credentials
from reconcile.api.endpoints import EMBEDDED_SIM, is_loopback, resolve_endpoint
from reconcile.api.events import OnEvent
from reconcile.api.pacing import Pacer
from reconcile.api.token_cache import TokenCache

if TYPE_CHECKING:
    from reconcile.sim.config import SimConfig

CREDENTIALS_FILE_VAR = "TRADOVATE_CREDENTIALS_FILE"
"""Names a credentials file (YAML/JSON, mode 0600) to use instead of the TRADOVATE_* variables."""

EMBEDDED_BASE_URL = "http://sim.embedded/v1"
"""The base URL requests carry inside the process; nothing listens there."""


def open_client(
    environment: str,
    *,
    endpoint: str | None = None,
    state_dir: str | Path = "state",
    credentials: Credentials | str | Path | None = None,
    transport: httpx.BaseTransport | None = None,
    on_event: OnEvent | None = None,
    cache: TokenCache | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PartnerClient:
    """Return a client for ``environment`` (``--endpoint``/``RECONCILE_ENDPOINT`` override the host).

    ``sim`` without an endpoint is the embedded simulator over ``state_dir/sim.sqlite``, logged
    in as its built-in admin. Elsewhere credentials come from ``credentials`` (or a credentials
    file path), else from the file ``TRADOVATE_CREDENTIALS_FILE`` names, else from the
    TRADOVATE_* variables; for ``sim`` on a loopback server without
    TRADOVATE_USERNAME, the simulator's built-in admin. Real (non-loopback) hosts are paced to
    the published hourly limits.
    """
    label = resolve_endpoint(environment, endpoint)
    closers: list[Callable[[], None]] = []
    if label == EMBEDDED_SIM:
        from reconcile.sim.app import create_app
        from reconcile.sim.transport import SimTransport

        db_path = Path(state_dir) / "sim.sqlite"
        db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        app = create_app(db_path=db_path)
        closers.append(app.store.close)
        transport = transport or SimTransport(app)
        base_url = EMBEDDED_BASE_URL
        # Tokens of one simulator database mean nothing to another.
        cache_key = f"{EMBEDDED_SIM}:{db_path.resolve()}"
        creds = _resolve(credentials, env_file=False) or _sim_admin(app.config)
        pacer = None
    else:
        base_url = cache_key = label
        given = _resolve(credentials)
        if given is not None:
            creds = given
        elif environment == "sim" and not os.environ.get("TRADOVATE_USERNAME"):
            from reconcile.sim.config import SimConfig as DefaultSim

            creds = _sim_admin(DefaultSim())
        else:
            creds = Credentials.from_env(os.environ)
        pacer = None if is_loopback(urlsplit(label).hostname) else Pacer(on_event=on_event, sleep=sleep)
    auth = TokenAuth(creds, endpoint=cache_key, cache=cache or TokenCache.from_env(os.environ))
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


def _resolve(credentials: Credentials | str | Path | None, *, env_file: bool = True) -> Credentials | None:
    if credentials is None:
        if not env_file:
            return None
        path = os.environ.get(CREDENTIALS_FILE_VAR)
        return Credentials.from_file(path) if path else None
    if isinstance(credentials, Credentials):
        return credentials
    return Credentials.from_file(credentials)


def _sim_admin(config: SimConfig) -> Credentials:
    """The simulator's built-in admin: public defaults, not a secret anyone must supply."""
    return Credentials(username=config.admin_name, password=config.admin_password, app_id="reconcile")
