"""synth.self_instruct: rule filters, the ROUGE-L novelty check, the propose flow, and a real run with SmolLM2."""

import json
from pathlib import Path

import pytest

from dataflywheel.models import ModelRequestError
from dataflywheel.ops import Candidate, OpContext, PoolView, Rejected, get_operator
from dataflywheel.ops.synth.self_instruct import rule_violation, shipped_seeds, to_record
from dataflywheel.pipeline.run_dir import iter_checkpoint
from tests.conftest import REPO, OneModel, run_steps

SelfInstruct = get_operator("synth.self_instruct")
SEEDS = [json.loads(line) for line in (REPO / "examples/data/self_instruct_seeds.jsonl").read_text().splitlines()]


def seed_records():
    return [to_record(s["instruction"], s["input"], s["output"], s["is_classification"]) for s in SEEDS]


def view(pool, accepted=(), round_=0, target=5):
    return PoolView(scan=lambda: iter([pool]), accepted=list(accepted), round=round_, target=target)


def candidate(instruction, output="An answer."):
    return to_record(instruction, "", output, False)


def test_rule_filters_follow_the_paper():
    config = SelfInstruct.Config()
    assert rule_violation("Summarize the following news article in two sentences.", config) is None
    assert rule_violation("Describe this image.", config).startswith("length")  # 3 words: too short
    assert "'image'" in rule_violation("Describe the attached image in detail please.", config)
    assert "'go to'" in rule_violation("Tell me how to go to the station.", config)
    assert "'plot'" not in (rule_violation("Explain the plotting of a novel's story arc.", config) or "")
    assert rule_violation("- List three fruits that are red.", config) == "starts with punctuation"
    assert rule_violation("Ölçü birimlerini listele lütfen şimdi.", config) == "starts with a non-ASCII character"
    assert "banned phrase" in rule_violation("Write a program that sorts a list.", config)
    assert rule_violation(" ".join(["word"] * 151), config).startswith("length: 151 words")


def test_verify_rejects_near_copies_of_seeds_accepted_and_earlier_candidates():
    op = SelfInstruct(SelfInstruct.Config(), OpContext(seed=0))
    pool = seed_records()
    seed = SEEDS[0]["instruction"]
    near_copy = seed.replace(seed.split()[-1], "please.")
    accepted = [candidate("Translate the sentence into French and explain each word choice.")]
    fresh = [candidate(near_copy),
             candidate("Invent a short riddle whose answer is a kitchen utensil."),
             candidate("Invent a short riddle whose answer is a kitchen utensil, please."),
             candidate("Translate this sentence into French and explain every word choice."),
             candidate("Give three tips for keeping houseplants alive in winter.")]
    reasons = op.verify(fresh, view(pool, accepted, round_=1))
    assert reasons[0].startswith("too similar: ROUGE-L") and repr(seed) in reasons[0]
    assert reasons[1] is None and reasons[4] is None
    assert "kitchen utensil." in reasons[2]  # an earlier candidate of the same round
    assert "Translate the sentence" in reasons[3]  # an accepted record
    score = float(reasons[0].split("ROUGE-L ")[1].split()[0])
    assert 0.7 < score < 1.0


class ScriptedLLM:
    """Answers by prompt kind, like a model would, and records the prompts."""

    def __init__(self, lists):
        self.lists, self.prompts = list(lists), []

    def complete(self, prompts, params):
        self.prompts += prompts
        answers = []
        for prompt in prompts:
            if prompt.startswith("Come up with a series"):
                answers.append([self.lists.pop(0)])
            elif prompt.endswith("Is it classification?"):
                answers.append([" Yes" if "sentiment" in prompt.splitlines()[-2] else " No"])
            elif prompt.endswith("Class label:"):
                answers.append([" Positive\nInput: What a lovely day at the beach!"])
            else:
                answers.append(["Input: 3, 1, 2\nOutput: 1, 2, 3"])
        return answers


def test_propose_filters_classifies_and_writes_instances_with_in_context_parents():
    lists = [" Sort these numbers in ascending order.\n10. Describe the attached picture in detail.\n"
             "11. Detect the sentiment of this product review.\n12. Ok.\n\nHope this helps!",
             "```\n```\n"]  # nothing but an empty fence
    llm = ScriptedLLM(lists)
    config = SelfInstruct.Config(prompts_per_round=2)
    op = SelfInstruct(config, OpContext(seed=3, models=OneModel(llm)))
    pool = seed_records()
    accepted = [candidate("Plan a three-day trip to Lisbon on a student budget.")]
    proposals = list(op.propose(view(pool, accepted, round_=1)))
    rejected = {p.raw: p.reason for p in proposals if isinstance(p, Rejected)}
    made = [p for p in proposals if isinstance(p, Candidate)]
    assert rejected["Describe the attached picture in detail."] == \
        "keyword: names 'picture', which a text model cannot handle"
    assert rejected["Ok."].startswith("length")
    assert rejected["```\n```\n"] == "unparsable: no instruction in the model's list"
    assert op.counters["unparsable instruction lists"] == 1
    by_instruction = {m.record["meta"]["alpaca"]["instruction"]: m for m in made}
    assert set(by_instruction) == {"Sort these numbers in ascending order.",
                                   "Detect the sentiment of this product review."}
    sort, sentiment = by_instruction.values()
    assert sort.record["messages"] == [{"role": "user", "content": "Sort these numbers in ascending order.\n\n3, 1, 2"},
                                       {"role": "assistant", "content": "1, 2, 3"}]
    assert sort.details == {"method": "self_instruct", "is_classification": False, "instance": "input_first"}
    assert sentiment.details["instance"] == "output_first"
    assert sentiment.record["messages"][1]["content"] == "Positive"
    # 8 in-context tasks: the accepted one (only one exists) and seeds
    assert len(sort.parents) == 8 and accepted[0]["id"] in sort.parents
    assert set(sort.parents) - {accepted[0]["id"]} <= {r["id"] for r in pool}
    list_prompt = llm.prompts[0]
    assert list_prompt.startswith("Come up with a series of tasks:\n1. ") and list_prompt.endswith("\n9.")
    # the same seed and round propose the same prompts
    again = ScriptedLLM(lists)
    list(SelfInstruct(config, OpContext(seed=3, models=OneModel(again))).propose(view(pool, accepted, round_=1)))
    assert again.prompts == llm.prompts


class FailingForSort(ScriptedLLM):
    """A server that fails every request about sorting numbers (as a too-long prompt would, for good)."""

    def complete(self, prompts, params):
        if any("Task: Sort these numbers" in p for p in prompts):
            raise ModelRequestError("HTTP 400: the prompt is too long")
        return super().complete(prompts, params)


def test_a_request_failing_for_good_loses_only_its_own_instruction():
    lists = [" Sort these numbers in ascending order.\n10. Detect the sentiment of this product review."]
    op = SelfInstruct(SelfInstruct.Config(prompts_per_round=1), OpContext(seed=3, models=OneModel(FailingForSort(lists))))
    proposals = list(op.propose(view(seed_records(), round_=1)))
    made = [p.record["meta"]["alpaca"]["instruction"] for p in proposals if isinstance(p, Candidate)]
    failed = [p for p in proposals if isinstance(p, Rejected)]
    assert made == ["Detect the sentiment of this product review."]
    assert [p.raw for p in failed] == ["Sort these numbers in ascending order."]
    assert failed[0].reason == "model request failed: ModelRequestError: HTTP 400: the prompt is too long"
    assert op.counters["classification requests that failed (taken as No)"] == 1


@pytest.mark.model
def test_self_instruct_runs_end_to_end_with_the_bundled_model(tmp_path):
    steps = [{"op": "synth.self_instruct", "target": 2, "max_rounds": 3, "prompts_per_round": 1,
              "max_tokens": 128, "instance_max_tokens": 64}]
    executor, manifest, output, rejects = run_steps(tmp_path, steps)
    assert manifest["status"] == "finished" and 1 <= len(output) <= 2
    seed_ids = {t.id for t in shipped_seeds()}
    final = {r["id"]: r for batch in iter_checkpoint(Path(manifest["steps"][-1]["checkpoint"])) for r in batch}
    for record in output:
        [entry] = record["lineage"]
        assert entry["op"] == "synth.self_instruct" and entry["method"] == "self_instruct"
        assert entry["models"] == {"model": "default"} and "round" in entry
        assert len(entry["parents"]) == 8 and set(entry["parents"]) <= seed_ids | {r["id"] for r in output}
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
        assert all(m["content"].strip() for m in record["messages"])
        assert isinstance(record["is_classification"], bool)  # meta, written beside the turns
        assert len(final[record["id"]]["meta"]["alpaca"]["instruction"].split()) >= 4
    assert all(r["reason"] for r in rejects)
    step = manifest["steps"][1]
    assert step["generated"] == step["out"] + step["rejected"]
