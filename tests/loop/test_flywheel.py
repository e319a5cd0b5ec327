"""`flywheel loop`: steering gives the weakest category of round 1 more synthesis in round 2, every stage lands in
the loop directory, and a loop killed twice (mid-training, mid-synthesis) and resumed finishes with the same
result as one that ran through. Real bundled SmolLM2 (generation, LoRA training, held-out loss), tiny sizes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataflywheel.io import read_all
from dataflywheel.loop import steering
from dataflywheel.loop.recipe import parse_loop_recipe
from dataflywheel.loop.rounds import LoopError, run_loop
from dataflywheel.pipeline import RecipeError
from tests.conftest import REPO, read_jsonl, write_jsonl

EXAMPLES = REPO / "examples" / "data"
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
CATEGORIES = ("koala", "vicuna")


def _rows(path: Path, per_category: int) -> list[dict]:
    """Rows of CATEGORIES with short answers, each of a different instruction (Evol-Instruct evolves one chain
    per distinct instruction: two seeds of the same instruction would make one proposal)."""
    rows, seen, instructions = [], {}, set()
    for row in read_jsonl(path):
        if row["dataset"] in CATEGORIES and seen.get(row["dataset"], 0) < per_category \
                and len(row["output"]) < 1500 and row["instruction"] not in instructions:
            seen[row["dataset"]] = seen.get(row["dataset"], 0) + 1
            instructions.add(row["instruction"])
            rows.append(row)
    return rows


def recipe_data(tmp_path: Path, name: str = "loop") -> dict:
    pool = write_jsonl(tmp_path / "pool.jsonl", _rows(EXAMPLES / "alpaca_eval_sample.jsonl", 5))
    heldout = write_jsonl(tmp_path / "heldout.jsonl", _rows(EXAMPLES / "loop_heldout.jsonl", 2))
    return {"input": {"path": str(pool)}, "output": {"dir": str(tmp_path / name)}, "seed": 3,
            "cache": str(tmp_path / "calls.sqlite"),
            "models": {"default": {"backend": "transformers", "model": "smollm2", "options": {"threads": 2}}},
            "select": [{"op": "select.length_filter", "min_response_words": 3}],
            "enhance": [{"op": "enhance.normalize"}],
            "synthesize": [{"op": "synth.evol_instruct", "max_rounds": 1, "max_tokens": 24, "answer_max_tokens": 16,
                            "check_max_tokens": 3}],
            "distill": [{"op": "enhance.normalize"}],
            "train": {"max_steps": 2, "batch_size": 2, "max_length": 128, "learning_rate": 1e-3},
            "evaluate": {"heldout": {"path": str(heldout)}, "max_answer_tokens": 64},
            "steer": {"category": "dataset", "weakest": 1, "boost": 2.0, "seeds": 1, "target": 1},
            "loop": {"rounds": 2}}


# ---- steering and recipes (no model) ---------------------------------------------------------------

def test_plan_boosts_the_weakest_categories_only():
    losses = {"a": 1.0, "b": 2.5, "c": 2.0, "d": 2.5}
    assert steering.weakest(losses, 2) == ["b", "d"]  # highest loss first, ties by name
    plan = steering.plan(["a", "b", "c", "d"], {"a": 10, "b": 1, "c": 10}, seeds=3, target=4,
                         weak=["b", "d"], boost=2.0)
    assert plan["a"] == {"weight": 1.0, "seeds": 3, "target": 4, "weak": False, "available": 10}
    assert plan["b"]["seeds"] == 1 and plan["b"]["target"] == 8  # boosted, but only one record to seed from
    assert plan["d"]["target"] == 0 and "no curated record" in plan["d"]["note"]


def test_category_losses_skip_records_without_a_loss():
    assert steering.category_losses(["a", "a", "b"], [1.0, float("nan"), 3.0]) == {"a": 1.0, "b": 3.0}


def test_seeds_are_drawn_the_same_way_every_time():
    records = [{"id": f"r{i}"} for i in range(20)]
    first = steering.draw_seeds(records, 5, 0, 2, "koala")
    assert first == steering.draw_seeds(list(reversed(records)), 5, 0, 2, "koala")
    assert first != steering.draw_seeds(records, 5, 0, 3, "koala")


def test_every_problem_of_a_loop_recipe_is_reported_at_once(tmp_path):
    data = recipe_data(tmp_path)
    data["select"] = [{"op": "select.length_filter", "min_response_wrds": 3}]
    data["synthesize"] = [{"op": "select.exact_dedup"}]
    data["distill"] = [{"op": "distill.no_such_op"}]
    data["evaluate"] = {"heldout": {"path": str(tmp_path / "missing.jsonl")}}
    data["models"]["teacher"] = {"backend": "openai", "model": "gpt-4o"}
    data["loop"]["trained_roles"] = ["default", "teacher"]
    with pytest.raises(RecipeError) as err:
        parse_loop_recipe(data)
    message = str(err.value)
    for expected in ("select: step 1 (select.length_filter): field 'min_response_wrds'",
                     "synthesize step 1 (select.exact_dedup): a selector, not a generator",
                     "distill: step 1 (distill.no_such_op)", "evaluate.heldout: file not found",
                     "loop.trained_roles: role 'teacher' is openai:gpt-4o"):
        assert expected in message, message
    assert "role 'default'" not in message  # the trained model itself may take its adapter
    data = recipe_data(tmp_path)
    data["steer"] = {"category": None}
    with pytest.raises(RecipeError, match="name the categories"):
        parse_loop_recipe(data)


def test_a_second_loop_in_the_same_directory_needs_resume_or_force(tmp_path):
    data = recipe_data(tmp_path)
    out = Path(data["output"]["dir"])
    out.mkdir()
    (out / "loop.json").write_text(json.dumps({"fingerprint": "other", "status": "finished", "rounds": []}))
    recipe = parse_loop_recipe(data)
    with pytest.raises(LoopError, match="already holds a loop"):
        run_loop(recipe, quiet=True)
    with pytest.raises(LoopError, match="different recipe"):
        run_loop(recipe, resume=True, quiet=True)
    # the round budget is not part of what a resume must match: --resume --rounds N extends a loop
    more = parse_loop_recipe({**data, "loop": {"rounds": 5}})
    assert more.fingerprint() == recipe.fingerprint()
    assert parse_loop_recipe({**data, "seed": 4}).fingerprint() != recipe.fingerprint()


# ---- real rounds -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Two rounds run straight through."""
    tmp_path = tmp_path_factory.mktemp("loop")
    data = recipe_data(tmp_path)
    manifest = run_loop(parse_loop_recipe(data), quiet=True)
    return tmp_path, data, manifest


@pytest.mark.model
def test_steering_gives_the_weakest_category_more_synthesis_in_round_2(reference):
    tmp_path, data, manifest = reference
    assert manifest["status"] == "finished" and [m["round"] for m in manifest["rounds"]] == [1, 2]
    first, second = manifest["rounds"]
    assert first["weak_from_last_round"] == []
    assert {c: e["target"] for c, e in first["plan"].items()} == {"koala": 1, "vicuna": 1}  # round 1: even
    losses = first["heldout"]["categories"]
    weakest = max(losses, key=losses.get)
    other = next(c for c in CATEGORIES if c != weakest)
    assert second["weak_from_last_round"] == [weakest]
    assert second["plan"][weakest]["seeds"] == 2 and second["plan"][weakest]["target"] == 2
    assert second["plan"][other]["seeds"] == 1 and second["plan"][other]["target"] == 1

    def synthesis(round_: int, category: str) -> dict:
        index = sorted(CATEGORIES).index(category)
        run = tmp_path / "loop" / f"round_{round_}" / "synthesize" / steering.slug(category, index)
        return json.loads((run / "manifest.json").read_text())

    # the weakest category's synthesis run was asked for more and proposed more
    for round_, target in ((1, 1), (2, 2)):
        assert synthesis(round_, weakest)["recipe"]["steps"][0]["config"]["target"] == target
    assert synthesis(2, weakest)["totals"]["generated"] > synthesis(1, weakest)["totals"]["generated"]
    assert synthesis(2, weakest)["totals"]["read"] == 2 > synthesis(1, weakest)["totals"]["read"] == 1
    # what was synthesized carries its category and round into the training set and the next pool
    for m in manifest["rounds"]:
        made, _ = read_all(tmp_path / "loop" / f"round_{m['round']}" / "synthesized.jsonl")
        assert len(made) == m["synthesized"] == sum(e["generated"] for e in m["plan"].values())
        assert all(r["meta"]["loop_round"] == m["round"] and r["meta"]["dataset"] in CATEGORIES for r in made)
        assert all(r["lineage"] for r in made)
    assert first["pool"] == second["pool"] == 10 and first["carried"] == 0
    assert second["carried"] == first["synthesized"]  # what round 1 made is trained on again in round 2
    assert second["train_set"] == second["curated"] + second["carried"] + second["synthesized"]
    # each round trained and was evaluated; the report charts the rounds
    assert all(m["train"]["steps"] == 2 and m["heldout"]["n"] == 4 for m in manifest["rounds"])
    assert manifest["baseline"]["model"]["options"] == {}
    report = (tmp_path / "loop" / "report.html").read_text()
    assert "held-out loss change vs the base model" in report and "records synthesized per category" in report


@pytest.mark.model
def test_a_killed_loop_resumes_to_the_same_result(reference):
    ref_path, data, expected = reference
    tmp_path = ref_path / "killed"
    tmp_path.mkdir()
    data = {**data, "output": {"dir": str(tmp_path / "loop")}}
    recipe = tmp_path / "loop.yaml"
    recipe.write_text(json.dumps(data))
    cli = [sys.executable, "-m", "dataflywheel.cli", "loop", str(recipe), "-q"]
    out = tmp_path / "loop"
    for flags, marker in (([], out / "round_1" / "train"), (["--resume"], out / "round_2" / "synthesize")):
        proc = subprocess.Popen(cli + flags, env=ENV, cwd=tmp_path)
        deadline = time.time() + 300  # a generous bound for a loaded machine, not a timing
        while not marker.exists():
            assert proc.poll() is None, "the loop ended before the kill"
            assert time.time() < deadline, f"{marker} did not appear"
            time.sleep(0.02)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads((out / "loop.json").read_text())["status"] == "running"  # killed: nothing could say otherwise
    done = subprocess.run(cli + ["--resume"], env=ENV, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got = json.loads((out / "loop.json").read_text())
    assert got["status"] == "finished" and got["resumed"] == 2
    for mine, theirs in zip(got["rounds"], expected["rounds"], strict=True):
        for key in ("pool", "curated", "carried", "synthesized", "train_set", "weak_from_last_round", "plan"):
            assert mine[key] == theirs[key], key
        assert mine["heldout"]["loss"] == pytest.approx(theirs["heldout"]["loss"], abs=2e-3)
        train = [[r["id"] for r in read_jsonl(root / f"round_{mine['round']}" / "train_set.jsonl")]
                 for root in (out, ref_path / "loop")]
        assert train[0] == train[1]
    assert "round 2:" in done.stdout and "report:" in done.stdout


def test_the_loop_stops_when_the_heldout_loss_stops_improving(tmp_path):
    from dataflywheel.loop.rounds import Flywheel

    data = recipe_data(tmp_path)
    data["loop"] = {"rounds": 5, "patience": 2, "min_improvement": 0.01}
    wheel = Flywheel(parse_loop_recipe(data), quiet=True)
    rounds = lambda *losses: [{"heldout": {"loss": loss}} for loss in losses]  # noqa: E731
    assert wheel._stop_reason({"loss": 2.0}, rounds(1.9, 1.895)) is None  # one slow round: patience 2
    assert "for 2 round(s) in a row" in wheel._stop_reason({"loss": 2.0}, rounds(1.9, 1.895, 1.897))
    assert wheel._stop_reason({"loss": 2.0}, rounds(1.9, 1.895, 1.8)) is None
    data["loop"]["rounds"] = 3  # the budget, not the rule, ends a loop at its last round
    assert Flywheel(parse_loop_recipe(data), quiet=True)._stop_reason({"loss": 2.0}, rounds(1.9, 1.895, 1.897)) is None


@pytest.mark.model
def test_without_a_category_field_records_join_the_cluster_of_the_nearest_heldout_prompts(tmp_path):
    """steer.clusters: k-means of the held-out prompts' MiniLM embeddings names the categories."""
    from dataflywheel.loop.rounds import Flywheel
    from dataflywheel.records import make_record

    def qa(question):
        return {"instruction": question, "output": "An answer."}

    maths = ["Solve 3x + 10 = 25 for x.", "What is the derivative of x squared?", "Compute 17 times 23.",
             "Factor the polynomial x^2 - 9."]
    cooking = ["How long should I boil an egg?", "What spices go well in a lentil soup?",
               "How do I knead bread dough?", "What temperature do I roast a chicken at?"]
    data = recipe_data(tmp_path)
    data["evaluate"] = {"heldout": {"path": str(write_jsonl(tmp_path / "h.jsonl", [qa(q) for q in maths + cooking]))}}
    data["steer"] = {"clusters": 2}
    wheel = Flywheel(parse_loop_recipe(data), quiet=True)
    heldout = wheel._categories(wheel._heldout_records())
    assert len(set(heldout[:4])) == 1 and len(set(heldout[4:])) == 1 and heldout[0] != heldout[4]
    records = [make_record([{"role": "user", "content": q}, {"role": "assistant", "content": "ok"}])
               for q in ("Integrate 2x from 0 to 3.", "How do I make a pancake batter?")]
    assert wheel._categories(records) == [heldout[0], heldout[4]]
