"""Operators for the Ray engine tests."""

from __future__ import annotations

from dataflywheel.errors import FatalError
from dataflywheel.ops import Filter, OpConfig, Scorer, register


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


class WordsConfig(OpConfig):
    score_name: str = "words"


@register
class Words(Scorer):
    """A model-free scorer: the response's word count, and a flag on some records (as IFD > 1 is flagged)."""

    name = "test.words"
    Config = WordsConfig
    produces = ("words", "words.above_1")

    def score_batch(self, records):
        out = []
        for record in records:
            words = len(record["messages"][-1]["content"].split())
            out.append({"words": float(words), "words.above_1": float(words % 7 == 0)})
        return out


class FlakyConfig(OpConfig):
    fail_every: int = 3
    """Raise (a plain error: a bug or a bad record, not a dead server) on every record whose word count is a
    multiple of this; 1: on every record."""


@register
class Flaky(Filter):
    """Rejects short answers and fails on some records: errors become rejects, counted as errors."""

    name = "test.flaky"
    Config = FlakyConfig

    def reject_reason(self, record):
        words = len(record["messages"][-1]["content"].split())
        if words % self.config.fail_every == 0:
            raise ValueError(f"cannot judge {words} words")
        return "short" if words < 20 else None
