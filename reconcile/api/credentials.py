"""Partner-API credentials: from the TRADOVATE_* variables or a private credentials file."""

from __future__ import annotations

import stat
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconcile import __version__
from reconcile.errors import AuthError, plural

ENV_VARS: Mapping[str, str] = {
    "username": "TRADOVATE_USERNAME",
    "password": "TRADOVATE_PASSWORD",
    "app_id": "TRADOVATE_APP_ID",
    "app_version": "TRADOVATE_APP_VERSION",
    "cid": "TRADOVATE_CID",
    "sec": "TRADOVATE_SEC",
    "device_id": "TRADOVATE_DEVICE_ID",
}
"""Credential field → environment variable."""

_FILE_KEYS: Mapping[str, str] = {
    "username": "username",
    "name": "username",
    "password": "password",
    "appId": "app_id",
    "appVersion": "app_version",
    "cid": "cid",
    "sec": "sec",
    "deviceId": "device_id",
    **{var: name for name, var in ENV_VARS.items()},
}
"""Keys a credentials file may use (the API's names or the environment variables' names)."""

_REQUIRED = ("username", "password", "app_id", "cid", "sec")


@dataclass(frozen=True)
class Credentials:
    """What POST /auth/accesstokenrequest needs; ``repr`` never shows the password or the secret."""

    username: str
    password: str = field(repr=False)
    app_id: str = "reconcile"
    app_version: str = __version__
    cid: str | None = None
    sec: str | None = field(default=None, repr=False)
    device_id: str | None = None

    def login_body(self) -> dict[str, Any]:
        """Return the accesstokenrequest body (contract names; unset fields left out)."""
        body = {
            "name": self.username,
            "password": self.password,
            "appId": self.app_id,
            "appVersion": self.app_version,
            "cid": self.cid,
            "sec": self.sec,
            # A stable device id: the API tracks devices, and a new one per run looks like a new device.
            "deviceId": self.device_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"reconcile:{self.username}")),
        }
        return {k: v for k, v in body.items() if v is not None}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Credentials:
        """Read the TRADOVATE_* variables from ``environ``; the error lists every missing one."""
        values = {name: environ[var] for name, var in ENV_VARS.items() if environ.get(var)}
        missing = [ENV_VARS[name] for name in _REQUIRED if name not in values]
        if missing:
            raise AuthError(
                f"partner-API credentials are missing: set {', '.join(missing)} in the environment "
                "(or use a credentials file, mode 0600)",
                call="login",
            )
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> Credentials:
        """Read a YAML or JSON credentials file; refused unless only its owner can read it."""
        file = Path(path)
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                raise AuthError(
                    f"{file}: credentials file is accessible by other users (mode {mode:04o}); "
                    f"run `chmod 600 {file}` and try again",
                    call="login",
                )
            document = yaml.safe_load(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise AuthError(
                f"{file}: cannot read the credentials file: {exc.strerror}", call="login"
            ) from None
        except yaml.YAMLError:
            # The parser's message would quote the offending line, which may hold a secret.
            raise AuthError(f"{file}: the credentials file is not valid YAML or JSON", call="login") from None
        if not isinstance(document, dict):
            raise AuthError(f"{file}: expected a mapping of credential names to values", call="login")
        unknown = sorted(str(k) for k in document if k not in _FILE_KEYS)
        if unknown:
            raise AuthError(
                f"{file}: unknown {plural(len(unknown), 'key')} {', '.join(unknown)}; expected some of "
                "username, password, appId, appVersion, cid, sec, deviceId",
                call="login",
            )
        values = {_FILE_KEYS[k]: str(v) for k, v in document.items() if v is not None}
        missing = [name for name in _REQUIRED if name not in values]
        if missing:
            names = {"username": "username", "password": "password", "app_id": "appId", "cid": "cid"}
            raise AuthError(f"{file}: missing {', '.join(names.get(m, m) for m in missing)}", call="login")
        return cls(**values)
