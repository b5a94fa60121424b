"""The operations layer called directly: no click, no subprocess, configuration passed in."""

from __future__ import annotations

import ast
import dataclasses
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from apply_support import PASSWORD, write_desk

from reconcile.errors import ReconcileError
from reconcile.operations.apply import ApplyRequest, apply
from reconcile.operations.inputs import PlanInputs, Reporter
from reconcile.operations.plan import plan
from reconcile.operations.settings import Settings
from reconcile.planning.plan import CancelEverything, CreateUser, Plan
from reconcile.sim import admin
from reconcile.sim.app import create_app
from reconcile.sim.server import serve
from reconcile.sim.store import Store
from reconcile.state.file import FileStateStore

PACKAGE = Path(__file__).resolve().parent.parent / "reconcile"
# Only what the manifest's {env: VAR} passwords need: no TRADOVATE_* (the loopback simulator's
# built-in admin is used), and the test's own process environment is never consulted.
SETTINGS = Settings.from_environ({"TRADER_PASSWORD": PASSWORD})


def _inputs(tmp_path: Path, **given: str | None) -> PlanInputs:
    return PlanInputs(
        paths=(tmp_path / "desk.yaml",),
        state_path=tmp_path / "state" / "sim.json",
        backend=None,
        endpoint=given.get("endpoint"),
        targets=(),
        excludes=(),
        companion_endpoint=given.get("companion"),
        settings=SETTINGS,
    )


class Recorder:
    """A caller's callbacks: what was said, and the plans it was asked to approve."""

    def __init__(self, *, approve: bool = True) -> None:
        self.said: list[str] = []
        self.shown: list[Plan] = []
        self.asked: list[Plan] = []
        self.approve = approve

    def reporter(self) -> Reporter:
        said = self.said.append
        return Reporter(say=said, warn=said, show_plan=self.shown.append, confirm=self.ask)

    def ask(self, plan: Plan) -> bool:
        self.asked.append(plan)
        return self.approve


def _status(store: Store) -> dict[str, str]:
    return {u["name"]: u["status"] for u in admin.dump_users(store)}


def test_a_whole_apply_with_journal_lock_audit_and_a_companion_host(tmp_path: Path) -> None:
    write_desk(tmp_path / "desk.yaml", 3)
    primary_app = create_app(db_path=tmp_path / "primary.sqlite")
    with serve(primary_app) as primary:
        # A companion that is never called: nothing is cancelled yet.
        first = Recorder()
        created = apply(
            ApplyRequest(_inputs(tmp_path, endpoint=primary, companion="http://127.0.0.1:9/v1")),
            first.reporter(),
        )
        assert created.result.ok and len(created.result.created) == 3
        assert [type(a) for a in first.asked[0].actions] == [CreateUser] * 3
        assert first.shown == first.asked
        # The companion host knows the same users under the same ids (a firm's users exist on both).
        with (
            closing(sqlite3.connect(tmp_path / "primary.sqlite")) as src,
            closing(sqlite3.connect(tmp_path / "companion.sqlite")) as dst,
        ):
            src.backup(dst)
        companion_app = create_app(db_path=tmp_path / "companion.sqlite")
        with serve(companion_app) as companion:
            write_desk(tmp_path / "desk.yaml", 2)
            second = Recorder()
            done = apply(
                ApplyRequest(_inputs(tmp_path, endpoint=primary, companion=companion), allow_cancellations=1),
                second.reporter(),
            )
        on_companion = _status(companion_app.store)
        assert _status(primary_app.store)["trader0002"] == on_companion["trader0002"] == "Closed"
        assert on_companion["trader0001"] == "Active"
        companion_app.store.close()
    primary_app.store.close()

    assert done.result.ok and done.result.counts()["cancelled"] == 1
    assert [type(a) for a in done.plan.actions] == [CancelEverything]
    store = FileStateStore(tmp_path / "state" / "sim.json")
    record = store.load("sim").users["trader0002"]
    assert record.lifecycle == "cancelled" and record.cancelledOn == sorted([primary, companion])
    assert store.journal("sim").unsettled() == []
    assert store.lock_holder() is None
    audit = [json.loads(line) for line in (tmp_path / "state" / "sim.audit.jsonl").read_text().splitlines()]
    assert [a["action"] for a in audit] == [
        "create", "apply", "policy", "cancel_everything", "cancel_everything", "apply"
    ]  # fmt: skip
    assert [a["outcome"] for a in audit if a["action"] == "policy"] == ["--allow-cancellations 1"]
    cancels = [(a["detail"]["host"], a["outcome"]) for a in audit if a["action"] == "cancel_everything"]
    assert cancels == [(primary, "cancelled"), (companion, "cancelled")]


def test_an_apply_the_caller_does_not_approve_changes_nothing(tmp_path: Path) -> None:
    write_desk(tmp_path / "desk.yaml", 2)
    refusing = Recorder(approve=False)
    with pytest.raises(ReconcileError, match="apply cancelled; nothing was changed"):
        apply(ApplyRequest(_inputs(tmp_path)), refusing.reporter())
    assert len(refusing.asked) == 1
    assert FileStateStore(tmp_path / "state" / "sim.json").load("sim").serial == 0


def test_an_apply_reads_its_manifests_once_and_plans_on_the_store_it_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apply planned from a second load and a second store: double the work, and two views."""
    from reconcile.manifest import loader

    write_desk(tmp_path / "desk.yaml", 2)
    loads: list[object] = []
    real = loader.load_manifest

    def counting(paths: object, **options: object) -> object:
        loads.append(paths)
        return real(paths, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "load_manifest", counting)
    outcome = apply(ApplyRequest(_inputs(tmp_path)), Recorder().reporter())
    assert outcome.result.ok and sorted(outcome.result.created) == ["trader0000", "trader0001"]
    assert len(loads) == 1


def test_plan_binds_to_the_endpoint_and_judges_the_policy_without_the_network(tmp_path: Path) -> None:
    write_desk(tmp_path / "desk.yaml", 2)
    said: list[str] = []
    made = plan(_inputs(tmp_path), lock_timeout=0, reporter=Reporter(say=said.append))
    assert made.plan.binding.endpoint == "sim:embedded" and made.plan.binding.companion is None
    assert [type(a) for a in made.plan.actions] == [CreateUser, CreateUser]
    assert made.changed and not made.check.refused and made.reviewed == made.plan
    assert not (tmp_path / "state" / "sim.sqlite").exists()  # no simulator was opened
    # The environment the caller passes is the only one read: its endpoint binds the plan.
    elsewhere = Settings.from_environ({"RECONCILE_ENDPOINT": "http://127.0.0.1:8/v1"})
    configured = dataclasses.replace(_inputs(tmp_path), settings=elsewhere)
    assert plan(configured).plan.binding.endpoint == "http://127.0.0.1:8/v1"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_api_client_never_imports_the_simulator_nor_operations_the_cli() -> None:
    for path in (PACKAGE / "api").glob("*.py"):
        assert not {m for m in _imports(path) if m.startswith("reconcile.sim")}, path
    for path in (PACKAGE / "operations").glob("*.py"):
        assert not {m for m in _imports(path) if m.startswith(("reconcile.cli", "click"))}, path


def test_the_library_reads_no_environment_where_the_edge_passes_it() -> None:
    for name in ("api/endpoints.py", "api/connect.py", "state/open.py"):
        source = (PACKAGE / name).read_text()
        assert "os.environ" not in source and "getenv" not in source, name
