"""Final answers of free text and how two of them are compared: one normaliser for every operator that checks
an answer against another (noise detection, LLM2LLM's wrong answers, rationale distillation)."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_MARKED = re.compile(r"(?:answer\s*(?:is)?\s*[:=]|####)\s*(.+)", re.IGNORECASE)


def normalize_answer(text: str) -> str:
    """SQuAD-style (lower case, articles dropped, whitespace collapsed), but punctuation is dropped only where it
    does not join two characters: '1/2', '1.2', 'x+1' and 'x-1' stay apart; 'Paris.' and '(Paris)' are 'paris'."""
    text = re.sub(r"(?<!\w)[^\w\s]+|[^\w\s]+(?!\w)", " ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def final_answer(text: str) -> str:
    """The answer a text ends with, normalised for comparison: what follows the last 'Answer:' (or '####'),
    else the last non-empty line."""
    found = _MARKED.findall(text)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return normalize_answer(found[-1] if found else (lines[-1] if lines else ""))


def final_number(text: str) -> float | None:
    """The last number in a text (GSM8K's '#### 72' included), commas ignored."""
    found = _NUMBER.findall(text.split("####")[-1])
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None
