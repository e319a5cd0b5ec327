"""Which records a report shows and measures: an even sample chosen by id, the same record in every series.

A record is in the sample of step ``s`` when its key is a multiple of ``s``. The key of an id (a content
hash: hex digits) is its last eight hex digits, mixed by Knuth's multiplicative hash so that ids that are
not random (sequential test ids) spread too; any other text (an unreadable row's raw line) is keyed by its
CRC-32. Keys are computed for a whole Arrow column at once: a run of millions of records is sampled in a
fraction of a second, without turning its ids into Python strings.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

from dataflywheel.pipeline.run_dir import values_at

_DIGITS = 8
_MIX = 2654435761  # Knuth: the odd 32-bit constant nearest 2**32 / golden ratio
_HEX = "0123456789abcdef"
_NIBBLE = np.zeros(256, dtype=np.uint32)
_NIBBLE[np.frombuffer(_HEX.encode(), dtype=np.uint8)] = np.arange(16, dtype=np.uint32)
_IS_HEX = np.zeros(256, dtype=bool)
_IS_HEX[np.frombuffer(_HEX.encode(), dtype=np.uint8)] = True


def sample_step(count: int, size: int) -> int:
    """One in how many records to take so that about ``size`` of ``count`` are taken."""
    return max(1, -(-count // size))


def _hex_tail(text: str) -> bool:
    return len(text) >= _DIGITS and all(c in _HEX for c in text[-_DIGITS:])


def sample_key(text: str) -> int:
    """The 32-bit sampling key of one id (or other text)."""
    if _hex_tail(text):
        return (int(text[-_DIGITS:], 16) * _MIX) & 0xFFFFFFFF
    return zlib.crc32(text.encode("utf-8"))


def sampled(text: str, step: int) -> bool:
    """Whether the record with this id (or the row with this text) is in the sample of ``step``."""
    return step == 1 or sample_key(text) % step == 0


def _bits(buffer, offset: int, length: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder="little")
    return bits[offset:offset + length].astype(bool)


def present(values: pa.Array) -> np.ndarray:
    """Which values of an Arrow array are not null (numpy; ``to_numpy`` and compute kernels with a Python
    scalar would import pandas)."""
    if values.null_count == 0:
        return np.ones(len(values), dtype=bool)
    return _bits(values.buffers()[0], values.offset, len(values))


def sample_keys(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``sample_key`` of every value of a string column, as uint32 (a null gets 0: key it yourself)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.lib.StringBuilder().finish()
    n = len(values)
    if values.type == pa.large_string():
        values = values.cast(pa.string())
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32, count=n + 1, offset=4 * values.offset) \
        if n else np.zeros(1, dtype=np.int32)
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8) if n and values.buffers()[2] is not None \
        else np.zeros(0, dtype=np.uint8)
    ends = offsets[1:]
    hexed = (ends - offsets[:-1] >= _DIGITS) & present(values)
    rows = np.flatnonzero(hexed)
    digits = data[(ends[rows] - _DIGITS)[:, None] + np.arange(_DIGITS)]  # the last 8 bytes of each
    nibbles = _NIBBLE[digits]
    good = _IS_HEX[digits].all(axis=1)
    hexed[rows[~good]] = False
    keys = np.zeros(n, dtype=np.uint32)
    value = np.zeros(len(rows), dtype=np.uint32)
    for column in range(_DIGITS):
        value = (value << np.uint32(4)) | nibbles[:, column]
    keys[rows] = value * np.uint32(_MIX)  # uint32 arithmetic wraps: the same as sample_key's mask
    other = np.flatnonzero(~hexed & present(values))
    if len(other):
        keys[other] = [zlib.crc32(t.encode("utf-8")) for t in values_at(values, other)]
    return keys


def sample_mask(values: pa.Array | pa.ChunkedArray, step: int) -> np.ndarray:
    """For each value of a string column: whether its record is in the sample of ``step``."""
    if step == 1:
        return np.ones(len(values), dtype=bool)
    return sample_keys(values) % np.uint32(step) == 0
