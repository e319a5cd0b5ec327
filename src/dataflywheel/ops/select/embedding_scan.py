"""Shared by the global selectors: one pass that gathers ids, embeddings and score values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataflywheel.ops.select.score_check import check_scores
from dataflywheel.records import text_of


@dataclass
class Gathered:
    ids: list[str]
    embeddings: np.ndarray | None
    scores: dict[str, np.ndarray]
    flags: dict[str, np.ndarray] = None


def gather(scan, *, embedder=None, field: str = "conversation", score_names: tuple[str, ...] = (),
           op=None, flag_names: tuple[str, ...] = ()) -> Gathered:
    """Stream the dataset once; embed ``field`` when an embedder is given; collect the named scores (NaN if
    absent). With ``op``: a score no record has raises MissingScoreError, records without one are counted."""
    ids: list[str] = []
    blocks = []
    values: dict[str, list[float]] = {name: [] for name in (*score_names, *flag_names)}
    for batch in scan():
        ids.extend(r["id"] for r in batch)
        if embedder is not None:
            blocks.append(embedder.embed([text_of(r, field) for r in batch]))
        for name, column in score_values(batch, tuple(values)).items():
            values[name].extend(column)
    embeddings = np.concatenate(blocks).astype(np.float32) if blocks else None
    scores = {k: np.asarray(values[k], dtype=np.float64) for k in score_names}
    flags = {k: np.asarray(values[k], dtype=np.float64) for k in flag_names}
    if op is not None:
        check_present(op, scores)
    return Gathered(ids, embeddings, scores, flags)


def score_values(records: list[dict], names: tuple[str, ...]) -> dict[str, list[float]]:
    """The named scores of each record, NaN where absent."""
    return {name: [float(r.get("scores", {}).get(name, float("nan"))) for r in records] for name in names}


def check_present(op, scores: dict[str, np.ndarray]) -> None:
    """A score no record has raises MissingScoreError; records without one are counted."""
    for name, column in scores.items():
        check_scores(op, name, int((~np.isnan(column)).sum()), len(column))


def excluded_by_flags(found: Gathered) -> dict[int, str]:
    """Positions whose ``<score>.above_1`` flag is set, with the reason (IFD > 1: Cherry drops these)."""
    out: dict[int, str] = {}
    for name, column in (found.flags or {}).items():
        score = name[: -len(".above_1")]
        for i in np.flatnonzero(column > 0):
            out.setdefault(int(i), f"{score} > 1 (the instruction does not help the model predict the answer; "
                                   f"dropped before ranking, as Cherry LLM does)")
    return out


def keep_only(n: int, chosen: list[int], reason: str) -> dict[int, str]:
    """Rejections for every position not chosen."""
    kept = set(chosen)
    return {i: reason for i in range(n) if i not in kept}


def map_2d(embeddings: np.ndarray) -> dict[int, dict]:
    """Meta notes with a 2-D PCA position per record, for the report's embedding map."""
    if embeddings is None or len(embeddings) < 3:
        return {}
    points = map_points(embeddings, *map_projection(embeddings))
    return {i: map_note(x, y) for i, (x, y) in enumerate(points)}


def map_projection(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, the two principal axes) of the embedding map, PCA fit on the first 20,000 records."""
    mean = embeddings.mean(axis=0)
    _, _, components = np.linalg.svd((embeddings - mean)[:20000], full_matrices=False)
    return mean, components[:2]


def map_points(embeddings: np.ndarray, mean: np.ndarray, axes: np.ndarray) -> np.ndarray:
    return (embeddings - mean) @ axes.T


def map_note(x: float, y: float) -> dict:
    """A record's meta note with its point on the embedding map."""
    return {"map_2d": [round(float(x), 4), round(float(y), 4)]}
