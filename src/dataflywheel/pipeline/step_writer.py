"""The books of one step: its checkpoint, its rejects and its counts, written as batches are decided.

Every item an operator returns is booked here: kept records go to the step's checkpoint, rejects to
``rejected/`` with their reason, and each row carries the record's *origin* (the id it entered the run
with) so the run can prove that nothing was lost. Generator steps write committed *parts* (one per batch
or round) so a killed run keeps what it had accepted.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from dataflywheel.pipeline.apply import Item, StepFailed
from dataflywheel.pipeline.run_dir import (CHECKPOINT_SCHEMA, REJECT_SCHEMA, InvariantError, ParquetSink, RunDir,
                                           read_table, reject_row)
from dataflywheel.records import dump_bytes, loads

Rows = list[tuple[dict, str, "bytes | str | None"]]
"""A batch as it moves between steps: (record, origin, the record's JSON text when known, UTF-8 or str)."""

FAILING_BATCHES_TO_STOP = 3
"""A step stops the run after this many batches in a row in which every record failed with an error."""


@dataclass
class Booked:
    """One batch booked: the kept rows for the next step, the checkpoint and reject rows to write, the counts
    (in, out, rejected, generated, errors), what failure watching needs, and the step's generated-record
    sequence after it."""

    kept: Rows = field(default_factory=list)
    checkpoint: dict[str, list] = field(default_factory=lambda: {"id": [], "origin": [], "record": []})
    """The checkpoint rows as columns (a list of values per field of ``CHECKPOINT_SCHEMA``)."""
    rejects: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    failed: int = 0  # input records the operator failed on
    operator_errors: int = 0  # failures with no input record (a generator failing on its input)
    first_error: str = ""
    seq: int = 0

    def summary(self) -> dict:
        """Everything but the rows, as JSON-able values (what a worker sends beside its tables)."""
        return {"counts": dict(self.counts), "failed": self.failed, "operator_errors": self.operator_errors,
                "first_error": self.first_error, "seq": self.seq}

    @classmethod
    def from_summary(cls, summary: dict) -> "Booked":
        return cls(counts=Counter(summary["counts"]), failed=summary["failed"],
                   operator_errors=summary["operator_errors"], first_error=summary["first_error"], seq=summary["seq"])


def book(step: str, items: list[Item], rows: Rows = (), seq: int = 0) -> Booked:
    """Book one batch's items (``rows``: the input their positions refer to; ``seq``: generated records so
    far, whose origins are "<step>#<seq>"). Pure: any engine or worker books a batch with this."""
    out = Booked(seq=seq)
    kept, rejects = out.kept, out.rejects
    ids, origins, texts = out.checkpoint["id"], out.checkpoint["origin"], out.checkpoint["record"]
    failed = errors = rejected = generated = operator_errors = 0
    for item in items:  # once per record of every step: written for speed
        position = item.position
        if position is not None:
            row = rows[position]
            origin = row[1]
        elif item.record is None and item.error:
            row, origin = None, None  # a failure of the operator on a whole batch: no record to account for
            operator_errors += 1
        else:
            row = None
            out.seq += 1
            origin = f"{step}#{out.seq}"
            generated += 1
        if item.error:
            errors += 1
            failed += position is not None
            if not out.first_error:
                out.first_error = item.reason
        if item.reason is None:
            record = item.record
            # unchanged: its JSON is already known
            text = row[2] if row is not None and record is row[0] and row[2] is not None else dump_bytes(record)
            ids.append(record["id"])
            origins.append(origin)
            texts.append(text)
            kept.append((record, origin, text))
        else:
            rejects.append(reject_row(step, item.reason, record=item.record, origin=origin, raw=item.raw,
                                      error=item.error))
            rejected += origin is not None
    out.counts.update({"in": len(rows), "out": len(kept), "rejected": rejected, "generated": generated,
                       "errors": errors})
    out.failed, out.operator_errors = failed, operator_errors
    return out


def book_read(step: str, items: list, texts: list | None = None) -> Booked:
    """Book records and unreadable rows (``ReadReject``) as read, in order: what reading a shard on a worker
    gives the driver (the local engine books the same rows as it reads). ``texts``: each record's JSON, when
    already made."""
    records = [item for item in items if isinstance(item, dict)]
    texts = texts if texts is not None else [None] * len(records)
    out = book(step, [Item(r, i) for i, r in enumerate(records)], [(r, r["id"], t) for r, t in zip(records, texts)])
    unreadable = [reject_row(step, i.reason, source=i.source, raw=i.raw) for i in items if not isinstance(i, dict)]
    out.rejects.extend(unreadable)
    out.counts.update({"in": len(unreadable), "rejected": len(unreadable), "unreadable": len(unreadable)})
    return out


class StepWriter:
    """Books the items of one step. ``add`` returns the kept records to pass to the next step."""

    def __init__(self, run_dir: RunDir, index: int, name: str, *, parts: bool = False):
        self.dir, self.index, self.name = run_dir, index, name
        self.counts = Counter({"in": 0, "out": 0, "rejected": 0, "unreadable": 0, "generated": 0, "errors": 0})
        self.seq = 0  # generated candidates so far: their origins are "<step>#<seq>"
        self.parts = run_dir.parts(index, name) if parts else None
        self.states: list[dict] = []
        self._failing = 0
        self._records: ParquetSink | None = None
        self._rejects: ParquetSink | None = None
        self._part_counts: Counter = Counter()
        if self.parts is not None:
            self._load_parts()
        else:
            self._records, self._rejects = run_dir.record_sink(index, name), run_dir.reject_sink(index, name)

    # ---- booking ---------------------------------------------------------------------------------

    def add(self, items: list[Item], rows: Rows = ()) -> Rows:
        """Book one batch's items (``rows``: the input their positions refer to); return the kept rows."""
        self._ensure_sinks()
        booked = book(self.name, items, rows, self.seq)
        self._records.add_columns(booked.checkpoint)
        for row in booked.rejects:
            self._rejects.add(row)
        self.seq = booked.seq
        self._count(booked)
        return booked.kept

    def add_booked(self, checkpoint: pa.Table, rejects: pa.Table, *booked: "Booked") -> None:
        """Book batches booked elsewhere (a worker ran ``book``): their checkpoint and reject rows as tables,
        appended as they are, and each batch's counts, in order. Only steps that generate nothing are booked
        this way (a worker cannot number generated records in the step's sequence)."""
        if any(b.counts.get("generated") for b in booked):
            raise ValueError(f"step {self.name}: generated records must be booked by the run's own writer")
        self._ensure_sinks()
        self._records.add_table(checkpoint)
        self._rejects.add_table(rejects)
        for batch in booked:
            self._count(batch)

    def _count(self, booked: "Booked") -> None:
        counts = self._part_counts if self.parts is not None else self.counts
        counts.update(booked.counts)
        self._watch_failures(booked)

    def unreadable(self, reason: str, source: str, raw: str) -> None:
        """Book an input row that could not become a record (it has no id: the raw text is kept)."""
        self._ensure_sinks()
        self.counts["in"] += 1
        self.counts["unreadable"] += 1
        self.counts["rejected"] += 1
        self._rejects.add(reject_row(self.name, reason, source=source, raw=raw))

    def _watch_failures(self, booked: "Booked") -> None:
        size, failed, operator_errors = booked.counts["in"], booked.failed, booked.operator_errors
        if (size and max(failed, operator_errors) >= size) or (not size and operator_errors):
            self._failing += 1
            if self._failing >= FAILING_BATCHES_TO_STOP:
                raise StepFailed(f"step {self.name}: {self._failing} batches in a row failed entirely "
                                 f"({booked.first_error}); this is not bad data: fix the cause, then "
                                 "`flywheel run --resume`")
        else:
            self._failing = 0

    # ---- parts (generator steps) -----------------------------------------------------------------

    def _ensure_sinks(self) -> None:
        if self._records is None:
            work = self.parts / f"{len(self.states):05d}.tmp"
            self._records = ParquetSink(work / "records.parquet", CHECKPOINT_SCHEMA)
            self._rejects = ParquetSink(work / "rejects.parquet", REJECT_SCHEMA)

    def commit_part(self, state: dict | None = None) -> None:
        """Make what was booked since the last part durable (one batch or round of a generator)."""
        self._ensure_sinks()
        self._records.commit()
        self._rejects.commit()
        work = self._records.path.parent
        state = {**(state or {}), "seq": self.seq, "counts": dict(self._part_counts)}
        (work / "state.json").write_text(json.dumps(state), encoding="utf-8")
        os.replace(work, work.with_suffix(""))
        self.states.append(state)
        self.counts.update(self._part_counts)
        self._part_counts = Counter()
        self._records = self._rejects = None

    def _part_dirs(self) -> list[Path]:
        return sorted(p for p in self.parts.iterdir() if p.is_dir() and not p.name.endswith(".tmp")) \
            if self.parts.exists() else []

    def _load_parts(self) -> None:
        for part in self._part_dirs():
            state = json.loads((part / "state.json").read_text(encoding="utf-8"))
            self.states.append(state)
            self.counts.update(state["counts"])
            self.seq = state["seq"]

    def part_records(self, first: int = 0) -> list[dict]:
        """The records kept in the committed parts from ``first`` on (a resumed pool generator's accepted)."""
        return [loads(text) for part in self._part_dirs()[first:]
                for text in read_table(part / "records.parquet", columns=["record"]).column(0).to_pylist()]

    # ---- end of step -----------------------------------------------------------------------------

    def commit(self) -> dict:
        """Put the step's checkpoint and rejects in place; return its counts."""
        if self.parts is None:
            self._records.commit()
            self._rejects.commit()
        else:
            if self._records is not None:
                self.commit_part()
            records, rejects = self.dir.record_sink(self.index, self.name), self.dir.reject_sink(self.index, self.name)
            for part in self._part_dirs():
                for sink, file in ((records, "records.parquet"), (rejects, "rejects.parquet")):
                    for row in read_table(part / file).to_pylist():
                        sink.add(row)
            records.commit()
            rejects.commit()
            if self.parts.exists():  # a step whose input was empty committed no part
                shutil.rmtree(self.parts)
        counts = dict(self.counts)
        if counts["in"] + counts["generated"] != counts["out"] + counts["rejected"]:
            raise InvariantError(f"step {self.name}: {counts['in']} in + {counts['generated']} generated != "
                                 f"{counts['out']} out + {counts['rejected']} rejected")
        return counts
