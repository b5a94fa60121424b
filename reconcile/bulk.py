"""Build many model objects at once: pause the cyclic GC, share identical field-name sets.

Loading a 100k-user manifest and its recorded state makes millions of small, acyclic objects.
These helpers keep that fast and under the memory budget (bench/plan.py measures both).
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import gc
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel

FREEZE_ABOVE = 50_000
"""Objects left alive by a paused block above which they are frozen out of later collections.

Loading a manifest leaves about 8 per user (a 6,000-user desk reaches it). At 10k users the
loaded manifest and the plan each cost the first collection after them a walk of 20-30 ms before
an apply's first request; 500,000 froze only from about 60k users on."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic GC for the block (or decorated function); restore it afterwards.

    Loading or planning 100k users makes millions of small containers, none of them cyclic
    garbage; the collector would rescan the growing heap again and again (a third of a large
    plan's time). Reference counting still frees everything as usual. When the block leaves
    more than :data:`FREEZE_ABOVE` new objects alive (a loaded desk, a plan), they are moved to
    the permanent generation (:func:`gc.freeze`): otherwise the first collections afterwards
    would walk them all once more, for seconds. Small blocks (tests, small desks) freeze nothing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if gc.get_count()[0] > FREEZE_ABOVE:
                gc.freeze()
            gc.enable()


_frozen = False
"""Whether a :func:`gc_frozen` block runs (:func:`freeze_survivors` freezes only inside one)."""


@contextlib.contextmanager
def gc_frozen() -> Iterator[None]:
    """Leave every object alive now out of the cyclic GC's passes while the block runs.

    An apply allocates steadily (answers, records, audit lines) for minutes; each full collection
    walked the desk loaded before it (manifest, state, plan) and held the GIL meanwhile, so every
    worker waited: 4 collections, 0.35 s of a 10k-user apply. Objects made in the block are
    collected as usual; reference counting frees everything as always. On leaving, the frozen
    objects are handed back to the collector (a ``watch`` loop must not pile them up).
    """
    global _frozen
    if _frozen:  # nested: the outer block thaws
        yield
        return
    gc.freeze()
    _frozen = True
    try:
        yield
    finally:
        _frozen = False
        gc.unfreeze()


def freeze_survivors() -> None:
    """Inside :func:`gc_frozen`, freeze what the block made that is alive now too (an O(1) splice).

    A new desk's apply keeps every record it makes: each full collection walked all of them
    again, longer as the run went on (7 of them, up to 110 ms each with every worker waiting,
    in a 20k-user apply). Called at each step's end, the collections see one step's objects.
    """
    if _frozen:
        gc.freeze()


def share_fields_sets(
    models: Iterable[BaseModel], shared: dict[frozenset[str], set[str]] | None = None
) -> None:
    """Make models with the same set field names share one ``model_fields_set`` object.

    pydantic gives every instance its own set (~0.7 KB for 5+ fields): three per user, a third
    of a 100k-user desk's memory. Sharing is safe for models that are never assigned to (this
    package changes models only through ``model_copy``, which copies the set first). Pass the
    same ``shared`` mapping to calls made batch by batch, so they share one set per name set.
    """
    shared = {} if shared is None else shared
    for model in models:
        names = model.__pydantic_fields_set__
        canonical = shared.setdefault(frozenset(names), names)
        if canonical is not names:
            object.__setattr__(model, "__pydantic_fields_set__", canonical)


M = TypeVar("M", bound=BaseModel)

VALIDATE_TRUSTED = False
"""True makes every :func:`trusted` builder validate, as ``cls(**values)`` would (tests compare both)."""

_REQUIRED: Any = object()
_IMMUTABLE = (type(None), str, int, float, bool, tuple, frozenset, enum.Enum, datetime.date)
_set_attribute = object.__setattr__


def trusted(cls: type[M]) -> Callable[..., M]:
    """Return a builder of ``cls`` from values already valid for it, which it does not validate again.

    For the planner's actions: their values come from models the loader validated, and at
    100k users validating them again (and walking them afterwards to share their field-name
    sets) was most of planning. ``build(**values)`` gives what ``cls(**values)`` gives for
    valid values: the same ``__dict__`` (defaults filled, in the fields' order), the same set
    field names (one set object per distinct set, as :func:`share_fields_sets` makes), no
    extra and no private values. Values the validator would convert (a list for a tuple, an
    int for a float) must be passed converted: tests/test_perf_plan.py compares every plan
    the planner builds with its validated twin. It relies on pydantic's private instance
    layout; tests/test_perf_plan.py fails on a pydantic minor version not checked yet.
    """
    template, factories = _template(cls)
    required = {name for name, value in template.items() if value is _REQUIRED} - {n for n, _ in factories}
    fields_sets: dict[frozenset[str], set[str]] = {}

    def first_of(values: dict[str, Any]) -> set[str]:
        names = frozenset(values)
        unknown, missing = names - template.keys(), required - names
        if unknown or missing:
            wrong = f"with unknown {sorted(unknown)}" if unknown else f"without {sorted(missing)}"
            raise TypeError(f"{cls.__name__} built {wrong}")
        return fields_sets.setdefault(names, set(names))

    last: list[set[str] | None] = [None]  # the last call's names: nearly every caller passes the same

    def build(**values: Any) -> M:
        fields_set = last[0]
        if fields_set is None or values.keys() != fields_set:  # comparing costs less than a frozenset
            fields_set = last[0] = fields_sets.get(frozenset(values)) or first_of(values)
        if VALIDATE_TRUSTED:
            model = cls(**values)
        else:
            content = template.copy()
            content.update(values)  # existing keys keep their place: the fields' order, as validation gives
            for name, factory in factories:
                if name not in values:
                    content[name] = factory()
            return assemble(cls, content, fields_set)
        _set_attribute(model, "__pydantic_fields_set__", fields_set)
        return model

    return build


def assemble(cls: type[M], content: dict[str, Any], fields_set: set[str]) -> M:
    """Return a ``cls`` holding ``content`` (valid values of every field, in the fields' order), unvalidated.

    What validation would leave in pydantic's four instance slots; the guards in
    tests/test_perf_plan.py and tests/test_state_decode.py fail on a layout they were not checked on.
    """
    model = cls.__new__(cls)
    _set_attribute(model, "__dict__", content)
    _set_attribute(model, "__pydantic_fields_set__", fields_set)
    _set_attribute(model, "__pydantic_extra__", None)
    _set_attribute(model, "__pydantic_private__", None)
    return model


def _template(cls: type[BaseModel]) -> tuple[dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...]]:
    """Every field of ``cls`` with its default (:data:`_REQUIRED` when none), and its default factories.

    Raises TypeError for a model that validation would do more for than check its fields.
    """
    decorators = cls.__pydantic_decorators__
    if (
        cls.model_config.get("extra") == "allow"
        or cls.__private_attributes__
        or decorators.validators
        or decorators.field_validators
        or decorators.root_validators
        or decorators.model_validators
        or cls.__pydantic_post_init__ is not None
    ):
        raise TypeError(f"{cls.__name__} validates or stores more than its fields: build it validated")
    template: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:
            factories.append((name, info.default_factory))  # type: ignore[arg-type]
            template[name] = _REQUIRED
        elif info.is_required():
            template[name] = _REQUIRED
        elif isinstance(info.default, _IMMUTABLE):
            template[name] = info.default
        else:  # pydantic copies a mutable default for each instance
            raise TypeError(f"{cls.__name__}.{name} has a mutable default: give it a default_factory")
    return template, tuple(factories)
