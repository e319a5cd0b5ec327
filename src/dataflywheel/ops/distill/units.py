"""A text as droppable lexical units over a model's tokens: protected spans, unit levels, and the text
rendered from what is kept. Pure functions: the compressors decide which units to drop, this module
says what the text then reads.

Every token whose characters touch a protected span is kept; a unit is a group of the remaining tokens
(one token, a word, a phrase or a sentence). Whitespace is never a unit: where something was dropped,
the gap becomes one space, or the newlines it held (at most two), so paragraphs survive compression.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]+`", re.DOTALL)
_NUMBER = re.compile(r"\d+(?:[.,:/\-]\d+)*%?")
_SENTENCE_END = re.compile(r"[.!?]+(?=\s)|\n+")
_PHRASE_END = re.compile(r"[,;:.!?)\]\"']$")
_WORD = re.compile(r"\S+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Sentences as (start, end) character spans, surrounding whitespace trimmed (split at . ! ? before a
    space and at line breaks)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
    spans.append((start, len(text)))
    return [s for s in (_trim(text, a, b) for a, b in spans) if s[1] > s[0]]


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def protected_spans(text: str, protect: tuple[str, ...], question: str | None = None,
                    patterns: tuple[str, ...] = ()) -> list[tuple[int, int]]:
    """Character spans never to touch: ``code`` (fenced blocks, inline code), ``numbers``, ``question``
    (``question`` when given and found in the text; else every sentence ending in '?'; else the first and
    the last sentence, where a prompt's request usually sits) and the extra regex ``patterns``."""
    spans: list[tuple[int, int]] = []
    if "code" in protect:
        spans += [m.span() for m in _CODE.finditer(text)]
    if "numbers" in protect:
        spans += [m.span() for m in _NUMBER.finditer(text)]
    if "question" in protect:
        spans += question_spans(text, question)
    for pattern in patterns:
        spans += [m.span() for m in re.finditer(pattern, text) if m.end() > m.start()]
    return sorted(_trim(text, a, b) for a, b in spans)


def question_spans(text: str, question: str | None = None) -> list[tuple[int, int]]:
    """Where the question sits (see ``protected_spans``)."""
    if question and question.strip() and question.strip() in text:
        start = text.index(question.strip())
        return [(start, start + len(question.strip()))]
    sentences = sentence_spans(text)
    asked = [(a, b) for a, b in sentences if text[a:b].rstrip().endswith("?")]
    if asked:
        return asked
    return sorted({sentences[0], sentences[-1]}) if sentences else []


@dataclass
class Units:
    """A text's tokens (character spans), which are protected, and the droppable units over the rest."""

    text: str
    spans: list[tuple[int, int]]
    protected: list[bool]
    units: list[list[int]]
    """Token indices of each unit, in text order."""
    unit_of: dict[int, int] = field(default_factory=dict)
    """Token index -> its unit."""

    @property
    def droppable_tokens(self) -> int:
        return sum(len(u) for u in self.units)

    def core(self, token: int) -> tuple[int, int]:
        """A token's span without its leading whitespace (empty for a whitespace-only token)."""
        start, end = self.spans[token]
        while start < end and self.text[start].isspace():
            start += 1
        return start, end


def _group_starts(text: str, level: str, phrase_words: int) -> list[int]:
    """Start characters of the groups that tokens fall into, for the word, phrase or sentence level."""
    if level == "sentence":
        return [a for a, _ in sentence_spans(text)]
    words = list(_WORD.finditer(text))
    if level == "word":
        return [m.start() for m in words]
    starts, count = [], 0
    for i, m in enumerate(words):
        newline = i > 0 and "\n" in text[words[i - 1].end():m.start()]
        if not starts or count >= phrase_words or newline or _PHRASE_END.search(words[i - 1].group()):
            starts.append(m.start())
            count = 0
        count += 1
    return starts


def build_units(text: str, spans: list[tuple[int, int]], protect: list[tuple[int, int]], level: str,
                phrase_words: int = 4) -> Units:
    """Group the tokens (character ``spans``) into units at ``level`` (token, word, phrase or sentence),
    leaving out whitespace-only tokens and every token that overlaps a span of ``protect``."""
    units = Units(text, list(spans), [False] * len(spans), [])
    merged = _merge(protect)
    starts = [a for a, _ in merged]
    for t in range(len(spans)):
        a, b = units.core(t)
        k = bisect.bisect_left(starts, b) - 1  # the last protected span starting before the token ends
        units.protected[t] = a < b and k >= 0 and merged[k][1] > a
    groups = _group_starts(text, level, phrase_words) if level != "token" else []
    by_group: dict[int, int] = {}
    for t in range(len(spans)):
        a, b = units.core(t)
        if a == b or units.protected[t]:
            continue
        group = t if level == "token" else bisect.bisect_right(groups, a) - 1
        if group not in by_group:
            by_group[group] = len(units.units)
            units.units.append([])
        units.units[by_group[group]].append(t)
        units.unit_of[t] = by_group[group]
    return units


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        elif b > a:
            merged.append((a, b))
    return merged


def render(units: Units, dropped: set[int]) -> str:
    """The text with the ``dropped`` units removed: kept tokens verbatim, the original whitespace between
    neighbours that stayed neighbours, and where something was removed one space or the newlines (at most
    two) that the removed stretch held."""
    if not dropped:
        return units.text
    text, out = units.text, []
    last_end: int | None = None
    removed = False
    for t in range(len(units.spans)):
        a, b = units.core(t)
        if a == b:
            continue
        if units.unit_of.get(t) in dropped:
            removed = True
            continue
        if last_end is not None:
            gap = text[last_end:a]
            out.append(_separator(gap) if removed else gap)
        out.append(text[a:b])
        last_end, removed = b, False
    return "".join(out)


def _separator(gap: str) -> str:
    newlines = gap.count("\n")
    if newlines:
        return "\n" * min(2, newlines)
    return " " if any(c.isspace() for c in gap) else ""
