"""Python's cyclic garbage collector, tuned while a run moves records.

A run keeps batches of records alive between steps, so with the default thresholds the collector runs
hundreds of times over a large input, each full collection walking every object the imports left (modules,
classes, the recipe): measured on the overhead benchmark's recipe (55k records, one worker), 0.23 s of
collections, where the bare loop over the same records triggers none. While a run executes, the objects that
exist when it starts are frozen out of the collections and the youngest generation is collected every 20,000
net allocations instead of 700: 0.03 s. Both are put back when the run ends (a notebook's process goes on).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

YOUNG_THRESHOLD = 20_000
"""Net allocations between collections of the youngest generation during a run (Python's default: 700)."""


@contextmanager
def few_collections() -> Iterator[None]:
    """Collect rarely and never walk what existed before (left alone if the process froze objects itself)."""
    thresholds = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    gc.set_threshold(max(thresholds[0], YOUNG_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if freeze:
            gc.unfreeze()
