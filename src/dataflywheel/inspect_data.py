"""Statistics of a dataset file: counts, formats, lengths, scores."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Callable

from dataflywheel.io import ReadReject, detect_file_type, peek_format, read_records
from dataflywheel.records import instruction_text, is_preference, is_prompt_only, response_text
from dataflywheel.text import word_count


def _significant(value: float) -> float:
    """``value`` to 4 significant digits (scores are read, not compared to the 16th digit)."""
    return float(f"{value:.4g}")


def _summary(values: list[float], digits: Callable[[float], float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    summary = {"min": ordered[0], "mean": statistics.fmean(ordered), "median": statistics.median(ordered),
               "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], "max": ordered[-1]}
    return {k: digits(v) for k, v in summary.items()}


def dataset_stats(path: str | Path, fmt: str | None = None, file_type: str | None = None,
                  fields: dict[str, str] | None = None) -> dict:
    """Counts, detected format, word-length statistics and score columns of a dataset file; why rows are
    unreadable (per reason: how many, and the first one's position)."""
    path = Path(path)
    kind = file_type or detect_file_type(path)
    records, rejects, preference, prompt_only = 0, Counter(), 0, 0
    first_unreadable: dict[str, str] = {}
    instruction_words, response_words = [], []
    scores: dict[str, list[float]] = {}
    meta_keys: Counter = Counter()
    rejected_by: Counter = Counter()  # records read from a run's rejected/ files: which step dropped them, why
    for item in read_records(path, fmt, kind, fields):
        if isinstance(item, ReadReject):
            reason = item.reason.split(": ")[0]  # the kind of problem; the details vary row by row
            rejects[reason] += 1
            first_unreadable.setdefault(reason, item.source)
            continue
        records += 1
        preference += is_preference(item)
        prompt_only += is_prompt_only(item)
        if "rejected" in item["meta"]:
            rejected_by[f"{item['meta']['rejected']['step']}: {item['meta']['rejected']['reason'].split(': ')[0]}"] += 1
        instruction_words.append(word_count(instruction_text(item)))
        response_words.append(word_count(response_text(item)))
        meta_keys.update(k for k in item["meta"] if k not in ("source", "alpaca"))
        for name, value in item["scores"].items():
            scores.setdefault(name, []).append(value)
    return {
        "path": str(path), "file_type": kind, "format": fmt or peek_format(path, kind, fields), "records": records,
        "unreadable": sum(rejects.values()), "unreadable_reasons": dict(rejects.most_common()),
        "unreadable_first": first_unreadable, "preference_records": preference, "prompt_only_records": prompt_only,
        "instruction_words": _summary(instruction_words, lambda v: round(v, 2)),
        "response_words": _summary(response_words, lambda v: round(v, 2)),
        "scores": {name: {"count": len(v), **_summary(v, _significant)} for name, v in sorted(scores.items())},
        "fields": dict(meta_keys.most_common()), "rejected_by": dict(rejected_by.most_common()),
    }
