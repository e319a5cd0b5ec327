import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pyarrow.parquet as pq
import pytest

from dataflywheel.pipeline import LocalExecutor, RunError, parse_recipe
from dataflywheel.pipeline.run_dir import iter_rejects
from tests.conftest import EXAMPLE_DATA, REPO, read_jsonl

STEPS = [
    {"op": "enhance.normalize"},
    {"op": "select.length_filter", "min_instruction_words": 3, "min_response_words": 20, "max_response_words": 400},
    {"op": "select.exact_dedup", "field": "conversation"},
    {"op": "select.exact_dedup", "name": "instruction_dedup", "field": "instruction"},
]


def execute(tmp_path, steps=STEPS, name="run", **kwargs):
    recipe = parse_recipe({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / name)},
                           "steps": steps})
    executor = LocalExecutor(recipe, quiet=True)
    return executor, executor.execute(**kwargs)


def test_every_input_record_is_in_output_or_rejects_exactly_once(tmp_path):
    executor, manifest = execute(tmp_path)
    input_ids = Counter(r["id"] for r in pq.read_table(executor.run_dir.checkpoint(0, "read")).to_pylist())
    output = read_jsonl(executor.run_dir.root / "output.jsonl")
    rejects = list(iter_rejects(executor.run_dir))
    n_lines = sum(1 for line in EXAMPLE_DATA.read_text().splitlines() if line.strip())

    assert manifest["totals"]["read"] == n_lines == len(output) + len(rejects)
    assert all(r["step"] and r["reason"] for r in rejects)
    # all four steps acted on this data
    assert {r["step"] for r in rejects} == {"length_filter", "exact_dedup", "instruction_dedup"}

    # by id: every row names the record it entered the run as; changed records carry lineage back to it
    final = pq.read_table(manifest["steps"][-1]["checkpoint"]).to_pylist()
    accounted = Counter(r["origin"] for r in final) + Counter(r["origin"] for r in rejects if r["origin"])
    assert accounted == input_ids
    changed = [(json.loads(r["record"]), r["origin"]) for r in final if r["id"] != r["origin"]]
    assert changed, "normalize changed no record: the lineage check below would test nothing"
    for record, origin in changed:
        assert record["lineage"][0]["parents"] == [origin] and record["lineage"][0]["op"] == "enhance.normalize"
    for step in manifest["steps"]:
        assert step["in"] + step["generated"] == step["out"] + step["rejected"]


def test_duplicates_name_what_they_duplicate(tmp_path):
    executor, _ = execute(tmp_path, steps=STEPS[:3])
    dups = [r for r in iter_rejects(executor.run_dir) if r["step"] == "exact_dedup"]
    assert len(dups) == 2  # the two planted in the example data (one differs only in case)
    kept_ids = {r["id"] for r in read_jsonl(executor.run_dir.root / "output.jsonl")}
    for row in dups:
        original = json.loads(row["record"])["meta"]["duplicate_of"]
        assert row["reason"].startswith(f"exact duplicate of {original}")
        assert original in kept_ids


def test_existing_run_needs_resume_or_force(tmp_path):
    execute(tmp_path)
    with pytest.raises(RunError, match="already holds a run"):
        execute(tmp_path)
    _, manifest = execute(tmp_path, force=True)
    assert manifest["status"] == "finished"


def test_resume_refuses_a_changed_recipe(tmp_path):
    execute(tmp_path)
    with pytest.raises(RunError, match="different recipe"):
        execute(tmp_path, steps=STEPS[:2], resume=True)


SLOW_PLUGIN = '''
import time
from dataflywheel.ops import Mapper, OpConfig, register

class SlowConfig(OpConfig):
    seconds_per_batch: float = 0.2

@register
class SlowCopy(Mapper):
    """Copies records slowly (a stand-in for a model call), to be killed mid-step."""
    name = "test.slow_copy"
    Config = SlowConfig

    def map_batch(self, records):
        time.sleep(self.config.seconds_per_batch)
        return [dict(r, messages=[dict(m, content=m["content"] + " ") for m in r["messages"]]) for r in records]
'''


def test_resume_after_sigkill_gives_byte_identical_output(tmp_path):
    (tmp_path / "slow_plugin.py").write_text(SLOW_PLUGIN)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO / 'src'}"}

    def write_recipe(name):
        path = tmp_path / f"{name}.yaml"
        # record-by-record steps run as one stream and commit together; the dedup ends the first stream
        steps = [{"op": "enhance.normalize"}, STEPS[3], {"op": "test.slow_copy"}] + STEPS[1:3]
        path.write_text(json.dumps({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / name)},
                                    "plugins": ["slow_plugin"], "batch_size": 8, "steps": steps}))
        return path

    cli = [sys.executable, "-m", "dataflywheel.cli", "run"]
    subprocess.run(cli + [str(write_recipe("clean")), "--quiet"], env=env, check=True, cwd=tmp_path)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli + [str(write_recipe("killed")), "--quiet"], env=env, cwd=tmp_path)
    deadline = time.time() + 60
    while not (killed / "checkpoints" / "03-slow_copy.parquet.tmp").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["status"] == "running"
    assert [s["name"] for s in manifest["steps"]] == ["read", "normalize", "instruction_dedup"]
    normalized_at = (killed / "checkpoints" / "01-normalize.parquet").stat().st_mtime_ns

    # the same recipe file, now resumed (its output dir is where the killed run was)
    subprocess.run(cli + [str(tmp_path / "killed.yaml"), "--resume", "--quiet"], env=env, check=True, cwd=tmp_path)
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["resumed"] == 1
    assert (killed / "checkpoints" / "01-normalize.parquet").stat().st_mtime_ns == normalized_at
    assert not list(killed.rglob("*.tmp"))
    assert (killed / "output.jsonl").read_bytes() == (tmp_path / "clean" / "output.jsonl").read_bytes()
    for a, b in zip(sorted((killed / "rejected").iterdir()), sorted((tmp_path / "clean" / "rejected").iterdir())):
        assert pq.read_table(a).equals(pq.read_table(b))
