"""Filters on a score's value: a fixed range (``select.score_range``) and both tails of perplexity."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from dataflywheel.ops.base import Filter, OpConfig, Selection, Selector
from dataflywheel.ops.registry import register
from dataflywheel.ops.select.embedding_scan import gather
from dataflywheel.ops.select.score_check import MissingScoreError, missing_score_message


def _value(record: dict, name: str) -> float:
    value = record.get("scores", {}).get(name)
    return float(value) if value is not None else float("nan")


class ScoreRangeConfig(OpConfig):
    score: str
    """Name of the score (e.g. ``ifd``, ``judge.alpagasus``)."""
    min: float | None = None
    """Keep records whose score is >= min (or > min when ``inclusive`` is false)."""
    max: float | None = None
    """Keep records whose score is <= max (or < max when ``inclusive`` is false)."""
    inclusive: bool = True
    missing: Literal["reject", "keep"] = "reject"
    """What happens to a record without the score (it is counted either way)."""

    @model_validator(mode="after")
    def _needs_a_bound(self):
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


@register
class ScoreRangeFilter(Filter):
    """Keep records whose score lies in [min, max] (e.g. Alpagasus: judge >= 4.5; Cherry: ifd < 1)."""

    name = "select.score_range"
    Config = ScoreRangeConfig

    def reads_scores(self) -> tuple[str, ...]:
        return (self.config.score,)

    def reject_reasons(self, records: list[dict]) -> list[str | None]:
        cfg = self.config
        values = [_value(r, cfg.score) for r in records]
        present = sum(not math.isnan(v) for v in values)
        if records and not present and not self.counters.get("records with the score"):
            raise MissingScoreError(missing_score_message(self.name, cfg.score))
        self.counters["records with the score"] += present
        return [self._reason(v) for v in values]

    def reject_reason(self, record: dict) -> str | None:
        return self.reject_reasons([record])[0]

    def _reason(self, value: float) -> str | None:
        cfg = self.config
        if math.isnan(value):
            self.counters[f"records without score {cfg.score!r}"] += 1
            return f"no score {cfg.score!r}" if cfg.missing == "reject" else None
        if cfg.min is not None and (value < cfg.min or (not cfg.inclusive and value == cfg.min)):
            return f"{cfg.score} {value:.4g} {'<' if cfg.inclusive else '<='} {cfg.min}"
        if cfg.max is not None and (value > cfg.max or (not cfg.inclusive and value == cfg.max)):
            return f"{cfg.score} {value:.4g} {'>' if cfg.inclusive else '>='} {cfg.max}"
        return None


class PerplexityTailsConfig(OpConfig):
    score: str = "perplexity"
    """Score to cut (``score.perplexity`` writes ``perplexity``; ``ifd.answer_loss`` works too)."""
    low: float = Field(default=0.05, ge=0.0, lt=0.5)
    """Share of records dropped at the low end (trivial or repetitive answers)."""
    high: float = Field(default=0.05, ge=0.0, lt=0.5)
    """Share of records dropped at the high end (noise, garbled or misaligned answers)."""


@register
class PerplexityTails(Selector):
    """Drop both tails of answer perplexity: the lowest (trivial) and highest (noisy) shares of records."""

    name = "select.perplexity_filter"
    Config = PerplexityTailsConfig

    def reads_scores(self) -> tuple[str, ...]:
        return (self.config.score,)

    def select(self, scan) -> Selection:
        cfg = self.config
        found = gather(scan, score_names=(cfg.score,), op=self)
        values = found.scores[cfg.score]
        scored = np.flatnonzero(~np.isnan(values))
        if not len(scored):
            return Selection()
        lo, hi = np.quantile(values[scored], [cfg.low, 1 - cfg.high])
        selection = Selection()
        for i in scored:
            if cfg.low and values[i] < lo:
                selection.rejected[int(i)] = f"{cfg.score} {values[i]:.4g} in the lowest {cfg.low:g} (< {lo:.4g})"
            elif cfg.high and values[i] > hi:
                selection.rejected[int(i)] = f"{cfg.score} {values[i]:.4g} in the highest {cfg.high:g} (> {hi:.4g})"
        return selection
