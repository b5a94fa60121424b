"""The renderers' fast paths give exactly what the slow, obvious code gives."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from reconcile.manifest.models import PasswordGenerate
from reconcile.planning.plan import CreateUser, FieldChange, dumps_json
from reconcile.render.describe import describe_change, describe_changes, mask, quote, wording


@given(st.one_of(st.text(alphabet='aZ 9"\\\x00\n\x1f\x7f\u2028é€'), st.integers()))
def test_quote_is_json_quoting(value: object) -> None:
    assert quote("city", value, show_pii=True) == json.dumps(value, ensure_ascii=False)


_text = st.text(alphabet='aZ "\\\x00\n\x1f\x7f\u2028é€\U0001f600')
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), _text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=12,
)


@given(_json)
def test_plan_json_is_what_json_dumps_writes(data: object) -> None:
    assert dumps_json(data) == json.dumps(data, indent=2, sort_keys=True)


# --- the describe fast paths: each gives what the plain, obvious wording gives -------------------

_hostile = st.text(alphabet='aZ 9"\\\x00\n\x1f\x7f\x85\xa0\u2028é€\U0001f600@')
_fields = st.sampled_from(["city", "email", "phone", "postCode", "firstName", "dailyLossAutoLiq"])
_values = st.one_of(st.none(), _hostile, st.integers(), st.floats(allow_nan=False), st.booleans())


def _slow_quote(field: str, value: object, show_pii: bool) -> str:
    """quote() as it read before its fast path: mask, then json.dumps."""
    if value is None:
        return "(none)"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value if show_pii else mask(field, value), ensure_ascii=False)


@given(_fields, _values, st.booleans())
def test_quote_gives_what_masking_then_json_dumps_gives(field: str, value: object, show_pii: bool) -> None:
    assert quote(field, value, show_pii=show_pii) == _slow_quote(field, value, show_pii)


@given(
    st.lists(st.builds(FieldChange, field=_fields, before=_values, after=_values), max_size=6), st.booleans()
)
def test_describe_changes_is_describe_change_of_each(changes: list[FieldChange], show_pii: bool) -> None:
    expected = [describe_change(c, show_pii=show_pii) for c in changes]
    assert describe_changes(changes, show_pii=show_pii) == expected


@given(_hostile, _hostile, _hostile, st.booleans())
def test_a_create_quotes_its_names_as_quote_does(email: str, first: str, last: str, show_pii: bool) -> None:
    action = CreateUser(
        user="u", email=email, firstName=first, lastName=last, password=PasswordGenerate(generate=True)
    )
    _, details = wording(action, show_pii=show_pii)
    assert details[:3] == [
        f"{name}={_slow_quote(name, value, show_pii)}"
        for name, value in (("email", email), ("firstName", first), ("lastName", last))
    ]
