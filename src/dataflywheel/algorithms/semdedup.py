"""SemDeDup (Abbas et al., 2023): k-means on embeddings, then near-duplicates by cosine inside each cluster."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SemDedupResult:
    labels: np.ndarray        # k-means cluster per record
    duplicate_of: np.ndarray  # index of the earlier record a dropped one duplicates, -1 if kept
    similarity: np.ndarray    # cosine to that record (0 for kept records)
    max_similarity: np.ndarray  # largest cosine to an earlier record of its cluster (0 for the first)
    nearest: np.ndarray       # that earlier record, -1 for the first of a cluster


def kmeans_labels(embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, centroids) of spherical-ish k-means on L2-normalised embeddings."""
    from sklearn.cluster import KMeans

    n_clusters = max(1, min(n_clusters, len(embeddings)))
    model = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed, max_iter=100).fit(embeddings)
    return model.labels_, model.cluster_centers_


def semdedup(embeddings: np.ndarray, eps: float = 0.05, n_clusters: int | None = None, seed: int = 0,
             priority: np.ndarray | None = None, compare_with: str = "all") -> SemDedupResult:
    """Drop a record when its cosine similarity to an earlier record of its cluster exceeds 1 - eps.

    Records are visited by ``priority`` (higher first) or, as in the paper, farthest from the centroid
    first, so the least prototypical example of a duplicate group is the one kept. ``compare_with='all'``
    (the paper): every earlier record counts, dropped or not, so removal does not cascade and a record's
    fate depends on eps alone (which makes ``eps_for_retention`` exact); 'kept': only records kept so far."""
    n = len(embeddings)
    duplicate_of, nearest = np.full(n, -1), np.full(n, -1)
    similarity, max_similarity = np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.float32)
    if n == 0:
        return SemDedupResult(np.zeros(0, dtype=int), duplicate_of, similarity, max_similarity, nearest)
    labels, centroids = kmeans_labels(embeddings, n_clusters or max(1, n // 200), seed)
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        found = dedup_cluster(members, embeddings[members], centroids[cluster],
                              None if priority is None else priority[members], eps, compare_with)
        duplicate_of[members], similarity[members], max_similarity[members], nearest[members] = found
    return SemDedupResult(labels, duplicate_of, similarity, max_similarity, nearest)


def dedup_cluster(members: np.ndarray, embeddings: np.ndarray, centroid: np.ndarray,
                  priority: np.ndarray | None, eps: float, compare_with: str = "all") -> tuple[np.ndarray, ...]:
    """SemDeDup inside one cluster: ``members`` are the records' positions in the dataset (ties and the
    answers refer to them), ``embeddings`` and ``priority`` theirs, in the same order. Returns, per member,
    (duplicate_of, similarity, max_similarity, nearest) as ``semdedup`` defines them."""
    n = len(members)
    duplicate_of, nearest = np.full(n, -1), np.full(n, -1)
    similarity, max_similarity = np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.float32)
    if n < 2:
        return duplicate_of, similarity, max_similarity, nearest
    if priority is not None:
        order = np.lexsort((members, -priority))
    else:
        centre = centroid / max(np.linalg.norm(centroid), 1e-12)
        order = np.lexsort((members, embeddings @ centre))
    sims = embeddings[order] @ embeddings[order].T
    earlier = np.tril(sims, k=-1)
    earlier[np.triu_indices(n)] = -np.inf
    best = earlier.argmax(axis=1)
    nearest[order[1:]] = members[order[best[1:]]]
    max_similarity[order[1:]] = earlier[np.arange(1, n), best[1:]]
    if compare_with == "all":
        dropped = max_similarity > 1 - eps
        duplicate_of[dropped] = nearest[dropped]
        similarity[dropped] = max_similarity[dropped]
        return duplicate_of, similarity, max_similarity, nearest
    kept: list[int] = []
    for j in range(n):
        if kept:
            row = sims[j, kept]
            top = int(np.argmax(row))
            if row[top] > 1 - eps:
                duplicate_of[order[j]] = members[order[kept[top]]]
                similarity[order[j]] = row[top]
                continue
        kept.append(j)
    return duplicate_of, similarity, max_similarity, nearest


def eps_for_retention(max_similarity: np.ndarray, nearest: np.ndarray, retention: float) -> float:
    """The eps at which SemDeDup (compare_with='all') keeps about ``retention`` of the records: a record is
    dropped iff its largest similarity to an earlier record exceeds 1 - eps, so eps comes from a quantile."""
    n = len(max_similarity)
    drop = n - int(round(retention * n))
    candidates = np.sort(np.where(nearest >= 0, max_similarity, -np.inf))[::-1]
    if drop <= 0 or not np.isfinite(candidates[0]):
        return 1e-9
    drop = min(drop, int(np.isfinite(candidates).sum()))
    # drop the `drop` most similar: 1 - eps just below the drop-th largest similarity
    cut = candidates[drop - 1]
    following = candidates[drop] if drop < n and np.isfinite(candidates[drop]) else cut - 1e-6
    return float(min(max(1.0 - (cut + following) / 2, 1e-9), 1.0))
