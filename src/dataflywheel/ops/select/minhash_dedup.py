"""MinHash-LSH near-duplicate removal."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from dataflywheel.algorithms.minhash import batch_shingles, cluster, exact_jaccard, optimal_bands, signatures
from dataflywheel.ops.base import OpConfig, Selection, Selector
from dataflywheel.ops.registry import register
from dataflywheel.ops.select.score_check import check_scores
from dataflywheel.records import TextField, text_of


class MinHashConfig(OpConfig):
    field: TextField = "conversation"
    """Which text is compared."""
    unit: Literal["word", "char"] = "word"
    ngram: int = Field(default=5, ge=1)
    """Shingle size in words (or characters)."""
    num_perm: int = Field(default=128, ge=8, le=1024)
    threshold: float = Field(default=0.7, gt=0.0, lt=1.0)
    """Jaccard similarity at or above which two records are duplicates."""
    fn_weight: float = Field(default=0.75, gt=0.0, lt=1.0)
    """Weight of missed duplicates (vs false candidates, 1 - fn_weight) when choosing bands and rows.
    Candidates are verified, so a miss costs more than an extra candidate (datasketch weighs both 0.5)."""
    verify: Literal["signature", "exact", "none"] = "signature"
    """Check LSH candidates: by the signature estimate, by exact shingle Jaccard, or not at all."""
    keep: str = "first"
    """Which record of a cluster stays: 'first', or the name of a score (the highest stays)."""
    seed: int = 1
    engine: Literal["auto", "rensa", "numpy"] = "auto"
    """Who computes signatures: rensa (Rust, fastest), numpy, or auto (rensa when installed)."""


@register
class MinHashDedup(Selector):
    """Remove near duplicates with MinHash-LSH (bands/rows minimising FP+FN area); cluster ids go to meta."""

    name = "select.minhash_dedup"
    Config = MinHashConfig

    def reads_scores(self) -> tuple[str, ...]:
        return () if self.config.keep == "first" else (self.config.keep,)

    def select(self, scan) -> Selection:
        from dataflywheel.pipeline.workers import map_ordered

        cfg = self.config
        shingles: list[np.ndarray] = []
        blocks, ids, rank = [], [], []

        def jobs():
            for batch in scan():
                ids.extend(r["id"] for r in batch)
                if cfg.keep != "first":
                    rank.extend(float(r.get("scores", {}).get(cfg.keep, float("-inf"))) for r in batch)
                yield [text_of(r, cfg.field) for r in batch], cfg

        # shingling and signing, batch by batch, in the engine's worker processes when it has them
        for block, distinct in map_ordered(sign_batch, jobs()):
            blocks.append(block)
            shingles.extend(distinct)
        if not ids:
            return Selection()
        if rank:
            check_scores(self, cfg.keep, int(np.isfinite(rank).sum()), len(rank))
        sigs = np.concatenate(blocks)
        bands, rows = optimal_bands(cfg.threshold, cfg.num_perm, 1 - cfg.fn_weight, cfg.fn_weight)
        verify = None
        if cfg.verify == "exact":
            verify = lambda m, h: np.array([exact_jaccard(shingles[i], shingles[j]) for i, j in zip(m, h)])  # noqa: E731
        elif cfg.verify == "none":
            verify = lambda m, h: np.ones(len(m))  # noqa: E731
        found = cluster(sigs, cfg.threshold, bands, rows, verify)
        return self._decide(found, ids, rank)

    def _decide(self, found, ids: list[str], rank: list[float]) -> Selection:
        selection = Selection()
        labels = found.labels
        sizes = np.bincount(labels)
        # the kept record of each cluster: the first, or the highest-scored (ties: the first)
        order = np.arange(len(ids)) if not rank else np.lexsort((np.arange(len(ids)), -np.asarray(rank)))
        clusters, first = np.unique(labels[order], return_index=True)
        keeper = np.full(sizes.shape, -1)
        keeper[clusters] = order[first]
        best_link = np.zeros(len(ids))
        for end in (found.members, found.heads):
            np.maximum.at(best_link, end, found.similarity)
        grouped = np.flatnonzero(sizes[labels] >= 2)
        for position, kept, size, link in zip(grouped.tolist(), keeper[labels[grouped]].tolist(),
                                              sizes[labels[grouped]].tolist(), best_link[grouped].tolist()):
            note = {"minhash_cluster": ids[kept], "minhash_cluster_size": size}
            if position != kept:
                note["duplicate_of"] = ids[kept]
                selection.rejected[position] = (f"near duplicate of {ids[kept]} (MinHash cluster of "
                                                f"{size}, linked at Jaccard {link:.2f})")
            selection.meta[position] = note
        return selection

def sign_batch(job: tuple[list[str], MinHashConfig]) -> tuple[np.ndarray, list[np.ndarray]]:
    """MinHash signatures of one batch of texts, and their distinct shingles when verification is exact."""
    texts, cfg = job
    flat, counts = batch_shingles(texts, cfg.ngram, cfg.unit)
    distinct = ([np.unique(part) for part in np.split(flat, np.cumsum(counts)[:-1])] if cfg.verify == "exact"
                else [])
    return signatures(flat, counts, cfg.num_perm, cfg.seed, cfg.engine), distinct
