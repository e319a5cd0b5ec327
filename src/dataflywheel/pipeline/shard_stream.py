"""One shard of the input read and carried through the leading worker steps, in a worker process.

With worker processes and an input file, the local engine plans shards (``io.shards``: about four per worker)
and each worker reads one, then runs the steps that may run in workers (CPU-bound, no models) over it, batch
by batch as the engine would (``Rebatch``: a step's output re-batched to the batch size within the shard),
booking every step as the engine does. The engine appends the booked tables to each step's files in shard
order: the same rows in the same order as reading in the run's process, with the reading and the per-record
work spread over the cores (a step's batches restart at each shard, which a per-record operator does not
see; the files' row groups differ).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from dataflywheel.errors import RunError
from dataflywheel.io import ReadReject
from dataflywheel.io.shards import Piece, plan_shards, read_shard, shard_from_json
from dataflywheel.pipeline.apply import apply_batch
from dataflywheel.pipeline.rebatch import Rebatch
from dataflywheel.pipeline.run_dir import CHECKPOINT_SCHEMA, REJECT_SCHEMA, columns_table, rows_table
from dataflywheel.pipeline.step_writer import Booked, Rows, book, book_read
from dataflywheel.records import RecordError

READ_ERRORS = (FileNotFoundError, RecordError, ValueError)
"""What reading an input raises when the input cannot be read (the engine names the input)."""


class ShardReadError(Exception):
    """Reading a shard failed (one of ``READ_ERRORS``, by its text): not an error of a step run over it."""


def unreadable_input(path, err: BaseException):
    """The run's error for an input it cannot read."""
    return RunError(f"cannot read input {path}: {err}")


def plan_input(spec, workers: int) -> list[list[Piece]]:
    """The shards of a recipe's ``input`` (``io.shards.plan_shards``); RunError when it cannot be read."""
    try:
        return plan_shards(spec.path, None if spec.file_type == "auto" else spec.file_type, workers=workers)
    except READ_ERRORS as err:
        raise unreadable_input(spec.path, err) from err


@dataclass
class StepShard:
    """One step's books for one shard: its checkpoint and reject rows, each batch's booking summary (in order:
    failure watching counts batches), the worker's time in the step and the operator's counters."""

    checkpoint: pa.Table
    rejects: pa.Table
    batches: list[dict]
    seconds: float
    counters: Counter

    def booked(self) -> list[Booked]:
        return [Booked.from_summary(summary) for summary in self.batches]


@dataclass
class _Books:
    columns: dict[str, list] = field(default_factory=lambda: {name: [] for name in CHECKPOINT_SCHEMA.names})
    rejects: list[dict] = field(default_factory=list)
    batches: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, booked: Booked, seconds: float) -> None:
        for name, values in booked.checkpoint.items():
            self.columns[name].extend(values)
        self.rejects.extend(booked.rejects)
        self.batches.append(booked.summary())
        self.seconds += seconds

    def done(self, counters: Counter) -> StepShard:
        return StepShard(columns_table(self.columns, CHECKPOINT_SCHEMA), rows_table(self.rejects, REJECT_SCHEMA),
                         self.batches, self.seconds, counters)


def stream_shard(shard: list[dict], *, fmt: str | None, fields: dict | None, size: int, read_step: str,
                 steps: list[tuple[str, str, bytes]]) -> list[StepShard]:
    """Read ``shard`` (``io.shards.shard_json``) and run ``steps`` ((name, token, operator blob) of worker
    steps, in order) over it; the books of the read step and of each step. A read error is raised as a
    ``ShardReadError`` (the engine names the input); an error of a step, as it is."""
    from dataflywheel.pipeline.workers import operator

    ops = [(name, operator(token, blob)) for name, token, blob in steps]
    for _, op in ops:
        op.counters = Counter()
    books = [_Books() for _ in range(len(ops) + 1)]

    def process(k: int, rows: Rows) -> None:
        name, op = ops[k]
        started = time.perf_counter()
        booked = book(name, apply_batch(op, name, [record for record, _, _ in rows]), rows)
        books[k + 1].add(booked, time.perf_counter() - started)
        rebatch.push(k + 1, booked.kept)

    rebatch = Rebatch(len(ops), size, process)

    def read(items: list) -> None:
        booked = book_read(read_step, items)
        books[0].add(booked, time.perf_counter() - started)
        rebatch.push(0, booked.kept)

    items: list = []
    records = 0
    started = time.perf_counter()
    for item in _read(read_shard(shard_from_json(shard), fmt, fields)):
        items.append(item)
        records += not isinstance(item, ReadReject)
        if records >= size:
            read(items)
            items, records, started = [], 0, time.perf_counter()
    if items:
        read(items)
    for k in range(len(ops)):
        rebatch.flush(k)
    return [books[0].done(Counter())] + [b.done(op.counters) for b, (_, op) in zip(books[1:], ops)]


def _read(items):
    """``items`` of a shard's reader, its read errors raised as ``ShardReadError`` (only the reading is guarded:
    the steps run between two items)."""
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except READ_ERRORS as err:
            raise ShardReadError(str(err)) from None
        yield item
