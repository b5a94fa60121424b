"""The project's contract copy matches the published document, and the validator catches drift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconcile.contract import ContractViolation, validate_request, validate_response
from reconcile.contract.extract import COPY_PATH, extract, render

PUBLISHED = Path(__file__).resolve().parents[1].parent / "shared/contract/tradovate-openapi-2026-08-21.json"


@pytest.mark.skipif(not PUBLISHED.exists(), reason="../shared/contract is not present in this checkout")
def test_copy_is_regenerated_from_the_published_contract() -> None:
    published = json.loads(PUBLISHED.read_text(encoding="utf-8"))
    assert COPY_PATH.read_text(encoding="utf-8") == render(extract(published)), (
        "reconcile/contract/partner-api.json is stale: run "
        "python -m reconcile.contract.extract ../shared/contract/tradovate-openapi-2026-08-21.json"
    )


def test_copy_resolves_every_reference() -> None:
    copy = json.loads(COPY_PATH.read_text(encoding="utf-8"))
    text = json.dumps(copy)
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in copy["components"]["schemas"], name
    assert "description" not in {k for schema in copy["components"]["schemas"].values() for k in schema}


def test_validator_accepts_documented_answers_in_any_path_spelling() -> None:
    user = {
        "name": "t1",
        "timestamp": "2027-01-01T00:00:00.000Z",
        "email": "a@b.c",
        "status": "Active",
        "professional": False,
    }
    validate_response("GET", "/v1/USER/list?x=1", 200, [user])
    validate_response("GET", "/contactinfo/deps", 200, [])
    validate_response("POST", "/user/createevaluationusers", 200, {"p-ticket": "t", "p-time": 2})
    validate_response("POST", "/user/createevaluationusers", 429, {"errorText": "slow down"})


@pytest.mark.parametrize(
    ("method", "path", "status", "body", "expected"),
    [
        ("GET", "/user/list", 200, [{"name": "t1"}], "'timestamp' is a required property"),
        (
            "GET",
            "/user/item",
            200,
            {"name": "t", "timestamp": "x", "email": "e", "status": "Gone", "professional": False},
            "'Gone' is not one of",
        ),
        ("POST", "/user/createevaluationusers", 200, {"errorText": ""}, "'results' is a required property"),
        ("POST", "/user/createevaluationusers", 201, {"results": []}, "status 201 is not documented"),
        ("GET", "/user/createevaluationusers", 200, {}, "no such operation"),
        ("GET", "/user/nosuchpath", 200, {}, "not a path of the partner-API contract"),
    ],
)
def test_validator_rejects_what_the_contract_does_not_allow(
    method: str, path: str, status: int, body: object, expected: str
) -> None:
    with pytest.raises(ContractViolation, match=expected):
        validate_response(method, path, status, body)


def test_request_validation() -> None:
    validate_request("POST", "/adminAlertSignal/completealertsignal", {"adminAlertSignalId": 1})
    with pytest.raises(ContractViolation, match="'adminAlertSignalId' is a required property"):
        validate_request("POST", "/adminAlertSignal/completealertsignal", {"alertId": 1, "userId": 2})
