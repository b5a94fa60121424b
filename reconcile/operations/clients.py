"""Open partner-API clients at the edge: credentials and the embedded simulator are chosen here.

:mod:`reconcile.api.connect` knows neither the environment variables nor the simulator; this
module builds the simulator's transport and admin credentials when the endpoint is
``sim:embedded``, and otherwise reads the credentials from :class:`Settings`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from reconcile.api import connect
from reconcile.api.credentials import Credentials
from reconcile.api.endpoints import EMBEDDED_SIM, resolve_endpoint
from reconcile.api.events import OnEvent
from reconcile.api.token_cache import TokenCache
from reconcile.operations.settings import Settings

if TYPE_CHECKING:
    from reconcile.api.client import PartnerClient
    from reconcile.sim.config import SimConfig


def open_client(
    environment: str,
    *,
    endpoint: str | None = None,
    state_dir: str | Path = "state",
    settings: Settings | None = None,
    credentials: Credentials | None = None,
    on_event: OnEvent | None = None,
    cache: TokenCache | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PartnerClient:
    """Return a client for ``environment`` (``endpoint``, else ``settings.endpoint``, overrides the host).

    ``sim`` without an endpoint is the embedded simulator over ``state_dir/sim.sqlite``, logged
    in as its built-in admin. Elsewhere credentials come from ``credentials``, else the file
    ``settings.credentials_file`` names, else the TRADOVATE_* variables of ``settings``; for
    ``sim`` on a loopback server without TRADOVATE_USERNAME, the simulator's built-in admin.
    Tokens are cached in ``cache``, else where ``RECONCILE_CACHE_DIR`` of ``settings`` says.
    ``RECONCILE_TIME_SCALE`` of ``settings`` shortens the client's hour (``sim`` only).
    """
    settings = settings or Settings()
    scale = settings.time_scale_for(environment)
    cache = cache or TokenCache.from_env(settings.environ)
    label = resolve_endpoint(environment, endpoint or settings.endpoint)
    if label == EMBEDDED_SIM:
        return _embedded(
            Path(state_dir), credentials, on_event=on_event, cache=cache, sleep=sleep, time_scale=scale
        )
    if credentials is None:
        credentials = _credentials(environment, settings)
    # Through the module: tests put a hostile transport in front of every client opened here.
    return connect.open_client(
        label, credentials=credentials, on_event=on_event, cache=cache, sleep=sleep, time_scale=scale
    )


def _embedded(
    state_dir: Path,
    credentials: Credentials | None,
    *,
    on_event: OnEvent | None,
    cache: TokenCache,
    sleep: Callable[[float], None],
    time_scale: float,
) -> PartnerClient:
    from reconcile.sim.app import create_app
    from reconcile.sim.transport import SimTransport

    db_path = state_dir / "sim.sqlite"
    db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    app = create_app(db_path=db_path)
    return connect.open_client(
        EMBEDDED_SIM,
        credentials=credentials or _sim_admin(app.config),
        transport=SimTransport(app),
        # Tokens of one simulator database mean nothing to another.
        token_scope=f"{EMBEDDED_SIM}:{db_path.resolve()}",
        on_event=on_event,
        cache=cache,
        sleep=sleep,
        closers=[app.store.close],
        time_scale=time_scale,
    )


def _credentials(environment: str, settings: Settings) -> Credentials:
    if settings.credentials_file:
        return Credentials.from_file(settings.credentials_file)
    if environment == "sim" and not settings.environ.get("TRADOVATE_USERNAME"):
        from reconcile.sim.config import SimConfig

        return _sim_admin(SimConfig())
    return Credentials.from_env(settings.environ)


def _sim_admin(config: SimConfig) -> Credentials:
    """The simulator's built-in admin: public defaults, not a secret anyone must supply."""
    return Credentials(username=config.admin_name, password=config.admin_password, app_id="reconcile")
