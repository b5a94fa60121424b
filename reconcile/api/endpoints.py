"""Where each environment's partner API lives (DESIGN §7), without touching the network."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from reconcile.errors import ReconcileError

HOSTS = {
    "live": "https://live.tradovateapi.com/v1",
    "demo": "https://demo.tradovateapi.com/v1",
    "staging": "https://live-api.staging.ninjatrader.dev/v1",
}
"""Base URLs per environment."""

STAGING_DEMO = "https://demo-api.staging.ninjatrader.dev/v1"
"""The staging demo host: only ever a companion (see :func:`resolve_companion`)."""

COMPANIONS = {
    HOSTS["live"]: HOSTS["demo"],
    HOSTS["demo"]: HOSTS["live"],
    HOSTS["staging"]: STAGING_DEMO,
    STAGING_DEMO: HOSTS["staging"],
}
"""Host → the other host of its pair: canceleverything must reach both for a full revocation.

A firm's evaluation users exist on the live and the demo host alike, so ``demo``'s companion is
live just as ``live``'s is demo (DESIGN §7).
"""

ENDPOINT_ENV = "RECONCILE_ENDPOINT"
"""The variable the edge reads as the default ``--endpoint`` (see :mod:`reconcile.operations.settings`)."""

COMPANION_ENV = "RECONCILE_COMPANION_ENDPOINT"
"""The variable the edge reads as the default ``--companion-endpoint``."""

EMBEDDED_SIM = "sim:embedded"
"""The label of the in-process simulator (environment ``sim`` without an endpoint override)."""


def is_loopback(host: str | None) -> bool:
    """True for localhost and loopback addresses (where plain http is allowed)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_endpoint(environment: str, override: str | None = None) -> str:
    """Return the endpoint label plans are bound to: a base URL, or ``sim:embedded``.

    ``override`` (``--endpoint``, else ``RECONCILE_ENDPOINT``, chosen by the caller) wins over the
    environment's host. Plain http is refused except on loopback.
    """
    url = override or None
    if url is None:
        if environment == "sim":
            return EMBEDDED_SIM
        return HOSTS[environment]
    return _checked_url(url)


def resolve_companion(endpoint: str, override: str | None = None) -> str | None:
    """Return the host that also receives every cancel-everything, or None when there is none.

    ``endpoint`` is the label :func:`resolve_endpoint` returned. ``override``
    (``--companion-endpoint``, else ``RECONCILE_COMPANION_ENDPOINT``, chosen by the caller) wins
    over the other host of a known pair (:data:`COMPANIONS`). The embedded simulator stands for
    both hosts, and an overridden endpoint has no companion unless one is given.
    """
    url = override or None
    if url is None:
        return COMPANIONS.get(endpoint)
    if endpoint == EMBEDDED_SIM:
        raise ReconcileError(
            f"--companion-endpoint {url!r} needs --endpoint too: the embedded simulator stands for "
            f"both hosts (unset {COMPANION_ENV}, or pass --endpoint)"
        )
    url = _checked_url(url)
    if url == endpoint:
        raise ReconcileError(
            f"--companion-endpoint {url!r} is the endpoint itself; name the other host (live ↔ demo)"
        )
    return url


def _checked_url(url: str) -> str:
    url = url.rstrip("/")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        # Checked first, and the URL is not echoed: it holds a secret that would otherwise reach
        # the plan file, the state and this very message.
        raise ReconcileError(
            "the endpoint URL holds credentials (user:password@host); remove them: partner-API "
            "credentials come from the TRADOVATE_* variables or a credentials file (mode 0600)"
        )
    if "?" in url or "#" in url:
        # Not echoed either: a token in the query string (or a fragment) is as secret as a password.
        raise ReconcileError(
            "the endpoint URL has a query string or fragment (after '?' or '#'); remove it: an "
            "endpoint is a base URL such as https://demo.tradovateapi.com/v1, and credentials come "
            "from the TRADOVATE_* variables or a credentials file (mode 0600)"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ReconcileError(
            f"endpoint {url!r} is not an http(s) URL; expected for example http://127.0.0.1:8765/v1"
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ReconcileError(
            f"endpoint {url!r} uses plain http on a non-loopback host; credentials would travel "
            "unencrypted. Use https (plain http is allowed only on 127.0.0.1/localhost/::1)"
        )
    return url
