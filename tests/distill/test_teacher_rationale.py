"""Teacher and rationale distillation: the judge gate keeps the better answer; a rationale is kept only when its
final answer matches the reference."""

import re

import pytest

from dataflywheel.models import ModelRegistry
from dataflywheel.models.llm import GenerationParams
from dataflywheel.ops import OpContext, get_operator
from dataflywheel.ops.base import Candidate, Rejected
from dataflywheel.ops.distill.rationale import PROMPTS, match_rule, parse_rationale
from dataflywheel.pipeline.apply import apply_mapper
from dataflywheel.prompts import render_file
from dataflywheel.records import make_record
from tests.conftest import OneModel


class ScriptedLLM:
    """Answers by rule: a judge prompt gets 'Score: 5' for a response containing GOOD and 'Score: 1' otherwise;
    any other prompt gets ``answers[question]``."""

    name = "scripted"

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers
        self.prompts: list[str] = []

    def chat(self, conversations, params: GenerationParams):
        out = []
        for conversation in conversations:
            text = conversation[-1]["content"]
            self.prompts.append(text)
            if "Score:" in text:  # the Self-Rewarding rubric
                response = text.split("<response>")[-1] if "<response>" in text else text[-300:]
                out.append([f"Score: {5 if 'GOOD' in response else 1}"] * params.n)
                continue
            question = next(q for q in self.answers if q in text)
            out.append((self.answers[question] * params.n)[:params.n])
        return out


def sft(question, answer):
    return make_record([{"role": "user", "content": question}, {"role": "assistant", "content": answer}])


def test_teacher_gate_keeps_the_better_answer():
    llm = ScriptedLLM({"Q1": ["GOOD teacher answer to Q1"], "Q2": ["weak teacher answer to Q2"]})
    op = get_operator("distill.teacher")
    teacher = op(op.Config(judge=True, judge_samples=1), OpContext(models=OneModel(llm, ("teacher", "judge"))))
    upgraded, kept = apply_mapper(teacher, "teacher", [sft("Q1", "poor original"), sft("Q2", "GOOD original")])
    assert upgraded.record["messages"][-1]["content"] == "GOOD teacher answer to Q1"
    assert upgraded.record["meta"]["teacher"] == {"original": "poor original", "teacher_score": 5.0,
                                                  "original_score": 1.0, "kept": "teacher"}
    assert upgraded.record["lineage"][-1]["parents"] and upgraded.record["lineage"][-1]["models"] == \
        {"teacher_model": "teacher", "judge_model": "judge"}
    assert kept.record["messages"][-1]["content"] == "GOOD original"
    assert kept.record["meta"]["teacher"]["kept"] == "original"
    assert kept.record["scores"] == {"teacher.score": 1.0, "teacher.original_score": 5.0}
    assert not kept.record["lineage"]  # the text did not change: no new record


def test_teacher_without_gate_replaces_and_fill_mode_only_answers_the_unanswered():
    llm = ScriptedLLM({"Q1": ["teacher 1"], "Q2": ["teacher 2"]})
    op = get_operator("distill.teacher")
    context = OpContext(models=OneModel(llm, ("teacher",)))
    replaced = op(op.Config(), context).map_batch([sft("Q1", "orig")])[0]
    assert replaced["messages"][-1]["content"] == "teacher 1" and replaced["meta"]["teacher"]["original"] == "orig"
    prompt_only = make_record([{"role": "user", "content": "Q2"}])
    filled, untouched = op(op.Config(mode="fill"), context).map_batch([prompt_only, sft("Q1", "orig")])
    assert filled["messages"][-1] == {"role": "assistant", "content": "teacher 2"}
    assert untouched["messages"][-1]["content"] == "orig"


def test_match_rules():
    assert match_rule("so 1,200 apples", "#### 1200", "auto")
    assert not match_rule("12", "1200", "numeric")
    assert match_rule("The Eiffel Tower!", "eiffel tower", "exact")
    assert not match_rule("Paris, France", "Lyon", "auto")
    assert match_rule("It is Paris", "Paris", "auto") and not match_rule("It is Paris", "Paris", "exact")


def rationale_run(config, records, answers):
    op = get_operator("distill.rationale")
    return list(op(op.Config(**config), OpContext(models=OneModel(ScriptedLLM(answers)))).generate(records))


def test_rationale_kept_only_when_its_answer_matches_the_reference():
    records = [sft("How many legs do 2 cats have?", "8"), sft("What is 3 + 4?", "7"),
               sft("Capital of Italy?", "Rome"), make_record([{"role": "user", "content": "Name a colour."}])]
    answers = {"cats": ["Each cat has 4 legs, 2 x 4 = 8.\nAnswer: 8"],
               "3 + 4": ["3 plus 4 is 12.\nAnswer: 12"],
               "Italy": ["Italy's capital is Rome."],  # no answer line: cannot be checked
               "colour": ["Red is a colour.\nAnswer: red"]}
    out = rationale_run({}, records, answers)
    kept, rejected = [o for o in out if isinstance(o, Candidate)], [o for o in out if isinstance(o, Rejected)]
    assert [c.parents for c in kept] == [[records[0]["id"]], [records[3]["id"]]]
    assert kept[0].record["messages"][-1]["content"] == "Each cat has 4 legs, 2 x 4 = 8.\n\nAnswer: 8"
    assert kept[0].details["match"] == "auto" and kept[1].details["match"] == "unchecked"
    assert "does not match the reference" in rejected[0].reason and "'12'" in rejected[0].reason
    assert "no 'Answer:' line" in rejected[1].reason
    strict = rationale_run({"require_reference": True}, records[3:], answers)
    assert isinstance(strict[0], Rejected) and "no reference" in strict[0].reason


def test_rationale_two_tasks_and_the_first_matching_sample():
    record = sft("What is 6 x 7?", "42")
    answers = {"6 x 7": ["Six sevens are 48.\nAnswer: 48", "Six sevens are 42.\nAnswer: 42"]}
    label, rationale = rationale_run({"output": "two_tasks", "samples": 2}, [record], answers)
    assert label.record["messages"] == [{"role": "user", "content": "[label] What is 6 x 7?"},
                                        {"role": "assistant", "content": "42"}]
    assert rationale.record["messages"][-1]["content"] == "Six sevens are 42."
    assert rationale.record["messages"][0]["content"].startswith("[rationale] ") and rationale.details["try"] == 1


def test_rationale_judge_match_uses_the_judge_role():
    class Judge(ScriptedLLM):
        def chat_top_logprobs(self, conversations, k=20, labels=()):
            return [{"yes": -0.1, "no": -2.5} if "Proposed answer: Roma" in c[-1]["content"] else {"no": -0.1, "yes": -3.0}
                    for c in conversations]
    records = [sft("Capital of Italy?", "Rome"), sft("Capital of Spain?", "Madrid")]
    op = get_operator("distill.rationale")
    llm = Judge({"Italy": ["It is Roma.\nAnswer: Roma"], "Spain": ["It is Lisbon.\nAnswer: Lisbon"]})
    out = list(op(op.Config(match="judge"), OpContext(models=OneModel(llm, ("teacher", "judge")))).generate(records))
    assert isinstance(out[0], Candidate) and isinstance(out[1], Rejected)


@pytest.mark.model
def test_bundled_model_rationale_parses():
    """SmolLM2-135M answers the rationale prompt in a form the parser reads (it often writes 'The answer is N')."""
    llm = ModelRegistry({"teacher": {"options": {"threads": 1}}}, cache=None, quiet=True).llm("teacher")
    question = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    [[text]] = llm.chat([[{"role": "user", "content": render_file(PROMPTS / "rationale.txt", question=question)}]],
                        GenerationParams(max_tokens=64))
    parsed = parse_rationale(text)
    assert parsed is not None, text
    assert re.search(r"\d", parsed[1]) and len(parsed[0]) > 10
