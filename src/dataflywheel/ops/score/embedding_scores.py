"""Embedding-space scores: k-NN kernel density and distance to the centroid."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from dataflywheel.algorithms.subset import knn_density
from dataflywheel.ops.base import OpConfig, Selection, Selector
from dataflywheel.ops.registry import register
from dataflywheel.ops.select.embedding_scan import gather, map_2d
from dataflywheel.records import TextField


class EmbeddingScoresConfig(OpConfig):
    field: TextField = "conversation"
    embedder: str = "embedder"
    k: int = Field(default=10, ge=1)
    bandwidth: float | None = Field(default=None, gt=0.0)
    """Gaussian kernel width in cosine distance; null: the median distance to the k nearest neighbours."""


@register
class EmbeddingScores(Selector):
    """Score every record by k-NN kernel density and cosine distance to the dataset centroid (drops nothing)."""

    name = "score.embedding"
    Config = EmbeddingScoresConfig
    produces = ("density", "centroid_distance")

    def select(self, scan) -> Selection:
        cfg = self.config
        found = gather(scan, embedder=self.context.models.embedder(cfg.embedder), field=cfg.field)
        if not found.ids:
            return Selection()
        density = knn_density(found.embeddings, cfg.k, cfg.bandwidth)
        centre = found.embeddings.mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        distance = 1.0 - found.embeddings @ centre
        return Selection(scores={i: {"density": float(density[i]), "centroid_distance": float(distance[i])}
                                 for i in range(len(found.ids))}, meta=map_2d(found.embeddings))
