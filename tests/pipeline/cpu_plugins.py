"""A CPU-bound filter for the process-pool tests: slow on demand, counting what it judged."""

from __future__ import annotations

import os
import time

from dataflywheel.ops import Filter, OpConfig, register
from dataflywheel.records import response_text


class OddWordsConfig(OpConfig):
    seconds_per_batch: float = 0.0
    teardown_marker: str = ""
    """When set, ``teardown`` writes ``<marker>.<pid>`` (to see that every process released the operator)."""


@register
class OddWords(Filter):
    """Rejects responses with an odd number of words; counts the records it judged (a warning counter)."""

    name = "test.odd_words"
    Config = OddWordsConfig
    cpu_bound = True

    def reject_reasons(self, records):
        time.sleep(self.config.seconds_per_batch)
        self.counters["records judged"] += len(records)
        return [f"{n} words" if n % 2 else None for n in (len(response_text(r).split()) for r in records)]

    def teardown(self):
        if self.config.teardown_marker:
            with open(f"{self.config.teardown_marker}.{os.getpid()}", "w") as marker:
                marker.write(str(self.counters["records judged"]))
        super().teardown()


class SlowHereConfig(OpConfig):
    seconds_per_batch: float = 0.05


@register
class SlowHere(Filter):
    """Keeps everything, slowly, in the run's process (not CPU-bound): a step after the worker steps."""

    name = "test.slow_here"
    Config = SlowHereConfig

    def reject_reasons(self, records):
        time.sleep(self.config.seconds_per_batch)
        return [None] * len(records)


class BrokenSetupConfig(OpConfig):
    pass


@register
class BrokenSetup(Filter):
    """A CPU-bound filter whose set-up fails with a ValueError (not a read error) in a worker process."""

    name = "test.broken_setup"
    Config = BrokenSetupConfig
    cpu_bound = True

    def setup(self):
        import multiprocessing

        if multiprocessing.parent_process() is not None:
            raise ValueError("set-up broke")

    def reject_reasons(self, records):
        return [None] * len(records)
