"""Shards read on their own give what reading the whole input gives: the same records, unreadable rows and
names, in the same order."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflywheel.io import ReadReject, read_records
from dataflywheel.io import shards as shards_module
from dataflywheel.io.shards import plan_shards, read_shard, shard_from_json, shard_json
from tests.conftest import EXAMPLE_DATA, SHARED_DATA


def _outcomes(items) -> list[tuple]:
    return [("reject", i.source, i.reason, i.raw) if isinstance(i, ReadReject) else ("record", i["meta"]["source"], i["id"])
            for i in items]


def _sharded(path, workers: int = 2, **options) -> tuple[list, list]:
    plan = plan_shards(path, workers=workers, **options)
    plan = [shard_from_json(json.loads(json.dumps(shard_json(s)))) for s in plan]  # as sent to a worker
    return plan, _outcomes(item for shard in plan for item in read_shard(shard))


@pytest.fixture
def small_shards(monkeypatch):
    monkeypatch.setattr(shards_module, "MIN_SHARD_BYTES", 1000)
    monkeypatch.setattr(shards_module, "_SCAN", 700)  # cuts fall inside and across scan chunks


def _messy_jsonl(path, ending: str = "\n"):
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:40]
    lines[7] = '{"instruction": "broken'  # invalid JSON
    lines[20] = ""  # blank: skipped, still counted in line numbers
    lines[31] = '{"unknown": 1}'  # no format fits
    path.write_text("\n".join(lines) + ending, encoding="utf-8")
    return path


@pytest.mark.parametrize("ending", ["\n", ""], ids=["newline at end", "no newline at end"])
def test_a_jsonl_file_in_line_ranges_reads_as_a_whole(tmp_path, small_shards, ending):
    path = _messy_jsonl(tmp_path / "data.jsonl", ending)
    plan, sharded = _sharded(path, workers=4)
    assert len(plan) >= 4  # the file was cut
    whole = _outcomes(read_records(path))
    assert sharded == whole
    assert ("reject", "data.jsonl:8") == whole[7][:2]  # line numbers of later shards are right


def test_a_directory_of_files_parquet_row_groups_and_compressed_files(tmp_path, small_shards):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _messy_jsonl(folder / "a.jsonl")
    rows = [json.loads(line) for line in EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[40:100]]
    pq.write_table(pa.Table.from_pylist(rows), folder / "b.parquet", row_group_size=7)
    with gzip.open(folder / "c.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows[:10]) + "not json\n")
    (folder / "d.csv").write_text("instruction,output\nsay hi,hi\n", encoding="utf-8")
    plan, sharded = _sharded(folder, workers=4)
    assert sum(len(shard) for shard in plan) > 4  # files and parts of files
    assert any(p.kind == "parquet" and p.start > 0 for shard in plan for p in shard)
    assert sharded == _outcomes(read_records(folder))


def test_small_files_share_a_shard():
    path = SHARED_DATA / "t0_train_50k"
    if not path.exists():
        pytest.skip("needs ../shared/data/t0_train_50k")
    plan = plan_shards(path, workers=2)
    assert 8 <= len(plan) <= 16  # ~4 per worker of its 294 files, not one per file
    assert sum(len(shard) for shard in plan) == sum(1 for f in path.glob("*.jsonl") if f.stat().st_size)  # empty: none


def test_a_missing_input_is_named():
    with pytest.raises(FileNotFoundError, match="no-such"):
        plan_shards("no-such.jsonl")


def test_empty_files_utf16_and_relative_paths(tmp_path, small_shards, monkeypatch):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "a.csv").write_text("", encoding="utf-8")  # empty, first: no shard of its own, no crash
    (folder / "b.json").write_text("", encoding="utf-8")
    utf16 = "".join(line + "\n" for line in EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:30])
    (folder / "c.jsonl").write_bytes(b"\xff\xfe" + utf16.encode("utf-16-le"))  # rejected once, from line 1
    _messy_jsonl(folder / "d.jsonl")
    plan, sharded = _sharded(folder, workers=4)
    assert sharded == _outcomes(read_records(folder))
    assert sum("UTF-16" in o[2] for o in sharded if o[0] == "reject") == 1
    monkeypatch.chdir(tmp_path)
    assert all(piece.path.startswith(str(tmp_path)) for shard in plan_shards("odd") for piece in shard)


def test_a_linked_input_keeps_the_name_it_was_given(tmp_path):
    """A hub snapshot's file is a link to a blob without a suffix: read and named as the link, as locally."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    _messy_jsonl(blobs / "9f3a1c")
    (tmp_path / "train.jsonl").symlink_to(blobs / "9f3a1c")
    plan, sharded = _sharded(tmp_path / "train.jsonl")
    assert sharded == _outcomes(read_records(tmp_path / "train.jsonl"))
    assert sharded[0][1] == "train.jsonl:1"
