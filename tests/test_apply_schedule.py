"""The executor schedule: the one-pass sort gives exactly the steps of filtering per executor."""

from __future__ import annotations

import typing
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from reconcile.apply.executor import EXECUTORS, Step, schedule
from reconcile.apply.run import chunks
from reconcile.planning.plan import Action, CreateUser, UpdateContact

KINDS = tuple(typing.get_args(typing.get_args(Action)[0]))
"""Every kind of plan action."""


def filtered(actions: Sequence[Action], batch_size: int) -> list[Step]:
    """The schedule as it was first written: every executor filters the actions (and each batch's)."""
    creates = [a for a in actions if isinstance(a, CreateUser)]
    new = {a.user for a in creates}
    others = [e for e in EXECUTORS if CreateUser not in e.kinds]
    creator = next(e for e in EXECUTORS if CreateUser in e.kinds)
    steps: list[Step] = [
        (e, [a for a in actions if isinstance(a, e.kinds) and a.user not in new]) for e in others
    ]
    waiting: dict[str, list[Action]] = {}
    for action in actions:
        if not isinstance(action, CreateUser) and action.user in new:
            waiting.setdefault(action.user, []).append(action)
    for batch in chunks(creates, batch_size):
        follow = [a for c in batch for a in waiting.get(c.user, [])]
        steps.append((creator, batch))
        steps.extend((e, [a for a in follow if isinstance(a, e.kinds)]) for e in others)
    return [(e, chunk) for e, chunk in steps if chunk]


actions = st.lists(
    st.builds(
        lambda kind, user: kind.model_construct(user=f"u{user}"),
        st.sampled_from(KINDS),
        st.integers(0, 6),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(actions, st.integers(1, 5))
def test_schedule_sorts_each_action_where_filtering_put_it(plan: list[Action], batch_size: int) -> None:
    got = [(e, [id(a) for a in chunk]) for e, chunk in schedule(plan, batch_size)]
    want = [(e, [id(a) for a in chunk]) for e, chunk in filtered(plan, batch_size)]
    assert got == want


def test_a_user_created_in_the_plan_has_its_updates_follow_its_batch() -> None:
    create = [CreateUser.model_construct(user=name) for name in ("a", "b")]
    contact = [UpdateContact.model_construct(user=name) for name in ("b", "a", "old")]
    steps = schedule([*create, *contact], 1)
    assert [[a.user for a in chunk] for _, chunk in steps] == [["old"], ["a"], ["a"], ["b"], ["b"]]
