"""Server faults through `flywheel run`: a dead key stops the run with nothing rejected, a budget stops it
resumably, a 429 storm finishes with the back-off in the manifest, and a dry run sends nothing."""

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from dataflywheel.cli import app
from tests.conftest import read_jsonl, write_jsonl
from tests.models.fault_server import FaultServer, last_user

runner = CliRunner()


def echo(body):
    return f"answer to {last_user(body)}"


def write_recipe(tmp_path, server, name, **extra):
    rows = [{"instruction": f"Question number {i}?", "output": f"Answer {i}."} for i in range(8)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    recipe = {"input": {"path": str(data)}, "output": {"dir": str(tmp_path / name)}, "batch_size": 4,
              "plugins": ["tests.pipeline.gen_plugins"], "cache": str(tmp_path / f"{name}.sqlite"),
              "models": {"judge": {"backend": "openai", "model": "m",
                                   "options": {"base_url": server.url, "api_key_env": "DFW_TEST_KEY", "backoff": 0.01,
                                               "concurrency": 1, "max_concurrency": 4}}},
              "steps": [{"op": "select.length_filter", "min_response_words": 1}, {"op": "test.ask_model"}], **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(recipe))
    return path


def rejected_rows(run_dir):
    return sum(pq.read_table(p).num_rows for p in (run_dir / "rejected").glob("*.parquet"))


def test_401_stops_the_run_naming_the_key_and_rejects_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DFW_TEST_KEY", "sk-wrong")
    with FaultServer(rule=lambda body: "401") as server:
        result = runner.invoke(app, ["run", str(write_recipe(tmp_path, server, "run")), "-q"])
    assert result.exit_code == 1
    assert "DFW_TEST_KEY" in result.output and "--resume" in result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and "ModelAuthError" in manifest["error"]
    assert rejected_rows(tmp_path / "run") == 0
    assert "sk-wrong" not in (tmp_path / "run" / "manifest.json").read_text()


def test_budget_stops_and_resume_with_a_larger_budget_ends_like_an_unbounded_run(tmp_path):
    with FaultServer(answer=echo) as server:
        free = runner.invoke(app, ["run", str(write_recipe(tmp_path, server, "free")), "-q"])
        assert free.exit_code == 0, free.output
        recipe = write_recipe(tmp_path, server, "run", max_budget={"tokens": 10})  # 4 tokens an answer
        stopped = runner.invoke(app, ["run", str(recipe), "-q"])
        assert stopped.exit_code == 1 and "budget" in stopped.output and "--resume" in stopped.output
        manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
        assert manifest["status"] == "stopped" and 10 <= manifest["budget"]["spent_tokens"] <= 16
        assert rejected_rows(tmp_path / "run") == 0
        paid = len(server.requests)
        recipe = write_recipe(tmp_path, server, "run", max_budget={"tokens": 1000})
        resumed = runner.invoke(app, ["run", str(recipe), "--resume", "-q"])
        assert resumed.exit_code == 0, resumed.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["budget"]["spent_tokens"] == 8 * 4
    paid_before_stop = paid - 8  # after the free run's 8
    assert 0 < paid_before_stop < 8
    assert len(server.requests) - paid == 8 - paid_before_stop  # the resumed run asked only what was not paid
    assert read_jsonl(tmp_path / "run" / "output.jsonl") == read_jsonl(tmp_path / "free" / "output.jsonl")


def test_a_429_storm_finishes_with_the_back_off_in_the_manifest(tmp_path):
    with FaultServer(["429:0.2"] * 10, answer=echo) as server:
        result = runner.invoke(app, ["run", str(write_recipe(tmp_path, server, "run")), "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    [usage] = manifest["steps"][-1]["models"].values()
    assert usage["rate_limited"] == 10 and usage["backoffs"] >= 1 and usage["waited_seconds"] >= 0.2
    assert usage["calls"] == 8 and "concurrency_min" in usage
    assert manifest["totals"]["output"] == 8 and rejected_rows(tmp_path / "run") == 0


def test_dry_run_estimates_calls_and_tokens_and_sends_nothing(tmp_path):
    with FaultServer(answer=echo) as server:
        result = runner.invoke(app, ["run", str(write_recipe(tmp_path, server, "run")), "--dry-run", "--sample", "4"],
                               env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert server.requests == []
    assert not (tmp_path / "run").exists()
    total = next(line for line in result.output.splitlines() if "total" in line)
    calls = [int(x) for x in total.replace("│", " ").split() if x.isdigit()]
    assert calls[0] == 8  # 4 records sampled, 8 in the input: one call each


def test_a_model_step_failing_on_every_record_fails_the_run_naming_it(tmp_path):
    with FaultServer(rule=lambda body: "400") as server:  # every request refused: no record can be scored
        recipe = write_recipe(tmp_path, server, "run")
        write_jsonl(tmp_path / "in.jsonl", [{"instruction": f"Question {i}?", "output": "Yes."} for i in range(3)])
        result = runner.invoke(app, ["run", str(recipe), "-q"])  # 6 failed requests: fewer than stop the run
    assert result.exit_code == 2  # as every run that produced nothing usable
    assert "step ask_model failed on every one of its 3 records" in " ".join(result.output.split())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "HTTP 400" in manifest["error"]
    assert rejected_rows(tmp_path / "run") == 3  # each record, with its reason
