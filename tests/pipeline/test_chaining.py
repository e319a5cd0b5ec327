"""Runs chain: run A's output is run B's input with ids, scores, lineage and meta where they were."""

import pytest

from dataflywheel.io import ReadReject, read_records
from dataflywheel.pipeline import LocalExecutor, parse_recipe
from dataflywheel.pipeline.run_dir import iter_checkpoint
from dataflywheel.records import response_text
from tests.conftest import EXAMPLE_DATA, read_jsonl

PLUGINS = ["tests.pipeline.gen_plugins"]


def execute(tmp_path, name, input_path, steps, output_file="output.jsonl", **output):
    recipe = parse_recipe({"input": {"path": str(input_path)}, "plugins": PLUGINS, "steps": steps,
                           "output": {"dir": str(tmp_path / name), "file": output_file, **output}})
    manifest = LocalExecutor(recipe, quiet=True).execute(report=False)
    return manifest


def final_records(manifest):
    return [r for batch in iter_checkpoint(manifest["steps"][-1]["checkpoint"]) for r in batch]


@pytest.mark.parametrize("output_file", ["output.jsonl", "output.jsonl.gz", "output.parquet", "out_dataset"])
def test_reading_our_output_restores_every_field(tmp_path, output_file):
    steps = [{"op": "enhance.normalize"}, {"op": "test.response_chars"}, {"op": "select.exact_dedup"},
             {"op": "test.follow_ups"}]
    manifest = execute(tmp_path, "a", EXAMPLE_DATA, steps, output_file)
    written = final_records(manifest)
    assert any(r["lineage"] for r in written) and any(r["meta"].get("duplicate_of") is None for r in written)
    back = [r for r in read_records(tmp_path / "a" / output_file)]
    assert not [r for r in back if isinstance(r, ReadReject)]
    assert len(back) == len(written)
    for before, after in zip(written, back):
        source = after["meta"].pop("source")
        assert source.startswith(output_file)
        # the reader's own notes: where a record was read, and Alpaca's instruction/input split (written back
        # only in the alpaca format)
        before = {**before, "meta": {k: v for k, v in before["meta"].items() if k not in ("source", "alpaca")}}
        assert after == before


def test_gzip_output_is_compressed(tmp_path):
    manifest = execute(tmp_path, "a", EXAMPLE_DATA, [{"op": "select.exact_dedup"}], "output.jsonl.gz")
    assert (tmp_path / "a" / "output.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert manifest["output"]["count"] == len(final_records(manifest))


@pytest.mark.parametrize("output_file", ["output.jsonl", "output.parquet"])
def test_score_in_run_a_select_on_it_in_run_b(tmp_path, output_file):
    execute(tmp_path, "a", EXAMPLE_DATA, [{"op": "test.response_chars"}], output_file)
    manifest = execute(tmp_path, "b", tmp_path / "a" / output_file,
                       [{"op": "select.top_k", "scores": {"chars": 1.0}, "count": 10}])
    kept = read_jsonl(tmp_path / "b" / "output.jsonl")
    everything = [r for r in read_records(EXAMPLE_DATA) if not isinstance(r, ReadReject)]
    longest = sorted(everything, key=lambda r: -len(response_text(r)))[:10]
    assert sorted(r["id"] for r in kept) == sorted(r["id"] for r in longest)
    assert all(r["scores"]["chars"] == len(response_text(r)) for r in final_records(manifest))


def test_for_training_output_strips_our_fields(tmp_path):
    execute(tmp_path, "a", EXAMPLE_DATA, [{"op": "test.response_chars"}, {"op": "test.follow_ups"}],
            for_training=True)
    rows = read_jsonl(tmp_path / "a" / "output.jsonl")
    assert rows and all(set(r) == {"messages"} for r in rows)


def test_a_dataset_s_own_id_column_is_kept(tmp_path):
    from tests.conftest import write_jsonl

    path = write_jsonl(tmp_path / "in.jsonl", [{"id": "seed_task_0", "instruction": "Say hi.", "output": "Hi."}])
    [record] = list(read_records(path))
    assert record["meta"]["id"] == "seed_task_0" and record["id"] != "seed_task_0"
