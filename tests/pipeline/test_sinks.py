"""Checkpoint and reject files: rows added one by one, as columns or as tables keep their order and values."""

import pyarrow.parquet as pq
import pytest

from dataflywheel.pipeline import run_dir
from dataflywheel.pipeline.run_dir import CHECKPOINT_SCHEMA, ParquetSink, columns_table


def test_rows_columns_and_tables_keep_their_order_across_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir, "_ROW_GROUP", 3)
    rows = [{"id": f"id{i}", "origin": f"o{i}", "record": f'{{"n":{i},"text":"é{i}"}}'.encode()} for i in range(11)]
    sink = ParquetSink(tmp_path / "c.parquet", CHECKPOINT_SCHEMA)
    sink.add(rows[0])
    sink.add_columns({name: [r[name] for r in rows[1:5]] for name in ("id", "origin", "record")})
    sink.add_table(columns_table({name: [r[name] for r in rows[5:7]] for name in ("id", "origin", "record")},
                                 CHECKPOINT_SCHEMA))
    sink.add({**rows[7], "record": rows[7]["record"].decode()})  # text given as str is the same text
    sink.add_columns({name: [r[name] for r in rows[8:]] for name in ("id", "origin", "record")})
    sink.commit()
    table = pq.ParquetFile(tmp_path / "c.parquet").read()
    assert sink.count == 11 and table.num_rows == 11
    assert table.to_pylist() == [{**r, "record": r["record"].decode()} for r in rows]


def test_record_json_that_is_not_utf8_is_refused():
    """Record JSON joined into one buffer is checked as a whole: bytes that are not UTF-8 raise (the Arrow
    builder would store them, and every reader would fail later)."""
    good = run_dir._column(['{"a":"é"}'.encode(), b"{}", b""], CHECKPOINT_SCHEMA.field("record").type)
    assert good.to_pylist() == ['{"a":"é"}', "{}", ""]
    with pytest.raises(Exception, match="UTF8|UTF-8"):
        run_dir._column([b"{}", b'{"a":"\xff"}'], CHECKPOINT_SCHEMA.field("record").type)


def _files(root, read, final, rejected):
    """A run directory with a read checkpoint (ids), a final checkpoint and a reject file (origins)."""
    run = run_dir.RunDir(root)
    for path, origins in ((run.checkpoint(0, "read"), read), (run.checkpoint(2, "last"), final)):
        sink = ParquetSink(path, CHECKPOINT_SCHEMA)
        sink.add_columns({"id": list(origins), "origin": list(origins), "record": [b"{}"] * len(origins)})
        sink.commit()
    rejects = run.reject_sink(1, "first")
    for origin in rejected:
        rejects.add(run_dir.reject_row("first", "why", origin=origin))
    rejects.commit()
    return run, run.checkpoint(2, "last"), run.checkpoint(0, "read")


@pytest.mark.parametrize("final, rejected, generated, problem", [
    (["a", "a", "b"], ["c"], 0, None),  # an id read twice is there twice: fine
    (["a", "a", "b", "g#1"], ["c", "g#2"], 2, None),  # generated records, each once
    (["a", "b"], ["c"], 0, "1 input records are in neither"),  # one of the two a's lost
    (["a", "a", "b", "c"], ["c"], 0, "1 input records are there more than once"),
    (["a", "a", "b", "g#1"], ["c", "g#1"], 2, "2 records were generated, but 1 distinct"),
    (["a", "a", "b", "g#1"], ["c"], 2, "2 records were generated, but 1 distinct"),
])
def test_the_invariant_counts_every_record_read_or_generated(tmp_path, final, rejected, generated, problem):
    problems = run_dir.account(*_files(tmp_path, ["a", "a", "b", "c"], final, rejected), generated)
    assert (problems == []) if problem is None else (problem in "; ".join(problems))
