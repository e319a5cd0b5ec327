"""Text statistics behind the heuristic filters (Gopher / C4 / FineWeb rules, adapted to instruction data)."""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

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
    """Gopher: share of word characters in the repeated occurrences of n-grams (the first occurrence of each
    n-gram is not counted; after a repeat the scan jumps past it), as Gopher and DataTrove count."""
    if len(tokens) < n:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeated, i = 0, 0
    while i <= len(tokens) - n:
        gram = tuple(tokens[i:i + n])
        if gram in seen:
            repeated += sum(len(t) for t in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    total = sum(len(t) for t in tokens)
    return repeated / total if total else 0.0


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
_OPEN, _CLOSE = "([{", ")]}"
_URL_END = re.compile(r"https?://\S+$")


def truncation_sign(text: str, code_aware: bool = True) -> str | None:
    """Why a response looks cut off, or None: an unclosed code block, a dangling last word/character of
    prose, or (when the answer ends in code) brackets the code opens and never closes."""
    stripped = text.rstrip()
    if stripped.count("```") % 2 == 1:
        return "unclosed code block"
    if code_aware and ends_in_code(stripped):
        unclosed = unclosed_brackets(split_code(stripped)[1])
        return f"code leaves {unclosed} bracket(s) open" if unclosed > 0 else None
    if (stripped.endswith((",", ":", ";", "(", "[", "{", "-", "/")) and not stripped.endswith(("--", "-->", ":)"))
            and not _URL_END.search(stripped)):
        return f"ends with {stripped[-1]!r}"
    last = words(stripped[-40:])
    if last and last[-1] in _DANGLING and not stripped.endswith((".", "!", "?", '"', "'")):
        return f"ends with the word {last[-1]!r}"
    return None


# ---- code inside answers: fenced blocks, and unfenced lines that read as code ---------------------------

_FENCE = re.compile(r"```[^\n]*\n?(.*?)(?:```|\Z)", re.S)
_CODE_LINE = re.compile(
    r"""^\s*(?:(?:def|class|import|return|const|let|var|public|private|protected|static|package|using|namespace|
    fn|func|function|struct|enum|interface|template|typedef|async|await|yield|elif|except|finally|lambda|
    echo|require|include|module|export|extern|unsigned|void|int|float|double|char|bool|string|auto)\b
    |from\s+\S+\s+import\b|\#include|\#!|\#define|<\?php|\?>|//|/\*|\*/|--\s|@\w+|</?[A-Za-z][\w-]*[^>]*>
    |(?:if|for|while|switch|catch)\s*\(|else\b\s*[{:]?\s*$|try\s*[{:]|[}\])]
    |(?:SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|WITH)\s+[A-Z*(]
    |\$\w+|[\w.\[\]"']+\s*(?:[-+*/%|&^]|<<|>>)?=\s*[^=\s]|[\w.]+\(.*\)\s*;?\s*$)""", re.X)
_CODE_END = re.compile(r"(?:[;{}]|=>|\)\s*:|\):\s*#.*)\s*$")
_PROSE = re.compile(r"[A-Za-z][a-z']+(?:\s+[A-Za-z][a-z',]*){4,}[.!?]?\s*$")


def _is_code_line(line: str, previous_code: bool) -> bool:
    if not line.strip():
        return previous_code
    if previous_code and line[:1] in (" ", "\t"):
        return True  # an indented continuation of code
    if _CODE_END.search(line) or _CODE_LINE.match(line):
        return not (_PROSE.match(line.strip()) and not _CODE_END.search(line) and line.rstrip()[-1:] in ".!?")
    return False


_CODE_FILE = re.compile(r"^\s*(?:#!|<\?php|<!DOCTYPE|<html)", re.I)
_SENTENCE = re.compile(r"^[A-Z][^;{}=<>]*[.!?:]$")


def code_lines(text: str) -> list[bool]:
    """Per line of ``text`` (no fences): does it read as code? In an answer that is mostly code (or starts
    like a script), every line but plain sentences is code: shell and markup lines match no pattern alone."""
    lines = text.split("\n")
    flags, previous = [], False
    for line in lines:
        previous = _is_code_line(line, previous)
        flags.append(previous)
    filled = [f for f, line in zip(flags, lines) if line.strip()]
    if filled and (_CODE_FILE.match(text) or sum(filled) >= 0.5 * len(filled)):
        flags = [bool(line.strip()) and not _SENTENCE.match(line.strip()) or (not line.strip() and f)
                 for f, line in zip(flags, lines)]
    return flags


# Any line that could start or end code, found by one scan of the whole text: most answers have none, and
# then the line-by-line classification (the slow part) is skipped with the same result.
_MAYBE_CODE = re.compile(_CODE_LINE.pattern, re.X | re.M)
_MAYBE_CODE_END = re.compile(_CODE_END.pattern, re.M)


def _plain_prose(text: str) -> bool:
    return "```" not in text and not _MAYBE_CODE.search(text) and not _MAYBE_CODE_END.search(text)


@lru_cache(maxsize=4096)
def split_code(text: str) -> tuple[str, str]:
    """(prose, code) of a response: fenced blocks and unfenced lines that read as code go to code (cached:
    the preset's rules split the same response one after another)."""
    if _plain_prose(text):
        return text.strip(), ""
    code = [m.group(1) for m in _FENCE.finditer(text)]
    outside = _FENCE.sub("\n", text)
    lines = outside.split("\n")
    flags = code_lines(outside)
    code += [line for line, is_code in zip(lines, flags) if is_code and line.strip()]
    prose = "\n".join(line for line, is_code in zip(lines, flags) if not is_code)
    return prose.strip(), "\n".join(code)


def ends_in_code(text: str) -> bool:
    """Does the answer end inside code (a closed fenced block, or an unfenced line that reads as code)?"""
    stripped = text.rstrip()
    if stripped.endswith("```"):
        return True
    if _plain_prose(stripped):
        return False
    flags = code_lines(_FENCE.sub("\n", stripped).rstrip())
    return bool(flags) and flags[-1]


def looks_like_code(text: str, share: float = 0.5) -> bool:
    """Most non-empty lines (or characters in fenced blocks) are code."""
    prose, code = split_code(text)
    return len(code.strip()) >= share * (len(code.strip()) + len(prose))


_STRINGS = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|`[^`]*`|(?:^|(?<=\s))//(?=\s|$)[^\n]*|/\*.*?\*/|(?:^|(?<=\s))\#[^\n]*', re.S | re.M)


def unclosed_brackets(code: str) -> int:
    """How many brackets the code opens and never closes (string literals and comments ignored)."""
    bare = _STRINGS.sub("", code)
    return sum(bare.count(c) for c in _OPEN) - sum(bare.count(c) for c in _CLOSE)
