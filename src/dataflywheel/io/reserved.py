"""Our own fields in rows: the ``id``, ``scores`` and ``lineage`` our writers add, put back when read."""

from __future__ import annotations

import json
from typing import Any


def _decoded(value: Any) -> Any:
    """``value``, or what its JSON text holds (None when a text is not JSON)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return None


def _as_scores(value: Any) -> dict | None:
    """A score dict from JSON, a Parquet struct (nulls = absent) or JSON text; None if it is not one."""
    value = _decoded(value)
    if not isinstance(value, dict):
        return None
    scores = {k: v for k, v in value.items() if v is not None}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values()):
        return None
    return {k: float(v) for k, v in scores.items()}


def _as_lineage(value: Any) -> list | None:
    value = _decoded(value)
    return value if isinstance(value, list) and all(isinstance(e, dict) for e in value) else None


def split_reserved(row: Any) -> tuple[Any, dict]:
    """The row without the fields our writers add (scores, lineage, id), and those fields.

    A field that does not have our shape (e.g. a dataset's own string ``id``) stays in the row."""
    if not isinstance(row, dict):
        return row, {}
    kept: dict = {}
    scores = _as_scores(row["scores"]) if "scores" in row else None
    lineage = _as_lineage(row["lineage"]) if "lineage" in row else None
    if scores is not None:
        kept["scores"] = scores
    if lineage is not None:
        kept["lineage"] = lineage
    if isinstance(row.get("id"), str):
        kept["id"] = row["id"]
    drop = set(kept) - {"id"}
    return ({k: v for k, v in row.items() if k not in drop} if drop else row), kept


def restore_reserved(record: dict, kept: dict) -> dict:
    """Put scores and lineage back; drop a written ``id`` that is this record's own (same content hash)."""
    if "scores" in kept:
        record["scores"] = {**kept["scores"], **record["scores"]}
    if "lineage" in kept:
        record["lineage"] = kept["lineage"]
    if record["meta"].get("id") == record["id"]:
        del record["meta"]["id"]
    return record
