"""Operator kinds. An operator is a small class with a pydantic ``Config`` and one job.

- Mapper: record -> record (the executor records lineage when the text changes).
- Filter: record -> None (keep) or a reason string (reject).
- Scorer: batch of records -> one float per record, stored as ``scores[score_name]``.
- Selector: the whole dataset -> which records to drop (with reasons) and meta notes for the rest.
- Generator: batch of records -> new records (the inputs pass through; new ones carry lineage).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Iterator

from pydantic import BaseModel, ConfigDict


class OpConfig(BaseModel):
    """Base of every operator config: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


@dataclass
class OpContext:
    """What an operator may use besides its config: the run seed and the models by role."""

    seed: int = 0
    models: Any = None  # dataflywheel.models.ModelRegistry when the recipe names models
    quiet: bool = False


class Operator:
    """Base of all operators; subclasses set ``name``, ``kind`` and ``Config``."""

    name: ClassVar[str]
    kind: ClassVar[str]
    Config: ClassVar[type[OpConfig]] = OpConfig

    def __init__(self, config: OpConfig | None = None, context: OpContext | None = None):
        self.config = config if config is not None else self.Config()
        self.context = context or OpContext()
        self.counters: Counter = Counter()  # warnings worth reporting (e.g. unparsable answers); in the manifest

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


class Mapper(Operator):
    kind = "mapper"

    def map(self, record: dict) -> dict:
        raise NotImplementedError

    def map_batch(self, records: list[dict]) -> list[dict]:
        return [self.map(r) for r in records]


class Filter(Operator):
    kind = "filter"

    def reject_reason(self, record: dict) -> str | None:
        """None keeps the record; a string rejects it with that reason."""
        raise NotImplementedError

    def reject_reasons(self, records: list[dict]) -> list[str | None]:
        return [self.reject_reason(r) for r in records]


class Scorer(Operator):
    kind = "scorer"

    @property
    def score_name(self) -> str:
        return getattr(self.config, "score_name", None) or self.name.split(".", 1)[-1]

    def score_batch(self, records: list[dict]) -> list[float] | list[dict[str, float]]:
        """One score per record, or a dict of named scores per record."""
        raise NotImplementedError


@dataclass
class Selection:
    """A selector's decision by record position: drops with reasons, meta notes and scores for any record."""

    rejected: dict[int, str] = field(default_factory=dict)
    meta: dict[int, dict] = field(default_factory=dict)
    scores: dict[int, dict[str, float]] = field(default_factory=dict)


class Selector(Operator):
    kind = "selector"

    def select(self, scan: Callable[[], Iterator[list[dict]]]) -> Selection:
        """Decide over the whole dataset; ``scan()`` streams it in batches and may be called again."""
        raise NotImplementedError


class Generator(Operator):
    kind = "generator"

    def generate(self, records: list[dict]) -> Iterable[dict]:
        """New records made from this batch; each carries lineage naming its parents."""
        raise NotImplementedError


KINDS = {"mapper": Mapper, "filter": Filter, "scorer": Scorer, "selector": Selector, "generator": Generator}
