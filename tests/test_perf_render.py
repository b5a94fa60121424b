"""The renderers' fast paths give exactly what the slow, obvious code gives."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from reconcile.planning.plan import dumps_json
from reconcile.render.describe import quote


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
