"""Text statistics behind the heuristic filters (Gopher / C4 / FineWeb rules, adapted to instruction data)."""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def non_alnum_share(text: str) -> float:
    """Share of characters that are neither letters/digits nor whitespace."""
    if not text:
        return 0.0
    symbols = sum(1 for c in text if not c.isalnum() and not c.isspace())
    return symbols / len(text)


def top_ngram_char_share(tokens: list[str], n: int) -> float:
    """Gopher: share of word characters covered by the most frequent n-gram."""
    if len(tokens) < n:
        return 0.0
    grams = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    total = sum(len(t) for t in tokens)
    return sum(len(t) for t in gram) * count / total if total else 0.0


def duplicate_ngram_char_share(tokens: list[str], n: int) -> float:
    """Gopher: share of word characters inside n-grams that occur more than once (overlaps counted once)."""
    if len(tokens) < n:
        return 0.0
    starts = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    counts = Counter(starts)
    covered = [False] * len(tokens)
    for i, gram in enumerate(starts):
        if counts[gram] > 1:
            for k in range(i, i + n):
                covered[k] = True
    total = sum(len(t) for t in tokens)
    return sum(len(t) for t, c in zip(tokens, covered) if c) / total if total else 0.0


def duplicate_line_shares(text: str) -> tuple[float, float]:
    """(share of non-empty lines that repeat an earlier line, share of characters in those lines)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return 0.0, 0.0
    seen: set[str] = set()
    dup_lines = dup_chars = 0
    for line in lines:
        if line in seen:
            dup_lines += 1
            dup_chars += len(line)
        seen.add(line)
    return dup_lines / len(lines), dup_chars / sum(len(line) for line in lines)


_DANGLING = ("and", "or", "but", "the", "a", "an", "to", "of", "with", "for", "in", "that", "which", "because")


def truncation_sign(text: str) -> str | None:
    """Why a response looks cut off, or None: an unclosed code block or a dangling last word/character."""
    stripped = text.rstrip()
    if stripped.count("```") % 2 == 1:
        return "unclosed code block"
    if stripped.endswith((",", ":", ";", "(", "[", "{", "-", "/")) and not stripped.endswith(("--", "-->", ":)")):
        return f"ends with {stripped[-1]!r}"
    last = words(stripped[-40:])
    if last and last[-1] in _DANGLING and not stripped.endswith((".", "!", "?", '"', "'")):
        return f"ends with the word {last[-1]!r}"
    return None
