"""ROUGE-L F-measure, equal to the ``rouge-score`` package (default tokenizer, no stemmer) and fast.

Texts are tokenised once into integer ids. One query is scored against a whole pool at once with the
bit-parallel LCS of Hyyrö (2004): the query's tokens are bits of ``ceil(m / 64)`` uint64 words, and one numpy
step per pool column updates every pool entry together, so a query costs O(pool tokens * m / 64) word
operations instead of rouge-score's O(m * n) Python steps per pair. ``RougePool`` keeps the pool sorted by
length (a column only touches the entries still that long); new entries wait in a small tail, merged later,
so adding accepted texts one by one stays cheap.
"""

from __future__ import annotations

import re

import numpy as np

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")
_TAIL_LIMIT = 256  # entries added since the last merge; scored as a second small block
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def tokenize(text: str) -> list[str]:
    """rouge-score's default tokens: lower-cased, every run of characters outside [a-z0-9] a separator."""
    return _NON_ALPHANUMERIC.sub(" ", text.lower()).split()


def f_measure(lcs: int | np.ndarray, query_len: int, other_len: int | np.ndarray):
    """ROUGE-L F from the LCS length, computed as rouge-score does (precision and recall first), so floats
    agree to the last bit; 0 where either side has no token."""
    lcs = np.asarray(lcs, dtype=np.float64)
    other = np.asarray(other_len, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / other
        recall = lcs / query_len
        f = 2 * precision * recall / (precision + recall)
    return np.where((lcs > 0) & (other > 0) & (query_len > 0), f, 0.0)


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b row by row, each row one integer in little-endian uint64 words (the top carry is dropped)."""
    if a.shape[1] == 1:
        return a + b
    carry = np.zeros(len(a), dtype=np.uint64)
    total = np.empty_like(a)
    for w in range(a.shape[1]):
        partial = a[:, w] + b[:, w]
        total[:, w] = partial + carry
        carry = ((partial < a[:, w]) | (total[:, w] < partial)).astype(np.uint64)
    return total


class _Block:
    """Pool entries sorted by length, longest first, stored column by column: column j holds token j of
    every entry longer than j (a prefix of the rows, since they are sorted)."""

    def __init__(self, entries: list[np.ndarray], positions: list[int]):
        lengths = np.array([len(e) for e in entries], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        self.lengths = lengths[order]
        self.positions = np.asarray(positions, dtype=np.int64)[order]
        width = int(self.lengths[0]) if len(entries) else 0
        self.active = np.searchsorted(-self.lengths, -np.arange(width), side="left")
        self.starts = np.concatenate([[0], np.cumsum(self.active)])
        rows = [entries[i] for i in order]
        self.columns = np.concatenate([[r[j] for r in rows[:count]] for j, count in enumerate(self.active)]
                                      or [[]]).astype(np.int64)

    def lcs(self, query: np.ndarray, vocab_size: int) -> np.ndarray:
        """LCS length of ``query`` (ids below ``vocab_size``) with every entry, in block order."""
        m = len(query)
        if m == 0 or len(self.lengths) == 0:
            return np.zeros(len(self.lengths), dtype=np.int64)
        words = (m + 63) // 64
        distinct, local = np.unique(query, return_inverse=True)
        masks = np.zeros((len(distinct) + 1, words), dtype=np.uint64)  # last row: tokens not in the query
        for bit, token in enumerate(local):
            masks[token, bit // 64] |= np.uint64(1) << np.uint64(bit % 64)
        lookup = np.full(vocab_size, len(distinct), dtype=np.int64)
        lookup[distinct] = np.arange(len(distinct))
        matches = masks[lookup[self.columns]]
        state = np.full((len(self.lengths), words), _ONES, dtype=np.uint64)
        for column, count in enumerate(self.active):
            v = state[:count]
            match = matches[self.starts[column]:self.starts[column + 1]]
            state[:count] = _add(v, v & match) | (v & ~match)
        low = np.full(words, _ONES, dtype=np.uint64)
        if m % 64:
            low[-1] = (np.uint64(1) << np.uint64(m % 64)) - np.uint64(1)
        return np.bitwise_count(~state & low).sum(axis=1).astype(np.int64)


class RougePool:
    """Tokenised texts to score queries against; ``add`` is cheap, ``scores`` is one vectorised pass."""

    def __init__(self, texts: list[str] = ()):
        self.texts: list[str] = []
        self._vocab: dict[str, int] = {}
        self._entries: list[np.ndarray] = []
        self._block: _Block | None = None  # entries[:merged]
        self._tail: _Block | None = None  # entries[merged:]
        self._merged = 0
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self._entries)

    def ids(self, text: str) -> np.ndarray:
        """The text's tokens as integer ids (new words get new ids)."""
        return np.array([self._vocab.setdefault(t, len(self._vocab)) for t in tokenize(text)], dtype=np.int64)

    def add(self, text: str) -> int:
        """Add a text; returns its index."""
        self.texts.append(text)
        self._entries.append(self.ids(text))
        self._tail = None
        if len(self._entries) - self._merged > _TAIL_LIMIT:
            self._block, self._merged = None, len(self._entries)
        return len(self._entries) - 1

    def scores(self, text: str) -> np.ndarray:
        """ROUGE-L F of ``text`` against every entry, in the order they were added."""
        query = self.ids(text)
        if self._block is None:
            self._block = _Block(self._entries[: self._merged], list(range(self._merged)))
        if self._tail is None:
            self._tail = _Block(self._entries[self._merged:], list(range(self._merged, len(self._entries))))
        out = np.zeros(len(self._entries), dtype=np.float64)
        for block in (self._block, self._tail):
            if len(block.lengths):
                out[block.positions] = f_measure(block.lcs(query, len(self._vocab)), len(query), block.lengths)
        return out

    def max(self, text: str) -> tuple[float, int]:
        """The highest ROUGE-L F of ``text`` against the pool and that entry's index ((0.0, -1) if empty)."""
        if not self._entries:
            return 0.0, -1
        scores = self.scores(text)
        best = int(np.argmax(scores))
        return float(scores[best]), best


def rouge_l_max(query: str, pool: RougePool | list[str]) -> tuple[float, int]:
    """Highest ROUGE-L F of ``query`` against ``pool`` (a RougePool or texts) and the index reached."""
    return (pool if isinstance(pool, RougePool) else RougePool(pool)).max(query)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F of two texts."""
    return float(RougePool([b]).scores(a)[0])
