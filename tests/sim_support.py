"""Request bodies shared by the simulator tests (holds no tests)."""

from __future__ import annotations

from typing import Any


def trader(n: int, **overrides: Any) -> dict[str, Any]:
    """Return one entry of /user/createevaluationusers for trader ``n``."""
    user = {
        "name": f"trader{n:03d}",
        "email": f"trader{n:03d}@example.com",
        "password": "Passw0rd!x",
        "firstName": "Test",
        "lastName": f"User{n}",
    }
    return user | overrides


USER = trader(1, firstName="A", lastName="B")
