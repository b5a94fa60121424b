"""A saved plan is applied only to the inputs it was made from: each change is named, nothing is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from apply_support import PASSWORD, write_desk
from cli_support import run

from reconcile import __version__
from reconcile.apply import check_plan_current
from reconcile.errors import PlanError
from reconcile.planning.plan import Plan, PlanBinding
from reconcile.state.model import State

LINEAGE = "0e4cbb5e-6f0c-4c3c-9d7e-000000000001"
MADE = PlanBinding(
    manifest_digest="a" * 64,
    state_lineage=LINEAGE,
    state_serial=7,
    environment="sim",
    endpoint="https://demo.example/v1",
    companion="https://live.example/v1",
    tool_version=__version__,
)
CURRENT = {
    "manifest_digest": "a" * 64,
    "environment": "sim",
    "endpoint": "https://demo.example/v1",
    "companion": "https://live.example/v1",
    "tool_version": __version__,
}


def _check(
    plan_binding: PlanBinding = MADE, *, serial: int = 7, lineage: str = LINEAGE, **now: object
) -> None:
    state = State(environment="sim", lineage=lineage, serial=serial)
    check_plan_current(Plan(binding=plan_binding), state=state, **{**CURRENT, **now})  # type: ignore[arg-type]


def _refusal(**kw: object) -> str:
    with pytest.raises(PlanError) as caught:
        _check(**kw)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("the saved plan is stale: ")
    assert message.endswith(". Make a new plan with `reconcile plan --out PLANFILE` and review it")
    return message.removeprefix("the saved plan is stale: ").split(". Make a new plan")[0]


def test_a_plan_made_from_the_current_inputs_is_accepted() -> None:
    _check()
    _check(endpoint=None)  # the endpoint is not known yet: only the rest is compared


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"serial": 8}, "the state was written since (serial 7 when planned, 8 now)"),
        ({"serial": 6}, "the state was written since (serial 7 when planned, 6 now)"),
        (
            {"lineage": "other-lineage"},
            f"the state is another one (lineage {LINEAGE} when planned, other-lineage now)",
        ),
        (
            {"manifest_digest": "b" * 64},
            "the manifest changed (digest aaaaaaaaaaaa when planned, bbbbbbbbbbbb now)",
        ),
        ({"environment": "demo"}, "the environment changed (sim when planned, demo now)"),
        (
            {"endpoint": "https://live.example/v1"},
            "the endpoint changed (https://demo.example/v1 when planned, https://live.example/v1 now)",
        ),
        (
            {"companion": None},
            "the companion host changed (https://live.example/v1 when planned, none now)",
        ),
        ({"tool_version": "9.9.9"}, f"reconcile changed (version {__version__} when planned, 9.9.9 now)"),
    ],
)
def test_each_changed_input_is_named(change: dict[str, object], reason: str) -> None:
    assert _refusal(**change) == reason


def test_a_plan_without_a_companion_is_refused_where_there_is_one() -> None:
    alone = MADE.model_copy(update={"companion": None})
    assert _refusal(plan_binding=alone) == (
        "the companion host changed (none when planned, https://live.example/v1 now)"
    )


def test_a_plan_of_a_never_saved_state_is_refused_once_the_state_is_saved() -> None:
    # The first save fixes a lineage the plan never saw: the serial is what tells.
    fresh = MADE.model_copy(update={"state_serial": 0, "state_lineage": "never-written"})
    assert _refusal(plan_binding=fresh, serial=1) == (
        "the state was written since (none when planned, serial 1 now)"
    )
    _check(fresh, serial=0, lineage="never-written")


def test_every_change_is_named_at_once() -> None:
    reasons = _refusal(serial=9, manifest_digest="c" * 64, environment="live", tool_version="0.0.1")
    assert reasons.split("; ") == [
        "the manifest changed (digest aaaaaaaaaaaa when planned, cccccccccccc now)",
        "the state was written since (serial 7 when planned, 9 now)",
        "the environment changed (sim when planned, live now)",
        f"reconcile changed (version {__version__} when planned, 0.0.1 now)",
    ]


def _recorded(folder: Path) -> dict[str, str]:
    return {name: (folder / name).read_text() for name in ("sim.json", "sim.audit.jsonl")}


def test_a_plan_made_before_the_last_apply_is_refused_and_nothing_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every stale-plan test used to start from serial 0: a check ignoring the serial passed them all."""
    monkeypatch.chdir(tmp_path)
    env = {"TRADER_PASSWORD": PASSWORD}
    manifest = write_desk(tmp_path / "desk.yaml", 2)
    files = ["-f", manifest, "--state", "state/sim.json"]
    first = run("apply", *files, "--auto-approve", env=env)
    assert first.exit_code == 0, first.output
    write_desk(manifest, 3)
    # Two plans from the same inputs (serial 1); applying one moves the state to serial 2.
    for name in ("a.plan", "b.plan"):
        planned = run("plan", *files, "--out", name, env=env)
        assert planned.exit_code == 0, planned.output
    applied = run("apply", "a.plan", *files, env=env)
    assert applied.exit_code == 0, applied.output
    recorded = _recorded(tmp_path / "state")

    stale = run("apply", "b.plan", *files, env=env)

    assert stale.exit_code == 1
    assert "the saved plan is stale: the state was written since (serial 1 when planned, 2 now)" in (
        stale.stderr
    )
    assert "reconcile plan --out" in stale.stderr
    # State and audit log unchanged: no call was made.
    assert _recorded(tmp_path / "state") == recorded
