"""Operator kinds. An operator is a small class with a pydantic ``Config`` and one job.

- Mapper: record -> record (the executor records lineage when the text changes); a mapper may also return
  a ``Candidate`` (the new record plus details for its lineage entry) or a ``Rejected`` (drop the record,
  with the reason).
- Filter: record -> None (keep) or a reason string (reject).
- Scorer: batch of records -> one float per record, stored as ``scores[score_name]``.
- Selector: the whole dataset -> which records to drop (with reasons) and meta notes for the rest.
- Generator: new records, in three shapes: per batch (``Generator``), over the whole pool in rounds
  (``PoolGenerator``), and sources that need no input (``SourceGenerator``). The executor validates every
  candidate, gives it its id and lineage, and keeps every rejected candidate with its reason.

Operators hold their config and model *roles*, never live models or connections: live state is opened
lazily (in attributes whose names start with ``_``, dropped on pickling) or in ``setup()``, so an
operator pickles to any worker process.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.records import TextField


class OpConfig(BaseModel):
    """Base of every operator config: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


@dataclass
class OpContext:
    """What an operator may use besides its config: the run seed and the models by role (without a
    registry, the bundled defaults with no call cache)."""

    seed: int = 0
    models: Any = None  # dataflywheel.models.ModelRegistry
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.models is None:
            from dataflywheel.models.registry import ModelRegistry

            self.models = ModelRegistry({}, None, self.quiet)


class Operator:
    """Base of all operators; subclasses set ``name``, ``kind`` and ``Config``.

    ``model_role_fields`` names the config fields that hold model roles (by default: fields called ``model``,
    ``embedder`` or ``*_model``): an operator with any uses models (an engine gives it a long-lived
    worker), and the records it makes or changes name the roles in their lineage."""

    name: ClassVar[str]
    kind: ClassVar[str]
    Config: ClassVar[type[OpConfig]] = OpConfig
    model_role_fields: ClassVar[tuple[str, ...]] = ()
    cpu_bound: ClassVar[bool] = False
    """Batches may run in worker processes (an engine's process pool): the operator computes on the CPU,
    uses no models, and keeps no state from one batch to the next besides ``counters``."""

    def __init__(self, config: OpConfig | None = None, context: OpContext | None = None):
        self.config = config if config is not None else self.Config()
        self.context = context or OpContext()
        self.counters: Counter = Counter()  # warnings worth reporting (e.g. unparsable answers); in the manifest

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def role_fields(cls) -> tuple[str, ...]:
        if cls.model_role_fields:
            return cls.model_role_fields
        return tuple(f for f in cls.Config.model_fields if f in ("model", "embedder") or f.endswith("_model"))

    @property
    def model_roles(self) -> dict[str, str]:
        """Config field -> model role, for the fields that hold roles."""
        return {f: getattr(self.config, f) for f in self.role_fields() if getattr(self.config, f, None)}

    @classmethod
    def uses_models(cls) -> bool:
        """Whether the operator calls models (engines give such operators long-lived workers)."""
        return bool(cls.role_fields())

    def reads_scores(self) -> tuple[str, ...]:
        """Names of the scores this step ranks or filters by (a recipe is checked for them before any work)."""
        return ()

    def writes_scores(self) -> tuple[str, ...] | None:
        """Names of the scores this step adds to records; None when it cannot say (a recipe's score check
        then trusts any name read after it). Filters and selectors add none unless they say so."""
        return None if self.kind in ("mapper", "generator") else tuple(getattr(self, "produces", ()))

    def setup(self) -> None:
        """Open what the operator needs in this process (called once before the first batch)."""

    def teardown(self) -> None:
        """Release what ``setup`` or lazy loading opened (called after the step, also on failure)."""
        for key in [k for k in vars(self) if k.startswith("_")]:
            delattr(self, key)

    def __getstate__(self) -> dict:
        """Config, context and counters travel; live state (``_`` attributes) is rebuilt in the worker."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


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

    def writes_scores(self) -> tuple[str, ...]:
        """``score_name``, and ``produces`` (written for the default name) renamed after it."""
        default = next(iter(getattr(self, "produces", ())), self.score_name)
        extra = [n.replace(default, self.score_name, 1) for n in getattr(self, "produces", ()) if n != default]
        return (self.score_name, *extra)

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


# ---- generators -------------------------------------------------------------------------------


@dataclass
class Candidate:
    """A proposed record: its fields (``messages``, optional ``chosen``/``rejected``, ``meta``), the ids
    it was made from, and method details for its lineage entry (e.g. the evolution applied)."""

    record: dict
    parents: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)


@dataclass
class Rejected:
    """A proposal that failed before it became a record (unparsable answer, rule violated): kept with
    the reason and the raw text, never dropped."""

    reason: str
    raw: str = ""
    record: dict | None = None
    parents: list[str] = field(default_factory=list)


class GeneratorConfig(OpConfig):
    keep_inputs: bool = True
    """Pass the step's input records through to its output; false sends them to ``rejected/`` with the
    reason 'replaced by generated records', so only what the step made flows on."""


class Generator(Operator):
    """Per batch: new records made from each batch of input records."""

    kind = "generator"
    shape: ClassVar[str] = "batch"
    Config = GeneratorConfig

    def generate(self, records: list[dict]) -> Iterable[dict | Candidate | Rejected]:
        """Candidates made from this batch (name their parents in ``Candidate.parents``)."""
        raise NotImplementedError


class NoveltyConfig(OpConfig):
    """Fields of a generator whose outputs are screened against what it already has (``pipeline/novelty.py``):
    every pool generator; a per-batch generator whose config includes these (screened against what the step
    generated so far)."""

    near_duplicate: float | None = Field(default=0.7, gt=0.0, lt=1.0)
    """Reject a candidate whose MinHash Jaccard estimate (5-word shingles of ``dedup_text``) with a pool record,
    an accepted record or an earlier candidate reaches this; null: exact copies only (exact copies are always
    rejected)."""
    dedup_text: TextField = "instruction"
    """Which text of a record is compared for near duplicates."""


class PoolGeneratorConfig(NoveltyConfig, GeneratorConfig):
    target: int = Field(default=100, ge=1)
    """Stop once this many records are accepted."""
    max_rounds: int = Field(default=10, ge=1)
    """Stop after this many rounds of proposals, even below the target."""
    min_acceptance: float = Field(default=0.0, ge=0.0, le=1.0)
    """Stop when a round accepts less than this share of its proposals (after the first round)."""


@dataclass
class PoolView:
    """What a pool generator sees in a round: the input pool and everything accepted so far."""

    scan: Callable[[], Iterator[list[dict]]]
    accepted: list[dict]
    round: int
    target: int

    @property
    def wanted(self) -> int:
        """How many more records the step still wants."""
        return max(0, self.target - len(self.accepted))


class PoolGenerator(Operator):
    """Over the whole pool, in rounds: propose -> verify (against the pool and all accepted) -> accept."""

    kind = "generator"
    shape: ClassVar[str] = "pool"
    Config = PoolGeneratorConfig

    def propose(self, view: PoolView) -> Iterable[dict | Candidate | Rejected]:
        """This round's candidates."""
        raise NotImplementedError

    def verify(self, candidates: list[dict], view: PoolView) -> list[str | None]:
        """A reject reason per candidate (None accepts it), checked against ``view`` and against the earlier
        candidates of this round. Candidates are complete records with ids and lineage."""
        return [None] * len(candidates)


class SourceGenerator(PoolGenerator):
    """A pool generator that needs no input: a recipe may start with it and omit ``input``."""

    shape = "source"


KINDS = {"mapper": Mapper, "filter": Filter, "scorer": Scorer, "selector": Selector, "generator": Generator}
