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


def knn_density(embeddings: np.ndarray, k: int = 10, bandwidth: float = 0.1, block: int = 2048) -> np.ndarray:
    """Gaussian-kernel density over the k nearest neighbours (cosine distance), computed in blocks."""
    n = len(embeddings)
    k = max(1, min(k, n - 1)) if n > 1 else 1
    density = np.zeros(n, dtype=np.float64)
    for start in range(0, n, block):
        sims = embeddings[start:start + block] @ embeddings.T
        for row in range(sims.shape[0]):
            sims[row, start + row] = -np.inf  # not its own neighbour
        nearest = -np.partition(-sims, k - 1, axis=1)[:, :k] if n > 1 else np.zeros((sims.shape[0], 1))
        density[start:start + block] = np.exp(-(1.0 - nearest) ** 2 / (2 * bandwidth ** 2)).mean(axis=1)
    return density


def inverse_propensity_sample(density: np.ndarray, budget: int, seed: int = 0) -> list[int]:
    """Sample without replacement with probability proportional to 1 / density (rare regions kept)."""
    weights = 1.0 / np.maximum(density, 1e-12)
    chosen = np.random.default_rng(seed).choice(len(density), size=min(budget, len(density)), replace=False,
                                                p=weights / weights.sum())
    return sorted(int(i) for i in chosen)
