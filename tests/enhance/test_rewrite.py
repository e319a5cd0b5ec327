"""enhance.rewrite: the coach's revision replaces the original only when the judge scores it higher."""

import re

import pytest

from dataflywheel.ops import OpContext, get_operator
from dataflywheel.ops.enhance.rewrite import parse_revision
from dataflywheel.pipeline.apply import apply_mapper
from dataflywheel.records import make_record, response_text
from tests.conftest import OneModel

Rewrite = get_operator("enhance.rewrite")
THIN = "Paris."
RICH = "The capital of France is Paris, on the Seine; it has been the capital since 987."


class CoachAndJudge:
    """Coach: answers every revision request with ``revision``. Judge: scores a response by ``scores``."""

    name = "scripted"

    def __init__(self, revision: str, scores: dict[str, int]):
        self.revision, self.scores, self.asked = revision, scores, []

    def chat(self, conversations, params):
        out = []
        for conversation in conversations:
            prompt = conversation[-1]["content"]
            self.asked.append(prompt)
            if prompt.startswith("You are a coach"):
                out.append([self.revision] * params.n)
            else:
                response = re.search(r"<response>(.*)</response>", prompt, re.DOTALL).group(1)
                out.append([f"Justified. Score: {self.scores[response]}"] * params.n)
        return out


def rewrite(revision, scores, **config):
    llm = CoachAndJudge(revision, scores)
    op = Rewrite(Rewrite.Config(**config), OpContext(models=OneModel(llm, roles=("default", "judge"))))
    record = make_record([{"role": "user", "content": "What is the capital of France?"},
                          {"role": "assistant", "content": THIN}])
    return op, apply_mapper(op, "rewrite", [record])[0], record


def test_a_revision_judged_better_replaces_the_original_with_lineage():
    op, item, original = rewrite(f"Improved response: {RICH}", {THIN: 1, RICH: 4})
    assert item.reason is None
    assert response_text(item.record) == RICH  # the preface is not part of the answer
    assert item.record["id"] != original["id"]
    assert item.record["scores"] == {"rewrite_original": 1.0, "rewrite_revised": 4.0}
    entry = item.record["lineage"][-1]
    assert entry["op"] == "enhance.rewrite" and entry["parents"] == [original["id"]]
    assert entry["original"]["response"] == THIN and entry["judge"]["revised"] == 4.0
    assert op.counters["revisions kept"] == 1


@pytest.mark.parametrize("revised_score", [0, 1])  # judged lower; judged equal (under the 0.5 margin)
def test_a_revision_not_judged_better_by_the_margin_is_dropped(revised_score):
    op, item, original = rewrite(RICH, {THIN: 1, RICH: revised_score})
    assert item.reason is None and item.record["id"] == original["id"]
    assert response_text(item.record) == THIN and not item.record.get("lineage")
    assert item.record["scores"] == {"rewrite_original": 1.0, "rewrite_revised": float(revised_score)}
    assert op.counters["revisions not judged better by the margin (original kept)"] == 1


def test_the_margin_is_configurable():
    _, item, _ = rewrite(RICH, {THIN: 3, RICH: 4}, margin=1.5)
    assert response_text(item.record) == THIN
    _, item, _ = rewrite(RICH, {THIN: 3, RICH: 4}, margin=1.0)
    assert response_text(item.record) == RICH


def test_both_instruction_and_response_can_be_revised():
    revision = "Instruction: Name the capital of France and say since when.\nResponse: " + RICH
    _, item, _ = rewrite(revision, {THIN: 1, RICH: 5}, target="both")
    assert item.record["messages"][0]["content"] == "Name the capital of France and say since when."
    assert response_text(item.record) == RICH


def test_unreadable_or_empty_revisions_keep_the_original_without_asking_the_judge():
    op, item, original = rewrite("Response without the instruction label", {THIN: 1}, target="both")
    assert item.record == original and op.counters["revisions unparsable"] == 1
    assert parse_revision("  \n", "response") is None
    assert parse_revision("Here is the improved response:\nParis is the capital.", "response") == \
        ("", "Paris is the capital.")
