"""File containers: stream rows out of JSONL, JSON, Parquet, CSV, plain text and Hugging Face dataset dirs.

Each reader yields ``(position, row_or_error)``: a dict, or a RecordError saying why that row could not
be read. Nothing is skipped silently. JSONL, Parquet, CSV, text and dataset dirs stream; a JSON array is
parsed whole (use JSONL for large data). A plain text file is one document per line (``{"text": line}``)
and is read only. Writing goes to a temporary name that replaces the target only once every row is written.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import shutil
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from dataflywheel.records import RecordError, dump_bytes, loads

FILE_TYPES = ("jsonl", "json", "parquet", "csv", "txt", "hf")
WRITE_TYPES = ("jsonl", "json", "parquet", "csv", "hf")
# Columns that hold nested values; CSV cells carry them as JSON text.
NESTED_CSV_COLUMNS = ("messages", "conversations", "chosen", "rejected", "prompt", "completion", "history", "tools",
                      "scores", "meta", "lineage")

Row = tuple[str, "dict | RecordError"]
RAW_LIMIT = 100_000
"""Characters of an unreadable row's text kept with its reject."""


class UnreadableRow(RecordError):
    """A row that could not be read; ``raw`` keeps its text (undecodable bytes as U+FFFD, lone surrogates
    as ``\\udXXX`` escapes), so the user can see and fix it."""

    def __init__(self, message: str, raw: str | bytes = ""):
        super().__init__(message)
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        self.raw = writable(raw[:RAW_LIMIT])


def writable(text: str) -> str:
    """``text`` with lone surrogates (which no UTF-8 file can hold) written as ``\\udXXX`` escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if _LONE.search(text) else text


_LONE = re.compile("[\ud800-\udfff]")
LONE_SURROGATE = ("a string holds a lone surrogate escape (such as \\ud800): not valid Unicode, so no output file "
                  "could hold it")
_LONE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
"""A JSON escape of a surrogate code point (valid only as half of a pair)."""


def _lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a string with an unpaired surrogate (e.g. from ``"\\ud800"``)."""
    if isinstance(value, str):
        return bool(_LONE.search(value))
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


def _json_error(err: json.JSONDecodeError) -> str:
    """'<what> at column N' (the line too when the text has several); the parser's own trailing 'at' dropped."""
    at = f"column {err.colno}" if err.lineno == 1 else f"line {err.lineno} column {err.colno}"
    return f"{err.msg.removesuffix(' at').rstrip(':')} at {at}"


def _parse_json(text: str) -> Any:
    """``loads(text)``; raises UnreadableRow when the text is not JSON or holds a lone surrogate escape."""
    try:
        value = loads(text)
    except json.JSONDecodeError as err:
        raise UnreadableRow(f"invalid JSON: {_json_error(err)}", text) from None
    except RecursionError:
        raise UnreadableRow("JSON nested too deeply to read (thousands of levels)", text) from None
    if _LONE_ESCAPE.search(text) and _lone_surrogate(value):
        raise UnreadableRow(LONE_SURROGATE, text)
    return value


def _is_hf_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def data_files(path: Path) -> list[Path]:
    """The data files of a directory that is not a Hugging Face dataset, in name order."""
    files = []
    for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            detect_file_type(file)
        except RecordError:
            continue
        files.append(file)
    return files


def detect_file_type(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        if _is_hf_dir(path):
            return "hf"
        if data_files(path):
            return "dir"
        raise RecordError(f"{path} is a directory with no data files (.jsonl, .json, .parquet, .csv, .txt) and not a "
                          "Hugging Face dataset (no dataset_info.json)")
    name = path.name.lower().removesuffix(".gz")
    for suffix, kind in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".parquet", "parquet"),
                         (".pq", "parquet"), (".csv", "csv"), (".txt", "txt")):
        if name.endswith(suffix):
            return kind
    raise RecordError(f"cannot tell the file type of {path.name}; pass one of {', '.join(FILE_TYPES)}")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _iter_jsonl(path: Path, start: int = 0, stop: int | None = None, first: int = 1) -> Iterator[Row]:
    """The rows of a JSONL file; or of its lines from byte ``start`` (a line's first byte, the line numbered
    ``first``) to the line that ends at or after byte ``stop`` (uncompressed files: a reader's shard)."""
    with _open_binary(path) as handle:
        if start:
            handle.seek(start)
        lines = _until(handle, stop - start) if stop is not None else handle
        for number, raw in enumerate(lines, start=first):
            where = f"{path.name}:{number}"
            if number == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                yield where, UnreadableRow("the file is UTF-16 (it starts with a UTF-16 byte order mark); JSONL must be "
                                           "UTF-8: convert it first, e.g. iconv -f UTF-16 -t UTF-8", raw[:1000])
                return
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield where, UnreadableRow(f"invalid UTF-8 at byte {err.start} of the line", raw)
                continue
            if number == 1:
                text = text.removeprefix("\ufeff")  # a byte order mark is not part of the first record
            if not text.strip():
                continue
            try:
                yield where, _parse_json(text)
            except UnreadableRow as err:
                yield where, err


def _until(lines: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Lines until ``size`` bytes have been read (the line that crosses it included)."""
    read = 0
    for raw in lines:
        if read >= size:
            return
        read += len(raw)
        yield raw


def _iter_txt(path: Path) -> Iterator[Row]:
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                yield f"{path.name}:{number}", UnreadableRow(f"invalid UTF-8 at byte {err.start} of the line", raw)
                continue
            if number == 1:
                text = text.removeprefix("\ufeff")
            if text.strip():
                yield f"{path.name}:{number}", {"text": text}


def _iter_json(path: Path) -> Iterator[Row]:
    with _open_binary(path) as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        yield f"{path.name}:byte {err.start}", UnreadableRow(
            f"invalid UTF-8 at byte {err.start}; the JSON file cannot be read", data[max(0, err.start - 200):err.start + 200])
        return
    if not text.strip():
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        yield f"{path.name}:{err.lineno}", UnreadableRow(f"invalid JSON: {_json_error(err)}",
                                                         text[max(0, err.pos - 500):err.pos + 500])
        return
    except RecursionError:
        yield f"{path.name}:1", UnreadableRow("JSON nested too deeply to read (thousands of levels)", text[:1000])
        return
    if isinstance(value, dict):  # a single object, or {"data": [...]} style containers
        rows = value.get("data") if isinstance(value.get("data"), list) else [value]
    elif isinstance(value, list):
        rows = value
    else:
        yield f"{path.name}:1", UnreadableRow(f"a JSON file must hold an array of objects, got {type(value).__name__}",
                                              text[:1000])
        return
    escapes = bool(_LONE_ESCAPE.search(text))  # once for the file: only then can a row hold a lone surrogate
    for index, row in enumerate(rows):
        if escapes and _lone_surrogate(row):
            yield f"{path.name}[{index}]", UnreadableRow(LONE_SURROGATE, json.dumps(row, ensure_ascii=True))
            continue
        yield f"{path.name}[{index}]", row


def _iter_parquet(path: Path, groups: range | None = None) -> Iterator[Row]:
    """The rows of a Parquet file (``groups``: of these row groups only, rows numbered within the file)."""
    import pyarrow.parquet as pq

    if path.name.endswith(".gz"):  # a whole gzipped Parquet file (another tool's): Parquet needs to seek
        import pyarrow as pa

        with _open_binary(path) as handle:
            parquet = pq.ParquetFile(pa.BufferReader(handle.read()))
    else:
        parquet = pq.ParquetFile(path)
    if groups is None:
        groups = range(parquet.num_row_groups)
    index = sum(parquet.metadata.row_group(g).num_rows for g in range(groups.start))
    for batch in parquet.iter_batches(batch_size=1024, row_groups=list(groups)):
        for row in batch.to_pylist():
            yield f"{path.name}[{index}]", _present(row)
            index += 1


def _present(row: dict) -> dict:
    """A columnar row without its null cells: a column another row has is absent from this one."""
    return {k: v for k, v in row.items() if v is not None}


def columns_of(rows: list[dict]) -> dict[str, list]:
    """Rows as columns: every column any row has (null where a row lacks it); pyarrow's and datasets'
    ``from_pylist``/``from_list`` would take the first row's keys and drop the rest."""
    names = dict.fromkeys(k for row in rows for k in row)
    return {name: [row.get(name) for row in rows] for name in names}


def columnar_row(row: dict) -> dict:
    """A row for a columnar container (Parquet, CSV, datasets): lineage as JSON text, since its entries
    differ in shape from step to step and would not fit one column type."""
    if "lineage" in row and not isinstance(row["lineage"], str):
        row = {**row, "lineage": json.dumps(row["lineage"], ensure_ascii=False)}
    return row


EMPTY_IS_ABSENT = ("id", "scores", "lineage", "meta", "history", "tools", "messages", "conversations")
"""Columns where an empty cell is a row that lacks the field (CSV has no null; no text of these is empty)."""


def _encode_cell(key: str, value: Any) -> Any:
    """Nested values as JSON text; in a nested column, text that would read as JSON is written as a JSON string."""
    looks_like_json = key in NESTED_CSV_COLUMNS and isinstance(value, str) and value[:1] in _JSON_START
    if isinstance(value, (list, dict)) or looks_like_json:
        return json.dumps(value, ensure_ascii=False)
    return value


_JSON_START = ("[", "{", '"')


def _decode_cell(key: str, cell: str) -> Any:
    """A cell's value: JSON in a nested column (text that is not JSON, from a file we did not write, stays text)."""
    if key in NESTED_CSV_COLUMNS and cell[:1] in _JSON_START:
        try:
            return json.loads(cell)
        except json.JSONDecodeError:
            return cell
    return cell


def _has_bad_bytes(row: dict) -> bool:
    return any(isinstance(v, str) and _SURROGATE.search(v) for v in row.values())


_SURROGATE = re.compile("[\udc80-\udcff]")


def _csv_text(row: dict) -> str:
    """A CSV row as text again (cells past the header included; bad bytes as U+FFFD)."""
    cells = [v for k, v in row.items() if k is not None] + list(row.get(None) or [])
    out = io.StringIO()
    csv.writer(out).writerow(cells)
    return out.getvalue().rstrip("\r\n").encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _iter_csv(path: Path) -> Iterator[Row]:
    csv.field_size_limit(sys.maxsize)
    # surrogateescape keeps the stream going past bad bytes, so each bad row becomes its own reject
    with io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            where = f"{path.name}:{reader.line_num}"
            if None in row:
                yield where, UnreadableRow("the row has more cells than the header", _csv_text(row))
            elif _has_bad_bytes(row):
                yield where, UnreadableRow("invalid UTF-8 bytes in the row", _csv_text(row))
            else:
                yield where, {k: _decode_cell(k, v) for k, v in row.items()
                              if v is not None and not (v == "" and k in EMPTY_IS_ABSENT)}


def _iter_hf(path: Path) -> Iterator[Row]:
    from datasets import load_from_disk

    dataset = load_from_disk(str(path))
    if hasattr(dataset, "keys"):  # a DatasetDict: read every split in order
        for split in dataset.keys():
            for index, row in enumerate(dataset[split]):
                yield f"{path.name}/{split}[{index}]", _present(row)
        return
    for index, row in enumerate(dataset):
        yield f"{path.name}[{index}]", _present(row)


def _iter_dir(path: Path) -> Iterator[Row]:
    """Every data file of a directory in name order, each read by its own type (positions name the file)."""
    for file in data_files(path):
        for where, row in _guarded(file, ITERATORS[detect_file_type(file)](file)):
            yield f"{path.name}/{where}", row


ITERATORS = {"jsonl": _iter_jsonl, "json": _iter_json, "parquet": _iter_parquet, "csv": _iter_csv, "txt": _iter_txt,
             "hf": _iter_hf, "dir": _iter_dir}


def iter_rows(path: str | Path, file_type: str | None = None) -> Iterator[Row]:
    """Yield ``(position, row_or_error)`` for every row of a file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    kind = file_type or detect_file_type(path)
    if kind not in ITERATORS:
        raise ValueError(f"unknown file type {kind!r}; use one of {', '.join(FILE_TYPES)}")
    yield from _guarded(path, ITERATORS[kind](path)) if kind != "dir" else ITERATORS[kind](path)


def _guarded(path: Path, rows: Iterator[Row]) -> Iterator[Row]:
    """``rows``, ending in one unreadable row that names the file and position when a compressed file is
    truncated or damaged (what was read before that point stands)."""
    last = None
    try:
        for where, row in rows:
            last = where
            yield where, row
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        after = f"after {last}" if last else "before its first row"
        yield (f"{last} (end)" if last else path.name), UnreadableRow(
            f"truncated or damaged compressed file: nothing {after} can be read ({err})")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) that replaces ``path`` when the block ends normally and
    is removed when it raises: a failed write leaves neither a partial file nor a changed target."""
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    _remove(tmp)
    done = False
    try:
        yield tmp
        done = True
    finally:
        if done:
            if path.is_dir():
                shutil.rmtree(path)
            tmp.replace(path)
        else:
            _remove(tmp)


def write_rows(rows: Iterable[dict], path: str | Path, file_type: str | None = None) -> int:
    """Write rows to ``path`` (file type from the suffix unless given); return the row count.

    JSONL is written as a stream; the other containers are built in memory. Either way the file appears
    only once every row is written."""
    path = Path(path)
    kind = file_type or detect_file_type_for_writing(path)
    if kind not in WRITE_TYPES:
        raise ValueError(f"cannot write file type {kind!r}; use one of {', '.join(WRITE_TYPES)}")
    _no_gzipped_parquet(path, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        return _write(rows, tmp, kind, gzipped=path.name.endswith(".gz"))


def open_jsonl(path: Path, *, gzipped: bool):
    """A JSONL file opened for writing bytes: orjson's UTF-8 as it is, nothing decoded and encoded again."""
    return gzip.open(path, "wb") if gzipped else open(path, "wb")


def _write(rows: Iterable[dict], path: Path, kind: str, *, gzipped: bool) -> int:
    if kind == "jsonl":
        count, lines = 0, []
        with open_jsonl(path, gzipped=gzipped) as handle:
            for row in rows:
                lines.append(dump_bytes(row))
                if len(lines) == 1024:
                    handle.write(b"\n".join(lines) + b"\n")
                    count, lines = count + len(lines), []
            if lines:
                handle.write(b"\n".join(lines) + b"\n")
        return count + len(lines)
    rows = list(rows) if kind == "json" else [columnar_row(r) for r in rows]
    opener = gzip.open if gzipped else open  # .json.gz and .csv.gz are compressed as their names say
    if kind == "json":
        with opener(path, "wt", encoding="utf-8") as handle:
            handle.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pydict(columns_of(rows)), path)
    elif kind == "csv":
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with opener(path, "wt", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _encode_cell(k, v) for k, v in row.items()})
    else:
        from datasets import Dataset

        Dataset.from_dict(columns_of(rows)).save_to_disk(str(path))
    return len(rows)


def detect_file_type_for_writing(path: Path) -> str:
    try:
        kind = detect_file_type(path) if not path.is_dir() else "hf"
    except RecordError:
        if not path.suffix:
            return "hf"
        raise
    if kind not in WRITE_TYPES:
        raise RecordError(f"{path.name}: a .{kind} file is read only; write one of {', '.join(WRITE_TYPES)}")
    _no_gzipped_parquet(path, kind)
    return kind


def _no_gzipped_parquet(path: Path, kind: str) -> None:
    if kind == "parquet" and path.name.lower().endswith(".gz"):
        raise RecordError(f"{path.name}: Parquet compresses inside the file (and few tools read a gzipped one); "
                          "name it .parquet")
