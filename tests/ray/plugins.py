"""Operators for the Ray engine tests."""

from __future__ import annotations

from dataflywheel.errors import FatalError
from dataflywheel.ops import Filter, OpConfig, register


class ServerGone(FatalError):
    """What a backend raises when its server is down: no record is at fault."""


class FailAtConfig(OpConfig):
    after: int = 0
    """Raise a FatalError once this many records were judged in the worker."""


@register
class FailAt(Filter):
    """Keeps everything, then fails fatally (as a dead model server would)."""

    name = "test.fail_at"
    Config = FailAtConfig

    def reject_reasons(self, records):
        self.counters["judged"] += len(records)
        if self.counters["judged"] > self.config.after:
            raise ServerGone("the model server is gone")
        return [None] * len(records)
