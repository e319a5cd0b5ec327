"""A CPU-bound filter for the process-pool tests: slow on demand, counting what it judged."""

from __future__ import annotations

import time

from dataflywheel.ops import Filter, OpConfig, register
from dataflywheel.records import response_text


class OddWordsConfig(OpConfig):
    seconds_per_batch: float = 0.0


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
