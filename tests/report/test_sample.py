"""The report's sample: chosen by id, the same record in every series, keyed a whole column at once."""

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflywheel.report.sample import present, sample_key, sample_keys, sample_mask, sample_step, sampled


def _strings(values):
    builder = pa.lib.StringBuilder()
    builder.append_values(values)
    return builder.finish()


IDS = [f"{i:020x}" for i in range(5000)] + [hashlib.sha256(str(i).encode()).hexdigest()[:20] for i in range(5000)]
ODD = ["hello world", "ABCDEF0123456789", "", "zz", "é" * 10 + "0123abcd", "0123abcdé", "x" * 7, "0123abcd"]


def test_a_kept_record_is_in_the_sample_of_both_series():
    step = sample_step(len(IDS), 500)
    sample = {i for i in IDS if sampled(i, step)}
    assert 0.7 * len(IDS) / step <= len(sample) <= 1.3 * len(IDS) / step  # about 1 in step
    kept = IDS[::3]  # whatever survives, its sample is the read sample's survivors
    assert {i for i in kept if sampled(i, step)} == sample & set(kept)


@pytest.mark.parametrize("ids", [IDS[:5000], IDS[5000:]], ids=["sequential", "content hashes"])
def test_ids_spread_evenly_over_the_keys(ids):
    for step in (3, 7, 20):
        share = sum(sampled(i, step) for i in ids) / len(ids)
        assert 0.75 / step <= share <= 1.25 / step


def test_a_column_is_keyed_as_each_value_alone():
    values = IDS + ODD
    column = _strings(values)
    assert sample_keys(column).tolist() == [sample_key(v) for v in values]
    assert sample_keys(column.slice(4995, 20)).tolist() == [sample_key(v) for v in values[4995:5015]]
    assert sample_keys(pa.chunked_array([column.slice(0, 10), column.slice(10, 5)])).tolist() == \
        [sample_key(v) for v in values[:15]]
    assert sample_mask(column, 7).tolist() == [sampled(v, 7) for v in values]
    assert sample_keys(pa.chunked_array([], pa.string())).tolist() == []


def test_nulls_are_left_to_the_caller():
    column = _strings(["0123456789abcdef", None, "zz"])
    assert present(column).tolist() == [True, False, True]
    keys = sample_keys(column)
    assert keys[0] == sample_key("0123456789abcdef") and keys[2] == sample_key("zz")


def test_sampled_rows_are_read_by_position_across_chunks_and_row_groups(tmp_path, monkeypatch):
    """The report reads only the sampled records: by position, across Arrow chunks and Parquet row groups
    (some of which hold no position), the same values as reading everything."""
    from dataflywheel.pipeline import run_dir
    from dataflywheel.records import make_record

    monkeypatch.setattr(run_dir, "_ROW_GROUP", 7)
    records = [make_record([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}])
               for i in range(40)]
    sink = run_dir.RunDir(tmp_path).record_sink(1, "step")
    for i, record in enumerate(records):
        sink.add({"id": record["id"], "origin": record["id"], "record": run_dir.dumps(record)})
    sink.commit()
    path = run_dir.RunDir(tmp_path).checkpoint(1, "step")
    assert pq.ParquetFile(path).metadata.num_row_groups == 6
    positions = [0, 1, 6, 7, 8, 30, 39]  # row groups 0, 1, 4 and 5; none from 2 and 3
    assert run_dir.records_at(path, positions) == [records[i] for i in positions]
    assert run_dir.records_at(path, []) == []

    column = pa.chunked_array([pa.array(["a", "b", "c"]), pa.array([], pa.string()), pa.array(["d", "e"])])
    assert run_dir.values_at(column, [0, 2, 3, 4]) == ["a", "c", "d", "e"]
    table = pa.table({"x": column, "y": pa.chunked_array([pa.array([1, 2, 3]), pa.array([], pa.int64()),
                                                          pa.array([4, 5])])})
    assert run_dir.rows_at(table, [1, 4]) == [{"x": "b", "y": 2}, {"x": "e", "y": 5}]
