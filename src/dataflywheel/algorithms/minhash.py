"""MinHash-LSH near-duplicate detection.

Shingles are hashed to 64-bit values with polynomial prefix hashes over a whole batch of texts at once
(no Python loop per word). Signatures come from rensa's Rust kernel fed with those hashes, or from
numpy multiply-shift permutations ``(a * x + b) >> 32`` (a 2-universal family) with
``np.minimum.reduceat``. Bands are hashed to 64-bit bucket keys. Every member of a bucket is verified
against the bucket's first member; a member that fails is then verified against every other member of
that bucket, so the verified links connect the same records as verifying all pairs of the bucket would
(members that pass are already connected through the first). Clusters are the connected components.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from dataflywheel.text import dedup_key

_EMPTY = np.uint64(0x9E3779B97F4A7C15)  # the one shingle of a text with no tokens
_P = 0x100000001B3  # odd, so it has an inverse modulo 2**64
_P_INV = pow(_P, -1, 2**64)
_POWER_CACHE: dict[int, np.ndarray] = {}
_BLOCK = 4096


def _powers(base: int, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) modulo 2**64 (cached; built as an outer product of two short cumprods)."""
    cached = _POWER_CACHE.get(base)
    if cached is None or len(cached) < n:
        blocks = -(-max(n, 1 << 22) // _BLOCK)
        with np.errstate(over="ignore"):
            small = np.full(_BLOCK, base, dtype=np.uint64)
            small[0] = 1
            small = np.cumprod(small, dtype=np.uint64)
            large = np.full(blocks, pow(base, _BLOCK, 2**64), dtype=np.uint64)
            large[0] = 1
            large = np.cumprod(large, dtype=np.uint64)
            cached = _POWER_CACHE[base] = (large[:, None] * small[None, :]).ravel()
    return cached[:n]


_WORD_TABLE: np.ndarray | None = None


def _word_table() -> np.ndarray:
    """For every code point: is it a word character (``str.isalnum``: regex \\w less the underscore)?"""
    global _WORD_TABLE
    if _WORD_TABLE is None:
        every = np.arange(0x110000, dtype=np.uint32).tobytes().decode("utf-32-le", errors="surrogatepass")
        edges = np.zeros(0x110001, dtype=np.int8)
        for run in re.finditer(r"[^\W_]+", every):  # a few thousand runs, found in C
            edges[run.start()] += 1
            edges[run.end()] -= 1
        _WORD_TABLE = np.cumsum(edges[:-1], dtype=np.int8).astype(bool)
    return _WORD_TABLE


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place: spreads polynomial hashes over all 64 bits."""
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
        return x


def _span_hashes(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, plus_one: bool = False) -> np.ndarray:
    """Polynomial hash of values[start:end] (each value + 1 when ``plus_one``) for every span at once
    (prefix sums modulo 2**64, computed in place)."""
    n = len(values)
    with np.errstate(over="ignore"):
        prefix = np.empty(n + 1, dtype=np.uint64)
        prefix[0] = 0
        np.multiply(values, _powers(_P, n), out=prefix[1:])
        if plus_one:
            prefix[1:] += _powers(_P, n)
        np.cumsum(prefix[1:], out=prefix[1:])
        spans = prefix[ends]
        spans -= prefix[starts]
        spans *= _powers(_P_INV, n + 1)[starts]
        return _mix(spans)


def _shingles_from_tokens(tokens: np.ndarray, counts: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every n-gram of tokens inside each document (a short document is one shingle)."""
    doc_start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    per_doc = np.maximum(counts - ngram + 1, 1)
    offsets = np.arange(per_doc.sum()) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
    starts = np.repeat(doc_start, per_doc) + offsets
    ends = np.minimum(starts + ngram, np.repeat(doc_start + counts, per_doc))
    hashes = _span_hashes(tokens, starts, ends) if len(tokens) else np.zeros(len(starts), dtype=np.uint64)
    hashes[np.repeat(counts == 0, per_doc)] = _EMPTY
    return hashes, per_doc


def batch_shingles(texts: list[str], ngram: int = 5, unit: str = "word") -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of many texts at once: (flat uint64 hashes, count per text); duplicates are kept.

    Texts are normalised as ``dedup_key`` does (NFKC, case folding, punctuation dropped). Words are runs of
    word characters found in the code points of the whole batch with numpy, not per word in Python."""
    if unit == "char":
        norms = [dedup_key(t) for t in texts]
        tokens = np.frombuffer("".join(norms).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64) + np.uint64(1)
        counts = np.fromiter((len(t) for t in norms), dtype=np.int64, count=len(norms))
        return _shingles_from_tokens(tokens, counts, ngram)
    # words: runs of word characters, found as the changes of a padded is-word mask (start, end, start, ...)
    folded = [unicodedata.normalize("NFKC", t).casefold() for t in texts]
    points = np.frombuffer("\x00".join(folded).encode("utf-32-le"), dtype=np.uint32)
    word = np.zeros(len(points) + 2, dtype=bool)
    np.take(_word_table(), points, out=word[1:-1])
    bounds = np.flatnonzero(word[1:] != word[:-1])
    starts, ends = bounds[0::2], bounds[1::2]
    lengths = np.fromiter((len(t) for t in folded), dtype=np.int64, count=len(folded))
    separators = np.cumsum(lengths + 1) - 1  # after each text (the last one: the end)
    counts = np.diff(np.searchsorted(starts, separators), prepend=0)
    words = _span_hashes(points, starts, ends, plus_one=True) if len(starts) else np.zeros(0, dtype=np.uint64)
    return _shingles_from_tokens(words, counts, ngram)


def shingle_hashes(text: str, ngram: int = 5, unit: str = "word") -> np.ndarray:
    """Distinct shingle hashes of one text."""
    return np.unique(batch_shingles([text], ngram, unit)[0])


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Odd multipliers a and offsets b of the multiply-shift hash family."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def signatures(flat: np.ndarray, counts: np.ndarray, num_perm: int = 128, seed: int = 1,
               engine: str = "auto") -> np.ndarray:
    """MinHash signatures, uint32 [len(counts), num_perm], of documents given as flat shingle hashes + counts.

    ``engine``: 'rensa' (Rust, measured ~3x faster end to end here; see docs/benchmarks.md), 'numpy', or
    'auto' (rensa when installed)."""
    if engine in ("auto", "rensa"):
        try:
            from rensa import RMinHash
        except ImportError:
            if engine == "rensa":
                raise
        else:
            offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.uint64)
            matrix = RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, num_perm, seed)
            return np.array(matrix.to_rows(), dtype=np.uint32).reshape(len(counts), num_perm)
    return numpy_signatures(flat, counts, permutations(num_perm, seed))


def numpy_signatures(flat: np.ndarray, counts: np.ndarray, perms: tuple[np.ndarray, np.ndarray],
                     block_shingles: int = 4096) -> np.ndarray:
    """MinHash signatures with multiply-shift permutations in numpy.

    Documents are processed in blocks of about ``block_shingles`` shingles so that the hashed
    [shingles, permutations] matrix stays in the CPU cache."""
    a, b = perms
    n_docs, num_perm = len(counts), len(a)
    out = np.empty((n_docs, num_perm), dtype=np.uint32)
    if not n_docs:
        return out
    ends = np.cumsum(counts)
    starts = ends - counts
    chunk = max(1, min(num_perm, (1 << 20) // (8 * block_shingles)))  # ~1 MB of temporary per step
    buffer = np.empty(max(block_shingles, int(counts.max())) * chunk, dtype=np.uint64)
    first = 0
    with np.errstate(over="ignore"):
        while first < n_docs:
            last = int(np.searchsorted(ends, starts[first] + block_shingles, side="right"))
            last = max(last, first + 1)
            lo, hi = starts[first], ends[last - 1]
            values = flat[lo:hi, None]
            offsets = starts[first:last] - lo
            for p0 in range(0, num_perm, chunk):
                width = min(chunk, num_perm - p0)
                view = buffer[: (hi - lo) * width].reshape(hi - lo, width)
                np.multiply(values, a[None, p0:p0 + width], out=view)
                view += b[None, p0:p0 + width]
                view >>= np.uint64(32)
                out[first:last, p0:p0 + width] = np.minimum.reduceat(view, offsets, axis=0)
            first = last
    return out


def _false_positive_area(threshold: float, bands: int, rows: int) -> float:
    from scipy.integrate import quad  # imported here: scipy.integrate alone costs 0.7 s at start-up

    return quad(lambda s: 1 - (1 - s ** rows) ** bands, 0.0, threshold)[0]


def _false_negative_area(threshold: float, bands: int, rows: int) -> float:
    from scipy.integrate import quad

    return quad(lambda s: 1 - (1 - (1 - s ** rows) ** bands), threshold, 1.0)[0]


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted false positive + negative areas."""
    best, best_error = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            error = (fp_weight * _false_positive_area(threshold, bands, rows)
                     + fn_weight * _false_negative_area(threshold, bands, rows))
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


def band_keys(sigs: np.ndarray, bands: int, rows: int, seed: int = 7) -> np.ndarray:
    """uint64 bucket key per document and band, [n, bands]."""
    rng = np.random.default_rng(seed)
    mix = rng.integers(1, 2**63, size=rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    keys = np.empty((len(sigs), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            block = sigs[:, band * rows:(band + 1) * rows].astype(np.uint64)
            keys[:, band] = (block * mix[None, :]).sum(axis=1, dtype=np.uint64) ^ np.uint64(band * 0x9E3779B97F4A7C15 % 2**64)
    return keys


def _buckets(column: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, bucket start in order, bucket size in order) of one band's keys: members sorted by bucket."""
    order = np.argsort(column, kind="stable")
    ordered = column[order]
    new_bucket = np.ones(len(column), dtype=bool)
    new_bucket[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(new_bucket)
    sizes = np.diff(np.append(starts, len(column)))
    return order, np.repeat(starts, sizes), np.repeat(sizes, sizes)


def candidate_links(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(member, head) pairs: every document linked to the first document of each bucket it shares."""
    members, heads = [], []
    for band in range(keys.shape[1]):
        order, start, _ = _buckets(keys[:, band])
        linked = np.arange(len(order)) != start
        members.append(order[linked])
        heads.append(order[start[linked]])
    return (np.concatenate(members) if members else np.zeros(0, np.int64),
            np.concatenate(heads) if heads else np.zeros(0, np.int64))


def verified_links(keys: np.ndarray, similar, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left, right, similarity) of the candidate pairs that reach ``threshold``.

    First every member is checked against its bucket's first member; members that fail are checked
    against every other member of that bucket, in every band where they failed."""
    n, bands = keys.shape
    buckets, members, heads, band_of, where = [], [], [], [], []
    for band in range(bands):
        order, start, size = _buckets(keys[:, band])
        buckets.append((order, start, size))
        linked = np.flatnonzero(np.arange(n) != start)
        members.append(order[linked])
        heads.append(order[start[linked]])
        band_of.append(np.full(len(linked), band, dtype=np.int32))
        where.append(linked)
    members, heads = np.concatenate(members), np.concatenate(heads)
    band_of, where = np.concatenate(band_of), np.concatenate(where)
    low, high = np.minimum(members, heads).astype(np.int64), np.maximum(members, heads).astype(np.int64)
    pairs, inverse = np.unique(low * n + high, return_inverse=True)
    left, right = pairs // n, pairs % n
    similarity = similar(left, right)
    failed = similarity[inverse.ravel()] < threshold
    more = []
    for band in np.unique(band_of[failed]):
        order, start, size = buckets[band]
        positions = where[failed & (band_of == band)]
        # each failed member against every member of its bucket but the first and itself
        f_start, counts = start[positions], size[positions] - 1
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        others = np.repeat(f_start, counts) + 1 + offsets
        mine = np.repeat(positions, counts)
        keep = others != mine
        a, b = order[mine[keep]].astype(np.int64), order[others[keep]].astype(np.int64)
        more.append(np.minimum(a, b) * n + np.maximum(a, b))
    if more:
        extra = np.setdiff1d(np.concatenate(more), pairs)
        if len(extra):
            left, right = np.concatenate([left, extra // n]), np.concatenate([right, extra % n])
            similarity = np.concatenate([similarity, similar(extra // n, extra % n)])
    keep = similarity >= threshold
    return left[keep], right[keep], similarity[keep]


def estimated_jaccard(sigs: np.ndarray, left: np.ndarray, right: np.ndarray, block: int = 65536) -> np.ndarray:
    """Share of equal MinHash values: an unbiased estimate of the Jaccard similarity (in blocks of pairs)."""
    out = np.empty(len(left), dtype=np.float64)
    for start in range(0, len(left), block):
        stop = start + block
        out[start:stop] = (sigs[left[start:stop]] == sigs[right[start:stop]]).mean(axis=1)
    return out


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter) if (len(a) or len(b)) else 1.0


@dataclass
class Clusters:
    """Cluster label per document, and the links (with similarity) that formed them."""

    labels: np.ndarray
    members: np.ndarray
    heads: np.ndarray
    similarity: np.ndarray


def cluster(sigs: np.ndarray, threshold: float, bands: int, rows: int, verify: np.ndarray | None = None) -> Clusters:
    """Connected components over LSH candidate pairs whose similarity reaches ``threshold``.

    ``verify`` gives an exact similarity per (left, right) pair when exact verification is wanted;
    otherwise pairs are checked with the signature estimate."""
    n = len(sigs)
    similar = verify if verify is not None else (lambda a, b: estimated_jaccard(sigs, a, b))
    members, heads, similarity = verified_links(band_keys(sigs, bands, rows), similar, threshold)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(members), dtype=np.int8), (members, heads)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return Clusters(labels=labels, members=members, heads=heads, similarity=similarity)


class NearDuplicateIndex:
    """Texts added over time, each new one checked against every earlier one: MinHash-LSH buckets find the
    candidates, the signature estimate of Jaccard decides (for a generator's outputs against its pool and
    everything it accepted so far). Bands and rows as ``optimal_bands`` chooses for a miss-averse 0.75."""

    def __init__(self, threshold: float = 0.7, num_perm: int = 128, ngram: int = 5, seed: int = 1,
                 engine: str = "auto"):
        self.threshold, self.num_perm, self.ngram, self.seed, self.engine = threshold, num_perm, ngram, seed, engine
        self.bands, self.rows = optimal_bands(threshold, num_perm, 0.25, 0.75)
        self.labels: list = []
        self._sigs = np.zeros((64, num_perm), dtype=np.uint32)
        self._buckets: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]

    def __len__(self) -> int:
        return len(self.labels)

    def sign(self, texts: list[str]) -> np.ndarray:
        flat, counts = batch_shingles(texts, self.ngram)
        return signatures(flat, counts, self.num_perm, self.seed, self.engine)

    def add(self, texts: list[str], labels: list) -> None:
        """Index ``texts`` (no check), each known by its label."""
        if texts:
            self._add_signed(self.sign(texts), labels)

    def _add_signed(self, sigs: np.ndarray, labels: list) -> None:
        start = len(self.labels)
        if start + len(sigs) > len(self._sigs):
            grown = np.zeros((max(2 * len(self._sigs), start + len(sigs)), self.num_perm), dtype=np.uint32)
            grown[:start] = self._sigs[:start]
            self._sigs = grown
        self._sigs[start:start + len(sigs)] = sigs
        for offset, keys in enumerate(band_keys(sigs, self.bands, self.rows).tolist()):
            for bucket, key in zip(self._buckets, keys):
                bucket.setdefault(key, []).append(start + offset)
        self.labels.extend(labels)

    def best_match(self, sig: np.ndarray) -> tuple[float, object] | None:
        """(estimated Jaccard, label) of the most similar indexed text at or above the threshold, or None."""
        keys = band_keys(sig[None, :], self.bands, self.rows)[0].tolist()
        found: set[int] = set()
        for bucket, key in zip(self._buckets, keys):
            found.update(bucket.get(key, ()))
        if not found:
            return None
        index = np.fromiter(found, dtype=np.int64, count=len(found))
        similarity = (self._sigs[index] == sig[None, :]).mean(axis=1)
        best = int(similarity.argmax())
        return (float(similarity[best]), self.labels[index[best]]) if similarity[best] >= self.threshold else None

    def screen(self, texts: list[str], labels: list) -> list[tuple[float, object] | None]:
        """The best earlier match of each text (the earlier texts of this call included); texts with none are
        indexed."""
        matches = []
        for sig, label in zip(self.sign(texts) if texts else [], labels):
            match = self.best_match(sig)
            if match is None:
                self._add_signed(sig[None, :], [label])
            matches.append(match)
        return matches
