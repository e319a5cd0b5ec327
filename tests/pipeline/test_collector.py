"""A run tunes Python's garbage collector while it moves records, and puts it back."""

import gc
import json
from contextlib import nullcontext

import pytest

from dataflywheel.ops.select.length_filter import LengthFilter
from dataflywheel.pipeline import LocalExecutor, collector, executor_local, parse_recipe
from dataflywheel.pipeline.apply import StepFailed
from tests.conftest import EXAMPLE_DATA

STEPS = [{"op": "select.length_filter", "min_instruction_words": 3}, {"op": "select.repetition_filter"}]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """~6000 distinct records (the example data, numbered)."""
    rows = [json.loads(line) for line in EXAMPLE_DATA.read_text().splitlines()]
    path = tmp_path_factory.mktemp("collector") / "data.jsonl"
    path.write_text("".join(json.dumps({**row, "instruction": f"{row['instruction']} ({n})"}) + "\n"
                            for n in range(30) for row in rows))
    return path


def collections(tmp_path, name, data, steps=STEPS) -> list[int]:
    """The generation of every collection the run triggered."""
    recipe = parse_recipe({"input": {"path": str(data)}, "output": {"dir": str(tmp_path / name)}, "cache": "off",
                           "workers": 1, "steps": steps})
    seen = []

    def note(phase, info):
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(note)
    try:
        LocalExecutor(recipe, quiet=True).execute(report=False)
    finally:
        gc.callbacks.remove(note)
    return seen


def test_a_run_collects_rarely(tmp_path, monkeypatch, data):
    tuned = collections(tmp_path, "tuned", data)
    monkeypatch.setattr(executor_local, "few_collections", nullcontext)
    default = collections(tmp_path, "default", data)
    assert len(default) >= 30 and len(tuned) <= len(default) / 4
    assert (tmp_path / "tuned" / "output.jsonl").read_bytes() == (tmp_path / "default" / "output.jsonl").read_bytes()


def test_the_collector_is_as_it_was_after_a_run_finished_or_failed(tmp_path, monkeypatch, data):
    before = gc.get_threshold(), gc.get_freeze_count()
    collections(tmp_path, "finished", data)
    assert (gc.get_threshold(), gc.get_freeze_count()) == before

    def broken(self, record):
        raise ValueError("filter broke")

    with monkeypatch.context() as patch:
        patch.setattr(LengthFilter, "reject_reason", broken)
        with pytest.raises(StepFailed):  # raised inside the run, while its steps run
            collections(tmp_path, "failed", data)
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    gc.freeze()  # a process that froze objects itself keeps them frozen
    try:
        frozen = gc.get_freeze_count()
        collections(tmp_path, "frozen", data)
        assert gc.get_freeze_count() > frozen // 2  # still frozen (a frozen object freed by its count leaves)
    finally:
        gc.unfreeze()


def test_overlapping_runs_put_the_collector_back_once_the_last_ends():
    """Runs in threads may end in any order: the collector is put back as it was before the first one, once
    the last one ends; a collector switched off stays off."""
    before = gc.get_threshold(), gc.get_freeze_count()
    first, second = collector.few_collections(), collector.few_collections()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD  # the second run goes on, tuned
    second.__exit__(None, None, None)
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    gc.set_threshold(0)
    try:
        with collector.few_collections():
            assert gc.get_threshold()[0] == 0 and gc.get_freeze_count() == 0
    finally:
        gc.set_threshold(*before[0])
