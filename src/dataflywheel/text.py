"""Pure text helpers shared by operators."""

from __future__ import annotations

import re
import unicodedata

_ODD_SPACES = re.compile(r"[\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]")
_RUNS = re.compile(r"[ \t]{2,}")
_BLANK_LINES = re.compile(r"\n{3,}")
_PUNCT_OR_SPACE = re.compile(r"[\W_]+", re.UNICODE)


def normalize_whitespace(text: str) -> str:
    """Collapse runs of spaces inside lines, trim line ends and the text, keep at most one blank line.

    Leading indentation is kept, so code in responses survives."""
    lines = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = _ODD_SPACES.sub(" ", line).rstrip()
        indent = len(line) - len(line.lstrip(" \t"))
        lines.append(line[:indent] + _RUNS.sub(" ", line[indent:]))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def dedup_key(text: str) -> str:
    """Text reduced for exact dedup: NFKC, lower case, punctuation and whitespace dropped to single spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _PUNCT_OR_SPACE.sub(" ", text).strip()


def word_count(text: str) -> int:
    return len(text.split())
