"""Read any supported dataset into records and write records back out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from dataflywheel.io.fields import FIELD_NAMES, apply_fields, check_fields, parse_fields
from dataflywheel.io.files import (FILE_TYPES, columnar_row, columns_of, detect_file_type, iter_rows, writable,
                                  write_rows)
from dataflywheel.io.formats import FORMATS, PREFERENCE_CHOICES, READ_FORMATS
from dataflywheel.io.readers import detect_format, row_to_record
from dataflywheel.io.reserved import restore_reserved, split_reserved
from dataflywheel.io.writers import record_to_rows
from dataflywheel.records import RecordError

__all__ = ["FIELD_NAMES", "FILE_TYPES", "FORMATS", "PREFERENCE_CHOICES", "READ_FORMATS", "ReadReject", "read_all",
           "read_records", "read_rows", "write_records", "records_from_dataset", "records_to_dataset",
           "detect_file_type", "detect_format", "parse_fields", "peek_format"]


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
        return writable(json.dumps(row, ensure_ascii=False, default=str)[:10_000])
    except (TypeError, ValueError):
        return writable(repr(row)[:10_000])


def _checked(fmt: str | None, fields: dict | None) -> dict:
    if fmt is not None and fmt not in READ_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(READ_FORMATS)}")
    return check_fields(dict(fields or {}))


def _convert(rows: Iterable[tuple[str, Any]], fmt: str | None, fields: dict) -> Iterator[dict | ReadReject]:
    for source, row in rows:
        if isinstance(row, RecordError):
            yield ReadReject(source, str(row), getattr(row, "raw", ""))
            continue
        try:
            kept_row, kept = split_reserved(row)
            kept_row = apply_fields(kept_row, fields) if fields and isinstance(kept_row, dict) else kept_row
            record = restore_reserved(row_to_record(kept_row, fmt or detect_format(kept_row)), kept)
        except RecordError as err:
            yield ReadReject(source, str(err), _raw_text(row))
            continue
        record["meta"]["source"] = source
        yield record


def read_records(path: str | Path, fmt: str | None = None, file_type: str | None = None,
                 fields: dict[str, str] | None = None) -> Iterator[dict | ReadReject]:
    """Stream records (dicts) and ReadRejects from a file; ``fmt`` None = detect per row; ``fields`` maps
    reader names to the dataset's own (``{"prompt": "question"}``)."""
    return _convert(iter_rows(path, file_type), fmt, _checked(fmt, fields))


def read_rows(rows: Iterable[Any], fmt: str | None = None,
              fields: dict[str, str] | None = None) -> Iterator[dict | ReadReject]:
    """Records from rows in memory: a list of dicts in any format, or a ``datasets.Dataset``."""
    return _convert(((f"data[{i}]", row) for i, row in enumerate(rows)), fmt, _checked(fmt, fields))


def read_all(path: str | Path, fmt: str | None = None,
             fields: dict[str, str] | None = None) -> tuple[list[dict], list[ReadReject]]:
    """Every record of a file, and the rows that could not be read: the caller reports them."""
    records, unreadable = [], []
    for item in read_records(path, fmt, fields=fields):
        (unreadable if isinstance(item, ReadReject) else records).append(item)
    return records, unreadable


def peek_format(path: str | Path, file_type: str | None = None, fields: dict[str, str] | None = None) -> str | None:
    """The format of the first readable row, or None for an empty/unreadable file."""
    fields = check_fields(dict(fields or {}))
    for _, row in iter_rows(path, file_type):
        if isinstance(row, dict):
            try:
                return detect_format(apply_fields(split_reserved(row)[0], fields))
            except RecordError:
                return None
    return None


def write_records(records: Iterable[dict], path: str | Path, fmt: str = "auto", file_type: str | None = None,
                  *, preference: str | None = None, with_meta: bool = True, with_id: bool = False,
                  with_scores: bool = False, with_lineage: bool = False) -> int:
    """Write records as rows of ``fmt``; return how many records were written (a pair written with
    ``preference='both'`` is two rows). The file appears only when every record was written: a record that
    does not fit the format raises RecordError naming it, and nothing is left behind."""
    count = 0

    def rows() -> Iterator[dict]:
        nonlocal count
        for record in records:
            yield from record_to_rows(record, fmt, preference=preference, with_meta=with_meta, with_id=with_id,
                                      with_scores=with_scores, with_lineage=with_lineage)
            count += 1
    write_rows(rows(), path, file_type)
    return count


def records_from_dataset(dataset: Any, fmt: str | None = None,
                         fields: dict[str, str] | None = None) -> Iterator[dict | ReadReject]:
    """Records from an in-memory Hugging Face ``datasets.Dataset``."""
    return _convert(((f"dataset[{i}]", row) for i, row in enumerate(dataset)), fmt, _checked(fmt, fields))


def records_to_dataset(records: Iterable[dict], fmt: str = "auto", **options: Any) -> Any:
    """A Hugging Face ``datasets.Dataset`` of rows in ``fmt`` (lineage as JSON text, as in Parquet)."""
    from datasets import Dataset

    rows = [columnar_row(row) for r in records for row in record_to_rows(r, fmt, **options)]
    return Dataset.from_dict(columns_of(rows))
