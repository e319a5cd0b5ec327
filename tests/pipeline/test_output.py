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
