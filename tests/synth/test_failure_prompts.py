"""synth.failure_prompts (ReverseGen): keep the instructions the target model fails, reject the rest with why."""

import json
import math
import re

import pytest

from dataflywheel.models import ModelRequestError
from dataflywheel.models.llm import ModelFeatureError
from dataflywheel.ops import Candidate, OpContext, PoolView, Rejected, get_operator
from dataflywheel.ops.synth.failure_prompts import clean_instruction
from dataflywheel.records import make_record
from tests.conftest import OneModel, run_steps

FailurePrompts = get_operator("synth.failure_prompts")


@pytest.mark.parametrize("text, expected", [
    (" What is the capital of Australia, and why not Sydney?\nInstruction 5: Name a river.", 
     "What is the capital of Australia, and why not Sydney?"),
    ('"Compute 17 * 23 and show each step."\n\nHere is another one:', "Compute 17 * 23 and show each step."),
    ("```\nList the prime numbers below 30.\n```", "List the prime numbers below 30."),
    ("Instruction: Explain why the sky is blue.", "Explain why the sky is blue."),
    ("\n\n", ""),
])
def test_clean_instruction(text, expected):
    assert clean_instruction(text) == expected


class Scripted:
    """Proposer, target and judge by prompt: the proposer returns the queued samples; the target answers;
    the judge rates an answer containing 'WRONG' 1 and others 5; logprobs by reference text."""

    def __init__(self, samples):
        self.samples, self.prompts = list(samples), []

    def complete(self, prompts, params):
        self.prompts += prompts
        return [self.samples.pop(0) for _ in prompts]

    def chat(self, conversations, params):
        out = []
        for turns in conversations:
            text = turns[-1]["content"]
            if text.startswith("Review the user's question"):
                out.append(["Justified.\nScore: 1" if "WRONG" in text else "Fine.\nScore: 5"] * params.n)
            elif "prime" in text:
                out.append(["WRONG: 9 is prime."])
            else:
                out.append(["A good answer."])
        return out

    def format_chat(self, turns, add_generation_prompt=True):
        return "<user>" + turns[-1]["content"] + "<assistant>"

    def logprobs(self, prefixes, continuations):
        return [[-3.0, -3.0] if "prime" in p else [-0.1, -0.1] for p in prefixes]


SEEDS = [make_record([{"role": "user", "content": f"Seed instruction number {i} about a topic."},
                      {"role": "assistant", "content": "ok"}]) for i in range(5)]


def view():
    return PoolView(scan=lambda: iter([SEEDS]), accepted=[], round=0, target=5)


def propose(config, samples):
    llm = Scripted(samples)
    op = FailurePrompts(FailurePrompts.Config(**config), OpContext(seed=1, models=OneModel(llm)))
    return op, llm, list(op.propose(view()))


def test_keeps_what_the_target_fails_and_rejects_what_it_answers_well():
    samples = [[" List the prime numbers below 30.", " Name a colour."], [" Hi.", " List the prime numbers below 30."]]
    op, llm, out = propose({"prompts_per_round": 2, "samples": 2, "judge_samples": 2}, samples)
    kept = [p for p in out if isinstance(p, Candidate)]
    rejected = {p.raw if not p.raw.startswith("{") else json.loads(p.raw)["instruction"]: p.reason
                for p in out if isinstance(p, Rejected)}
    [record] = kept
    assert record.record["messages"] == [{"role": "user", "content": "List the prime numbers below 30."}]
    assert record.record["scores"] == {"failure.judge": 1.0}
    assert record.record["meta"]["target_answer"] == "WRONG: 9 is prime."
    assert record.details == {"method": "reverse_gen", "criterion": "judge", "failure.judge": 1.0}
    assert len(record.parents) == 3 and set(record.parents) <= {s["id"] for s in SEEDS}
    assert rejected["Name a colour."] == "the target answered well: judge score 5.00 > 2"
    assert rejected["Hi."] == "length: 1 words (keep 3-150)"
    assert rejected["List the prime numbers below 30."] == "proposed twice in this round"
    first = llm.prompts[0]
    assert first.count("Seed instruction number") == 3 and first.rstrip().endswith("Instruction 4:")


def test_loss_criterion_needs_a_reference_and_keeps_high_loss_instructions():
    with pytest.raises(ValueError, match="needs reference_model"):
        propose({"criterion": "loss"}, [[" x"]])
    samples = [[" List the prime numbers below 30.", " Name a colour please."]]
    _, _, out = propose({"criterion": "loss", "reference_model": "teacher", "prompts_per_round": 1}, samples)
    [kept] = [p for p in out if isinstance(p, Candidate)]
    assert kept.record["messages"][1] == {"role": "assistant", "content": "WRONG: 9 is prime."}
    assert kept.record["scores"] == {"failure.loss": 3.0}
    [rejected] = [p for p in out if isinstance(p, Rejected)]
    assert rejected.reason == "the target knows the reference: loss 0.100 < 2 nats/token"


class FailingFor(Scripted):
    """Requests that fail for good (as too-long prompts would): the first proposal prompt asked alone, and any
    answer, reference, judgement or loss whose prompt holds one of ``texts``."""

    def __init__(self, samples, *texts):
        super().__init__(samples)
        self.texts, self.alone = texts, 0

    def _check(self, prompts):
        if any(t in p for p in prompts for t in self.texts):
            raise ModelRequestError("HTTP 400: the prompt is too long")

    def complete(self, prompts, params):
        self.alone += len(prompts) == 1
        if len(prompts) > 1 or self.alone == 1:
            raise ModelRequestError("HTTP 400: the prompt is too long")
        return super().complete(prompts, params)

    def chat(self, conversations, params):
        self._check([c[-1]["content"] for c in conversations])
        return super().chat(conversations, params)

    def logprobs(self, prefixes, continuations):
        self._check(prefixes)
        return super().logprobs(prefixes, continuations)


FAILED = "model request failed: ModelRequestError: HTTP 400: the prompt is too long"


@pytest.mark.parametrize("criterion", ["judge", "loss"])
def test_a_request_failing_for_good_loses_only_its_own_instruction(criterion):
    samples = [[" List the prime numbers below 30.", " Name a colour please now.", " What is the capital of Peru?"]]
    # the colour cannot be answered; Peru's answer cannot be judged (judge) or its loss taken (loss)
    llm = FailingFor(samples, "Name a colour", "Peru?\n" if criterion == "judge" else "Peru?<assistant>")
    config = {"prompts_per_round": 2, "samples": 3, "criterion": criterion,
              **({"reference_model": "teacher"} if criterion == "loss" else {})}
    op = FailurePrompts(FailurePrompts.Config(**config), OpContext(seed=1, models=OneModel(llm)))
    out = list(op.propose(view()))
    [kept] = [p for p in out if isinstance(p, Candidate)]
    assert kept.record["messages"][0]["content"] == "List the prime numbers below 30."
    proposal, colour, peru = [p for p in out if isinstance(p, Rejected)]
    assert proposal.reason == colour.reason == peru.reason == FAILED
    assert len(proposal.parents) == 3 and proposal.raw == ""  # the proposal prompt itself failed
    assert json.loads(colour.raw) == {"instruction": "Name a colour please now."}
    assert json.loads(peru.raw) == {"instruction": "What is the capital of Peru?", "target_answer": "A good answer.",
                                    **({"reference": "A good answer."} if criterion == "loss" else {})}
    assert len(colour.parents) == len(peru.parents) == 3


class NoPromptLogprobs(Scripted):
    """A server that answers but returns no prompt logprobs (as the OpenAI backend reports it)."""

    def logprobs(self, prefixes, continuations):
        raise ModelFeatureError("the server returned no prompt logprobs for echo=true")


def test_a_backend_without_a_needed_feature_fails_the_round_not_each_instruction():
    llm = NoPromptLogprobs([[" List the prime numbers below 30.", " Name a colour please now."]])
    op = FailurePrompts(FailurePrompts.Config(criterion="loss", reference_model="teacher", prompts_per_round=1,
                                              samples=2), OpContext(seed=1, models=OneModel(llm)))
    with pytest.raises(ModelFeatureError, match="no prompt logprobs"):
        list(op.propose(view()))


def test_an_unscored_judgement_is_a_reject_with_the_reason_not_a_keep():
    op = FailurePrompts(FailurePrompts.Config(), OpContext(seed=0))
    assert op._passed(math.nan, "answer", "") == "unscored: the judge's answer held no score"
    assert op.counters["failures that could not be measured"] == 1


@pytest.mark.model
def test_failure_prompts_run_end_to_end_with_the_bundled_model(tmp_path):
    steps = [{"op": "synth.failure_prompts", "target": 2, "max_rounds": 1, "prompts_per_round": 2, "samples": 1,
              "max_tokens": 40, "answer_max_tokens": 40, "judge_model": "default", "judge_method": "expected",
              "judge_min_mass": 0.0, "max_score": 2.5}]
    executor, manifest, output, rejects = run_steps(tmp_path, steps)
    assert manifest["status"] == "finished"
    for record in output:
        [entry] = record["lineage"]
        assert entry["method"] == "reverse_gen" and entry["models"]["target_model"] == "default"
        assert record["scores"]["failure.judge"] <= 2.5 and record["target_answer"]  # meta, written beside the turns
        assert [m["role"] for m in record["messages"]] == ["user"]
    well = [r for r in rejects if r["reason"].startswith("the target answered well")]
    assert all(float(r["reason"].split("judge score ")[1].split()[0]) > 2.5 for r in well)
    assert len(output) + len(well) >= 1  # the target's answers were judged
    assert all(r["reason"] for r in rejects)
    step = manifest["steps"][1]
    assert step["generated"] == step["out"] + step["rejected"]


def test_clean_instruction_on_saved_proposals_of_the_bundled_model():
    """Real proposals (tests/ops/fixtures/make_failure_prompts_outputs.py): each cleans to one instruction or to
    nothing (an unparsable proposal), never to the prompt's layout or a second instruction."""
    from tests.conftest import REPO

    fixture = REPO / "tests" / "ops" / "fixtures" / "smollm2_failure_prompts_outputs.json"
    proposals = json.loads(fixture.read_text(encoding="utf-8"))["proposals"]
    cleaned = [clean_instruction(p) for p in proposals]
    for text in cleaned:
        assert "\n" not in text and "```" not in text
        assert not re.search(r"\binstruction\s*\d+\s*:", text, re.IGNORECASE)
        assert not text.startswith(('"', "'", "Instruction"))
    assert len(proposals) == 15 and sum(bool(t) for t in cleaned) >= 10


def test_a_loss_run_on_a_server_without_prompt_logprobs_stops_saying_why(tmp_path):
    """Through the CLI against an OpenAI-shaped server that answers but gives no prompt logprobs: the step stops
    after three failed rounds (not max_rounds of paid proposals), naming the missing feature."""
    from typer.testing import CliRunner

    from dataflywheel.cli import app
    from tests.models.fault_server import FaultServer

    def answer(body):
        return "Explain how a rainbow forms after a summer rain shower." if "prompt" in body else "A good answer."

    with FaultServer(rule=lambda body: "nologprobs" if body.get("echo") else None, answer=answer) as server:
        spec = {"backend": "openai", "model": "m",
                "options": {"base_url": server.url, "chat_template_from": "smollm2", "backoff": 0.01}}
        recipe = tmp_path / "recipe.json"
        recipe.write_text(json.dumps({
            "output": {"dir": str(tmp_path / "run")}, "cache": str(tmp_path / "calls.sqlite"),
            "models": {"default": spec, "teacher": spec},
            "steps": [{"op": "synth.failure_prompts", "criterion": "loss", "reference_model": "teacher",
                       "target": 4, "max_rounds": 8, "prompts_per_round": 1, "samples": 1}]}))
        result = CliRunner().invoke(app, ["run", str(recipe), "-q"])
        proposals = [r["body"]["seed"] for r in server.requests if r["path"] == "/v1/completions"
                     and not r["body"].get("echo")]
    assert result.exit_code != 0
    output = " ".join(result.output.split())
    assert "3 batches in a row failed entirely" in output and "no prompt logprobs" in output, output
    assert proposals == [0, 1, 2]  # each round's proposal paid once (its second try comes from the cache)
