"""Validate: check manifests (and the password files they name); change nothing, call no API."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconcile.errors import ManifestError, Problem
from reconcile.manifest.loader import LoadedManifest, load_manifest
from reconcile.manifest.passwords import declaring_folder, password_file_problems, unset_password_variables
from reconcile.operations.opening import utc_today


@dataclass(frozen=True)
class Validated:
    """A manifest that passed, with its warnings (problems that do not stop a plan)."""

    loaded: LoadedManifest
    warnings: tuple[Problem, ...]

    @property
    def statuses(self) -> Counter[str]:
        """Users per status (active, cancelled)."""
        return Counter(user.status for user in self.loaded.manifest.users)


def validate(
    paths: Sequence[Path], *, strict: bool = False, environ: Mapping[str, str] | None = None
) -> Validated:
    """Load ``paths`` and check every rule, the password files and the password variables.

    Raises :class:`ManifestError` listing every problem (with ``strict``, the warnings too).
    ``environ`` is where ``{env: VAR}`` passwords are looked for (None: nowhere).
    """
    loaded = load_manifest(paths, today=utc_today())
    _check_password_files(loaded)
    env: Mapping[str, str] = {} if environ is None else environ
    unset = unset_password_variables(loaded.manifest, loaded.locations, environ=env)
    warnings = (*loaded.warnings, *unset)
    if strict and warnings:
        raise ManifestError(list(warnings))
    return Validated(loaded, warnings)


def _check_password_files(loaded: LoadedManifest) -> None:
    """Refuse ``{file: …}`` password sources apply could not read (missing, not regular, too big)."""
    found = password_file_problems(loaded.manifest, declaring_folder(loaded.locations), missing_ok=False)
    if found:
        users = loaded.manifest.users
        raise ManifestError(
            [Problem(loaded.locations.get(users[i].name), "", message) for i, message in found]
        )
