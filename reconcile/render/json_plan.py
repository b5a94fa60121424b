"""The JSON renderer: the documented plan form (docs/plan-format.md), the same text as a plan file.

Byte for byte what :func:`~reconcile.planning.plan.dumps_plan` writes, made faster and leaner:
``dumps_plan`` has pydantic build every action as a dict first (2 s and 300 MiB at 100k
users); here orjson reads the models' fields itself, a batch of actions at a time, and the
text goes out in pieces. tests/test_render_pieces.py holds the two to the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

import orjson
from pydantic import BaseModel

from reconcile.planning.plan import Action, Plan, dumps_json
from reconcile.render.options import RenderOptions

_PIECE = 4096
"""Actions per piece of output (about 3 MB of JSON)."""
_OPTIONS = (
    orjson.OPT_INDENT_2
    | orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)
"""dumps_json's layout; dates, datetimes and dataclasses go to :func:`_fields`, not orjson's own forms."""
_OPEN = '{\n  "actions": [\n'
_CLOSE = "\n  ]\n}"
_EMPTY = '{\n  "actions": [],\n'


def render_json(plan: Plan, options: RenderOptions) -> Iterator[str]:
    """Yield ``Plan.to_json_dict()`` as indented JSON with sorted keys (never masked: for machines)."""
    rest = plan.model_copy(update={"actions": ()}).to_json_dict()
    rest["summary"] = plan.summary
    text = dumps_json(rest) + "\n"  # "actions" sorts first: the pieces go in its place
    if not plan.actions:
        yield text
        return
    yield _OPEN
    actions = plan.actions
    for start in range(0, len(actions), _PIECE):
        piece = _actions(actions[start : start + _PIECE])
        yield piece[len(_OPEN) : -len(_CLOSE)] if start == 0 else ",\n" + piece[len(_OPEN) : -len(_CLOSE)]
    yield "\n  ],\n" + text[len(_EMPTY) :]


def _actions(batch: Sequence[Action]) -> str:
    """``dumps_json({"actions": [...]})`` of the batch, its actions read by orjson."""
    try:
        data = orjson.dumps({"actions": batch}, default=_fields, option=_OPTIONS)
    except TypeError:  # a value pydantic writes in its own way (a datetime, a Decimal…): let it
        return dumps_json({"actions": [a.model_dump(mode="json") for a in batch]})
    if data.isascii() and b"\x7f" not in data:
        return data.decode()
    return dumps_json(orjson.loads(data))  # dumps_json escapes non-ASCII as json.dumps does


def _fields(value: Any) -> Any:
    """What pydantic's ``model_dump(mode="json")`` makes of a value orjson does not write itself."""
    if isinstance(value, BaseModel):
        return value.__dict__
    if type(value) is date:
        return value.isoformat()
    raise TypeError(type(value).__name__)
