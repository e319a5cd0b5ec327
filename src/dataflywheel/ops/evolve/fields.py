"""Where a judge finds its texts: the record's own answers, or a ``meta`` key (dotted for nested objects)."""

from __future__ import annotations

from dataflywheel.models.llm import GenerationParams
from dataflywheel.records import is_preference, last_index

RECORD_TEXTS = ("chosen", "rejected", "response")


def meta_value(record: dict, key: str):
    """``meta[key]``, following dots into nested objects (``mt_bench.reference``); None when absent."""
    value = record.get("meta", {})
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def answer_text(record: dict, field: str) -> str | None:
    """The answer named ``field``: 'chosen' / 'rejected' of a preference record, 'response' (the final assistant
    turn, or chosen), else a text in ``meta``; None when the record has no such text."""
    if field in ("chosen", "rejected"):
        turn = record.get(field) if is_preference(record) else None
        return turn["content"] if turn else None
    if field == "response":
        if is_preference(record):
            return record["chosen"]["content"]
        i = last_index(record["messages"], "assistant")
        return record["messages"][i]["content"] if i is not None else None
    value = meta_value(record, field)
    return value if isinstance(value, str) and value.strip() else None


def sampling(samples: int, temperature: float, max_tokens: int, seed: int) -> GenerationParams:
    """``samples`` seeded answers at ``temperature``; one greedy answer when ``samples`` is 1."""
    return GenerationParams(n=samples, temperature=temperature if samples > 1 else 0.0, max_tokens=max_tokens,
                            seed=seed)
