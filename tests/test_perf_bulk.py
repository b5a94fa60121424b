"""The speed measures keep behaviour: plain-equality diffs agree with DeepDiff, GC pauses restore
the collector, shared field-name sets stay private to each model once it is copied."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from deepdiff import DeepDiff
from hypothesis import given
from hypothesis import strategies as st
from test_apply_executor import FakeApi, _creates_with_contacts, env, make_manifest, plan_for, run
from test_planner_support import CONTACT_NY, T0

from reconcile import bulk

__all__ = ["env"]  # the fixture a test here takes
from reconcile.manifest.loader import load_manifest
from reconcile.planning.planner import _field_changes
from reconcile.state.file import FileStateStore
from reconcile.state.model import ContactRecord, State, UserRecord

# A small fixed alphabet: which characters a string holds is irrelevant to equality, and
# st.text() without one makes Hypothesis build its full Unicode tables on a fresh clone (~1 s,
# enough to fail the too_slow health check on a busy machine).
_values = st.one_of(
    st.none(),
    st.text(alphabet="aB", max_size=3),
    st.integers(-2, 2),
    st.booleans(),
    st.floats(-2, 2, allow_nan=False),
    st.lists(st.integers(0, 2), max_size=2),
)
_mappings = st.dictionaries(st.sampled_from("abcde"), _values, max_size=5)


@given(_mappings, _mappings)
def test_field_changes_are_what_deepdiff_reports(before: dict[str, Any], after: dict[str, Any]) -> None:
    keys = set(before) | set(after)
    old = {k: before.get(k) for k in keys}
    new = {k: after.get(k) for k in keys}
    expected = sorted(str(k) for k in DeepDiff(old, new).affected_root_keys)

    changes = _field_changes(before, after)

    assert [c.field for c in changes] == expected
    assert all((c.before, c.after) == (old[c.field], new[c.field]) for c in changes)


def test_a_number_turning_into_a_boolean_is_a_change() -> None:
    # 1 == True in Python; the plan must still show it.
    assert [c.field for c in _field_changes({"n": 1}, {"n": True})] == ["n"]


def test_gc_paused_restores_the_collector() -> None:
    assert gc.isenabled()
    with bulk.gc_paused():
        assert not gc.isenabled()
        with bulk.gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()

    gc.disable()
    try:
        with bulk.gc_paused():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()


def test_gc_paused_freezes_only_after_bulk_work(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = gc.get_freeze_count()
    with bulk.gc_paused():
        small = [[i] for i in range(1000)]
    assert gc.get_freeze_count() == frozen  # small work: nothing frozen

    monkeypatch.setattr(bulk, "FREEZE_ABOVE", 100)
    try:
        with bulk.gc_paused():
            large = [[i] for i in range(1000)]
        assert gc.get_freeze_count() >= frozen + len(large)
        assert len(small) == len(large)
    finally:
        gc.unfreeze()


def test_gc_frozen_leaves_what_is_alive_out_of_collections_until_the_block_ends() -> None:
    desk = [[i] for i in range(1000)]
    with bulk.gc_frozen():
        assert gc.get_freeze_count() >= len(desk)
    assert gc.get_freeze_count() == 0  # collected again afterwards: a watch loop piles nothing up


def _collectable(thing: object) -> bool:
    """Whether ``thing`` is in a generation the collector walks (a frozen object is in none)."""
    return any(o is thing for o in gc.get_objects())


def test_freeze_survivors_freezes_only_inside_a_gc_frozen_block() -> None:
    """At each apply step's end, what the step made joins the frozen desk; outside, nothing does."""
    made_outside = [0]
    bulk.freeze_survivors()
    assert _collectable(made_outside)  # no block: frozen objects would never be handed back
    with bulk.gc_frozen():
        kept = [1]  # what a step records and keeps, made in the block
        assert _collectable(kept)
        bulk.freeze_survivors()
        assert not _collectable(kept)
        with bulk.gc_frozen():  # nested: the inner block neither freezes nor thaws
            pass
        assert not _collectable(kept)
    assert _collectable(kept) and gc.get_freeze_count() == 0


def test_an_apply_freezes_what_each_step_recorded(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new desk's records live for the whole run: a collection walked them all again, longer as
    the run went on, while every worker waited for the GIL."""
    import reconcile.apply.executor as executor_module

    inside: list[bool] = []
    real = executor_module.freeze_survivors

    def freeze_survivors() -> None:
        inside.append(bulk._frozen)
        real()

    monkeypatch.setattr(executor_module, "freeze_survivors", freeze_survivors)
    env["api"] = FakeApi()
    m = make_manifest(6)
    assert run(env, plan_for(env["store"], _creates_with_contacts(m)), m, batch_size=2).ok
    # Three batches, each a create and its contact updates: every step's end, inside the block.
    assert inside == [True] * 6
    assert gc.get_freeze_count() == 0


def _desk(path: Path) -> Path:
    users = "\n".join(
        f"  - {{name: trader{i:03d}, email: trader{i:03d}@example.com, password: {{generate: true}}, "
        f'firstName: A, lastName: B, contact: {{phone: "+12125550100", streetAddress1: 1 Main St, '
        f"city: New York, state: NY, country: US}}}}"
        for i in range(3)
    )
    path.write_text(
        "apiVersion: reconcile/v1\nenvironment: sim\npartner:\n  dataAccountId: 1\n"
        f"  entitlements: {{simplus: 2}}\nusers:\n{users}\n"
    )
    return path


def test_loaded_users_share_field_sets_and_copies_keep_their_own(tmp_path: Path) -> None:
    loaded = load_manifest([_desk(tmp_path / "desk.yaml")])
    first, second, _ = loaded.manifest.users
    assert first.model_fields_set is second.model_fields_set
    assert first.contact is not None and second.contact is not None
    assert first.contact.model_fields_set is second.contact.model_fields_set

    changed = first.model_copy(update={"tradovateSubscriptionPlanId": 9})

    assert "tradovateSubscriptionPlanId" in changed.model_fields_set
    assert "tradovateSubscriptionPlanId" not in second.model_fields_set
    assert second.model_dump(exclude_unset=True).keys() == first.model_dump(exclude_unset=True).keys()
    # Positions are still found after the parsed data was let go.
    assert loaded.locations["trader002"].line == 9


def test_state_read_back_shares_field_sets_and_round_trips(tmp_path: Path) -> None:
    record = UserRecord(
        userId=1,
        email="a@example.com",
        firstName="A",
        lastName="B",
        contact=ContactRecord(**CONTACT_NY),
        createdAt=T0,
        updatedAt=T0,
    )
    store = FileStateStore(tmp_path / "sim.json")
    users = {"a": record, "b": record.model_copy(update={"userId": 2})}
    saved = store.save(State(environment="sim", users=users))

    read = FileStateStore(tmp_path / "sim.json").read()

    assert read is not None and read.content_equals(saved)
    a, b = read.users["a"], read.users["b"]
    assert a.model_fields_set is b.model_fields_set
    shared = set(b.model_fields_set)
    cancelled = a.model_copy(update={"lifecycle": "cancelled", "cancelledAt": T0})
    assert cancelled.model_fields_set is not b.model_fields_set
    assert b.model_fields_set == shared
    assert (b.lifecycle, b.cancelledAt) == ("active", None)


VERIFIED_PYDANTIC = ("2.7", "2.8", "2.9", "2.10", "2.11", "2.12", "2.13", "2.14")
"""pydantic minor versions whose private ``__pydantic_fields_set__`` bulk.share_fields_sets was checked on."""


def assert_pydantic_checked(verified: tuple[str, ...], what: str) -> None:
    """Fail, saying ``what`` to check, unless the installed pydantic's minor version is ``verified``."""
    import pydantic

    minor = ".".join(pydantic.VERSION.split(".")[:2])
    assert minor in verified, f"pydantic {pydantic.VERSION} is not checked yet: {what}"


def test_share_fields_sets_relies_only_on_what_this_pydantic_is_known_to_do() -> None:
    assert_pydantic_checked(
        VERIFIED_PYDANTIC,
        "reconcile.bulk.share_fields_sets writes pydantic's private __pydantic_fields_set__. Check that "
        "the tests of this file pass (model_copy still gives a copy its own set), then add the version "
        "to VERIFIED_PYDANTIC",
    )
    record = ContactRecord(**CONTACT_NY)
    assert record.model_fields_set is record.__pydantic_fields_set__, "the public set is the private one"
    copied = record.model_copy(update={"city": "Boston"})
    assert copied.__pydantic_fields_set__ is not record.__pydantic_fields_set__


def test_planned_actions_share_field_sets_per_shape() -> None:
    from test_planner_support import BINDING, manifest, state, user

    from reconcile.planning.plan import CreateUser, UpdateContact
    from reconcile.planning.planner import make_plan

    desk = manifest(user("trader001", contact=CONTACT_NY), user("trader002", contact=CONTACT_NY))
    actions = make_plan(desk, state(), binding=BINDING).actions
    creates = [a for a in actions if isinstance(a, CreateUser)]
    contacts = [a for a in actions if isinstance(a, UpdateContact)]
    assert len(creates) == len(contacts) == 2
    assert creates[0].model_fields_set is creates[1].model_fields_set
    first, second = contacts[0].changes[0], contacts[1].changes[0]
    assert first.model_fields_set is second.model_fields_set
    assert first.model_fields_set == {"field", "before", "after"}
    assert contacts[0].contact.model_fields_set is contacts[1].contact.model_fields_set
