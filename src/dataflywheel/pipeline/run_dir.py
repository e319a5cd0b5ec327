"""The run directory: checkpoints, rejects, manifest and output, written atomically."""

from __future__ import annotations

import json
import os
import re
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataflywheel.records import dumps, loads

# ``origin``: the id a record had when it entered this run (read or generated): what the invariant counts.
CHECKPOINT_SCHEMA = pa.schema([("id", pa.string()), ("origin", pa.string()), ("record", pa.string())])
REJECT_SCHEMA = pa.schema([("step", pa.string()), ("reason", pa.string()), ("source", pa.string()),
                           ("id", pa.string()), ("origin", pa.string()), ("record", pa.string()),
                           ("raw", pa.string()), ("error", pa.bool_())])
_ROW_GROUP = 4096
_ENCODING = {"compression": "lz4", "use_dictionary": False, "write_statistics": False}
"""How checkpoints and rejects are written. Their strings are mostly unique (ids, record JSON), so dictionary
encoding only costs: pyarrow tries it, falls back to plain pages, and every reader decodes both; LZ4 reads
back several times faster than the default Snappy at about the same size and write time. Measured on 55k
t0_train_50k records (75 MB of JSON): default 0.18 s to write, 0.25 s to read the id and record columns,
30 MB; these settings 0.17 s, 0.04 s, 29 MB. Min/max statistics of record JSON serve no reader."""


def _column(values: list, kind: pa.DataType) -> pa.Array:
    """An Arrow column of ``values``. Built directly rather than by ``pa.array``, which imports pandas on
    first use (half a second of every run's first batch)."""
    if kind == pa.string():
        joined = _utf8_column(values) if values and all(type(v) is bytes for v in values) else None
        if joined is not None:  # record JSON: its UTF-8 as one buffer
            return joined
        builder = pa.lib.StringBuilder()
        builder.append_values(values)
        return builder.finish()
    if kind == pa.bool_():
        if None in values:
            raise ValueError("a boolean checkpoint column holds None")
        bits = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits.tobytes())])
    return pa.array(values, type=kind)


def _utf8_column(values: list[bytes]) -> pa.Array | None:
    """A string column of UTF-8 ``values``, their bytes joined into one buffer (about half the time of a
    ``StringBuilder``, which looks at each value), checked to be UTF-8 all at once; None past the 2 GB a
    string column's offsets hold (a builder splits it)."""
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        return None
    column = pa.Array.from_buffers(pa.string(), len(values), [None, pa.py_buffer(offsets.astype(np.int32)),
                                                              pa.py_buffer(b"".join(values))])
    column.validate(full=True)  # raises on bytes that are not UTF-8 (the builder would keep them)
    return column


def values_at(column: pa.ChunkedArray | pa.Array, positions) -> list:
    """The Python values of ``column`` at ``positions`` (ascending). Not ``column.take``: importing
    pyarrow.compute costs a run ~0.15 s, and the report takes a few thousand values."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out, start, k = [], 0, 0
    positions = np.asarray(positions, dtype=np.int64)
    for chunk in chunks:
        end = start + len(chunk)
        stop = k + int(np.searchsorted(positions[k:], end))
        out.extend(chunk[int(i) - start].as_py() for i in positions[k:stop])
        start, k = end, stop
    return out


def rows_at(table: pa.Table, positions) -> list[dict]:
    """The rows of ``table`` at ``positions`` as dicts (see ``values_at``)."""
    return [row for i in positions for row in table.slice(int(i), 1).to_pylist()]


def records_at(checkpoint: Path, positions) -> list[dict]:
    """The records at ``positions`` (ascending) of a checkpoint, reading its record column one row group at a
    time and only the row groups that hold a position (the whole column of a large run is hundreds of MB)."""
    parquet = pq.ParquetFile(checkpoint)
    positions = np.asarray(positions, dtype=np.int64)
    out, start = [], 0
    for group in range(parquet.metadata.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        lo, hi = np.searchsorted(positions, (start, start + size))
        if hi > lo:
            column = parquet.read_row_group(group, columns=["record"]).column(0)
            out.extend(loads(text) for text in values_at(column, positions[lo:hi] - start))
        start += size
    return out


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file (or some of its columns) as a table. ``pq.read_table`` would import pandas."""
    return pq.ParquetFile(path).read(columns=columns)


def rows_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) as a table of ``schema``."""
    return columns_table({f.name: [row[f.name] for row in rows] for f in schema}, schema)


def columns_table(columns: dict[str, list], schema: pa.Schema) -> pa.Table:
    """Columns (a list of values per field) as a table of ``schema``."""
    return pa.Table.from_arrays([_column(columns[f.name], f.type) for f in schema], schema=schema)


def reason_kind(reason: str) -> str:
    """A reason with its record-specific parts (ids, numbers) removed, to group rejects."""
    reason = re.sub(r"\b[0-9a-f]{20}\b", "<id>", reason)
    return re.sub(r"(?<![\w-])-?\d+(\.\d+)?(?!\w)", "#", reason)  # numbers, not the 8 of 'UTF-8' or 'x86'


class InvariantError(RuntimeError):
    """Records were lost or duplicated by a step: a bug in an operator or an engine."""


class ParquetSink:
    """Buffered Parquet writer to ``path.tmp``; ``commit()`` renames it into place.

    Row groups are encoded and written by a background thread (pyarrow releases the GIL there), so the
    step goes on computing meanwhile; rows keep their order."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema = path, schema
        self.tmp = path.with_name(path.name + ".tmp")
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self.tmp, schema, **_ENCODING)
        self._columns: dict[str, list] = {name: [] for name in schema.names}  # rows not yet in a table
        self._buffered = 0  # rows in ``_columns``
        self._tables: list[pa.Table] = []  # rows already in tables (booked elsewhere), before ``_columns``
        self._held = 0  # rows in ``_tables``
        self._pending: list[Future] = []
        self._thread: ThreadPoolExecutor | None = None
        self.count = 0

    def add(self, row: dict) -> None:
        for name, values in self._columns.items():
            values.append(row[name])
        self._added(1)

    def add_columns(self, columns: dict[str, list]) -> None:
        """Rows given as a list of values per field (every field, equally long)."""
        size = len(columns[self.schema.names[0]])
        for name, values in self._columns.items():
            values.extend(columns[name])
        self._added(size)

    def _added(self, size: int) -> None:
        self._buffered += size
        self.count += size
        if self._buffered + self._held >= _ROW_GROUP:
            self._flush()

    def add_table(self, table: pa.Table) -> None:
        """Rows already in a table of this sink's schema (a batch booked by a Ray worker), after those added."""
        if table.num_rows == 0:
            return
        if table.schema != self.schema:
            raise ValueError(f"a table for {self.path.name} has columns {table.schema.names}, not {self.schema.names}")
        self._hold_rows()
        self._tables.append(table)
        self._held += table.num_rows
        self.count += table.num_rows
        if self._held >= _ROW_GROUP:
            self._flush()

    def _hold_rows(self) -> None:
        if self._buffered:
            self._tables.append(columns_table(self._columns, self.schema))
            self._held += self._buffered
            self._columns, self._buffered = {name: [] for name in self.schema.names}, 0

    def _flush(self) -> None:
        self._hold_rows()
        if self._tables:
            table = self._tables[0] if len(self._tables) == 1 else pa.concat_tables(self._tables)
            self._tables, self._held = [], 0
            if self._thread is None:
                self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-sink")
            while self._pending and self._pending[0].done():
                self._pending.pop(0).result()  # a failed write raises here, in the step
            self._pending.append(self._thread.submit(self._writer.write_table, table))
            if len(self._pending) > 2:  # bound the memory held by queued row groups
                self._pending.pop(0).result()

    def commit(self) -> None:
        self._flush()
        for future in self._pending:
            future.result()  # re-raises a write error here, before the file is put in place
        if self._thread is not None:
            self._thread.shutdown()
        self._writer.close()
        os.replace(self.tmp, self.path)


class RunDir:
    """Paths and files of one run."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.rejected = self.root / "rejected"
        self.manifest_path = self.root / "manifest.json"

    def checkpoint(self, index: int, name: str) -> Path:
        return self.checkpoints / f"{index:02d}-{name}.parquet"

    def rejects(self, index: int, name: str) -> Path:
        return self.rejected / f"{index:02d}-{name}.parquet"

    def parts(self, index: int, name: str) -> Path:
        """Where a generator step checkpoints what it accepted so far, one committed part per batch or round."""
        return self.checkpoints / f"{index:02d}-{name}.parts"

    def record_sink(self, index: int, name: str) -> ParquetSink:
        return ParquetSink(self.checkpoint(index, name), CHECKPOINT_SCHEMA)

    def reject_sink(self, index: int, name: str) -> ParquetSink:
        return ParquetSink(self.rejects(index, name), REJECT_SCHEMA)

    def read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def write_manifest(self, manifest: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_path.with_name("manifest.json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.manifest_path)

    def clear_partial(self) -> None:
        """Remove half-written files left by a killed run (committed generator parts stay)."""
        for folder in (self.checkpoints, self.rejected, self.root, *self.checkpoints.glob("*.parts")):
            if folder.exists():
                for tmp in folder.glob("*.tmp"):
                    shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        if self.root.exists():  # an output file written under its temporary name (pipeline/output.py)
            for tmp in self.root.glob(".tmp-*"):
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


def reject_row(step: str, reason: str, *, record: dict | None = None, origin: str | None = None,
               source: str = "", raw: str = "", error: bool = False) -> dict:
    if record is not None and not source:
        source = str(record.get("meta", {}).get("source", ""))
    return {"step": step, "reason": reason, "source": source, "id": record["id"] if record else None,
            "origin": origin, "record": dumps(record) if record else None, "raw": raw, "error": error}


def utf8_values(column: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """A string column's values as UTF-8 bytes: what the JSON parser reads fastest (a ``str`` would be encoded
    to UTF-8 again first). The same buffers read as binary: ``cast`` would import pyarrow.compute (~0.15 s)."""
    if isinstance(column, pa.ChunkedArray):
        return [value for chunk in column.chunks for value in utf8_values(chunk)]
    binary = pa.Array.from_buffers(pa.binary(), len(column), column.buffers(), column.null_count, column.offset)
    return binary.to_pylist()


def iter_checkpoint(path: Path, batch_size: int = 256) -> Iterator[list[dict]]:
    """Stream the records of a checkpoint in batches."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=["record"]):
        yield [loads(text) for text in utf8_values(batch.column(0))]


def iter_checkpoint_rows(path: Path, batch_size: int = 256) -> Iterator[list[tuple[str, str, bytes]]]:
    """Stream the raw rows (id, origin, record JSON as UTF-8 bytes) of a checkpoint in batches."""
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=batch_size, columns=["id", "origin", "record"]):
        yield list(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), utf8_values(batch.column(2))))


def iter_rejects(run: RunDir) -> Iterator[dict]:
    """Every reject row of a run, in step order."""
    for path in sorted(run.rejected.glob("*.parquet")):
        yield from read_table(path).to_pylist()


def account(run: RunDir, final_checkpoint: Path, input_checkpoint: Path, generated: int) -> list[str]:
    """Problems with the invariant: every record read or generated is in the output or in the rejects,
    exactly once (by the id it entered the run with). Empty when it holds."""
    inputs = read_table(input_checkpoint, columns=["id"]).column(0).to_pylist()
    origins = read_table(final_checkpoint, columns=["origin"]).column(0).to_pylist()
    for path in sorted(run.rejected.glob("*.parquet")):
        origins.extend(o for o in read_table(path, columns=["origin"]).column(0).to_pylist() if o is not None)
    expected, seen = Counter(inputs), Counter(origins)
    extra_rows, extra_distinct = len(origins) - len(inputs), len(seen) - len(expected)
    if extra_rows == extra_distinct == generated and all(seen[o] == n for o, n in expected.items()):
        return []  # every input as often as read (then the rest are generated, each once): nothing to name
    made = Counter({origin: n for origin, n in seen.items() if origin not in expected})
    problems = []
    missing, extra = expected - seen, Counter({o: n for o, n in seen.items() if o in expected}) - expected
    if missing:
        problems.append(f"{sum(missing.values())} input records are in neither the output nor the rejects "
                        f"(e.g. {next(iter(missing))})")
    if extra:
        problems.append(f"{sum(extra.values())} input records are there more than once (e.g. {next(iter(extra))})")
    if sum(made.values()) != generated or any(n > 1 for n in made.values()):
        problems.append(f"{generated} records were generated, but {len(made)} distinct generated records are in "
                        f"the output and rejects ({sum(made.values())} rows)")
    return problems
