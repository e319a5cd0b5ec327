"""Generators of all three shapes through the executor: lineage, the invariant, rejects, resume."""

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from dataflywheel.pipeline import LocalExecutor, RecipeError, parse_recipe
from dataflywheel.pipeline.run_dir import iter_rejects
from tests.conftest import read_jsonl, write_jsonl

PLUGINS = ["tests.pipeline.gen_plugins"]


def pairs(*instructions):
    return [{"instruction": q, "output": f"An answer to {q.lower()} with a few words."} for q in instructions]


def run(tmp_path, steps, rows=None, name="run", **recipe):
    data = {"output": {"dir": str(tmp_path / name)}, "plugins": PLUGINS, "steps": steps, **recipe}
    if rows is not None:
        data["input"] = {"path": str(write_jsonl(tmp_path / f"{name}.jsonl", rows))}
    executor = LocalExecutor(parse_recipe(data), quiet=True)
    manifest = executor.execute(report=False)
    output = read_jsonl(executor.run_dir.root / "output.jsonl")
    return executor, manifest, output, list(iter_rejects(executor.run_dir))


def assert_accounted(executor, manifest):
    """Every record read or generated is in the output or the rejects, exactly once, by origin."""
    final = pq.read_table(manifest["steps"][-1]["checkpoint"]).to_pylist()
    rejects = list(iter_rejects(executor.run_dir))
    origins = Counter(r["origin"] for r in final) + Counter(r["origin"] for r in rejects if r["origin"])
    read = Counter(pq.read_table(executor.run_dir.checkpoint(0, "read")).column("id").to_pylist())
    generated = sum(s["generated"] for s in manifest["steps"])
    assert {o: n for o, n in origins.items() if o in read} == dict(read)
    made = {o: n for o, n in origins.items() if o not in read}
    assert len(made) == generated and set(made.values()) <= {1}


def test_batch_generator_stamps_lineage_and_keeps_inputs(tmp_path):
    rows = pairs("Name a colour.", "Name a fruit.", "Name a city.")
    executor, manifest, output, rejects = run(tmp_path, [{"op": "test.follow_ups"}], rows)
    assert len(output) == 6 and not rejects
    made = [r for r in output if r.get("lineage")]
    inputs = {r["id"] for r in output if not r.get("lineage")}
    assert len(made) == 3
    for record in made:
        [entry] = record["lineage"]
        assert entry["op"] == "test.follow_ups" and entry["step"] == "follow_ups" and entry["kind"] == "generator"
        assert entry["method"] == "follow_up" and entry["params"]["keep_inputs"] is True
        assert len(entry["parents"]) == 1 and entry["parents"][0] in inputs
    step = manifest["steps"][1]
    assert (step["in"], step["generated"], step["out"], step["rejected"]) == (3, 3, 6, 0)
    assert_accounted(executor, manifest)


def test_generator_failures_become_rejects_and_the_run_finishes(tmp_path):
    rows = pairs("Name a colour.", "INVALID please", "UNPARSABLE one", "Name a city.", "FAIL_BATCH here", "Name a dog.")
    executor, manifest, output, rejects = run(tmp_path, [{"op": "test.follow_ups"}], rows, batch_size=2)
    assert manifest["status"] == "finished"
    reasons = [r["reason"] for r in rejects]
    assert any("generated an invalid record" in r and "'messages'" in r for r in reasons)
    invalid = next(r for r in rejects if "invalid record" in r["reason"])
    assert json.loads(invalid["raw"]) == {"messages": "not a list of turns"}  # the broken text is kept
    unparsable = next(r for r in rejects if r["reason"] == "could not parse the teacher's answer")
    assert unparsable["raw"] == "<<garbled>>"
    failing = next(r["id"] for r in output if "FAIL_BATCH" in r["messages"][0]["content"] and not r.get("lineage"))
    [batch_error] = [r for r in rejects if r["error"]]
    assert "the teacher could not answer this batch" in batch_error["reason"] and batch_error["origin"] is None
    assert failing in batch_error["reason"]  # the record it failed on, not its whole batch
    # all 6 inputs pass on; follow-ups from every valid record: the dog shares the failing record's batch, and
    # the batch was tried again record by record
    assert len([r for r in output if not r.get("lineage")]) == 6
    assert len([r for r in output if r.get("lineage")]) == 3
    step = manifest["steps"][1]
    assert step["errors"] == 1 and step["in"] + step["generated"] == step["out"] + step["rejected"]
    assert_accounted(executor, manifest)


def test_a_generator_failing_on_every_batch_stops_the_run(tmp_path):
    from dataflywheel.errors import FatalError

    rows = pairs(*[f"FAIL_BATCH {i}" for i in range(8)])
    with pytest.raises(FatalError, match="batches in a row failed"):
        run(tmp_path, [{"op": "test.follow_ups"}], rows, batch_size=2)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and "batches in a row" in manifest["error"]


def test_keep_inputs_false_sends_inputs_to_rejects_with_a_reason(tmp_path):
    rows = pairs("Name a colour.", "Name a fruit.")
    executor, manifest, output, rejects = run(tmp_path, [{"op": "test.follow_ups", "keep_inputs": False}], rows)
    assert len(output) == 2 and all(r["lineage"] for r in output)
    assert [r["reason"] for r in rejects] == ["replaced by generated records (step follow_ups: keep_inputs false)"] * 2
    assert_accounted(executor, manifest)


def test_pool_generator_works_in_rounds_to_a_target_with_verification(tmp_path):
    rows = pairs("Name a colour.", "Name a fruit.")
    steps = [{"op": "test.numbered_tasks", "target": 7, "per_round": 4, "max_rounds": 10}]
    executor, manifest, output, rejects = run(tmp_path, steps, rows)
    made = [r for r in output if r.get("lineage")]
    assert len(made) == 7  # the target, exactly
    numbers = [int(r["messages"][0]["content"].split()[1].rstrip(":")) for r in made]
    assert all(n % 3 for n in numbers) and len(set(numbers)) == 7
    reasons = Counter(r["reason"].split(" is a multiple")[0].split(" ")[0] for r in rejects)
    assert any(r["reason"] == "exact duplicate of a record in the pool or already accepted" for r in rejects)
    assert any("multiple of 3" in r["reason"] for r in rejects)
    assert reasons  # every proposal that was not accepted is in rejected/ with its reason
    rounds = {r["lineage"][0]["round"] for r in made}
    assert len(rounds) >= 2 and min(rounds) == 0
    assert all(r["lineage"][0]["parents"] for r in made)
    step = manifest["steps"][1]
    assert step["generated"] == step["out"] - 2 + step["rejected"]
    assert_accounted(executor, manifest)


def test_pool_rounds_that_fail_are_proposed_again_and_the_run_goes_on(tmp_path):
    steps = [{"op": "test.numbered_tasks", "target": 4, "per_round": 4, "max_rounds": 6, "echo_pool": False,
              "fail_rounds": [0, 1]}]
    executor, manifest, output, rejects = run(tmp_path, steps, pairs("Name a colour."))
    assert manifest["status"] == "finished"  # more failed rounds than input records: not a step failing on all
    step = manifest["steps"][1]
    assert step["errors"] == 2 and step["counters"]["rounds proposed again after an error"] == 2
    assert [r["reason"] for r in rejects if r["error"]] == [
        "error in test.numbered_tasks (round 0, proposed twice): RuntimeError: round 0 broke",
        "error in test.numbered_tasks (round 1, proposed twice): RuntimeError: round 1 broke"]
    assert len([r for r in output if r.get("lineage")]) == 4
    assert_accounted(executor, manifest)


@pytest.mark.parametrize("near_duplicate", [0.7, None])
def test_pool_generator_rejects_near_copies_of_the_pool(tmp_path, near_duplicate):
    long = "Write a short poem about the sea in the style of an old sailor's working song."
    rows = pairs(long, "Name a fruit.")
    steps = [{"op": "test.numbered_tasks", "target": 3, "per_round": 3, "max_rounds": 2, "echo_pool": False,
              "near_copy": "shanty.", "near_duplicate": near_duplicate}]
    executor, manifest, output, rejects = run(tmp_path, steps, rows)
    near = [r for r in output + [json.loads(r["record"]) for r in rejects if r.get("record")]
            if r.get("lineage") and r["lineage"][0].get("near_copy")]
    assert len(near) == 1 and near[0]["messages"][0]["content"].endswith("working shanty.")
    reasons = {r["reason"] for r in rejects}
    original = next(r["id"] for r in output if r["messages"][0]["content"] == long)
    if near_duplicate is None:  # exact copies only: the near copy is accepted
        assert any(r.get("lineage") and r["lineage"][0].get("near_copy") for r in output)
    else:
        [reason] = [r for r in reasons if r.startswith("near duplicate")]
        assert reason.startswith(f"near duplicate of {original} (MinHash Jaccard 0.")
        assert reason.endswith(">= 0.7 on the instruction)")
        assert not any(r.get("lineage") and r["lineage"][0].get("near_copy") for r in output)
    assert_accounted(executor, manifest)


def test_a_batch_generator_with_novelty_settings_rejects_repeats_of_its_own_outputs(tmp_path):
    # a follow-up quotes the first 40 characters of its instruction and of its answer: the first two rows give
    # the same question with different answers (a near duplicate), the last two the same record (exact)
    same_start = "Explain in detail how a steam engine turns heat into motion"
    rows = pairs(same_start + ".", same_start + " on a train.", "Name a city.", "Name a city.")
    rows[1]["output"] = "A different answer, written in other words."
    steps = [{"op": "test.screened_follow_ups", "keep_inputs": False}]
    executor, manifest, output, rejects = run(tmp_path, steps, rows, batch_size=1)  # one batch each
    assert len(output) == 2
    first = next(r for r in output if "steam" in r["messages"][0]["content"])
    reasons = sorted(r["reason"] for r in rejects if not r["reason"].startswith("replaced by"))
    assert len(reasons) == 2 and reasons[0] == "exact duplicate of a record in the pool or already accepted"
    assert reasons[1].startswith(f"near duplicate of {first['id']} (MinHash Jaccard 1.00")
    plain = run(tmp_path, [{"op": "test.follow_ups", "keep_inputs": False}], rows, name="plain", batch_size=1)
    assert len(plain[2]) == 4  # without the settings nothing is screened
    assert_accounted(executor, manifest)


def test_pool_generator_stops_when_acceptance_collapses(tmp_path):
    rows = pairs("Name a colour.")
    # each round re-proposes the same numbers once the first ones are accepted: rejects pile up
    steps = [{"op": "test.numbered_tasks", "target": 100, "per_round": 3, "max_rounds": 50, "min_acceptance": 0.9}]
    executor, manifest, output, _ = run(tmp_path, steps, rows)
    warnings = manifest["steps"][1]["counters"]
    assert any(w.startswith("stopped: acceptance") for w in warnings)
    assert any(w.startswith("target 100 not reached") for w in warnings)
    assert_accounted(executor, manifest)


def test_a_recipe_may_omit_input_only_when_it_starts_with_a_source(tmp_path):
    with pytest.raises(RecipeError, match="'input' is missing"):
        parse_recipe({"plugins": PLUGINS, "steps": [{"op": "test.follow_ups"}]})
    parse_recipe({"plugins": PLUGINS, "steps": [{"op": "test.number_facts"}]})


@pytest.mark.model
def test_source_generator_needs_no_input(tmp_path):
    steps = [{"op": "test.number_facts", "target": 3, "per_round": 2, "max_tokens": 8},
             {"op": "select.length_filter", "min_instruction_words": 3, "min_response_words": 1}]
    executor, manifest, output, rejects = run(tmp_path, steps, cache=str(tmp_path / "calls.sqlite"))
    assert manifest["steps"][0]["in"] == 0
    assert manifest["steps"][1]["generated"] >= 3
    made = [r for r in output + [json.loads(r["record"]) for r in rejects if r["record"]]]
    assert len([r for r in output]) + len([r for r in rejects if r["step"] == "length_filter"]) == 3
    for record in made:
        entry = record["lineage"][0]
        assert entry["models"] == {"model": "default"} and entry["parents"] == [] and "round" in entry
    assert_accounted(executor, manifest)


@pytest.mark.model
def test_sigkill_mid_generation_resumes_to_identical_output_without_repeating_calls(tmp_path):
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    steps = [{"op": "test.number_facts", "target": 10, "per_round": 2, "max_tokens": 8, "seconds_per_round": 0.4}]

    def recipe(name):
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps({"output": {"dir": str(tmp_path / name)}, "plugins": PLUGINS, "steps": steps,
                                    "cache": str(tmp_path / f"{name}.sqlite")}))
        return path

    cli = [sys.executable, "-m", "dataflywheel.cli", "run"]
    subprocess.run(cli + [str(recipe("clean")), "--quiet"], env=env, check=True, cwd=tmp_path)
    clean = json.loads((tmp_path / "clean" / "manifest.json").read_text())

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli + [str(recipe("killed")), "--quiet"], env=env, cwd=tmp_path)
    parts = killed / "checkpoints" / "01-number_facts.parts"
    deadline = time.time() + 90
    while not (parts / "00002").exists():  # part 0: the (empty) input; parts 1, 2: rounds 0 and 1
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(tmp_path / "killed.sqlite") as db:
        paid = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    assert paid >= 4  # two rounds of two answers were paid for before the kill

    subprocess.run(cli + [str(recipe("killed")), "--resume", "--quiet"], env=env, check=True, cwd=tmp_path)
    resumed = json.loads((killed / "manifest.json").read_text())
    assert resumed["status"] == "finished" and resumed["resumed"] == 1
    assert (killed / "output.jsonl").read_bytes() == (tmp_path / "clean" / "output.jsonl").read_bytes()
    assert not parts.exists() and not list(killed.rglob("*.tmp"))

    def calls(manifest):
        return sum(m["calls"] for m in manifest["steps"][1]["models"].values())

    assert calls(resumed) + paid == calls(clean)  # nothing paid for before the kill was asked again


def test_a_batch_only_mapper_that_fails_loses_only_the_failing_record(tmp_path):
    rows = pairs("Name a colour.", "A BAD one.", "Name a city.")
    executor, manifest, output, rejects = run(tmp_path, [{"op": "test.shout_batch"}], rows)
    assert [r["reason"] for r in rejects] == ["error in test.shout_batch: ValueError: cannot shout at BAD records"]
    assert len(output) == 2 and all(r["messages"][-1]["content"].isupper() for r in output)
    assert all(r["lineage"][0]["op"] == "test.shout_batch" for r in output)
    assert_accounted(executor, manifest)


def test_a_generator_step_whose_input_is_all_rejected_completes_and_the_run_says_why_it_is_empty(tmp_path):
    import json

    from dataflywheel.pipeline import RunError

    rows = [{"question_without_known_format": "x"}]  # every row rejected at read: the generator sees nothing
    with pytest.raises(RunError, match="nothing usable"):
        run(tmp_path, [{"op": "test.follow_ups"}], rows)
    manifest = json.loads(next(tmp_path.rglob("manifest.json")).read_text())
    assert manifest["status"] == "failed"
    step = next(s for s in manifest["steps"] if s["name"] != "read")
    assert step["status"] == "done" and step["in"] == step["out"] == 0  # the empty step itself committed
