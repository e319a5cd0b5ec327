"""An input split into shards that workers read on their own, giving what reading it whole gives.

A shard is a run of *pieces*: whole files, line ranges of an uncompressed JSONL file, or row groups of a Parquet
file, each with where its rows start (line number, row index) so that every row is named as when the whole
input is read in one pass (``t0_train_50k/file.jsonl:812``). Reading row by row is stateless (each row's format
is detected on its own), so shards read in order give the same records and unreadable rows in the same order.
Splitting a JSONL file needs its line numbers: the planner counts newlines once (a byte scan, no parsing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from dataflywheel.io import ReadReject, _checked, _convert
from dataflywheel.io.files import ITERATORS, _guarded, _iter_jsonl, _iter_parquet, data_files, detect_file_type

MAX_SHARD_BYTES = 64 * 2**20
MIN_SHARD_BYTES = 2**20
_SCAN = 16 * 2**20


@dataclass(frozen=True)
class Piece:
    """A file, or part of one: JSONL bytes ``start``..``stop`` (``first``: the number of its first line), or
    Parquet row groups ``start``..``stop``. ``prefix`` names its rows as the whole input's reader does."""

    path: str
    kind: str
    prefix: str = ""
    start: int = 0
    stop: int | None = None
    first: int = 1


def _files(path: Path, kind: str, name: str) -> list[tuple[Path, str, str]]:
    """(file, its type, the prefix its rows are named with: ``name`` is the input's name as the user gave it)."""
    if kind == "dir":
        return [(file, detect_file_type(file), f"{name}/") for file in data_files(path)]
    return [(path, kind, "")]


def _jsonl_pieces(path: Path, prefix: str, size: int) -> list[Piece]:
    """Line ranges of about ``size`` bytes, cut after a newline, with the number of each range's first line."""
    pieces, start, first, lines, read = [], 0, 1, 0, 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_SCAN):
            at = 0
            while read + len(chunk) - start >= size:  # a cut falls in this chunk: after the newline that follows
                cut = chunk.find(b"\n", max(at, start + size - read - 1))
                if cut < 0:
                    break
                lines += chunk.count(b"\n", at, cut + 1)
                at = cut + 1
                pieces.append(Piece(str(path), "jsonl", prefix, start, read + at, first))
                start, first = read + at, lines + 1
            lines += chunk.count(b"\n", at)
            read += len(chunk)
    if read > start:
        pieces.append(Piece(str(path), "jsonl", prefix, start, None, first))
    return pieces


def _parquet_pieces(path: Path, prefix: str, size: int) -> list[Piece]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    pieces, start, held = [], 0, 0
    for group in range(meta.num_row_groups):
        held += meta.row_group(group).total_byte_size
        if held >= size:
            pieces.append(Piece(str(path), "parquet", prefix, start, group + 1))
            start, held = group + 1, 0
    if start < meta.num_row_groups or not pieces:
        pieces.append(Piece(str(path), "parquet", prefix, start, meta.num_row_groups))
    return pieces


def _pieces(path: Path, kind: str, prefix: str, size: int) -> list[Piece]:
    if path.name.endswith(".gz"):  # a compressed stream is read from its start
        return [Piece(str(path), kind, prefix)]
    if kind == "jsonl":
        with open(path, "rb") as handle:
            if handle.read(2) in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16: rejected as a whole, from its first line
                return [Piece(str(path), kind, prefix)]
        return _jsonl_pieces(path, prefix, size)
    if kind == "parquet":
        return _parquet_pieces(path, prefix, size)
    return [Piece(str(path), kind, prefix)]


def _bytes(piece: Piece) -> int:
    path = Path(piece.path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if piece.kind == "jsonl" and not path.name.endswith(".gz"):
        return (piece.stop if piece.stop is not None else path.stat().st_size) - piece.start
    if piece.kind == "parquet" and not path.name.endswith(".gz"):
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        return sum(meta.row_group(g).total_byte_size for g in range(piece.start, piece.stop))
    return path.stat().st_size


def bounded(shard: list[Piece]) -> bool:
    """Whether a shard is at most ``MAX_SHARD_BYTES`` of uncompressed JSONL or Parquet row groups (what a worker
    can read and book whole in bounded memory; a compressed file or a CSV is read whole, of any size)."""
    return (all(p.kind in ("jsonl", "parquet") and not p.path.endswith(".gz") for p in shard)
            and sum(_bytes(p) for p in shard) <= MAX_SHARD_BYTES)


def plan_shards(path: str | Path, file_type: str | None = None, *, workers: int = 1) -> list[list[Piece]]:
    """The shards of an input, in reading order: about four per worker, each of 1-64 MB where the input allows
    (a compressed file or a JSON array is one piece; a small file shares a shard with its neighbours)."""
    name = Path(path).name
    path = Path(path).absolute()  # workers do not share the driver's working directory (links are kept)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    kind = file_type or detect_file_type(path)
    files = _files(path, kind, name)
    total = sum(file.stat().st_size if file.is_file() else 0 for file, _, _ in files)
    size = min(MAX_SHARD_BYTES, max(MIN_SHARD_BYTES, total // (4 * max(1, workers)) + 1))
    shards: list[list[Piece]] = []
    held = 0
    for file, file_kind, prefix in files:
        for piece in _pieces(file, file_kind, prefix, size):
            weight = _bytes(piece)
            if not shards or (held + weight > size and shards[-1]):
                shards.append([])
                held = 0
            shards[-1].append(piece)
            held += weight
    return shards


def piece_rows(piece: Piece) -> Iterator:
    """``(where, row or error)`` of one piece, named as when the whole input is read."""
    path = Path(piece.path)
    if piece.kind == "jsonl" and (piece.start or piece.stop is not None):
        rows = _iter_jsonl(path, piece.start, piece.stop, piece.first)
    elif piece.kind == "parquet" and piece.stop is not None:
        rows = _iter_parquet(path, range(piece.start, piece.stop))
    else:
        rows = ITERATORS[piece.kind](path)
    for where, row in _guarded(path, rows):
        yield piece.prefix + where, row


def read_shard(shard: list[Piece], fmt: str | None = None,
               fields: dict[str, str] | None = None) -> Iterator[dict | ReadReject]:
    """The records and unreadable rows of one shard, as ``read_records`` gives them for the whole input."""
    return _convert((row for piece in shard for row in piece_rows(piece)), fmt, _checked(fmt, fields))


def shard_json(shard: list[Piece]) -> list[dict]:
    return [asdict(piece) for piece in shard]


def shard_from_json(data: list[dict]) -> list[Piece]:
    return [Piece(**piece) for piece in data]
