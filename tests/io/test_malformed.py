"""Bad input becomes rejects with a position and a reason; the run completes."""

import json

import pyarrow.parquet as pq
import pytest

from dataflywheel.io import ReadReject, read_records
from dataflywheel.pipeline import LocalExecutor, RunError, parse_recipe

GOOD = {"instruction": "Name a fruit.", "input": "", "output": "An apple."}


def malformed_jsonl(path):
    lines = [
        json.dumps(GOOD).encode(),
        b'{"instruction": "broken", "output": ',                        # 2: broken JSON
        json.dumps({"input": "x", "output": "no instruction"}).encode(),  # 3: missing field
        json.dumps({"instruction": "Count.", "output": 3}).encode(),     # 4: wrong type
        b'{"instruction": "caf\xe9", "output": "latin-1 bytes"}',         # 5: not UTF-8
        b"",                                                             # blank line: not a record
        json.dumps([1, 2]).encode(),                                     # 7: not an object
        json.dumps({"instruction": "Name a colour.", "input": "", "output": "Blue."}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_each_bad_line_is_a_reject_with_line_and_reason(tmp_path):
    items = list(read_records(malformed_jsonl(tmp_path / "bad.jsonl"), "alpaca"))
    rejects = {r.source: r.reason for r in items if isinstance(r, ReadReject)}
    assert len([r for r in items if not isinstance(r, ReadReject)]) == 2
    assert rejects["bad.jsonl:2"].startswith("invalid JSON")
    assert "missing field(s) 'instruction'" in rejects["bad.jsonl:3"]
    assert "field 'output' must be a string, got int" in rejects["bad.jsonl:4"]
    assert "invalid UTF-8" in rejects["bad.jsonl:5"]
    assert "must be a JSON object, got list" in rejects["bad.jsonl:7"]
    assert len(rejects) == 5


def test_undetectable_format_is_a_reject_that_says_how_to_map_it(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"q": "?", "a": "!"}) + "\n")
    [item] = list(read_records(path))
    assert isinstance(item, ReadReject) and "cannot tell the format from fields ['a', 'q']" in item.reason
    assert "--fields prompt=FIELD,response=FIELD" in item.reason


def test_csv_rows_with_bad_bytes_and_extra_cells(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"instruction,input,output\nName a fruit.,,An apple.\ncaf\xe9,,x\nA,,B,extra\nName a tree.,,Oak.\n")
    items = list(read_records(path, "alpaca"))
    rejects = {r.source: r.reason for r in items if isinstance(r, ReadReject)}
    assert rejects == {"bad.csv:3": "invalid UTF-8 bytes in the row", "bad.csv:4": "the row has more cells than the header"}
    assert len(items) == 4


def run_recipe(tmp_path, input_path, steps=()):
    recipe = parse_recipe({"input": {"path": str(input_path)}, "output": {"dir": str(tmp_path / "run")},
                           "steps": list(steps)})
    executor = LocalExecutor(recipe, quiet=True)
    return executor, executor.execute()


def test_run_completes_and_keeps_every_bad_row(tmp_path):
    executor, manifest = run_recipe(tmp_path, malformed_jsonl(tmp_path / "bad.jsonl"))
    assert manifest["status"] == "finished"
    assert manifest["totals"] == {"read": 7, "output": 2, "rejected": 5, "generated": 0, "errors": 0}
    rejects = pq.read_table(executor.run_dir.rejects(0, "read")).to_pylist()
    assert sorted(r["source"] for r in rejects) == ["bad.jsonl:2", "bad.jsonl:3", "bad.jsonl:4", "bad.jsonl:5",
                                                   "bad.jsonl:7"]
    assert all(r["step"] == "read" and r["reason"] for r in rejects)
    raw_of_missing = next(r["raw"] for r in rejects if r["source"] == "bad.jsonl:3")
    assert json.loads(raw_of_missing) == {"input": "x", "output": "no instruction"}


def test_an_empty_file_fails_the_run_with_the_reason(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(RunError, match="holds no records"):
        run_recipe(tmp_path, empty, [{"op": "select.exact_dedup"}])
    assert not (tmp_path / "run" / "output.jsonl").exists()
