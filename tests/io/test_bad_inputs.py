"""The bad-input corpus (tests/data/bad/, made by its make_bad_inputs.py): every kind of damage is read into
records and rejects with a position, a reason and the raw text; nothing crashes and nothing is lost."""

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.io import ReadReject, read_records
from dataflywheel.pipeline import LocalExecutor, RunError, parse_recipe

BAD = Path(__file__).parents[1] / "data" / "bad"

# file: (records, rejects, words of the first reject's reason or None)
EXPECTED = {
    "truncated_line.jsonl": (2, 1, "invalid JSON: Invalid control character at column"),
    "mixed_encodings.jsonl": (2, 1, "invalid UTF-8 at byte 20"),
    "bom.jsonl": (2, 0, None),
    "bom.json": (2, 0, None),
    "nul_bytes.jsonl": (2, 1, "invalid JSON: Invalid control character"),
    "deeply_nested.jsonl": (2, 1, "nested too deeply"),
    "wrong_types.jsonl": (1, 5, "field 'instruction' must be a string, got int"),
    "duplicate_ids.jsonl": (2, 0, None),  # record ids are content hashes; the dataset's own id stays in meta
    "empty_conversation.jsonl": (1, 1, "'messages' must be a non-empty list"),
    "roles_out_of_order.jsonl": (1, 2, "starts with an assistant turn"),
    "tool_calls.jsonl": (1, 1, "tool_calls must be a non-empty list"),
    "image_parts.jsonl": (1, 1, "content must be a string, got list"),
    "other_schema.parquet": (0, 2, "cannot tell the format from fields ['embedding', 'question_id']"),
    "embedded_newlines.csv": (2, 0, None),
    "truncated_midstream.jsonl.gz": (None, 1, "truncated or damaged compressed file: nothing after"),
    "lone_surrogate.jsonl": (1, 1, "lone surrogate escape"),
    "binary.jsonl": (0, None, None),
    "empty.jsonl": (0, 0, None),
    "blank_lines.jsonl": (0, 0, None),
    "not_objects.jsonl": (1, 4, "a row must be a JSON object, got int"),
    "wrong_field_names.jsonl": (1, 1, "cannot tell the format from fields ['a', 'q']"),
    "crlf.jsonl": (2, 0, None),
    "scalar.json": (0, 1, "must hold an array of objects, got int"),
    "truncated.json": (0, 1, "invalid JSON"),
    "more_cells.csv": (1, 1, "more cells than the header"),
    "bad_bytes.csv": (1, 1, "invalid UTF-8 bytes in the row"),
    "nan_values.jsonl": (1, 1, "field 'output' must be a string, got float"),
    "preference_half.jsonl": (1, 1, "missing field(s) 'rejected'"),
    "null_fields.jsonl": (1, 1, "cannot tell the format"),  # output null: a prompt-only record
    "whitespace_only.jsonl": (2, 0, None),  # readable; the length filters judge blank text
    "utf16.jsonl": (0, 1, "the file is UTF-16"),
    "sharegpt_unknown_from.jsonl": (0, 1, "unknown speaker 'robot'"),
    "mixed_dir": (4, 1, "invalid JSON"),
}


def test_the_corpus_is_complete_and_each_kind_is_expected():
    made = {p.name for p in BAD.iterdir() if p.suffix != ".py" and p.name != "__pycache__"}
    assert made == set(EXPECTED) and len(made) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_kind_reads_into_records_and_rejects_with_reason_and_raw_text(name):
    items = list(read_records(BAD / name))
    records = [i for i in items if not isinstance(i, ReadReject)]
    rejects = [i for i in items if isinstance(i, ReadReject)]
    want_records, want_rejects, reason = EXPECTED[name]
    if want_records is not None:
        assert len(records) == want_records
    if want_rejects is not None:
        assert len(rejects) == want_rejects
    if reason:
        assert reason in rejects[0].reason, rejects[0].reason
    for reject in rejects:
        assert reject.source and reject.reason
        assert reject.raw or "truncated or damaged" in reject.reason  # the text is kept to be fixed
        reject.raw.encode("utf-8")  # every reject can be written
    for record in records:
        json.dumps(record, ensure_ascii=False).encode("utf-8")


def test_a_truncated_gzip_keeps_every_line_before_the_cut_and_says_where():
    items = list(read_records(BAD / "truncated_midstream.jsonl.gz"))
    *records, last = items
    assert all(not isinstance(r, ReadReject) for r in records[:-1]) and isinstance(last, ReadReject)
    assert last.source.startswith("truncated_midstream.jsonl.gz:")
    assert len(records) > 100  # half of the 300 lines were in the kept half of the stream


def test_a_run_over_the_whole_corpus_finishes_and_loses_nothing(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in BAD.iterdir():
        if path.is_file() and path.suffix != ".py":
            shutil.copy(path, corpus / path.name)
    recipe = parse_recipe({"input": {"path": str(corpus)}, "output": {"dir": str(tmp_path / "run")},
                           "steps": [{"op": "enhance.normalize"}, {"op": "select.exact_dedup"}]})
    executor = LocalExecutor(recipe, quiet=True)
    manifest = executor.execute()
    assert manifest["status"] == "finished"
    totals = manifest["totals"]
    assert totals["read"] == totals["output"] + totals["rejected"]
    rejects = pq.read_table(executor.run_dir.rejects(0, "read")).to_pylist()
    assert len(rejects) > 30 and all(r["reason"] and (r["raw"] or "truncated" in r["reason"]) for r in rejects)


def test_a_ten_megabyte_record_is_read(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"instruction": "Summarise.", "output": "word " * 2_000_000}) + "\n")
    [record] = list(read_records(path))
    assert len(record["messages"][1]["content"]) == 10_000_000


@pytest.mark.parametrize("name", ["binary.jsonl", "empty.jsonl", "wrong_field_names.jsonl"])
def test_a_run_with_nothing_usable_fails_with_the_reason_and_reruns_without_force(tmp_path, name):
    data = tmp_path / name
    if name == "wrong_field_names.jsonl":  # every row unmappable
        data.write_text(json.dumps({"q": "?", "a": "!"}) + "\n")
    else:
        shutil.copy(BAD / name, data)
    recipe = {"input": {"path": str(data)}, "output": {"dir": str(tmp_path / "run")}, "steps": [{"op": "enhance.normalize"}]}
    with pytest.raises(RunError, match="holds no records" if name == "empty.jsonl" else "nothing usable"):
        LocalExecutor(parse_recipe(recipe), quiet=True).execute()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "RunError" in manifest["error"]
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "recipe.json"), "--quiet"])  # no --force needed
    assert result.exit_code != 0 and "already holds a run" not in result.output


def test_convert_of_nothing_usable_writes_no_output_and_exits_non_zero(tmp_path):
    target = tmp_path / "out.parquet"
    result = CliRunner().invoke(app, ["convert", str(BAD / "binary.jsonl"), str(target)])
    assert result.exit_code == 1 and "nothing usable" in result.output
    assert not target.exists() and (tmp_path / "out.parquet.rejects.jsonl").exists()
