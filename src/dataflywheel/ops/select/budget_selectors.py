"""Budgeted subset selectors: top-k on scores, DEITA, k-center greedy, cluster-balanced, density sampling."""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from dataflywheel.algorithms.semdedup import kmeans_labels
from dataflywheel.algorithms.subset import (budget_size, cluster_balanced, cluster_proportional, deita_select,
                                            facility_location, inverse_propensity_sample, k_center_greedy, knn_density,
                                            rank_order, weighted_zscores)
from dataflywheel.ops.base import OpConfig, Selection, Selector
from dataflywheel.ops.registry import register
from dataflywheel.ops.select.embedding_scan import Gathered, excluded_by_flags, gather, keep_only, map_2d
from dataflywheel.records import TextField


class BudgetConfig(OpConfig):
    count: int | None = Field(default=None, ge=0)
    """Keep exactly this many records."""
    fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    """Keep this share of the records (used when count is not set)."""


class TopKConfig(BudgetConfig):
    scores: dict[str, float] = Field(default_factory=dict)
    """Score name -> weight. One score is used as is; several are z-scored, then summed with the weights."""
    threshold: float | None = None
    """Keep records whose (combined) score is >= threshold, instead of (or within) a count/fraction."""
    exclude_flagged: bool = True
    """Never pick a record whose ranked score carries a ``<score>.above_1`` flag (IFD > 1: the instruction
    does not help; Cherry LLM drops these before ranking)."""

    @model_validator(mode="after")
    def _needs_scores(self):
        if not self.scores:
            raise ValueError("name at least one score, e.g. scores: {ifd: 1.0}")
        return self


@register
class TopK(Selector):
    """Keep the top records by one score or a weighted combination (count, fraction and/or threshold)."""

    name = "select.top_k"
    Config = TopKConfig

    def reads_scores(self) -> tuple[str, ...]:
        return tuple(self.config.scores)

    def flag_names(self) -> tuple[str, ...]:
        """The flags whose records are never picked (IFD > 1 of a score ranked upward)."""
        cfg = self.config
        return tuple(f"{s}.above_1" for s, w in cfg.scores.items() if w > 0) if cfg.exclude_flagged else ()

    def select(self, scan) -> Selection:
        return self.choose(gather(scan, score_names=tuple(self.config.scores), op=self, flag_names=self.flag_names()))

    def choose(self, found: Gathered) -> Selection:
        """The selection from the records' ids, scores and flags (gathered here, or on a cluster)."""
        cfg = self.config
        excluded = excluded_by_flags(found)
        if len(cfg.scores) == 1:
            [(name, weight)] = cfg.scores.items()
            combined = found.scores[name] * np.sign(weight)
        else:
            combined = weighted_zscores(found.scores, cfg.scores)
        n = len(found.ids)
        ranked = rank_order(combined)
        order = ranked[~np.isin(ranked, list(excluded))] if excluded else ranked
        if cfg.threshold is not None:
            order = np.array([i for i in order if combined[i] >= cfg.threshold], dtype=int)
        size = len(order)
        if cfg.count is not None or cfg.fraction is not None:  # a fraction is of all records, not of those passing
            size = min(size, budget_size(n, cfg.count, cfg.fraction))
        chosen = [int(i) for i in order[:size]]
        label = " + ".join(f"{w:g}*{s}" for s, w in cfg.scores.items())
        selection = Selection()
        rank = {int(i): r for r, i in enumerate(ranked)}
        for i in keep_only(n, chosen, ""):
            if i in excluded:
                selection.rejected[i] = f"not selected: {excluded[i]}"
                continue
            value = combined[i]
            why = (f"score {value:.4g} < threshold {cfg.threshold}" if cfg.threshold is not None and not value >= cfg.threshold
                   else f"rank {rank[i] + 1} of {n} by {label}, outside the budget of {len(chosen)}")
            selection.rejected[i] = f"not selected: {why}"
        return selection


class DeitaConfig(BudgetConfig):
    score: str = "deita"
    """Score that orders the records: DEITA's evol score (``score.deita``: complexity x quality, summed
    over turns), or any score."""
    tau: float = Field(default=0.9, gt=0.0, le=1.0)
    """Cosine similarity at or above which a record is too close to one already selected."""
    field: TextField = "conversation"
    embedder: str = "embedder"
    exclude_flagged: bool = True
    """Never pick a record whose score carries a ``<score>.above_1`` flag (IFD > 1)."""


@register
class DeitaSelect(Selector):
    """DEITA: walk records by score, add one only if its nearest selected neighbour is below cosine tau."""

    name = "select.deita"
    Config = DeitaConfig

    def reads_scores(self) -> tuple[str, ...]:
        return (self.config.score,)

    def select(self, scan) -> Selection:
        cfg = self.config
        found = gather(scan, score_names=(cfg.score,), op=self,
                       flag_names=(f"{cfg.score}.above_1",) if cfg.exclude_flagged else ())
        n = len(found.ids)
        if n == 0:
            return Selection()
        excluded = excluded_by_flags(found)
        order = [int(i) for i in rank_order(found.scores[cfg.score]) if int(i) not in excluded]
        # a second pass embeds, once the score is known to be there
        embeddings = gather(scan, embedder=self.context.models.embedder(cfg.embedder), field=cfg.field).embeddings
        budget = budget_size(n, cfg.count, cfg.fraction)
        chosen = deita_select(np.asarray(order, dtype=int), embeddings, budget, cfg.tau)
        rejected = keep_only(n, chosen, f"not selected by DEITA (score {cfg.score}, tau {cfg.tau}, "
                                        f"budget {budget}): lower score or too similar to a kept record")
        rejected.update({i: f"not selected: {why}" for i, why in excluded.items()})
        return Selection(rejected=rejected)


class EmbeddingBudgetConfig(BudgetConfig):
    field: TextField = "conversation"
    embedder: str = "embedder"


class _EmbeddingBudgetSelector(Selector):
    """Embed every record, then keep the positions ``choose`` returns (plus optional meta notes)."""

    reason = "not selected"

    def choose(self, embeddings: np.ndarray, budget: int) -> tuple[list[int], dict[int, dict]]:
        raise NotImplementedError

    def select(self, scan) -> Selection:
        cfg = self.config
        found = gather(scan, embedder=self.context.models.embedder(cfg.embedder), field=cfg.field)
        n = len(found.ids)
        if n == 0:
            return Selection()
        budget = budget_size(n, cfg.count, cfg.fraction)
        chosen, meta = self.choose(found.embeddings, budget)
        positions = map_2d(found.embeddings)
        meta = {i: {**positions.get(i, {}), **meta.get(i, {})} for i in range(n)}
        return Selection(rejected=keep_only(n, chosen, f"{self.reason} (budget {budget})"), meta=meta)


@register
class KCenterSelect(_EmbeddingBudgetSelector):
    """k-center greedy (farthest-point coreset) on embeddings: the subset that covers the data best."""

    name = "select.k_center"
    Config = EmbeddingBudgetConfig
    reason = "not selected by k-center greedy"

    def choose(self, embeddings, budget):
        return k_center_greedy(embeddings, budget, self.context.seed), {}


class ClusterConfig(EmbeddingBudgetConfig):
    n_clusters: int = Field(default=20, ge=1)


@register
class ClusterBalancedSelect(_EmbeddingBudgetSelector):
    """k-means on embeddings, then the same number of records from every cluster (balances topics)."""

    name = "select.cluster_balanced"
    Config = ClusterConfig
    reason = "not selected: cluster quota met"

    def choose(self, embeddings, budget):
        labels, _ = kmeans_labels(embeddings, self.config.n_clusters, self.context.seed)
        chosen = cluster_balanced(labels, budget, self.context.seed)
        return chosen, {i: {"cluster": int(label)} for i, label in enumerate(labels)}


@register
class ClusterProportionalSelect(_EmbeddingBudgetSelector):
    """k-means on embeddings, then a random sample of every cluster in proportion to its size."""

    name = "select.cluster_proportional"
    Config = ClusterConfig
    reason = "not drawn by proportional cluster sampling"

    def choose(self, embeddings, budget):
        labels, _ = kmeans_labels(embeddings, self.config.n_clusters, self.context.seed)
        chosen = cluster_proportional(labels, budget, self.context.seed)
        return chosen, {i: {"cluster": int(label)} for i, label in enumerate(labels)}


class DensityConfig(EmbeddingBudgetConfig):
    k: int = Field(default=10, ge=1)
    bandwidth: float | None = Field(default=None, gt=0.0)
    """Gaussian kernel width in cosine distance; null: the median distance to the k nearest neighbours."""
    max_weight_ratio: float | None = Field(default=None, gt=1.0)
    """Clip 1/density at this multiple of the smallest weight (the record's own kernel term already
    bounds the ratio by k + 1)."""


@register
class DensitySample(_EmbeddingBudgetSelector):
    """Density sampling (Sachdeva et al., 2024): keep records with probability proportional to 1 / k-NN density."""

    name = "select.density_sample"
    Config = DensityConfig
    reason = "not drawn by density sampling"

    def choose(self, embeddings, budget):
        cfg = self.config
        density = knn_density(embeddings, cfg.k, cfg.bandwidth)
        chosen = inverse_propensity_sample(density, budget, self.context.seed, cfg.max_weight_ratio)
        return chosen, {i: {"density": round(float(d), 6)} for i, d in enumerate(density)}


class FacilityLocationConfig(EmbeddingBudgetConfig):
    score: str | None = None
    """Optional score (e.g. ``ifd``) that first narrows the candidates to its top ``score_fraction``
    (Superfiltering.D: the top 20% by IFD, then facility location down to 2%)."""
    score_fraction: float = Field(default=0.2, gt=0.0, le=1.0)
    exclude_flagged: bool = True
    """With ``score``: never pick a record whose score carries a ``<score>.above_1`` flag (IFD > 1)."""


@register
class FacilityLocationSelect(Selector):
    """Facility location (Superfiltering.D): the subset that best represents every record, by lazy greedy."""

    name = "select.facility_location"
    Config = FacilityLocationConfig

    def reads_scores(self) -> tuple[str, ...]:
        return (self.config.score,) if self.config.score else ()

    def select(self, scan) -> Selection:
        cfg = self.config
        candidates, excluded = None, {}
        if cfg.score is not None:
            found = gather(scan, score_names=(cfg.score,), op=self,
                           flag_names=(f"{cfg.score}.above_1",) if cfg.exclude_flagged else ())
            excluded = excluded_by_flags(found)
            ranked = [int(i) for i in rank_order(found.scores[cfg.score])
                      if int(i) not in excluded and not np.isnan(found.scores[cfg.score][i])]
            candidates = np.array(ranked[: budget_size(len(found.ids), None, cfg.score_fraction)], dtype=int)
        found = gather(scan, embedder=self.context.models.embedder(cfg.embedder), field=cfg.field)
        n = len(found.ids)
        if n == 0:
            return Selection()
        budget = budget_size(n, cfg.count, cfg.fraction)
        if candidates is None:
            chosen = facility_location(found.embeddings, budget)
        else:  # the ground set is the score's top share, as Superfiltering.D runs it
            chosen = [int(candidates[i]) for i in facility_location(found.embeddings[candidates], budget)]
        rejected = keep_only(n, chosen, f"not selected by facility location (budget {budget})")
        if candidates is not None:
            top = set(candidates.tolist())
            rejected.update({i: f"not selected: outside the top {cfg.score_fraction:g} by {cfg.score}"
                             for i in range(n) if i not in top})
        rejected.update({i: f"not selected: {why}" for i, why in excluded.items()})
        return Selection(rejected=rejected, meta=map_2d(found.embeddings))
