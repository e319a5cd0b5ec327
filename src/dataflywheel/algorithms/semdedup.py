"""SemDeDup (Abbas et al., 2023): k-means on embeddings, then near-duplicates by cosine inside each cluster."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SemDedupResult:
    labels: np.ndarray        # k-means cluster per record
    duplicate_of: np.ndarray  # index of the kept record a dropped one duplicates, -1 if kept
    similarity: np.ndarray    # cosine to that kept record (0 for kept records)


def kmeans_labels(embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, centroids) of spherical-ish k-means on L2-normalised embeddings."""
    from sklearn.cluster import KMeans

    n_clusters = max(1, min(n_clusters, len(embeddings)))
    model = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed, max_iter=100).fit(embeddings)
    return model.labels_, model.cluster_centers_


def semdedup(embeddings: np.ndarray, eps: float = 0.05, n_clusters: int | None = None, seed: int = 0,
             priority: np.ndarray | None = None) -> SemDedupResult:
    """Drop a record when its cosine similarity to an already kept record of its cluster exceeds 1 - eps.

    Records are visited by ``priority`` (higher first) or, as in the paper, farthest from the centroid
    first, so the least prototypical example of a duplicate group is the one kept."""
    n = len(embeddings)
    duplicate_of = np.full(n, -1)
    similarity = np.zeros(n, dtype=np.float32)
    if n == 0:
        return SemDedupResult(np.zeros(0, dtype=int), duplicate_of, similarity)
    labels, centroids = kmeans_labels(embeddings, n_clusters or max(1, n // 200), seed)
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        if len(members) < 2:
            continue
        if priority is not None:
            order = members[np.lexsort((members, -priority[members]))]
        else:
            centre = centroids[cluster] / max(np.linalg.norm(centroids[cluster]), 1e-12)
            order = members[np.lexsort((members, embeddings[members] @ centre))]
        sims = embeddings[order] @ embeddings[order].T
        kept: list[int] = []
        for j in range(len(order)):
            if kept:
                row = sims[j, kept]
                best = int(np.argmax(row))
                if row[best] > 1 - eps:
                    duplicate_of[order[j]] = order[kept[best]]
                    similarity[order[j]] = row[best]
                    continue
            kept.append(j)
    return SemDedupResult(labels, duplicate_of, similarity)
