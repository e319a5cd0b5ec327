"""The run directory: checkpoints, rejects, manifest and output, written atomically."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from dataflywheel.records import dumps

CHECKPOINT_SCHEMA = pa.schema([("id", pa.string()), ("record", pa.string())])
REJECT_SCHEMA = pa.schema([("step", pa.string()), ("reason", pa.string()), ("source", pa.string()),
                           ("id", pa.string()), ("record", pa.string()), ("raw", pa.string())])
_ROW_GROUP = 4096


class ParquetSink:
    """Buffered Parquet writer to ``path.tmp``; ``commit()`` renames it into place."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema = path, schema
        self.tmp = path.with_name(path.name + ".tmp")
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self.tmp, schema)
        self._rows: list[dict] = []
        self.count = 0

    def add(self, row: dict) -> None:
        self._rows.append(row)
        self.count += 1
        if len(self._rows) >= _ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows = []

    def commit(self) -> None:
        self._flush()
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
        """Remove half-written files left by a killed run."""
        for folder in (self.checkpoints, self.rejected, self.root):
            if folder.exists():
                for tmp in folder.glob("*.tmp"):
                    tmp.unlink()


def record_row(record: dict) -> dict:
    return {"id": record["id"], "record": dumps(record)}


def reject_row(step: str, reason: str, *, record: dict | None = None, source: str = "", raw: str = "") -> dict:
    if record is not None and not source:
        source = str(record.get("meta", {}).get("source", ""))
    return {"step": step, "reason": reason, "source": source, "id": record["id"] if record else None,
            "record": dumps(record) if record else None, "raw": raw}


def iter_checkpoint(path: Path, batch_size: int = 256) -> Iterator[list[dict]]:
    """Stream the records of a checkpoint in batches."""
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=batch_size, columns=["record"]):
        yield [json.loads(text) for text in batch.column(0).to_pylist()]


def iter_rejects(run: RunDir) -> Iterator[dict]:
    """Every reject row of a run, in step order."""
    for path in sorted(run.rejected.glob("*.parquet")):
        yield from pq.read_table(path).to_pylist()


def root_id(record: dict) -> str | None:
    """The input id a record descends from through mappers; None for generated records."""
    lineage = record.get("lineage") or []
    if not lineage:
        return record["id"]
    first = lineage[0]
    return first["parents"][0] if first.get("kind") == "mapper" else None


def account(run: RunDir, final_checkpoint: Path, input_checkpoint: Path) -> Counter:
    """Input ids not accounted for exactly once by the output and the rejects (empty when the invariant holds)."""
    expected = Counter(row["id"] for row in pq.read_table(input_checkpoint, columns=["id"]).to_pylist())
    seen: Counter = Counter()
    for batch in iter_checkpoint(final_checkpoint, 4096):
        seen.update(r for r in (root_id(rec) for rec in batch) if r is not None)
    for row in iter_rejects(run):
        if row["record"] is not None:
            root = root_id(json.loads(row["record"]))
            if root is not None:
                seen[root] += 1
    missing, extra = expected - seen, seen - expected
    return missing + extra
