"""Semantic dedup (SemDeDup) on sentence embeddings."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from dataflywheel.algorithms.semdedup import semdedup
from dataflywheel.ops.base import OpConfig, Selection, Selector
from dataflywheel.ops.registry import register
from dataflywheel.ops.select.embedding_scan import map_2d
from dataflywheel.records import text_of


class SemanticDedupConfig(OpConfig):
    field: Literal["instruction", "response", "conversation"] = "conversation"
    embedder: str = "embedder"
    """Model role of the embedder (default: the bundled all-MiniLM-L6-v2)."""
    eps: float = Field(default=0.05, gt=0.0, lt=1.0)
    """Drop when cosine similarity to a kept record exceeds 1 - eps (0.05-0.1 in the paper)."""
    n_clusters: int | None = None
    """k-means clusters; default: one per 200 records."""
    keep: str = "farthest"
    """Which record of a duplicate group stays: 'farthest' from the centroid (paper), 'first', or a score name."""


@register
class SemanticDedup(Selector):
    """Remove semantic near-duplicates: k-means on embeddings, cosine > 1 - eps inside a cluster (SemDeDup)."""

    name = "select.semantic_dedup"
    Config = SemanticDedupConfig

    def select(self, scan) -> Selection:
        cfg = self.config
        embedder = self.context.models.embedder(cfg.embedder)
        blocks, ids, rank = [], [], []
        for batch in scan():
            blocks.append(embedder.embed([text_of(r, cfg.field) for r in batch]))
            ids.extend(r["id"] for r in batch)
            if cfg.keep not in ("farthest", "first"):
                rank.extend(float(r.get("scores", {}).get(cfg.keep, float("-inf"))) for r in batch)
        if not ids:
            return Selection()
        embeddings = np.concatenate(blocks).astype(np.float32)
        priority = None
        if cfg.keep == "first":
            priority = -np.arange(len(ids), dtype=float)
        elif rank:
            priority = np.asarray(rank)
        found = semdedup(embeddings, cfg.eps, cfg.n_clusters, self.context.seed, priority)
        selection = Selection(meta=map_2d(embeddings))
        for position in np.flatnonzero(found.duplicate_of >= 0):
            kept = ids[found.duplicate_of[position]]
            selection.rejected[int(position)] = (f"semantic duplicate of {kept} (cosine "
                                                 f"{found.similarity[position]:.3f} > {1 - cfg.eps:.3f})")
            selection.meta[int(position)] = {**selection.meta.get(int(position), {}), "duplicate_of": kept}
        return selection
