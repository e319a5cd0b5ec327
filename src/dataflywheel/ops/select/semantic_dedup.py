"""Semantic dedup (SemDeDup) on sentence embeddings."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from dataflywheel.algorithms.semdedup import eps_for_retention, semdedup
from dataflywheel.ops.base import OpConfig, Selection, Selector
from dataflywheel.ops.registry import register
from dataflywheel.ops.select.embedding_scan import gather, map_2d
from dataflywheel.records import TextField


class SemanticDedupConfig(OpConfig):
    field: TextField = "conversation"
    embedder: str = "embedder"
    """Model role of the embedder (default: the bundled all-MiniLM-L6-v2)."""
    eps: float = Field(default=0.05, gt=0.0, lt=1.0)
    """Drop when cosine similarity to a kept record exceeds 1 - eps (0.05-0.1 in the paper)."""
    n_clusters: int | None = None
    """k-means clusters; default: one per 200 records."""
    keep: str = "farthest"
    """Which record of a duplicate group stays: 'farthest' from the centroid (paper), 'first', or a score name."""
    compare_with: Literal["all", "kept"] = "all"
    """'all' (the paper): a record is a duplicate when it is too similar to any earlier record of its cluster,
    dropped or not; 'kept': only to records kept so far (chains of near-duplicates then keep every other one)."""
    target_retention: float | None = Field(default=None, gt=0.0, le=1.0)
    """Choose eps so that about this share of the records is kept (the paper's eps sweep); overrides eps.
    Needs compare_with 'all', where each record's fate depends on eps alone."""


@register
class SemanticDedup(Selector):
    """Remove semantic near-duplicates: k-means on embeddings, cosine > 1 - eps inside a cluster (SemDeDup)."""

    name = "select.semantic_dedup"
    Config = SemanticDedupConfig

    def reads_scores(self) -> tuple[str, ...]:
        return () if self.config.keep in ("farthest", "first") else (self.config.keep,)

    def select(self, scan) -> Selection:
        cfg = self.config
        by_score = cfg.keep not in ("farthest", "first")
        if cfg.target_retention is not None and cfg.compare_with != "all":
            raise ValueError("select.semantic_dedup: target_retention needs compare_with: all")
        if by_score:  # fail before embedding when the score is not there
            gather(scan, score_names=(cfg.keep,), op=self)
        found = gather(scan, embedder=self.context.models.embedder(cfg.embedder), field=cfg.field,
                       score_names=(cfg.keep,) if by_score else ())
        ids, embeddings = found.ids, found.embeddings
        if not ids:
            return Selection()
        priority = None
        if cfg.keep == "first":
            priority = -np.arange(len(ids), dtype=float)
        elif by_score:
            priority = np.nan_to_num(found.scores[cfg.keep], nan=-np.inf)  # unscored records are visited last
        found = semdedup(embeddings, cfg.eps, cfg.n_clusters, self.context.seed, priority, cfg.compare_with)
        eps = cfg.eps
        if cfg.target_retention is not None:
            eps = eps_for_retention(found.max_similarity, found.nearest, cfg.target_retention)
            found = semdedup(embeddings, eps, cfg.n_clusters, self.context.seed, priority, cfg.compare_with)
            self.counters[f"eps chosen for retention {cfg.target_retention:g}: {eps:.4f}"] += 1
        return duplicates_selection(ids, found.duplicate_of, found.similarity, eps, map_2d(embeddings))


def duplicates_selection(ids: list[str], duplicate_of: np.ndarray, similarity: np.ndarray, eps: float,
                         meta: dict[int, dict]) -> Selection:
    """The selection SemDeDup's decisions make (any engine): each duplicate rejected naming the record it
    duplicates, with ``meta`` (map points) kept for every record."""
    selection = Selection(meta=meta)
    for position in np.flatnonzero(duplicate_of >= 0):
        kept = ids[duplicate_of[position]]
        selection.rejected[int(position)] = (f"semantic duplicate of {kept} (cosine "
                                             f"{similarity[position]:.3f} > {1 - eps:.3f})")
        selection.meta[int(position)] = {**selection.meta.get(int(position), {}), "duplicate_of": kept}
    return selection
