"""Subset selection on scores and embeddings: budgets, DEITA, k-center greedy, cluster balance, density."""

from __future__ import annotations

import numpy as np


def budget_size(n: int, count: int | None, fraction: float | None) -> int:
    """How many records a budget keeps out of n (count wins over fraction; neither = all)."""
    if count is not None:
        return max(0, min(n, count))
    if fraction is not None:
        return max(0, min(n, int(round(fraction * n))))
    return n


def rank_order(values: np.ndarray) -> np.ndarray:
    """Indices by value descending, NaN last, ties by position (deterministic)."""
    key = np.where(np.isnan(values), -np.inf, values)
    return np.lexsort((np.arange(len(values)), -key))


def zscore(values: np.ndarray) -> np.ndarray:
    finite = values[~np.isnan(values)]
    if len(finite) < 2 or finite.std() == 0:
        return np.where(np.isnan(values), np.nan, 0.0)
    return (values - finite.mean()) / finite.std()


def weighted_zscores(scores: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Several scores as one: each z-scored, then summed with its weight."""
    return sum(weight * zscore(np.asarray(scores[name], dtype=float)) for name, weight in weights.items())


def deita_select(order: np.ndarray, embeddings: np.ndarray, budget: int, tau: float = 0.9) -> list[int]:
    """DEITA score-first, diversity-aware: walk records by score; add one only if its cosine similarity to
    its nearest already-selected record is below ``tau``; stop at the budget."""
    chosen: list[int] = []
    selected = np.empty((0, embeddings.shape[1]), dtype=embeddings.dtype)
    for index in order:
        if len(chosen) >= budget:
            break
        if len(chosen) and float((selected @ embeddings[index]).max()) >= tau:
            continue
        chosen.append(int(index))
        selected = np.vstack([selected, embeddings[index]])
    return chosen


def k_center_greedy(embeddings: np.ndarray, budget: int, seed: int = 0) -> list[int]:
    """Farthest-point (coreset) selection under cosine distance, starting from a seeded random record."""
    n = len(embeddings)
    if budget <= 0 or n == 0:
        return []
    first = int(np.random.default_rng(seed).integers(n))
    chosen = [first]
    distance = 1.0 - embeddings @ embeddings[first]
    for _ in range(1, min(budget, n)):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, 1.0 - embeddings @ embeddings[nxt])
    return chosen


def covering_radius(embeddings: np.ndarray, chosen: list[int]) -> float:
    """Largest cosine distance from any record to its nearest chosen record."""
    sims = embeddings @ embeddings[chosen].T
    return float((1.0 - sims.max(axis=1)).max())


def cluster_balanced(labels: np.ndarray, budget: int, seed: int = 0) -> list[int]:
    """Round-robin over clusters (each shuffled with the seed) until the budget is met: equal shares."""
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < budget and any(queues):
        for queue in queues:
            if queue and len(chosen) < budget:
                chosen.append(int(queue.pop()))
    return chosen


def knn_distances(embeddings: np.ndarray, k: int = 10, block: int = 2048) -> np.ndarray:
    """Cosine distances to each record's k nearest other records [n, k], computed in blocks."""
    n = len(embeddings)
    k = max(1, min(k, n - 1)) if n > 1 else 1
    out = np.ones((n, k), dtype=np.float64)
    if n < 2:
        return out
    for start in range(0, n, block):
        sims = embeddings[start:start + block] @ embeddings.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # not its own neighbour
        nearest = -np.partition(-sims, k - 1, axis=1)[:, :k]  # the k largest similarities, unordered
        out[start:start + block] = np.sort(1.0 - nearest, axis=1)
    return np.clip(out, 0.0, 2.0)


def median_bandwidth(distances: np.ndarray) -> float:
    """The median k-NN distance: the kernel then spans a typical neighbourhood at any embedding scale."""
    median = float(np.median(distances)) if distances.size else 0.0
    return median if median > 1e-6 else 1e-3


def knn_density(embeddings: np.ndarray, k: int = 10, bandwidth: float | None = None, block: int = 2048) -> np.ndarray:
    """Gaussian-kernel density over the record itself and its k nearest neighbours (cosine distance):
    (1 + sum_j exp(-d_j^2 / 2h^2)) / (k + 1), in [1/(k+1), 1]. The record's own term bounds 1/density by
    k + 1, so one slightly farther neighbour cannot make a record thousands of times likelier to be drawn.
    ``bandwidth`` None: the median k-NN distance."""
    distances = knn_distances(embeddings, k, block)
    h = bandwidth if bandwidth is not None else median_bandwidth(distances)
    kernel = np.exp(-distances ** 2 / (2 * h ** 2))
    return (1.0 + kernel.sum(axis=1)) / (distances.shape[1] + 1)


def inverse_propensity_sample(density: np.ndarray, budget: int, seed: int = 0,
                              max_weight_ratio: float | None = None) -> list[int]:
    """Sample without replacement with probability proportional to 1 / density (rare regions kept);
    weights are clipped to ``max_weight_ratio`` times the smallest weight when given."""
    weights = 1.0 / np.maximum(density, 1e-12)
    if max_weight_ratio is not None and len(weights):
        weights = np.minimum(weights, weights.min() * max_weight_ratio)
    chosen = np.random.default_rng(seed).choice(len(density), size=min(budget, len(density)), replace=False,
                                                p=weights / weights.sum())
    return sorted(int(i) for i in chosen)


def cluster_proportional(labels: np.ndarray, budget: int, seed: int = 0) -> list[int]:
    """Sample every cluster in proportion to its size (largest remainders get the leftover seats)."""
    rng = np.random.default_rng(seed)
    clusters, sizes = np.unique(labels, return_counts=True)
    budget = min(budget, len(labels))
    exact = budget * sizes / sizes.sum()
    seats = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - seats), kind="stable")[: budget - seats.sum()]:
        seats[i] += 1
    chosen: list[int] = []
    for cluster, seat in zip(clusters, seats):
        members = np.flatnonzero(labels == cluster)
        chosen += [int(i) for i in rng.choice(members, size=seat, replace=False)]
    return sorted(chosen)


def facility_location(embeddings: np.ndarray, budget: int) -> list[int]:
    """Lazy greedy facility location: pick records maximising sum_i max_{s in S} sim(i, s), with
    sim = (1 + cosine) / 2 >= 0 (a monotone submodular function: greedy is within 1 - 1/e of the best)."""
    import heapq

    n = len(embeddings)
    budget = min(budget, n)
    if budget <= 0:
        return []
    cover = np.zeros(n, dtype=np.float64)

    def similarity(j: int) -> np.ndarray:
        return (1.0 + embeddings @ embeddings[j]) / 2

    # with nothing chosen, a record's gain is its summed similarity: (n + (sum of all rows) . e_j) / 2
    first = (n + embeddings @ embeddings.sum(axis=0)) / 2
    heap = [(-float(g), j) for j, g in enumerate(first)]
    heapq.heapify(heap)
    chosen: list[int] = []
    while heap and len(chosen) < budget:
        _, j = heapq.heappop(heap)
        fresh = float(np.maximum(similarity(j) - cover, 0.0).sum())
        if not heap or fresh >= -heap[0][0] - 1e-9:
            chosen.append(j)
            cover = np.maximum(cover, similarity(j))
        else:
            heapq.heappush(heap, (-fresh, j))
    return chosen
