"""Access tokens kept between runs, so a run logs in only when no usable token is cached.

The real API allows 5 logins an hour and 2 sessions per user (a third login closes the oldest).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from reconcile.api.credentials import Credentials
from reconcile.fsutil import atomic_write_text

UNSENDABLE = re.compile(r"[\x00-\x20\x7f]")
"""What no token in an ``Authorization`` header can hold: whitespace, line breaks, controls."""

log = logging.getLogger(__name__)

CACHE_DIR_VAR = "RECONCILE_CACHE_DIR"
"""Names the folder the token cache lives in, instead of the user cache directory."""


@dataclass(frozen=True)
class CachedToken:
    """An access token and when it expires (epoch seconds)."""

    token: str = field(repr=False)
    expires: float


_DIGEST_ROUNDS = 20_000


@functools.lru_cache(maxsize=16)
def credentials_digest(endpoint: str, credentials: Credentials) -> str:
    """Fingerprint everything a login sends (endpoint, name, password, appId, cid, sec, deviceId).

    PBKDF2 rather than a bare hash: the digest sits in the token cache, and must not make a cheap
    oracle for guessing the password. Memoised: one derivation per process and credentials.
    """
    body = credentials.login_body()
    fields = [endpoint, *(str(body.get(k, "")) for k in ("name", "appId", "cid", "deviceId"))]
    secrets = [str(body.get(k, "")) for k in ("password", "sec")]
    derived = hashlib.pbkdf2_hmac(
        "sha256", json.dumps(secrets).encode(), json.dumps(fields).encode(), _DIGEST_ROUNDS
    )
    return derived.hex()


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """Return the folder ``RECONCILE_CACHE_DIR`` names in ``environ``, else the user cache folder."""
    override = environ.get(CACHE_DIR_VAR)
    return Path(override) if override else Path(platformdirs.user_cache_dir("reconcile"))


class TokenCache:
    """Access tokens between runs: one file per endpoint and user, mode 0600 in a 0700 folder.

    Files are named by a hash of endpoint and user, so the folder says nothing about either.
    A token is handed out only to the credentials that obtained it: each file records a digest of
    all of them (:func:`credentials_digest`), so a wrong password configured while a token is
    cached is not hidden behind it. Neither the password nor the API secret is stored.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir({}) / "tokens"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TokenCache:
        """Return the cache in the folder ``RECONCILE_CACHE_DIR`` names in ``environ``, else the default."""
        return cls(default_cache_dir(environ) / "tokens")

    def path(self, endpoint: str, credentials: Credentials) -> Path:
        digest = hashlib.sha256(f"{endpoint}\0{credentials.username.lower()}".encode()).hexdigest()[:32]
        return self.directory / f"{digest}.json"

    def load(self, endpoint: str, credentials: Credentials) -> CachedToken | None:
        """Return the token these credentials obtained, or None (missing, unreadable, not private)."""
        file = self.path(endpoint, credentials)
        try:
            if stat.S_IMODE(file.stat().st_mode) & 0o077:
                log.warning("ignoring token cache %s: readable by other users", file)
                return None
            data = json.loads(file.read_text(encoding="utf-8"))
            made_by = str(data.get("credentials", ""))
            if not hmac.compare_digest(made_by, credentials_digest(endpoint, credentials)):
                return None  # obtained with other credentials: log in with the ones configured now
            token = str(data["token"])
            if not token or UNSENDABLE.search(token):
                # Cached by a version that kept such a login answer: every call would fail with it.
                log.warning("ignoring token cache %s: its token cannot be sent in a header", file)
                return None
            return CachedToken(token=token, expires=float(data["expires"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring unreadable token cache %s", file)
            return None

    def save(self, endpoint: str, credentials: Credentials, token: CachedToken) -> None:
        """Store ``token`` (atomically); a cache that cannot be written only costs a login later."""
        try:
            # The cache's own folder too: whoever may write there could swap the tokens folder.
            self.directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            atomic_write_text(
                self.path(endpoint, credentials),
                json.dumps(
                    {
                        "token": token.token,
                        "expires": token.expires,
                        "credentials": credentials_digest(endpoint, credentials),
                    }
                ),
                mode=0o600,
            )
        except OSError as exc:
            log.warning("cannot write the token cache in %s: %s", self.directory, exc.strerror)

    def forget(self, endpoint: str, credentials: Credentials) -> None:
        """Drop the cached token (it was refused)."""
        try:
            self.path(endpoint, credentials).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove a stale token from %s: %s", self.directory, exc.strerror)
