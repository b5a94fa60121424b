"""Build many model objects at once: pause the cyclic GC, share identical field-name sets.

Loading a 100k-user manifest and its recorded state makes millions of small, acyclic objects.
These helpers keep that fast and under the memory budget (bench/plan.py measures both).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator

from pydantic import BaseModel

FREEZE_ABOVE = 500_000
"""Objects left alive by a paused block above which they are frozen out of later collections."""


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
