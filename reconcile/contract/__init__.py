"""The project's copy of the partner-API contract and a validator for requests and responses.

OpenAPI 3.1 schemas are JSON Schema 2020-12, so :mod:`jsonschema` validates them directly; the
copy is registered as one :mod:`referencing` resource so ``#/components/schemas/...`` refs resolve.
Paths match case-insensitively, with or without the ``/v1`` prefix and a query string, because
the partner docs spell ``/contactinfo`` and ``/contactInfo`` alike.

Two answers are outside the per-path schemas yet part of the API (DESIGN §7): penalty tickets
(HTTP 200 ``{"p-ticket", "p-time", "p-captcha"}``) are accepted on every path, and error
statuses the contract does not document (401, 404, 429, 500, ...) are accepted with any body.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "PENALTY_TICKET_SCHEMA",
    "ContractViolation",
    "contract",
    "is_penalty_ticket",
    "operation_path",
    "validate_request",
    "validate_response",
]

_URI = "urn:reconcile:partner-api"

PENALTY_TICKET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "p-ticket": {"type": "string", "minLength": 1},
        "p-time": {"type": "number", "minimum": 0},
        "p-captcha": {"type": "boolean"},
    },
    "required": ["p-ticket", "p-time"],
}
"""A penalty ticket (DESIGN §7): not in the published document, but any path may answer one."""


class ContractViolation(Exception):
    """A request or response does not match the partner-API contract."""


@cache
def contract() -> dict[str, Any]:
    """Return the project's copy of the contract (parsed once)."""
    text = resources.files(__package__).joinpath("partner-api.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


@cache
def _paths_by_lower_name() -> dict[str, str]:
    return {path.lower(): path for path in contract()["paths"]}


def operation_path(path: str) -> str:
    """Return the contract's spelling of ``path`` (any case, optional ``/v1`` and query)."""
    bare = path.split("?", 1)[0].rstrip("/")
    if bare.lower().startswith("/v1/"):
        bare = bare[3:]
    try:
        return _paths_by_lower_name()[bare.lower()]
    except KeyError:
        raise ContractViolation(f"{path}: not a path of the partner-API contract copy") from None


@cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(contract(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(_URI, resource)
    return registry


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@cache
def _validator(pointer: str | None) -> Draft202012Validator:
    schema: dict[str, Any] = {"$ref": f"{_URI}#/{pointer}"} if pointer else PENALTY_TICKET_SCHEMA
    return Draft202012Validator(schema, registry=_registry())


def _check(validator: Draft202012Validator, body: Any, where: str) -> None:
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [
            f"  at {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors[:10]
        ]
        raise ContractViolation(f"{where} does not match the contract:\n" + "\n".join(lines))


def _operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    name = operation_path(path)
    operations: dict[str, Any] = contract()["paths"][name]
    operation = operations.get(method.lower())
    if operation is None:
        raise ContractViolation(f"{method.upper()} {name}: the contract has no such operation")
    return name, operation


def is_penalty_ticket(body: Any) -> bool:
    """True when ``body`` is a penalty ticket rather than the path's own answer."""
    return isinstance(body, dict) and "p-ticket" in body


def validate_response(method: str, path: str, status: int, body: Any) -> None:
    """Raise :class:`ContractViolation` unless ``body`` is a valid ``status`` answer of the operation."""
    name, operation = _operation(method, path)
    where = f"{method.upper()} {name} -> {status}"
    responses: dict[str, Any] = operation.get("responses", {})
    documented = responses.get(str(status))
    if documented is None:
        if status >= 400:
            return
        raise ContractViolation(f"{where}: status {status} is not documented for this operation")
    if status == 200 and is_penalty_ticket(body):
        _check(_validator(None), body, f"{where} (penalty ticket)")
        return
    if "application/json" not in documented.get("content", {}):
        return
    pointer = _pointer("paths", name, method.lower(), "responses", str(status), "content", "application/json")
    _check(_validator(pointer + "/schema"), body, where)


def validate_request(method: str, path: str, body: Any) -> None:
    """Raise :class:`ContractViolation` unless ``body`` is a valid request body of the operation."""
    name, operation = _operation(method, path)
    where = f"{method.upper()} {name} request"
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        if body is not None:
            raise ContractViolation(f"{where}: the operation takes no JSON body")
        return
    pointer = _pointer("paths", name, method.lower(), "requestBody", "content", "application/json")
    _check(_validator(pointer + "/schema"), body, where)
