"""The planner's fast construction keeps the plan: every model it builds without validation equals
its validated twin, field by field, type by type, in the same order, with the same JSON."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field
from test_perf_bulk import assert_pydantic_checked
from test_planner_properties import NAMES, manifests, states
from test_planner_support import BINDING, CONTACT_NY, manifest, record, state, user

from reconcile import bulk
from reconcile.manifest.models import Manifest, User
from reconcile.planning.plan import CreateAccount, FieldChange, Plan, UpdateContact, dumps_plan
from reconcile.planning.planner import _Accumulator, make_plan
from reconcile.state.model import State

TRUSTED_VERIFIED = ("2.14",)
"""pydantic minor versions whose private instance layout reconcile.bulk.trusted was checked on."""


def test_trusted_builders_rely_only_on_what_this_pydantic_is_known_to_do() -> None:
    assert_pydantic_checked(
        TRUSTED_VERIFIED,
        "reconcile.bulk.trusted builds the planner's models by setting pydantic's private instance "
        "slots (__dict__, __pydantic_fields_set__, __pydantic_extra__, __pydantic_private__). Check that "
        "the other tests of this file pass (fast-built plans equal validated ones, field by field), then "
        "add the version to TRUSTED_VERIFIED",
    )
    fast, validated = bulk.trusted(FieldChange)(field="a"), FieldChange(field="a")
    assert fast.__getstate__() == validated.__getstate__(), "an instance holds what it held when checked"


@contextmanager
def validating() -> Iterator[None]:
    """Make every :class:`reconcile.bulk.trusted` builder validate, as the models' constructors do."""
    bulk.VALIDATE_TRUSTED = True
    try:
        yield
    finally:
        bulk.VALIDATE_TRUSTED = False


def assert_same(fast: Any, validated: Any, where: str = "plan") -> None:
    """Equal, and of one type, down to every value: a model's fields in order, its set field names."""
    assert type(fast) is type(validated), where
    if isinstance(fast, BaseModel):
        assert list(fast.__dict__) == list(validated.__dict__), where
        assert fast.model_fields_set == validated.model_fields_set, where
        assert (fast.__pydantic_extra__, fast.__pydantic_private__) == (None, None), where
        assert (validated.__pydantic_extra__, validated.__pydantic_private__) == (None, None), where
        for name, value in fast.__dict__.items():
            assert_same(value, validated.__dict__[name], f"{where}.{name}")
    elif isinstance(fast, tuple | list):
        assert len(fast) == len(validated), where
        for i, (a, b) in enumerate(zip(fast, validated, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(fast, dict):
        assert list(fast) == list(validated), where
        for key, value in fast.items():
            assert_same(value, validated[key], f"{where}[{key!r}]")
    else:
        assert fast == validated, where


def _both(m: Manifest, s: State, **options: Any) -> tuple[Plan, Plan]:
    fast = make_plan(m, s, binding=BINDING, **options)
    with validating():
        validated = make_plan(m, s, binding=BINDING, **options)
    return fast, validated


@settings(max_examples=300)
@given(
    manifests(),
    states(),
    st.lists(st.sampled_from([*NAMES, "trader00[1-3]"]), max_size=2),
    st.sampled_from([None, date(2026, 11, 15)]),
)
def test_plans_built_without_validation_are_the_validated_plans(
    m: Manifest, s: State, targets: list[str], today: date | None
) -> None:
    fast, validated = _both(m, s, targets=targets, today=today)

    assert fast == validated
    assert_same(fast, validated)
    assert dumps_plan(fast) == dumps_plan(validated)
    assert fast.model_dump_json() == validated.model_dump_json()


def test_every_kind_of_user_action_is_compared() -> None:
    """The property above reaches each builder of the planner (a desk with one of each)."""
    desk = manifest(
        user("trader001", contact=CONTACT_NY, entitlements=["simplus", "tradingview"]),
        user("trader002", email="new@example.com", contact=dict(CONTACT_NY, city="Boston")),
        user("trader003", status="cancelled"),
    )
    recorded = state(
        trader002=record(2, "trader002"), trader003=record(3, "trader003"), trader004=record(4, "trader004")
    )
    fast, validated = _both(desk, recorded)
    kinds = {type(a).__name__ for a in fast.actions}
    assert kinds == {"CreateUser", "UpdateContact", "GrantEntitlement", "UpdateEmail", "CancelEverything"}
    assert_same(fast, validated)


def test_equal_text_changes_are_one_object_and_other_values_keep_their_type() -> None:
    desk = manifest(user("trader001", contact=CONTACT_NY), user("trader002", contact=CONTACT_NY))
    actions = make_plan(desk, state(), binding=BINDING).actions
    first, second = (a for a in actions if isinstance(a, UpdateContact))
    assert all(a is b for a, b in zip(first.changes, second.changes, strict=True))

    acc = _Accumulator()
    assert acc.change("n", None, "x") is acc.change("n", None, "x")
    one, true = acc.change("n", None, 1), acc.change("n", None, True)  # 1 == True: never one object
    assert (type(one.after), type(true.after)) == (int, bool)


def test_trusted_builders_refuse_what_validation_would_catch_or_change() -> None:
    with pytest.raises(TypeError, match="validates"):
        bulk.trusted(User)  # its validators would be skipped

    class Mutable(BaseModel):
        items: list[int] = []

    with pytest.raises(TypeError, match="mutable default"):
        bulk.trusted(Mutable)

    changes = bulk.trusted(FieldChange)
    with pytest.raises(TypeError, match="without \\['field'\\]"):
        changes(before=1)
    with pytest.raises(TypeError, match="unknown \\['bogus'\\]"):
        changes(field="a", bogus=1)


def test_trusted_builders_fill_defaults_and_factories_like_validation() -> None:
    class Defaults(BaseModel):
        name: str
        risk: dict[str, Any] = Field(default_factory=dict)
        tags: tuple[str, ...] = ()

    build = bulk.trusted(Defaults)
    fast, validated = build(name="a"), Defaults(name="a")
    assert_same(fast, validated)
    assert fast.risk is not build(name="b").risk  # each gets its own, as the factory makes them
    assert build(name="a").model_fields_set is fast.model_fields_set  # one set per set of names

    accounts = bulk.trusted(CreateAccount)
    values: dict[str, Any] = dict(
        user="u", userId=None, account="A", template="t", templateAccountId=1, initialBalance=5.0
    )
    assert_same(accounts(**values), CreateAccount(**values))
