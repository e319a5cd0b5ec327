"""Coreset condensation: k-medoids representatives of the embedding clusters, each carrying its cluster's size."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from dataflywheel.algorithms.subset import budget_size
from dataflywheel.ops.base import OpConfig, Selection, Selector
from dataflywheel.ops.distill.kmedoids import k_medoids
from dataflywheel.ops.registry import register
from dataflywheel.ops.select.embedding_scan import gather
from dataflywheel.records import TextField


class CoresetConfig(OpConfig):
    count: int | None = Field(default=None, ge=1)
    """Keep this many representatives (k)."""
    fraction: float | None = Field(default=0.1, gt=0.0, le=1.0)
    """Keep this share of the records (used when count is not set)."""
    field: TextField = "conversation"
    embedder: str = "embedder"
    max_iter: int = Field(default=30, ge=1)
    """Rounds of the alternating k-medoids update (it usually settles in fewer)."""


@register
class Coreset(Selector):
    """Coreset: k-medoids of the embeddings; medoids kept with weight = cluster size in meta.coreset."""

    name = "distill.coreset"
    Config = CoresetConfig

    def select(self, scan) -> Selection:
        cfg = self.config
        found = gather(scan, embedder=self.context.models.embedder(cfg.embedder), field=cfg.field)
        n = len(found.ids)
        if n == 0:
            return Selection()
        medoids, labels = k_medoids(found.embeddings, budget_size(n, cfg.count, cfg.fraction), self.context.seed,
                                    cfg.max_iter)
        sizes = np.bincount(labels, minlength=len(medoids))
        selection = Selection()
        for c, m in enumerate(medoids):
            selection.meta[int(m)] = {"coreset": {"weight": int(sizes[c]), "cluster": c}}
        for i in range(n):
            c = int(labels[i])
            if int(medoids[c]) != i:
                selection.rejected[i] = (f"represented by coreset medoid {found.ids[medoids[c]]} "
                                         f"(cluster {c} of {int(sizes[c])} records)")
        return selection
