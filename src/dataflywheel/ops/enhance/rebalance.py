"""Rebalance: tag records by a field, by an LLM's choice among labels, or by embedding cluster, then down-sample
the groups above their target and up-sample the ones below it, to a uniform, capped or given distribution.

Down-sampling keeps the best records by a score within each group (or a seeded random sample); the others go
to rejected/ with the reason. Up-sampling cannot copy a record: ids are content hashes, so a copy would be the
same record twice. It sets ``meta.repeat`` instead (how many times the record counts: 2 = once more), the
records repeated first being the best by the score; ``flywheel train`` counts each record that many times, so
training sees the target distribution. Every kept record gets ``meta.rebalance_group``; the distribution before and after (with
repeats) is in the step's manifest entry."""

from __future__ import annotations

import math
import random
import string
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from dataflywheel.algorithms.semdedup import kmeans_labels
from dataflywheel.models.token_mass import MIN_MASS, label_mass, trusted
from dataflywheel.ops.base import OpConfig, Selection, Selector
from dataflywheel.ops.registry import register
from dataflywheel.ops.select.embedding_scan import gather
from dataflywheel.ops.score.ifd import truncate
from dataflywheel.prompts import render_file
from dataflywheel.records import TextField, text_of

MISSING = "(none)"
"""The group of records that lack the tag field (or that the LLM tagger could not place)."""
TAG_PROMPT = Path(__file__).with_name("prompts") / "rebalance_tag.txt"


class RebalanceConfig(OpConfig):
    by: Literal["field", "llm", "cluster"] = "field"
    """field: the value at ``field``; llm: the model's choice among ``labels`` for ``text``; cluster: k-means on
    the embedder's vectors of ``text``."""
    field: str = "meta.dataset"
    """Dotted path to the tag when ``by: field`` (``meta.category``, ``meta.source.name``); records without it
    form the group ``(none)``."""
    clusters: int = Field(default=8, ge=2)
    """Number of k-means clusters when ``by: cluster``."""
    labels: list[str] = Field(default_factory=list)
    """The categories the LLM tagger chooses from when ``by: llm`` (at most 26)."""
    model: str = "judge"
    """Model role of the LLM tagger (its choice is read from the next-token probabilities of the letters)."""
    min_mass: float = Field(default=MIN_MASS, ge=0.0, le=1.0)
    """The tagger's letters must hold at least this much of the probability; else the record's group is (none)."""
    text: TextField = "instruction"
    """Which text is tagged or embedded when ``by: llm`` or ``by: cluster``."""
    embedder: str = "embedder"
    """Embedder role when ``by: cluster``."""
    target: Literal["uniform", "capped", "proportions"] = "uniform"
    """uniform: every group the same size; capped: groups above ``cap`` cut to it (and groups below ``floor``
    raised to it); proportions: the shares in ``proportions``."""
    size: int | None = Field(default=None, ge=1)
    """Total records wanted (repeats counted) for uniform and proportions; default: as many as there are now
    (without ``upsample``: uniform keeps the smallest group's size in every group)."""
    cap: int | None = Field(default=None, ge=1)
    """capped: the most records a group keeps."""
    floor: int | None = Field(default=None, ge=1)
    """capped: the fewest a group counts (its records repeated, with ``upsample``)."""
    proportions: dict[str, float] = Field(default_factory=dict)
    """Group -> share (normalised to sum 1); a group not named gets none and is dropped."""
    upsample: bool = True
    """Raise groups below their target by repeating their records (``meta.repeat``); false: down-sample only."""
    max_repeat: int = Field(default=10, ge=1)
    """No record counts more than this many times (a group too small stays below its target; counted)."""
    score: str | None = None
    """Within a group, keep (and repeat) the best records by this score; default: a random sample (run seed)."""

    @model_validator(mode="after")
    def _target_settings(self):
        if self.by == "llm" and not 2 <= len(self.labels) <= 26:
            raise ValueError("by llm needs labels: [two to 26 category names]")
        if self.target == "capped" and self.cap is None and self.floor is None:
            raise ValueError("target capped needs cap (and/or floor)")
        if self.target == "proportions":
            if not self.proportions:
                raise ValueError("target proportions needs proportions: {group: share, ...}")
            if any(v < 0 for v in self.proportions.values()) or sum(self.proportions.values()) <= 0:
                raise ValueError("proportions must be non-negative with a positive sum")
        return self


def _letter(token: str, letters: str) -> str | None:
    """The option letter a token reads as ('B', ' B', 'b.', 'B)'), or None."""
    text = token.strip().rstrip(".)").upper()
    return text if len(text) == 1 and text in letters else None


def tag_of(record: dict, path: str) -> str:
    """The value at a dotted path of the record, as text; MISSING when absent or empty."""
    value = record
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return MISSING if value is None or value == "" else str(value)


def largest_remainder(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to ``total`` in the given shares (Hamilton's method)."""
    weight = sum(shares.values())
    exact = {g: total * s / weight for g, s in shares.items()}
    counts = {g: math.floor(v) for g, v in exact.items()}
    for g in sorted(exact, key=lambda g: (counts[g] - exact[g], g))[: total - sum(counts.values())]:
        counts[g] += 1
    return counts


def targets(sizes: dict[str, int], cfg: RebalanceConfig) -> dict[str, int]:
    """Wanted count per group (repeats included)."""
    n = sum(sizes.values())
    if cfg.target == "capped":
        low = cfg.floor if cfg.floor is not None and cfg.upsample else 0
        return {g: max(min(c, cfg.cap if cfg.cap is not None else c), low) for g, c in sizes.items()}
    if cfg.target == "proportions":
        named = largest_remainder(cfg.size or n, {g: cfg.proportions.get(g, 0.0) for g in {*sizes, *cfg.proportions}})
        return {g: named[g] for g in sizes}
    if cfg.size is None and not cfg.upsample:
        return {g: min(sizes.values()) for g in sizes}
    return largest_remainder(cfg.size or n, {g: 1.0 for g in sizes})


def repeats(order: list[int], want: int, max_repeat: int) -> dict[int, int]:
    """How many times each record of a group counts so that the group reaches ``want`` (the first of ``order``
    first); records past a down-sampled group's ``want`` count 0."""
    n = len(order)
    if want <= n:
        return {i: int(rank < want) for rank, i in enumerate(order)}
    each, extra = divmod(min(want, n * max_repeat), n)
    return {i: each + (rank < extra) for rank, i in enumerate(order)}


@register
class Rebalance(Selector):
    """Rebalance groups (a field's value or embedding clusters) to a uniform, capped or given distribution.

    Down-samples with the best by a score (or at random) kept; up-samples by ``meta.repeat`` weights (a copy
    would share its original's content id). The distribution before and after is in the manifest."""

    name = "enhance.rebalance"
    Config = RebalanceConfig

    def reads_scores(self) -> tuple[str, ...]:
        return (self.config.score,) if self.config.score else ()

    def _groups(self, scan) -> tuple[list[str], np.ndarray]:
        cfg = self.config
        if cfg.by == "llm":
            groups = [g for batch in scan() for g in self._llm_tags(batch)]
            found = gather(scan, score_names=(cfg.score,), op=self) if cfg.score else None
        elif cfg.by == "cluster":
            found = gather(scan, embedder=self.context.models.embedder(cfg.embedder), field=cfg.text,
                           score_names=(cfg.score,) if cfg.score else (), op=self)
            labels, _ = kmeans_labels(found.embeddings, cfg.clusters, self.context.seed)
            groups = [f"cluster {int(label)}" for label in labels]
        else:
            groups = [tag_of(r, cfg.field) for batch in scan() for r in batch]
            found = gather(scan, score_names=(cfg.score,), op=self) if cfg.score else None
        score = found.scores[cfg.score] if cfg.score else np.full(len(groups), np.nan)
        return groups, score

    def _llm_tags(self, records: list[dict]) -> list[str]:
        """The label whose letter holds the most next-token probability, per record (MISSING when the letters
        hold less than ``min_mass``)."""
        cfg = self.config
        llm = self.context.models.llm(cfg.model)
        letters = string.ascii_uppercase[:len(cfg.labels)]
        options = "\n".join(f"{letter}. {label}" for letter, label in zip(letters, cfg.labels))
        prompts = [[{"role": "user", "content": render_file(TAG_PROMPT, options=options, text=truncate(
            llm, text_of(r, cfg.text).replace("###", ""), 512))}] for r in records]
        tags = []
        for top in llm.chat_top_logprobs(prompts, 20, tuple(letters)):
            mass = label_mass(top, lambda token: _letter(token, letters))
            if trusted(mass, cfg.min_mass):
                tags.append(cfg.labels[letters.index(max(mass, key=mass.get))])
            else:
                self.counters["records the LLM tagger could not place (group (none))"] += 1
                tags.append(MISSING)
        return tags

    def select(self, scan) -> Selection:
        cfg = self.config
        groups, score = self._groups(scan)
        members: dict[str, list[int]] = {}
        for i, group in enumerate(groups):
            members.setdefault(group, []).append(i)
        sizes = {g: len(m) for g, m in members.items()}
        wanted = targets(sizes, cfg)
        rng = random.Random(self.context.seed)
        selection = Selection()
        after: Counter = Counter()
        for group, positions in sorted(members.items()):
            if cfg.score:  # best first; records without the score last
                order = sorted(positions, key=lambda i: (math.isnan(score[i]), -score[i] if not math.isnan(score[i])
                                                         else 0.0, i))
            else:
                order = rng.sample(positions, len(positions))
            counts = repeats(order, wanted[group], cfg.max_repeat)
            how = f"best by {cfg.score}" if cfg.score else f"random sample, seed {self.context.seed}"
            for rank, i in enumerate(order):
                k = counts[i]
                after[group] += k
                if k == 0:
                    selection.rejected[i] = (f"rebalanced: group {group!r} cut from {sizes[group]} to "
                                             f"{wanted[group]} ({how}; this record ranked {rank + 1})")
                else:
                    selection.meta[i] = {"rebalance_group": group, **({"repeat": k} if k > 1 else {})}
            if after[group] < wanted[group]:
                self.counters[f"group {group!r} below its target {wanted[group]} (max_repeat "
                              f"{cfg.max_repeat})"] += 1
        for group in sorted(members):
            self.counters[f"records in group {group!r} before rebalancing"] = sizes[group]
            self.counters[f"records in group {group!r} after rebalancing (repeats counted)"] = after[group]
        return selection
