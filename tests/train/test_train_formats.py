"""What the readers make of public preference data trains: a run over HH-RLHF, then DPO with ``flywheel train``."""

import gzip
import json
import re

import pytest
from typer.testing import CliRunner

from dataflywheel.cli import app
from tests.conftest import read_jsonl, shared_data, write_jsonl

PAIRS = 6
"""HH-RLHF pairs in the run (the first six of harmless-base test): enough for 2 steps of 2."""


@pytest.mark.model
def test_a_run_over_hh_rlhf_trains_with_dpo(tmp_path):
    source = shared_data("hh_rlhf/harmless-base_test.jsonl.gz")
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        rows = [json.loads(next(handle)) for _ in range(PAIRS)]
    data = write_jsonl(tmp_path / "hh.jsonl", rows)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"input": {"path": str(data)}, "output": {"dir": str(tmp_path / "run")},
                                  "steps": [{"op": "enhance.normalize"}]}))
    runner = CliRunner()
    ran = runner.invoke(app, ["run", str(recipe), "-q"])
    assert ran.exit_code == 0, ran.output
    output = read_jsonl(tmp_path / "run" / "output.jsonl")
    assert len(output) == PAIRS
    assert output[0]["prompt"][0] == {"role": "user", "content": "what are some pranks with a pen i can do?"}
    assert len(output[0]["prompt"]) == 5 and output[0]["chosen"][0]["role"] == "assistant"

    trained = runner.invoke(app, ["train", str(tmp_path / "run"), "-o", str(tmp_path / "dpo"), "--max-steps", "2",
                                  "--batch-size", "2", "--max-length", "128", "-q"])
    assert trained.exit_code == 0, trained.output
    result = json.loads(trained.stdout.strip().splitlines()[-1])
    assert (result["method"], result["records"], result["steps"]) == ("dpo", PAIRS, 2)
    assert (tmp_path / "dpo" / "adapter" / "adapter_config.json").exists()
    assert "%|" not in trained.output and "it/s]" not in trained.output  # -q: no progress bar, TRL's included


def test_quiet_switches_off_the_libraries_bars(monkeypatch):
    import datasets
    import transformers

    from dataflywheel.pipeline.progress import silence_library_bars

    for variable in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(variable, raising=False)  # restored as they were after the test
    datasets.enable_progress_bars()
    transformers.utils.logging.enable_progress_bar()
    try:
        silence_library_bars()
        assert not datasets.is_progress_bar_enabled()
        assert not transformers.utils.logging.is_progress_bar_enabled()
    finally:
        datasets.enable_progress_bars()
        transformers.utils.logging.enable_progress_bar()


@pytest.mark.parametrize("row, message", [
    ({"instruction": "Write a haiku."}, "1 of 2 records are prompts without an answer (first: data[1])"),
    ({"prompt": "2+2?", "completion": "5", "label": False},
     "1 of 2 records have an answer labelled undesirable (label false, KTO data) (first: data[1])"),
])
def test_sft_refuses_what_it_would_learn_wrongly(tmp_path, row, message):
    from dataflywheel.io import read_rows
    from dataflywheel.train.fit import TrainConfig, train

    records = list(read_rows([{"instruction": "Hi", "output": "Hello"}, row]))
    with pytest.raises(ValueError, match=re.escape(message)):
        train(records, tmp_path, TrainConfig(method="auto"))
    assert not list(tmp_path.iterdir())


def test_a_record_repeated_by_rebalancing_counts_that_many_times_in_training():
    from dataflywheel.records import make_record
    from dataflywheel.train.fit import dpo_rows, sft_rows

    record = make_record([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], meta={"repeat": 3})
    plain = make_record([{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}])
    assert len(sft_rows([record, plain])) == 4
    pair = make_record([{"role": "user", "content": "q"}], chosen={"role": "assistant", "content": "good"},
                       rejected={"role": "assistant", "content": "bad"}, meta={"repeat": 2})
    assert len(dpo_rows([pair])) == 2
    odd = make_record([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], meta={"repeat": "x"})
    assert len(sft_rows([odd])) == 1
