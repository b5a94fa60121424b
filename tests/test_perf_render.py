"""The renderers' fast paths give exactly what the slow, obvious code gives."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from reconcile.render.describe import quote


@given(st.one_of(st.text(alphabet='aZ 9"\\\x00\n\x1f\x7f\u2028é€'), st.integers()))
def test_quote_is_json_quoting(value: object) -> None:
    assert quote("city", value, show_pii=True) == json.dumps(value, ensure_ascii=False)
