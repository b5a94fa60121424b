"""Configuration from the process environment, read once at the edge and passed in as values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from reconcile.api.endpoints import COMPANION_ENV, ENDPOINT_ENV

CREDENTIALS_FILE_ENV = "TRADOVATE_CREDENTIALS_FILE"
"""Names a credentials file (YAML/JSON, mode 0600) to use instead of the TRADOVATE_* variables."""


@dataclass(frozen=True)
class Settings:
    """What the environment says, as the CLI found it; ``Settings()`` is an empty environment.

    ``environ`` is kept whole for what names its variable at run time: the TRADOVATE_*
    credentials, ``RECONCILE_BACKEND`` and a manifest's ``dsnEnv``, ``{env: VAR}`` passwords.
    """

    endpoint: str | None = None
    """``RECONCILE_ENDPOINT``: the default ``--endpoint``."""
    companion_endpoint: str | None = None
    """``RECONCILE_COMPANION_ENDPOINT``: the default ``--companion-endpoint``."""
    credentials_file: str | None = None
    """``TRADOVATE_CREDENTIALS_FILE``."""
    environ: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Read ``environ`` (normally ``os.environ``) once; later changes to it are not seen."""
        frozen = MappingProxyType(dict(environ))
        return cls(
            endpoint=frozen.get(ENDPOINT_ENV) or None,
            companion_endpoint=frozen.get(COMPANION_ENV) or None,
            credentials_file=frozen.get(CREDENTIALS_FILE_ENV) or None,
            environ=frozen,
        )
