"""Configuration from the process environment, read once at the edge and passed in as values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from reconcile.api.endpoints import COMPANION_ENV, ENDPOINT_ENV
from reconcile.errors import ReconcileError

CREDENTIALS_FILE_ENV = "TRADOVATE_CREDENTIALS_FILE"
"""Names a credentials file (YAML/JSON, mode 0600) to use instead of the TRADOVATE_* variables."""
TIME_SCALE_ENV = "RECONCILE_TIME_SCALE"
"""Makes the client's hour this many times shorter, as ``reconcile sim serve --time-scale`` does."""
SCALED_ENVIRONMENTS = frozenset({"sim"})
"""The only environment a time scale may be used with: the real API's hour is an hour."""


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
    time_scale: float = 1.0
    """``RECONCILE_TIME_SCALE``: rate-limit windows and token lifetimes this many times shorter."""
    environ: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Read ``environ`` (normally ``os.environ``) once; later changes to it are not seen."""
        frozen = MappingProxyType(dict(environ))
        return cls(
            endpoint=frozen.get(ENDPOINT_ENV) or None,
            companion_endpoint=frozen.get(COMPANION_ENV) or None,
            credentials_file=frozen.get(CREDENTIALS_FILE_ENV) or None,
            time_scale=_time_scale(frozen.get(TIME_SCALE_ENV) or None),
            environ=frozen,
        )

    def time_scale_for(self, environment: str) -> float:
        """The time scale for a client of ``environment``; refuse one for a real environment."""
        if self.time_scale != 1.0 and environment not in SCALED_ENVIRONMENTS:
            raise ReconcileError(
                f"{TIME_SCALE_ENV}={self.time_scale:g} is refused for environment {environment}: the "
                "partner API's limits are counted in real hours, so a shorter hour would exceed them. "
                "It is for a simulator started with `reconcile sim serve --time-scale`; "
                f"unset {TIME_SCALE_ENV}"
            )
        return self.time_scale


def _time_scale(value: str | None) -> float:
    """The number ``RECONCILE_TIME_SCALE`` holds (1 when unset), or an error saying what it must be."""
    if value is None:
        return 1.0
    try:
        scale = float(value)
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale) or scale <= 0:
        raise ReconcileError(
            f"{TIME_SCALE_ENV}={value!r} is not a positive number; give how many times faster than "
            "real time the simulator runs (its `--time-scale`), or unset it"
        )
    return scale
