"""Format A -> records -> format A gives equal data, for every format and container."""

import pytest

from dataflywheel.io import ReadReject, read_records, records_from_dataset, records_to_dataset, write_records
from dataflywheel.io.files import iter_rows, write_rows

SAMPLES = {
    "alpaca": [
        {"instruction": "Name a primary colour.", "input": "", "output": "Red.", "category": "open_qa"},
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour", "category": "translate"},
    ],
    "sharegpt": [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello! How can I help?"}]},
        {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"},
                           {"from": "human", "value": "and 3+3?"}, {"from": "gpt", "value": "6"}]},
    ],
    "messages": [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Peru?"},
                      {"role": "assistant", "content": "Lima."}]},
        {"messages": [{"role": "user", "content": "Say <b>hi</b> \"quoted\", ünïcödé"},
                      {"role": "assistant", "content": "hi\nthere"}]},
    ],
    "trl": [
        {"prompt": "Is the sky blue?", "chosen": "Yes, on a clear day.", "rejected": "No."},
        {"prompt": "Add 2 and 5.", "chosen": "7", "rejected": "8"},
    ],
    "trl_messages": [
        {"prompt": [{"role": "user", "content": "Best sorting algorithm?"}],
         "chosen": [{"role": "assistant", "content": "It depends on the data."}],
         "rejected": [{"role": "assistant", "content": "Bubble sort."}]},
    ],
    "completion": [
        {"prompt": "The capital of Italy is", "completion": " Rome."},
        {"prompt": "Premise: it rains. Hypothesis: the ground is wet.", "completion": "entailment"},
    ],
    "text": [{"text": "A plain document.\nWith two lines."}, {"text": "Another one."}],
}
CONTAINERS = {"jsonl": "data.jsonl", "json": "data.json", "parquet": "data.parquet", "csv": "data.csv", "hf": "data_hf"}


def rows_of(path):
    rows = []
    for _, row in iter_rows(path):
        assert isinstance(row, dict), row
        rows.append(row)
    return rows


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("fmt", SAMPLES)
def test_roundtrip(tmp_path, fmt, container):
    first = tmp_path / f"a_{CONTAINERS[container]}"
    write_rows(SAMPLES[fmt], first, container)
    original = rows_of(first)

    records = list(read_records(first, fmt))
    assert not [r for r in records if isinstance(r, ReadReject)]
    assert len(records) == len(SAMPLES[fmt])

    second = tmp_path / f"b_{CONTAINERS[container]}"
    write_records(records, second, fmt, container)
    assert rows_of(second) == original


@pytest.mark.parametrize("fmt", SAMPLES)
def test_format_is_detected(tmp_path, fmt):
    path = tmp_path / "x.jsonl"
    write_rows(SAMPLES[fmt], path)
    records = list(read_records(path))
    again = tmp_path / "y.jsonl"
    write_records(records, again, fmt)
    assert rows_of(again) == SAMPLES[fmt]


def test_training_format_is_what_trl_reads(tmp_path):
    write_rows(SAMPLES["alpaca"], tmp_path / "s.jsonl")
    write_rows(SAMPLES["trl"], tmp_path / "p.jsonl")
    sft = list(read_records(tmp_path / "s.jsonl"))
    dpo = list(read_records(tmp_path / "p.jsonl"))
    write_records(sft + dpo, tmp_path / "out.jsonl", "auto", with_meta=False)
    rows = rows_of(tmp_path / "out.jsonl")
    assert set(rows[0]) == {"messages"}
    assert rows[1]["messages"][0] == {"role": "user", "content": "Translate to French.\n\nGood morning"}
    assert set(rows[2]) == {"prompt", "chosen", "rejected"}
    assert rows[2]["chosen"] == [{"role": "assistant", "content": "Yes, on a clear day."}]


def test_hf_dataset_objects():
    from datasets import Dataset

    dataset = Dataset.from_list(SAMPLES["messages"])
    records = list(records_from_dataset(dataset))
    assert records[0]["messages"][-1]["content"] == "Lima."
    back = records_to_dataset(records, "messages")
    assert back.to_list() == dataset.to_list()


def test_jsonl_reads_as_a_stream(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as handle:
        for i in range(1000):
            handle.write('{"text": "row %d"}\n' % i)
    stream = read_records(path)
    first = next(stream)
    assert first["messages"][0]["content"] == "row 0"
    # a generator, not a list: the file is read lazily, line by line
    assert iter(stream) is stream
