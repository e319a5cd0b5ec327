"""Statistics of a dataset file: counts, formats, lengths, scores."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from dataflywheel.io import ReadReject, detect_file_type, peek_format, read_records
from dataflywheel.records import instruction_text, is_preference, response_text
from dataflywheel.text import word_count


def _summary(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    return {"min": ordered[0], "mean": round(statistics.fmean(ordered), 2), "median": statistics.median(ordered),
            "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], "max": ordered[-1]}


def dataset_stats(path: str | Path, fmt: str | None = None, file_type: str | None = None) -> dict:
    """Counts, detected format, word-length statistics and score columns of a dataset file."""
    path = Path(path)
    kind = file_type or detect_file_type(path)
    records, rejects, preference = 0, Counter(), 0
    instruction_words, response_words = [], []
    scores: dict[str, list[float]] = {}
    meta_keys: Counter = Counter()
    for item in read_records(path, fmt, kind):
        if isinstance(item, ReadReject):
            rejects[item.reason.split(":")[0]] += 1
            continue
        records += 1
        preference += is_preference(item)
        instruction_words.append(word_count(instruction_text(item)))
        response_words.append(word_count(response_text(item)))
        meta_keys.update(k for k in item["meta"] if k not in ("source", "alpaca"))
        for name, value in item["scores"].items():
            scores.setdefault(name, []).append(value)
    return {
        "path": str(path), "file_type": kind, "format": fmt or peek_format(path, kind), "records": records,
        "unreadable": sum(rejects.values()), "unreadable_reasons": dict(rejects), "preference_records": preference,
        "instruction_words": _summary(instruction_words), "response_words": _summary(response_words),
        "scores": {name: {"count": len(v), **_summary(v)} for name, v in sorted(scores.items())},
        "fields": dict(meta_keys.most_common()),
    }
