"""What Ray workers run for a batch step: ``apply_batch`` and ``book``, as every engine does, on one batch.

A batch comes in as ``(batch, origin, record)`` rows and goes out booked, as one row of ``BATCH_SCHEMA``: the
checkpoint and reject rows the local engine would write for it, and its statistics, so the driver only appends
tables to the step's files. Operators travel pickled with the driver's import path (plugin modules import on
workers too) and are set up once per worker process.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from dataflywheel.errors import FatalError, RunError
from dataflywheel.io.shards import read_shard, shard_from_json
from dataflywheel.models.cache import CallCache
from dataflywheel.ops.base import Operator, Selection
from dataflywheel.pipeline.apply import apply_batch, apply_selection
from dataflywheel.pipeline.run_dir import CHECKPOINT_SCHEMA, REJECT_SCHEMA, columns_table, rows_table, utf8_values
from dataflywheel.pipeline.shard_stream import unreadable_input
from dataflywheel.pipeline.step_writer import Booked, book, book_read
from dataflywheel.io.writers import record_to_rows
from dataflywheel.records import RecordError, dump_bytes, loads

BATCH_SCHEMA = pa.schema([("batch", pa.int64()), ("checkpoint", pa.binary()), ("rejects", pa.binary()),
                          ("stats", pa.string())])
"""One row per batch, booked on the worker: its checkpoint rows and reject rows (each an Arrow IPC stream in the
run's checkpoint / reject schema) and its statistics (the booking's counts, the operator's counters, model
usage, the worker's process id and set-ups, and with a merged cache the entries it wrote). The driver appends
the tables to the step's files as they are: no record is parsed or built there. A ``FatalError`` comes back
as a batch's statistics (``fatal``), not raised: Ray would pass on only its text, and the run must stop with
the error itself."""

_SETUPS: Counter = Counter()  # in a worker: how many times each operator (by token) was set up
_OPS: dict[str, Operator] = {}


class RecordingCache(CallCache):
    """A worker's own call cache on its node that also remembers what it wrote, for the driver to merge."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self.written: list[tuple[str, str, str, object]] = []

    def put_many(self, items) -> None:
        items = list(items)
        super().put_many(items)
        self.written.extend(items)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.written = []

    def drain(self) -> list:
        out, self.written = self.written, []
        return out


def node_cache_path(fingerprint: str) -> Path:
    return Path(tempfile.gettempdir()) / "dataflywheel-ray-cache" / f"{fingerprint}.sqlite"


def load_operator(token: str, blob: bytes, cache: str, fingerprint: str) -> Operator:
    """The operator of ``token`` in this process: unpickled and set up on first use."""
    op = _OPS.get(token)
    if op is None:
        path, inner = pickle.loads(blob)
        sys.path.extend(p for p in path if p not in sys.path)
        op = pickle.loads(inner)
        if cache == "merge" and op.context is not None and op.context.models.cache is not None:
            op.context.models.cache = RecordingCache(node_cache_path(fingerprint))
        op.setup()
        _SETUPS[token] += 1
        _OPS[token] = op
    return op


def operator_blob(op: Operator) -> bytes:
    return pickle.dumps((list(sys.path), pickle.dumps(op)))


def table_bytes(table: pa.Table) -> bytes:
    """A table as an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_bytes(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def _spans(batches: list[int]) -> Iterator[tuple[int, int]]:
    """(start, end) of each run of rows with the same batch number (several batches may share a block)."""
    start = 0
    while start < len(batches):
        end = start
        while end < len(batches) and batches[end] == batches[start]:
            end += 1
        yield start, end
        start = end


def _texts(table: pa.Table) -> list[bytes]:
    """The record JSON of a block as UTF-8 bytes: parsed fastest, and written back as it is."""
    return utf8_values(table.column("record"))


def _add(out: dict, number: int, booked: Booked | None, stats: dict) -> None:
    """One row of ``BATCH_SCHEMA``: a batch booked (None: only its statistics, e.g. a fatal error)."""
    checkpoint = table_bytes(columns_table(booked.checkpoint, CHECKPOINT_SCHEMA)) if booked is not None else None
    rejects = table_bytes(rows_table(booked.rejects, REJECT_SCHEMA)) if booked is not None else None
    if booked is not None:
        stats = {**stats, "booked": booked.summary()}
    for name, value in (("batch", number), ("checkpoint", checkpoint), ("rejects", rejects),
                        ("stats", json.dumps(stats))):
        out[name].append(value)


def _stopped(out: dict, number: int, err: BaseException) -> None:
    """A batch's outcome that stops the run: the error, sent back whole (Ray would keep only its text)."""
    _add(out, number, None, {"fatal": base64.b64encode(_pickled(err)).decode()})


def apply_table(table: pa.Table, op: Operator, step: str, token: str) -> pa.Table:
    """Apply ``op`` to each batch of ``table`` and book it."""
    batches, origins, texts = table.column("batch").to_pylist(), table.column("origin").to_pylist(), _texts(table)
    out: dict[str, list] = {f.name: [] for f in BATCH_SCHEMA}
    for start, end in _spans(batches):
        try:
            _apply_one(op, step, token, batches[start], origins[start:end], texts[start:end], out)
        except FatalError as err:
            _stopped(out, batches[start], err)
            break
    return pa.table(out, schema=BATCH_SCHEMA)


def _apply_one(op: Operator, step: str, token: str, number: int, origins: list, texts: list, out: dict) -> None:
    models = op.context.models if op.context is not None else None
    before = models.usage() if models is not None else {}
    op.counters = Counter()
    batch = [loads(t) for t in texts]
    booked = book(step, apply_batch(op, step, batch), list(zip(batch, origins, texts)))
    from dataflywheel.pipeline.run import usage_delta

    stats = {"n": len(batch), "counters": dict(op.counters), "pid": os.getpid(), "setups": _SETUPS[token],
             "usage": usage_delta(before, models.usage()) if models is not None else {}}
    cache = models.cache if models is not None else None
    if isinstance(cache, RecordingCache):
        stats["cache"] = cache.drain()
    _add(out, number, booked, stats)


DECISION_COLUMNS = ("reason", "note", "scores")
"""What a selector decided for each record of a block (null: nothing): the reason it is dropped, and the meta
note and scores it gets, as JSON."""


def decide_task(table: pa.Table, *, step: str) -> pa.Table:
    """Apply a selector's decisions (``DECISION_COLUMNS`` beside each record) to each batch and book it."""
    out: dict[str, list] = {f.name: [] for f in BATCH_SCHEMA}
    columns = {name: table.column(name).to_pylist() for name in ("batch", "origin") + DECISION_COLUMNS}
    texts = _texts(table)
    for start, end in _spans(columns["batch"]):
        records = [loads(t) for t in texts[start:end]]
        selection = Selection()
        for i in range(start, end):
            if columns["reason"][i] is not None:
                selection.rejected[i - start] = columns["reason"][i]
            if columns["note"][i] is not None:
                selection.meta[i - start] = loads(columns["note"][i])
            if columns["scores"][i] is not None:
                selection.scores[i - start] = loads(columns["scores"][i])
        booked = book(step, apply_selection(selection, records, 0),
                      list(zip(records, columns["origin"][start:end], texts[start:end])))
        _add(out, columns["batch"][start], booked, {})
    return pa.table(out, schema=BATCH_SCHEMA)


OUTPUT_SCHEMA = pa.schema([("batch", pa.int64()), ("lines", pa.binary()), ("count", pa.int64()),
                           ("error", pa.string())])
"""Per batch: its records as lines of the output file (JSONL, UTF-8), how many records, or why one of them
does not fit the output's format."""


def output_task(table: pa.Table, *, fmt: str, options: dict) -> pa.Table:
    """Convert the records of each batch to the output's JSONL lines on a worker."""
    out: dict[str, list] = {f.name: [] for f in OUTPUT_SCHEMA}
    batches, texts = table.column("batch").to_pylist(), _texts(table)
    for start, end in _spans(batches):
        lines, error = b"", None
        try:
            lines = b"".join(dump_bytes(row) + b"\n" for text in texts[start:end]
                             for row in record_to_rows(loads(text), fmt, **options))
        except RecordError as err:
            error = str(err)
        for name, value in (("batch", batches[start]), ("lines", lines), ("count", end - start), ("error", error)):
            out[name].append(value)
    return pa.table(out, schema=OUTPUT_SCHEMA)


READ_CHUNK_RECORDS = 8192
READ_CHUNK_BYTES = 256 * 2**20
"""A read task sends what it read in chunks of at most this many records or (about, a record past it) bytes of
record JSON: a shard that cannot be split (a large compressed file) never becomes one oversized block (Arrow's
2 GiB per array)."""


def read_task(table: pa.Table, *, fmt: str | None, fields: dict | None, step: str) -> Iterator[pa.Table]:
    """Read shards of the input (``io.shards``) on a worker and book them as the read step, chunk by chunk."""
    for number, text in zip(table.column("batch").to_pylist(), table.column("shard").to_pylist()):
        items, texts, held = [], [], 0
        for piece in shard_from_json(json.loads(text)):
            try:
                for item in read_shard([piece], fmt, fields):
                    items.append(item)
                    if isinstance(item, dict):
                        texts.append(dump_bytes(item))  # made once: measures the chunk and is booked as it is
                        held += len(texts[-1])
                    else:
                        held += len(item.raw)
                    if len(items) >= READ_CHUNK_RECORDS or held >= READ_CHUNK_BYTES:
                        yield _read_chunk(step, number, items, texts)
                        items, texts, held = [], [], 0
            except FileNotFoundError as err:
                yield _read_stop(number, RunError(
                    f"a Ray worker cannot open the input ({err}): every node must see it at the same path (a shared "
                    "file system), or set ray.read_on: driver to read it on the driver"))
                return
            except (OSError, RecordError, ValueError) as err:  # as the local engine reports an input it cannot read
                yield _read_stop(number, unreadable_input(piece.path, f"{type(err).__name__}: {err}"))
                return
        yield _read_chunk(step, number, items, texts)


def _read_chunk(step: str, number: int, items: list, texts: list[bytes]) -> pa.Table:
    out: dict[str, list] = {f.name: [] for f in BATCH_SCHEMA}
    _add(out, number, book_read(step, items, texts), {"pid": os.getpid()})
    return pa.table(out, schema=BATCH_SCHEMA)


def _read_stop(number: int, err: BaseException) -> pa.Table:
    out: dict[str, list] = {f.name: [] for f in BATCH_SCHEMA}
    _stopped(out, number, err)
    return pa.table(out, schema=BATCH_SCHEMA)


def _pickled(err: BaseException) -> bytes:
    try:
        return pickle.dumps(err)
    except (pickle.PicklingError, TypeError, AttributeError):
        return pickle.dumps(FatalError(f"{type(err).__name__}: {err}"))


def raise_fatal(stats: dict) -> None:
    """In the driver: raise the FatalError a worker sent back, as it was raised there."""
    if "fatal" in stats:
        raise pickle.loads(base64.b64decode(stats["fatal"]))


def apply_task(table: pa.Table, *, token: str, blob: bytes, step: str, cache: str, fingerprint: str) -> pa.Table:
    """A stateless operator's batch, as a Ray task (the operator is set up once per worker process)."""
    return apply_table(table, load_operator(token, blob, cache, fingerprint), step, token)


class ApplyActor:
    """A model-backed operator on a Ray actor: set up (its models loaded) once, then batch after batch."""

    def __init__(self, token: str, blob: bytes, step: str, cache: str, fingerprint: str):
        self.token, self.step = token, step
        self.op = load_operator(token, blob, cache, fingerprint)

    def __call__(self, table: pa.Table) -> pa.Table:
        return apply_table(table, self.op, self.step, self.token)
