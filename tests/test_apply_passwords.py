"""Passwords are resolved at apply time from the manifest, checked, and never kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconcile.manifest.models import Manifest
from reconcile.manifest.passwords import PasswordError, generate_password, resolve_passwords
from reconcile.planning.plan import CreateUser


def manifest(password: Any) -> Manifest:
    return Manifest.model_validate(
        {
            "apiVersion": "reconcile/v1",
            "environment": "sim",
            "partner": {"dataAccountId": 1},
            "users": [
                {
                    "name": "ann",
                    "email": "ann@example.com",
                    "password": password,
                    "firstName": "A",
                    "lastName": "B",
                }
            ],
        }
    )


CREATE = CreateUser(user="ann", email="ann@example.com", firstName="A", lastName="B", password="literal")


def test_file_password_is_read_relative_to_the_declaring_manifest(tmp_path: Path) -> None:
    (tmp_path / "desk").mkdir()
    (tmp_path / "desk" / "ann.pw").write_text("From-The-File-1\nignored second line\n")
    resolved = resolve_passwords(
        [CREATE.user], manifest({"file": "ann.pw"}), base_dir=lambda name: tmp_path / "desk"
    )
    assert resolved.values == {"ann": "From-The-File-1"}
    assert "From-The-File-1" not in repr(resolved)


def test_unreadable_file_names_user_and_path(tmp_path: Path) -> None:
    with pytest.raises(PasswordError, match=r"user ann: cannot read password file .*missing\.pw"):
        resolve_passwords([CREATE.user], manifest({"file": "missing.pw"}), base_dir=tmp_path)


def test_a_too_short_password_from_the_environment_is_refused() -> None:
    with pytest.raises(PasswordError, match=r"user ann: the password from \$ANN_PW has 3 characters"):
        resolve_passwords([CREATE.user], manifest({"env": "ANN_PW"}), environ={"ANN_PW": "abc"})


def test_generated_passwords_are_strong_and_the_file_is_never_overwritten(tmp_path: Path) -> None:
    for _ in range(50):
        pw = generate_password()
        assert len(pw) == 24 and any(c.isupper() for c in pw) and any(c.isdigit() for c in pw)
    assert len({generate_password() for _ in range(100)}) == 100
    out = tmp_path / "pw.txt"
    out.write_text("earlier run\n")
    with pytest.raises(PasswordError, match="not written by reconcile apply; refusing to overwrite"):
        resolve_passwords([CREATE.user], manifest({"generate": True}), generated_file=out)
    assert out.read_text() == "earlier run\n"
