"""Wire models: tolerant reading, strict writing, both createevaluationusers shapes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reconcile.api.models import (
    AdminAlertSignal,
    CreateEvaluationUsersResponse,
    EvaluationUser,
    UpdateContactInfo,
    User,
    wire,
)
from reconcile.contract import validate_request


def test_both_create_result_shapes_give_a_user_id() -> None:
    answer = CreateEvaluationUsersResponse.model_validate(
        {
            "errorText": "",
            "results": [
                {"errorText": "", "userId": 5},
                {"id": 6, "name": "bob", "email": "b@example.com", "status": "Active"},
                {"errorText": "name taken"},
            ],
        }
    )
    assert [(r.userId, r.errorText) for r in answer.results] == [(5, None), (6, None), (None, "name taken")]


def test_requests_never_send_none_and_match_the_contract() -> None:
    user = EvaluationUser(
        name="alice", email="a@example.com", password="x", firstName="A", lastName="B", entitlementIds=[31]
    )
    assert wire(user) == {
        "name": "alice",
        "email": "a@example.com",
        "password": "x",
        "firstName": "A",
        "lastName": "B",
        "entitlementIds": [31],
    }
    validate_request("POST", "/user/createevaluationusers", {"users": [wire(user)]})
    contact = UpdateContactInfo(
        userId=1, firstName="A", lastName="B", streetAddress1="1 Main", city="C", country="DE", phone="+49"
    )
    assert "state" not in wire(contact) and "streetAddress2" not in wire(contact)
    validate_request("POST", "/contactInfo/updatecontactinfo", wire(contact))


def test_requests_refuse_fields_the_contract_does_not_have() -> None:
    with pytest.raises(ValidationError):
        UpdateContactInfo(userId=1, nickname="x")  # type: ignore[call-arg]


def test_password_is_not_in_repr() -> None:
    user = EvaluationUser(
        name="alice", email="a@example.com", password="Hunter2!", firstName="A", lastName="B"
    )
    assert "Hunter2!" not in repr(user) and "Hunter2!" not in str(user)


def test_signals_accept_the_pages_complete_spelling_and_extra_fields() -> None:
    pending = AdminAlertSignal.model_validate({"id": 1, "relatedToUserId": 9, "timestamp": "t", "new": 1})
    done = AdminAlertSignal.model_validate(
        {"id": 2, "relatedToUserId": 9, "complete": "2026-01-01T00:00:00Z"}
    )
    assert pending.completed is None and done.completed == "2026-01-01T00:00:00Z"


def test_unknown_status_values_are_kept_as_text() -> None:
    assert User.model_validate({"id": 1, "name": "a", "email": "e", "status": "Frozen"}).status == "Frozen"
