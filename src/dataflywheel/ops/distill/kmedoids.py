"""k-medoids under cosine distance on unit vectors: k-means++ seeding, then alternating (Voronoi) iteration.

No maintained k-medoids ships with scikit-learn (scikit-learn-extra is stale) and FasterPAM (``kmedoids``)
needs the full n x n distance matrix. With unit vectors the alternate step is cheap and exact: a cluster's
total cosine distance from member i is |C| - x_i . s_C (s_C = the sum of its members), so the medoid is the
member most aligned with s_C: O(n k d) per round in chunks, no distance matrix.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 4096


def _nearest(x: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each row's most similar center and that similarity."""
    labels = np.empty(len(x), dtype=np.int64)
    best = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), _CHUNK):
        sims = x[start:start + _CHUNK] @ centers.T
        labels[start:start + _CHUNK] = sims.argmax(1)
        best[start:start + _CHUNK] = sims.max(1)
    return labels, best


def _seed(x: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """k-means++: each next medoid drawn with probability proportional to its squared distance to the chosen."""
    chosen = [int(rng.integers(len(x)))]
    distance = np.maximum(0.0, 1.0 - x @ x[chosen[0]])
    for _ in range(1, k):
        weights = np.where(distance > 1e-6, distance, 0.0).astype(np.float64) ** 2  # rounding noise is no distance
        weights[chosen] = 0.0
        total = float(weights.sum())
        nxt = int(rng.choice(len(x), p=weights / total)) if total > 0 else \
            int(rng.choice(np.setdiff1d(np.arange(len(x)), chosen)))
        chosen.append(nxt)
        distance = np.minimum(distance, np.maximum(0.0, 1.0 - x @ x[nxt]))
    return chosen


def k_medoids(x: np.ndarray, k: int, seed: int = 0, max_iter: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(medoid row indices [k], cluster label of every row [n]) for unit-norm rows ``x``; label c means
    the cluster of medoid ``medoids[c]``. Every medoid belongs to its own cluster."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(n, dtype=np.int64)
    medoids = np.asarray(_seed(x, k, np.random.default_rng(seed)), dtype=np.int64)
    for _ in range(max_iter):
        labels, similarity = _nearest(x, x[medoids])
        labels[medoids] = np.arange(k)  # duplicates: a medoid stays in its own cluster
        sums = np.zeros((k, x.shape[1]), dtype=np.float64)
        np.add.at(sums, labels, x)
        alignment = np.einsum("ij,ij->i", x, sums[labels].astype(np.float32))
        updated = medoids.copy()
        order = np.lexsort((-alignment, labels))  # by cluster, best aligned first
        first = np.r_[0, np.flatnonzero(np.diff(labels[order])) + 1]
        updated[labels[order[first]]] = order[first]
        if np.array_equal(updated, medoids):
            break
        medoids = updated
    labels, _ = _nearest(x, x[medoids])
    labels[medoids] = np.arange(k)
    return medoids, labels
