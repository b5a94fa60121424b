"""Renderers write a plan in pieces: joined, they are the text the plain renderers wrote.

The JSON renderer reads the models with orjson instead of ``Plan.to_json_dict()``; it must give
``dumps_plan``'s bytes for every action kind, every optional key and every odd value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from test_planner_support import BINDING, CONTACT_NY, manifest, state, user
from test_render_formats import full_plan, quiet_plan

from reconcile.cli.output import print_plan
from reconcile.planning import plan as plan_module
from reconcile.planning.plan import (
    DriftEntry,
    DriftKind,
    FieldChange,
    Plan,
    Refresh,
    UpdateRisk,
    dumps_json,
    dumps_plan,
)
from reconcile.planning.planner import make_plan
from reconcile.render import RenderOptions, formats, render, render_pieces, text


def _odd_plan(*values: object) -> Plan:
    """The full plan, refreshed, with a companion, users left unsettled and odd values in changes."""
    plan = full_plan()
    changes = tuple(FieldChange(field="dailyLossAutoLiq", before=None, after=v) for v in values)
    odd = UpdateRisk(user="trädër\x7f", account="A€", accountId=None, changes=changes, risk={"x": 1.5})
    drift = DriftEntry(kind=DriftKind.changed, user="trader001", changes=changes, message="changed outside")
    return plan.model_copy(
        update={
            "actions": (*plan.actions, odd),
            "refresh": Refresh(drift=(drift,), unmanaged=("stranger",)),
            "unsettled": ("trader009",),
            "binding": BINDING.model_copy(update={"companion": "live.example"}),
        }
    )


PLANS = {
    "full": full_plan,
    "quiet": quiet_plan,
    "empty": lambda: Plan(binding=BINDING),
    "odd": lambda: _odd_plan(1.0, 2.5, "x\u2028y", None, True),
    "datetime": lambda: _odd_plan(datetime(2026, 11, 30, 12, 0, tzinfo=UTC)),
    "decimal": lambda: _odd_plan(Decimal("1.50")),
}


@pytest.mark.parametrize("piece", [1, 2, 4096])
@pytest.mark.parametrize("name", sorted(PLANS))
def test_json_is_what_a_plan_file_holds(name: str, piece: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_module, "_JSON_PIECE", piece)
    plan = PLANS[name]()
    assert render(plan, "json") == dumps_plan(plan)
    # Both are the fast route; the plain one (pydantic's dicts) is the reference they must match.
    assert dumps_plan(plan) == dumps_json(plan.to_json_dict()) + "\n"


@pytest.mark.parametrize("piece", [1, 3])
@pytest.mark.parametrize("name", ["full", "quiet", "odd"])
def test_text_in_small_pieces_is_the_same_text(
    name: str, piece: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = PLANS[name]()
    whole = render(plan, "text", RenderOptions(colour=True))
    monkeypatch.setattr(text, "_PIECE", piece)
    pieces = list(render_pieces(plan, "text", RenderOptions(colour=True)))
    assert "".join(pieces) == whole
    assert all(p.endswith("\n") for p in pieces)
    assert len(pieces) > len(plan.changes) // piece


@pytest.mark.parametrize("fmt", formats())
@pytest.mark.parametrize("err", [False, True])
def test_print_plan_writes_the_rendered_text(fmt: str, err: bool, capsys: pytest.CaptureFixture[str]) -> None:
    plan = full_plan()
    print_plan(plan, fmt, show_pii=False, err=err)
    out, errors = capsys.readouterr()
    assert (errors if err else out) == render(plan, fmt)
    assert (out if err else errors) == ""


@pytest.mark.parametrize("limit", [3_000, 8_000, 60_000])
def test_markdown_counts_every_user_it_leaves_out(limit: int) -> None:
    users = [user(f"trader{i:04d}", contact=CONTACT_NY) for i in range(300)]
    plan = make_plan(manifest(*users), state(), binding=BINDING)
    md = render(plan, "markdown", RenderOptions(max_chars=limit))
    shown = md.count("<details>")
    assert shown < 300
    assert f"{300 - shown:,} user details" in md
