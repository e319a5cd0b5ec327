"""MinHash-LSH near-duplicate detection, vectorised with numpy.

Shingles are hashed to 64-bit values (xxhash per word, combined per n-gram in numpy); each of the
``num_perm`` permutations is a multiply-shift hash ``(a * x + b) >> 32`` (a 2-universal family), so a
whole batch of documents is signed with one matrix operation and ``np.minimum.reduceat``. Bands are
hashed to 64-bit bucket keys; documents sharing a bucket are linked to the bucket's first member and
clusters are the connected components of those links.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import xxhash
from scipy.integrate import quad
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dataflywheel.text import dedup_key

_WORD = re.compile(r"\w+", re.UNICODE)
_EMPTY = np.uint64(0x9E3779B97F4A7C15)  # hash of a text with no shingles: such texts match each other only


def shingle_hashes(text: str, ngram: int = 5, unit: str = "word") -> np.ndarray:
    """Distinct 64-bit hashes of the text's n-gram shingles (words or characters) after normalisation."""
    norm = dedup_key(text)
    if unit == "char":
        grams = {norm[i:i + ngram] for i in range(max(1, len(norm) - ngram + 1))} if norm else set()
        values = [xxhash.xxh3_64_intdigest(g) for g in grams]
        return np.unique(np.array(values, dtype=np.uint64)) if values else np.array([_EMPTY], dtype=np.uint64)
    words = _WORD.findall(norm)
    if not words:
        return np.array([_EMPTY], dtype=np.uint64)
    ids = np.fromiter((xxhash.xxh3_64_intdigest(w) for w in words), dtype=np.uint64, count=len(words))
    if len(ids) < ngram:  # short text: one shingle of all its words
        ngram = len(ids)
    combined = ids[: len(ids) - ngram + 1].copy()
    with np.errstate(over="ignore"):
        for k in range(1, ngram):
            combined = combined * np.uint64(0x100000001B3) ^ ids[k: len(ids) - ngram + 1 + k]
    return np.unique(combined)


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Odd multipliers a and offsets b of the multiply-shift hash family."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def signatures(shingle_sets: list[np.ndarray], perms: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """MinHash signatures, uint32 [len(shingle_sets), num_perm]."""
    a, b = perms
    if not shingle_sets:
        return np.zeros((0, len(a)), dtype=np.uint32)
    lengths = np.fromiter((len(s) for s in shingle_sets), dtype=np.int64, count=len(shingle_sets))
    flat = np.concatenate(shingle_sets)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    out = np.empty((len(shingle_sets), len(a)), dtype=np.uint32)
    with np.errstate(over="ignore"):
        for p0 in range(0, len(a), 32):  # 32 permutations at a time bounds the temporary matrix
            hashed = ((flat[:, None] * a[None, p0:p0 + 32] + b[None, p0:p0 + 32]) >> np.uint64(32)).astype(np.uint32)
            out[:, p0:p0 + 32] = np.minimum.reduceat(hashed, starts, axis=0)
    return out


def _false_positive_area(threshold: float, bands: int, rows: int) -> float:
    return quad(lambda s: 1 - (1 - s ** rows) ** bands, 0.0, threshold)[0]


def _false_negative_area(threshold: float, bands: int, rows: int) -> float:
    return quad(lambda s: 1 - (1 - (1 - s ** rows) ** bands), threshold, 1.0)[0]


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


def candidate_links(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(member, head) pairs: every document linked to the first document of each bucket it shares."""
    n, bands = keys.shape
    members, heads = [], []
    for band in range(bands):
        column = keys[:, band]
        order = np.argsort(column, kind="stable")
        ordered = column[order]
        new_bucket = np.ones(n, dtype=bool)
        new_bucket[1:] = ordered[1:] != ordered[:-1]
        head_of = order[np.maximum.accumulate(np.where(new_bucket, np.arange(n), 0))]
        linked = ~new_bucket
        members.append(order[linked])
        heads.append(head_of[linked])
    return np.concatenate(members) if members else np.zeros(0, np.int64), np.concatenate(heads) if heads else np.zeros(0, np.int64)


def estimated_jaccard(sigs: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Share of equal MinHash values: an unbiased estimate of the Jaccard similarity."""
    return (sigs[left] == sigs[right]).mean(axis=1)


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
    """Connected components over LSH links whose similarity reaches ``threshold``.

    ``verify`` gives an exact similarity per (member, head) link when exact verification is wanted;
    otherwise links are checked with the signature estimate."""
    n = len(sigs)
    members, heads = candidate_links(band_keys(sigs, bands, rows))
    if len(members):
        pairs = np.unique(np.stack([members, heads], axis=1), axis=0)
        members, heads = pairs[:, 0], pairs[:, 1]
    similarity = verify(members, heads) if verify is not None else estimated_jaccard(sigs, members, heads)
    keep = similarity >= threshold
    members, heads, similarity = members[keep], heads[keep], similarity[keep]
    graph = coo_matrix((np.ones(len(members), dtype=np.int8), (members, heads)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return Clusters(labels=labels, members=members, heads=heads, similarity=similarity)
