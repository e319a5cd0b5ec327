"""enhance.noise (RobustFT): answers that disagree with the experts are flagged, rejected or relabelled."""

import json
import random

import numpy as np
import pytest

from dataflywheel.ops import OpContext, get_operator
from dataflywheel.ops.answers import final_answer
from dataflywheel.pipeline.apply import apply_mapper
from dataflywheel.records import make_record, response_text
from tests.conftest import shared_data

Noise = get_operator("enhance.noise")


def record(instruction, answer):
    return make_record([{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}])


class Experts:
    """Scripted expert: answers each question with its entry in ``answers`` (by question text), and scores
    an answer's tokens by ``entropy`` (mean NLL) per answer text."""

    name = "scripted"

    def __init__(self, answers: dict[str, str], entropy: dict[str, float] | None = None):
        self.answers, self.entropy = answers, entropy or {}

    def chat(self, conversations, params):
        out = []
        for conversation in conversations:
            prompt = conversation[-1]["content"]
            question = prompt.rsplit("Task: ", 1)[-1] if "Task: " in prompt else prompt.split("\n\n")[0]
            out.append([self.answers[question.strip()]] * params.n)
        return out

    def format_chat(self, conversation, add_generation_prompt=True):
        return conversation[-1]["content"]

    def logprobs(self, prefixes, continuations):
        return [[-self.entropy.get(c, 1.0)] * 3 for c in continuations]


class Models:
    def __init__(self, llm):
        self._llm = llm

    def llm(self, role):
        return self._llm

    def embedder(self, role):
        from dataflywheel.models.embed import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder()


QUESTIONS = {"What is 2 + 3?": "Answer: 5", "What is the capital of Italy?": "Answer: Rome",
             "What colour is the sky on a clear day?": "Answer: blue"}


def test_final_answers_compare_labels_not_wording():
    assert final_answer("Let me think. 2 + 3 makes five.\nAnswer: 5.") == "5"
    assert final_answer("The answer is: The Blue") == "blue"
    assert final_answer("#### 42") == "42"
    # the same normaliser as rationale distillation: articles and outer punctuation do not count, inner does
    assert final_answer("Answer: (The) New York, city!") == final_answer("answer = new york city") == "new york city"
    assert len({final_answer(f"Answer: {a}") for a in ("1/2", "1.2", "12", "x+1", "x-1")}) == 5


def test_exact_agreement_rejects_the_wrong_label_and_keeps_the_right_ones():
    op = Noise(Noise.Config(agreement="exact", entropy=False), OpContext(models=Models(Experts(QUESTIONS))))
    batch = [record("What is 2 + 3?", "2 + 3 = 5. Answer: 5"), record("What is the capital of Italy?", "Answer: Milan"),
             record("What colour is the sky on a clear day?", "It is blue.\nAnswer: Blue")]
    items = apply_mapper(op, "noise", batch)
    assert [i.reason is None for i in items] == [True, False, True]
    assert items[1].reason.startswith("noisy answer: 0% of 2 expert predictions agree")
    assert items[1].record["scores"]["noise_agreement"] == 0.0  # the reject keeps the scores
    assert items[0].record["scores"]["noise_agreement"] == 1.0


def test_relabel_keeps_the_confident_relabels_with_lineage_and_rejects_the_unsure():
    answers = {**QUESTIONS, "What is 10 - 4?": "Answer: 6"}
    batch = [record("What is 2 + 3?", "Answer: 5"), record("What is the capital of Italy?", "Answer: Milan"),
             record("What is 10 - 4?", "Answer: 7"), record("What colour is the sky on a clear day?", "Answer: blue")]
    llm = Experts(answers, entropy={"Answer: Rome": 0.2, "Answer: 6": 2.5})  # the second relabel is unsure
    op = Noise(Noise.Config(agreement="exact", action="relabel", context_examples=1), OpContext(models=Models(llm)))
    items = apply_mapper(op, "noise", batch)
    italy, minus = items[1], items[2]
    assert italy.reason is None and response_text(italy.record) == "Answer: Rome"
    entry = italy.record["lineage"][-1]
    assert entry["op"] == "enhance.noise" and entry["original"] == {"response": "Answer: Milan"}
    assert len(entry["context_examples"]) == 1 and entry["parents"] == [batch[1]["id"]]
    assert minus.reason is not None and "relabel is unsure" in minus.reason
    assert items[0].reason is None and items[0].record["messages"] == batch[0]["messages"]
    assert op.counters["noisy records relabelled"] == 1


@pytest.mark.model
def test_planted_wrong_answers_are_flagged_more_often_than_real_ones(tmp_path):
    """Real AlpacaEval instructions with GPT-4 Turbo's answers; half the records get another record's answer
    (mislabelled). The bundled SmolLM2 answers each instruction twice; MiniLM compares. Measured with the
    default thresholds: here (12 records, 48 tokens) planted 6/6 flagged, real 1/6; 24 records at 96 tokens:
    planted 8/8, real 6/16."""
    from dataflywheel.models.registry import ModelRegistry

    rows = [json.loads(line) for line in
            shared_data("alpaca_eval/outputs/gpt4_1106_preview.jsonl").read_text().splitlines()]
    rows = [r for r in rows if len(r["output"]) < 600]
    random.Random(0).shuffle(rows)
    rows = rows[:12]
    planted = range(6)
    answers = [rows[(i + 1) % 6]["output"] if i in planted else r["output"] for i, r in enumerate(rows)]
    batch = [record(r["instruction"], a) for r, a in zip(rows, answers)]
    models = ModelRegistry({"default": {"backend": "transformers", "model": "smollm2"}}, None, True)
    op = Noise(Noise.Config(action="score", max_tokens=48, entropy=False), OpContext(models=models))
    items = apply_mapper(op, "noise", batch)
    flagged = np.array([i.record["scores"]["noise_agreement"] < op.config.min_agreement for i in items])
    planted_rate, real_rate = flagged[:6].mean(), flagged[6:].mean()
    print(f"flagged: planted {planted_rate:.0%}, real {real_rate:.0%}")
    assert planted_rate >= real_rate + 0.3
    assert planted_rate >= 0.66
