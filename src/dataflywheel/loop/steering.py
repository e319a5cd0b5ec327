"""Steering: which categories a round synthesizes for, and how much (pure functions).

Round 1 gives every held-out category the same share. After each round, the evaluation's weakest categories
(highest mean reference-answer loss of the round's model on their held-out records) get ``boost`` times the
seeds and the synthesis target in the next round.
"""

from __future__ import annotations

import math
import random
import re

import numpy as np

OTHER = "other"
"""The category of a record whose meta lacks the category field."""


def category_of(record: dict, field: str) -> str:
    value = record.get("meta", {}).get(field)
    return OTHER if value is None or value == "" else str(value)


def category_losses(categories: list[str], losses: list[float]) -> dict[str, float]:
    """Mean loss per category (records with a NaN loss left out)."""
    sums: dict[str, list[float]] = {}
    for category, loss in zip(categories, losses):
        if not math.isnan(loss):
            sums.setdefault(category, []).append(loss)
    return {c: round(float(np.mean(v)), 4) for c, v in sorted(sums.items())}


def weakest(losses: dict[str, float], k: int) -> list[str]:
    """The k categories with the highest loss (ties by name)."""
    return [c for c, _ in sorted(losses.items(), key=lambda item: (-item[1], item[0]))[:k]]


def plan(categories: list[str], available: dict[str, int], seeds: int, target: int,
         weak: list[str], boost: float) -> dict[str, dict]:
    """Per category: seeds to draw, synthesis target and weight (``boost`` for the weak ones, else 1); a
    category without curated records gets nothing and says so."""
    out = {}
    for category in categories:
        weight = boost if category in weak else 1.0
        have = available.get(category, 0)
        want = max(1, round(seeds * weight))
        out[category] = {"weight": weight, "seeds": min(want, have), "target": max(1, round(target * weight)),
                         "weak": category in weak, "available": have}
        if have == 0:
            out[category].update(target=0, note="no curated record of this category to seed from")
    return out


def draw_seeds(records: list[dict], n: int, seed: int, round_: int, category: str) -> list[dict]:
    """``n`` records drawn without replacement, the same for the same seed, round and category."""
    ordered = sorted(records, key=lambda r: r["id"])
    return random.Random(f"{seed}:{round_}:{category}").sample(ordered, min(n, len(ordered)))


def slug(category: str, index: int) -> str:
    """A directory name for a category (its position keeps two categories with the same slug apart)."""
    return f"{index:02d}-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", category).strip("._")[:40] or "category")


def nearest_cluster(embeddings: np.ndarray, centroids: np.ndarray) -> list[str]:
    """Cluster names (``cluster_<i>``) of the nearest centroid by cosine similarity."""
    if len(embeddings) == 0:
        return []
    unit = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return [f"cluster_{i}" for i in np.argmax(embeddings @ unit.T, axis=1)]
