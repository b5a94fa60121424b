"""Every kind of plan action has exactly one executor; an action nobody executes is refused."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from reconcile.apply.executor import EXECUTORS, execute
from reconcile.apply.recovery import SETTLERS
from reconcile.apply.run import ExecuteOptions, Run
from reconcile.planning.plan import Action, CreateUser
from reconcile.state.file import FileStateStore

ACTION_KINDS = set(typing.get_args(typing.get_args(Action)[0]))


def test_each_action_kind_has_one_executor() -> None:
    claimed = [kind for executor in EXECUTORS for kind in executor.kinds]
    assert sorted(k.__name__ for k in claimed) == sorted(k.__name__ for k in ACTION_KINDS)


def test_each_intent_call_has_a_settler() -> None:
    from reconcile.apply.intents import IntentCall

    assert set(SETTLERS) == set(typing.get_args(IntentCall))


def test_an_action_no_executor_takes_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    class Stray(CreateUser):
        pass

    class Astray(CreateUser):
        pass

    store = FileStateStore(tmp_path / "sim.json")
    run = Run(
        store=store,
        state=store.load("sim"),
        client=None,  # never reached
        journal=store.journal("sim"),
        audit=store.audit_log("sim"),
    )
    fields = {"email": "ann@example.com", "firstName": "A", "lastName": "B", "password": {"env": "PW"}}
    strays = [Stray(user="ann", **fields), Astray(user="bob", **fields), Stray(user="cat", **fields)]
    with pytest.raises(TypeError) as caught:
        execute(run, strays, ExecuteOptions())
    assert str(caught.value) == "no executor for Astray, Stray"
    assert store.journal("sim").unsettled() == []
