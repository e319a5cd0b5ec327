"""Read any supported dataset into records and write records back out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from dataflywheel.io.files import FILE_TYPES, columnar_row, columns_of, detect_file_type, iter_rows, write_rows
from dataflywheel.io.formats import FORMATS, detect_format, record_to_row, restore_reserved, row_to_record, split_reserved
from dataflywheel.records import RecordError

__all__ = ["FILE_TYPES", "FORMATS", "ReadReject", "read_all", "read_records", "read_rows", "write_records", "records_from_dataset",
           "records_to_dataset", "detect_file_type", "detect_format", "peek_format"]


@dataclass
class ReadReject:
    """A source row that could not become a record: where it was and why."""

    source: str
    reason: str
    raw: str


def _raw_text(row: Any) -> str:
    import json

    if isinstance(row, RecordError):
        return ""
    try:
        return json.dumps(row, ensure_ascii=False, default=str)[:10_000]
    except (TypeError, ValueError):
        return repr(row)[:10_000]


def _convert(rows: Iterable[tuple[str, Any]], fmt: str | None) -> Iterator[dict | ReadReject]:
    for source, row in rows:
        if isinstance(row, RecordError):
            yield ReadReject(source, str(row), "")
            continue
        try:
            row, kept = split_reserved(row)
            row_format = fmt or detect_format(row)
            record = restore_reserved(row_to_record(row, row_format), kept)
        except RecordError as err:
            yield ReadReject(source, str(err), _raw_text(row))
            continue
        record["meta"]["source"] = source
        yield record


def read_records(path: str | Path, fmt: str | None = None, file_type: str | None = None) -> Iterator[dict | ReadReject]:
    """Stream records (dicts) and ReadRejects from a file; ``fmt`` None = detect per row."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return _convert(iter_rows(path, file_type), fmt)


def read_rows(rows: Iterable[Any], fmt: str | None = None) -> Iterator[dict | ReadReject]:
    """Records from rows in memory: a list of dicts in any format, or a ``datasets.Dataset``."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return _convert(((f"data[{i}]", row) for i, row in enumerate(rows)), fmt)


def read_all(path: str | Path, fmt: str | None = None) -> tuple[list[dict], list[ReadReject]]:
    """Every record of a file, and the rows that could not be read: the caller reports them."""
    records, unreadable = [], []
    for item in read_records(path, fmt):
        (unreadable if isinstance(item, ReadReject) else records).append(item)
    return records, unreadable


def peek_format(path: str | Path, file_type: str | None = None) -> str | None:
    """The format of the first readable row, or None for an empty/unreadable file."""
    for _, row in iter_rows(path, file_type):
        if isinstance(row, dict):
            try:
                return detect_format(row)
            except RecordError:
                return None
    return None


def write_records(records: Iterable[dict], path: str | Path, fmt: str = "auto", file_type: str | None = None,
                  *, with_meta: bool = True, with_id: bool = False, with_scores: bool = False,
                  with_lineage: bool = False) -> int:
    """Write records as rows of ``fmt``; return how many were written."""
    rows = (record_to_row(r, fmt, with_meta=with_meta, with_id=with_id, with_scores=with_scores,
                          with_lineage=with_lineage) for r in records)
    return write_rows(rows, path, file_type)


def records_from_dataset(dataset: Any, fmt: str | None = None) -> Iterator[dict | ReadReject]:
    """Records from an in-memory Hugging Face ``datasets.Dataset``."""
    return _convert(((f"dataset[{i}]", row) for i, row in enumerate(dataset)), fmt)


def records_to_dataset(records: Iterable[dict], fmt: str = "auto", **options: bool) -> Any:
    """A Hugging Face ``datasets.Dataset`` of rows in ``fmt`` (lineage as JSON text, as in Parquet)."""
    from datasets import Dataset

    return Dataset.from_dict(columns_of([columnar_row(record_to_row(r, fmt, **options)) for r in records]))
