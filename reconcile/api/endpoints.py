"""Where each environment's partner API lives (DESIGN §7), without touching the network."""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from reconcile.errors import ReconcileError

HOSTS = {
    "live": "https://live.tradovateapi.com/v1",
    "demo": "https://demo.tradovateapi.com/v1",
    "staging": "https://live-api.staging.ninjatrader.dev/v1",
}
"""Base URLs per environment. ``staging-demo`` is the staging demo host (full revocations need both)."""

STAGING_DEMO = "https://demo-api.staging.ninjatrader.dev/v1"

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

    ``override`` (``--endpoint``) wins, then ``RECONCILE_ENDPOINT``, then the environment's host.
    Plain http is refused except on loopback.
    """
    url = override or os.environ.get("RECONCILE_ENDPOINT") or None
    if url is None:
        if environment == "sim":
            return EMBEDDED_SIM
        return HOSTS[environment]
    url = url.rstrip("/")
    parts = urlsplit(url)
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
