"""The output file: written beside the report for large runs, the same bytes either way, never half."""

import pytest

from dataflywheel.pipeline import LocalExecutor, parse_recipe
from dataflywheel.pipeline import output as output_module
from dataflywheel.pipeline.output import OutputError, OutputJob
from dataflywheel.report import build
from tests.conftest import EXAMPLE_DATA

STEPS = [{"op": "enhance.normalize"}, {"op": "select.length_filter", "min_instruction_words": 3}]


def execute(tmp_path, name, **output):
    recipe = parse_recipe({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / name), **output},
                           "steps": STEPS})
    executor = LocalExecutor(recipe, quiet=True)
    return executor, executor.execute()


@pytest.mark.parametrize("file", ["output.jsonl", "output.parquet"])
def test_output_written_in_a_second_process_is_byte_identical(tmp_path, monkeypatch, file):
    executor, manifest = execute(tmp_path, "here", file=file)
    monkeypatch.setattr(output_module, "PARALLEL_FROM", 1)  # every output goes to a second process
    parallel_executor, parallel_manifest = execute(tmp_path, "there", file=file)

    here, there = executor.run_dir.root / file, parallel_executor.run_dir.root / file
    assert here.read_bytes() == there.read_bytes()
    assert manifest["output"]["count"] == parallel_manifest["output"]["count"] > 0
    assert not list(parallel_executor.run_dir.root.glob(".tmp-*"))


def test_a_failing_report_keeps_the_output(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("report broke")

    monkeypatch.setattr(output_module, "PARALLEL_FROM", 1)
    monkeypatch.setattr(build, "write_run_report", broken)
    monkeypatch.setattr("dataflywheel.report.write_run_report", broken)
    with pytest.raises(RuntimeError, match="report broke"):
        execute(tmp_path, "run")
    assert (tmp_path / "run" / "output.jsonl").stat().st_size > 0


def test_writing_failure_surfaces_and_leaves_no_output(tmp_path):
    target = tmp_path / "out.jsonl"
    job = OutputJob(tmp_path / "no-such-checkpoint.parquet", target, "auto", "jsonl", {}, parallel=True)
    with pytest.raises(OutputError, match="FileNotFoundError"):  # raised in the second process, named here
        job.commit()
    assert not target.exists()


def test_length_sample_takes_a_kept_record_in_both_series(tmp_path):
    ids = [f"{i:020x}" for i in range(5000)]
    step = build._sample_step(len(ids))
    sample = {i for i in ids if build._sampled(i, step)}
    assert 0.5 * len(ids) / step <= len(sample) <= 1.5 * len(ids) / step  # about 1 in step
    kept = ids[::3]  # whatever survives, its sample is the read sample's survivors
    assert {i for i in kept if build._sampled(i, step)} == sample & set(kept)


def test_a_run_does_not_import_pandas(tmp_path):
    """pyarrow's ``pa.array`` and ``pq.read_table`` import pandas on first use: half a second of every run
    (checkpoints and rejects are built and read without them)."""
    import json
    import subprocess
    import sys

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / "run")},
                                  "cache": "off", "steps": STEPS + [{"op": "select.repetition_filter"}]}))
    script = ("import sys\nfrom dataflywheel.cli import main\nsys.argv = ['flywheel', 'run', sys.argv[1], '--quiet']\n"
              "try:\n    main()\nexcept SystemExit as stop:\n    assert not stop.code, stop.code\n"
              "print(sorted(m for m in ('pandas', 'torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script, str(recipe)], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "run" / "report.html").exists()


def writer_modes(monkeypatch) -> list[str]:
    """Records which second processes a run starts: 'lines' (fed during the final step) or 'checkpoint'."""
    modes, start = [], output_module._writer_process

    def recording(mode, args, **popen):
        modes.append(mode)
        return start(mode, args, **popen)

    monkeypatch.setattr(output_module, "_writer_process", recording)
    return modes


def test_a_large_output_is_written_while_the_final_step_runs(tmp_path, monkeypatch):
    """The final step's kept records are fed to the writer as they are booked: at the end only the last
    batch is left to write (no second pass over the final checkpoint)."""
    executor, _ = execute(tmp_path, "here")
    monkeypatch.setattr(output_module, "PARALLEL_FROM", 1)
    modes = writer_modes(monkeypatch)
    fed_executor, manifest = execute(tmp_path, "fed")
    assert modes == ["lines"]
    assert (fed_executor.run_dir.root / "output.jsonl").read_bytes() == \
        (executor.run_dir.root / "output.jsonl").read_bytes()
    assert manifest["output"]["count"] == manifest["totals"]["output"] > 0


def test_a_resumed_run_whose_steps_were_done_writes_from_the_checkpoint(tmp_path, monkeypatch):
    executor, _ = execute(tmp_path, "clean")
    monkeypatch.setattr(output_module, "PARALLEL_FROM", 1)

    def broken(*args, **kwargs):
        raise RuntimeError("report broke")

    with monkeypatch.context() as patch:  # every step finishes, then the run fails at its end
        patch.setattr("dataflywheel.report.write_run_report", broken)
        with pytest.raises(RuntimeError, match="report broke"):
            execute(tmp_path, "resumed")
    modes = writer_modes(monkeypatch)
    recipe = parse_recipe({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / "resumed")},
                           "steps": STEPS})
    manifest = LocalExecutor(recipe, quiet=True).execute(resume=True)
    assert modes == ["checkpoint"]  # no step ran in this process: nothing was fed
    assert manifest["status"] == "finished"
    assert (tmp_path / "resumed" / "output.jsonl").read_bytes() == (tmp_path / "clean" / "output.jsonl").read_bytes()


FAILING_PLUGIN = '''
from dataflywheel.errors import FatalError
from dataflywheel.ops import Mapper, OpConfig, register

class FailConfig(OpConfig):
    fail_at_batch: int = 3

@register
class FailLater(Mapper):
    """Copies records, then stops the run at one batch (a server that went away)."""
    name = "test.fail_later"
    Config = FailConfig
    batches = 0

    def map_batch(self, records):
        FailLater.batches += 1
        if FailLater.batches == self.config.fail_at_batch:
            raise FatalError("the server went away")
        return records
'''


def test_a_final_step_that_stops_leaves_no_writer_and_no_partial_output(tmp_path, monkeypatch):
    (tmp_path / "fail_plugin.py").write_text(FAILING_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(output_module, "PARALLEL_FROM", 1)
    started = []
    start = output_module._writer_process
    monkeypatch.setattr(output_module, "_writer_process", lambda *a, **k: started.append(start(*a, **k)) or started[-1])
    recipe = parse_recipe({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / "run")},
                           "plugins": ["fail_plugin"], "batch_size": 16, "steps": STEPS + [{"op": "test.fail_later"}]})
    from dataflywheel.errors import FatalError

    with pytest.raises(FatalError, match="went away"):
        LocalExecutor(recipe, quiet=True).execute()
    assert len(started) == 1 and started[0].process.poll() is not None  # fed two batches, then stopped
    assert not (tmp_path / "run" / "output.jsonl").exists()
    assert not list((tmp_path / "run").glob(".tmp-*"))
    assert __import__("json").loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "stopped"


def test_a_fed_writer_that_fails_is_reported_at_commit(tmp_path, monkeypatch):
    """The writer dies early (its directory is a file): feeding it stops quietly, commit names the error."""
    import time

    from dataflywheel.pipeline.output import OutputTee
    from dataflywheel.records import dumps, make_record

    monkeypatch.setattr(output_module, "PARALLEL_FROM", 1)
    (tmp_path / "taken").write_text("a file where the output's directory should be")
    target = tmp_path / "taken" / "out.jsonl"
    tee = OutputTee(target, "auto", "jsonl", {})
    text = dumps(make_record([{"role": "user", "content": "q " * 50}, {"role": "assistant", "content": "a"}]))
    tee([text])
    writer = tee._writer
    writer.process.stdin.flush()
    deadline = time.time() + 60
    while writer.process.poll() is None and time.time() < deadline:  # it fails on opening its file
        time.sleep(0.05)
    assert writer.process.poll() is not None
    tee([text] * 2000)  # a broken pipe now: not raised here, and the writer is not fed again
    assert tee._closed
    job = OutputJob(tmp_path / "unused.parquet", target, "auto", "jsonl", {}, writer=tee.writer())
    with pytest.raises(OutputError, match="NotADirectoryError|FileExistsError"):
        job.commit()
