"""The output file: written beside the report for large runs, the same bytes either way, never half."""

import pytest

from dataflywheel.pipeline import LocalExecutor, parse_recipe
from dataflywheel.pipeline import output as output_module
from dataflywheel.ops.select.length_filter import LengthFilter
from dataflywheel.pipeline.output import OutputError, OutputJob
from dataflywheel.pipeline.run import RunError
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
    with pytest.raises(OutputError, match="FileNotFoundError") as failed:  # raised in the second process, named here
        job.commit()
    assert not failed.value.refused and "recipe" not in str(failed.value)  # not the recipe's fault: no advice
    assert not target.exists()


def test_a_run_does_not_import_pandas(tmp_path):
    """pyarrow's ``pa.array`` and ``pq.read_table`` import pandas on first use: half a second of every run
    (checkpoints and rejects are built and read without them); pyarrow.compute (``take``) costs ~0.15 s."""
    import json
    import subprocess
    import sys

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / "run")},
                                  "cache": "off", "steps": STEPS + [{"op": "select.repetition_filter"}]}))
    script = ("import sys\nfrom dataflywheel.cli import main\nsys.argv = ['flywheel', 'run', sys.argv[1], '--quiet']\n"
              "try:\n    main()\nexcept SystemExit as stop:\n    assert not stop.code, stop.code\n"
              "print(sorted(m for m in ('pandas', 'torch', 'transformers', 'pyarrow.compute') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script, str(recipe)], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "run" / "report.html").exists()


def test_a_resumed_run_writes_its_output_once_its_report_is_fixed(tmp_path, monkeypatch):
    """Every step finished, then the report failed: the resumed run writes the same output (from the final
    checkpoint, in a second process when large)."""
    execute(tmp_path, "clean")
    monkeypatch.setattr(output_module, "PARALLEL_FROM", 1)

    def broken(*args, **kwargs):
        raise RuntimeError("report broke")

    with monkeypatch.context() as patch:
        patch.setattr("dataflywheel.report.write_run_report", broken)
        with pytest.raises(RuntimeError, match="report broke"):
            execute(tmp_path, "resumed")
    recipe = parse_recipe({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / "resumed")},
                           "steps": STEPS})
    manifest = LocalExecutor(recipe, quiet=True).execute(resume=True)
    assert manifest["status"] == "finished"
    assert (tmp_path / "resumed" / "output.jsonl").read_bytes() == (tmp_path / "clean" / "output.jsonl").read_bytes()


@pytest.fixture
def writers(monkeypatch):
    """Every writer process started, in order."""
    started = []

    class Recorded(output_module.Writer):
        def __init__(self):
            super().__init__()
            started.append(self)

    monkeypatch.setattr(output_module, "Writer", Recorded)
    monkeypatch.setattr("dataflywheel.pipeline.run.Writer", Recorded)
    return started


def test_a_large_input_starts_the_writer_while_reading(tmp_path, monkeypatch, writers):
    """Once the input has shown it is large, the writer process starts (and imports) while the steps run; the
    end of the run hands it its job. Same bytes as writing in this process."""
    executor, manifest = execute(tmp_path, "here")
    monkeypatch.setattr(output_module, "PARALLEL_FROM", 50)
    warmed_executor, warmed = execute(tmp_path, "warmed")
    assert len(writers) == 1 and writers[0].process.returncode == 0
    assert warmed["output"]["count"] == manifest["output"]["count"] >= 50
    assert (warmed_executor.run_dir.root / "output.jsonl").read_bytes() == \
        (executor.run_dir.root / "output.jsonl").read_bytes()


def test_a_writer_not_needed_is_let_go(tmp_path, monkeypatch, writers):
    """A large input whose output ends small: the started writer exits without writing; the output is written
    here. A run that fails after reading lets its writer go too (no process left behind)."""
    monkeypatch.setattr(output_module, "PARALLEL_FROM", 100)
    recipe = parse_recipe({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / "small")},
                           "steps": [{"op": "select.length_filter", "min_instruction_words": 40}]})
    manifest = LocalExecutor(recipe, quiet=True).execute()
    assert manifest["totals"]["read"] >= 100 > manifest["output"]["count"] > 0
    assert len(writers) == 1 and writers[0].process.returncode == 0
    assert sum(1 for _ in (tmp_path / "small" / "output.jsonl").open()) == manifest["output"]["count"]

    def broken(self, record):
        raise RuntimeError("filter broke")

    monkeypatch.setattr(LengthFilter, "reject_reason", broken)
    recipe = parse_recipe({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / "failed")},
                           "steps": [{"op": "select.length_filter"}]})
    with pytest.raises(RunError, match="failed on every one"):
        LocalExecutor(recipe, quiet=True).execute()
    assert len(writers) == 2 and writers[1].process.returncode == 0
    assert not (tmp_path / "failed" / "output.jsonl").exists()


@pytest.mark.parametrize("parallel", [False, True], ids=["written here", "written by a second process"])
def test_records_the_output_format_cannot_hold_fail_the_run_with_the_reason(tmp_path, monkeypatch, parallel):
    """Single-answer records and a preference-pair output format: the command says why and what to do (no
    traceback), wherever the file was being written; nothing is left half-written; the run is marked failed."""
    import json

    from typer.testing import CliRunner

    from dataflywheel.cli import app

    if parallel:
        monkeypatch.setattr(output_module, "PARALLEL_FROM", 1)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"input": {"path": str(EXAMPLE_DATA)}, "cache": "off", "steps": STEPS,
                                  "output": {"dir": str(tmp_path / "run"), "format": "trl"}}))
    result = CliRunner().invoke(app, ["run", str(recipe), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "holds preference pairs" in result.output and "change the recipe's output" in result.output
    assert "Traceback" not in result.output and "RecordError" not in result.output
    assert not (tmp_path / "run" / "output.jsonl").exists() and not list((tmp_path / "run").glob(".tmp-*"))
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "failed"
