"""IFD: the L(A) prompt is the chat template without the user turn; IFD > 1 records are never picked."""

import math

import pytest

from dataflywheel.ops import OpContext, get_operator
from dataflywheel.ops.score.ifd import answer_only_prefix, ifd_scores
from dataflywheel.records import make_record

DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


class ChatMLModel:
    """A fake LLM with a ChatML template that adds a default system prompt, as SmolLM2's and Qwen's do."""

    name = "fake"

    def __init__(self):
        self.prefixes: list[str] = []

    def format_chat(self, conversation, add_generation_prompt=True):
        text = "" if conversation and conversation[0]["role"] == "system" else DEFAULT_SYSTEM
        text += "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conversation)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def logprobs(self, prefixes, continuations):
        self.prefixes += prefixes
        # a made-up loss: lower when the prefix mentions the answer's first word
        return [[-0.5 if c.split()[0] in p else -2.0] * len(c.split()) for p, c in zip(prefixes, continuations)]


def rec(question, answer, system=None):
    turns = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return make_record(turns)


def test_answer_alone_is_scored_after_the_system_prompt_and_assistant_header():
    llm = ChatMLModel()
    assert answer_only_prefix(llm, [{"role": "user", "content": "Q"}]) == DEFAULT_SYSTEM + "<|im_start|>assistant\n"
    own = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]
    assert answer_only_prefix(llm, own) == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>assistant\n"
    ifd_scores(llm, [rec("Name a colour.", "Blue is a colour."), rec("Hi", "Hello there", system="Be brief.")])
    conditioned, alone = llm.prefixes[:2], llm.prefixes[2:]
    assert alone == [DEFAULT_SYSTEM + "<|im_start|>assistant\n",
                     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>assistant\n"]
    for with_q, without_q in zip(conditioned, alone):  # the same template, minus the user turn
        assert with_q.startswith(without_q.split("<|im_start|>assistant")[0]) and with_q.endswith("assistant\n")


def test_ifd_is_the_ratio_of_the_two_losses():
    [s] = ifd_scores(ChatMLModel(), [rec("Say Blue.", "Blue is a colour.")])
    assert s["ifd"] == pytest.approx(s["answer_loss"] / s["direct_answer_loss"]) and s["ifd"] < 1


def scored(values):
    return [make_record([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
                        scores={"ifd": v, "ifd.above_1": float(v > 1)}) for i, v in enumerate(values)]


def test_top_k_and_threshold_never_pick_records_with_ifd_above_1():
    records = scored([1.4, 0.9, 1.2, 0.7, 0.8, 0.2])
    op = get_operator("select.top_k")
    selection = op(op.Config(scores={"ifd": 1.0}, count=3), OpContext()).select(lambda: iter([records]))
    assert sorted(set(range(6)) - set(selection.rejected)) == [1, 3, 4]
    assert "ifd > 1" in selection.rejected[0] and "ifd > 1" in selection.rejected[2]
    keep_all = op(op.Config(scores={"ifd": 1.0}, count=3, exclude_flagged=False), OpContext())
    assert sorted(set(range(6)) - set(keep_all.select(lambda: iter([records])).rejected)) == [0, 1, 2]


def test_deita_never_picks_records_with_ifd_above_1():
    import numpy as np

    class Embedder:
        def embed(self, texts):
            rows = np.eye(len(texts), 8, dtype=np.float32)
            return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    class Models:
        def embedder(self, role):
            return Embedder()

    records = scored([1.4, 0.9, 1.2, 0.7])
    op = get_operator("select.deita")
    selection = op(op.Config(score="ifd", count=2), OpContext(models=Models())).select(lambda: iter([records]))
    assert sorted(set(range(4)) - set(selection.rejected)) == [1, 3]


def test_the_scorer_flags_ifd_above_1():
    class Registry:
        def llm(self, role):
            return ChatMLModel()

    scorer = get_operator("score.ifd")(None, OpContext(models=Registry()))
    # the instruction names the answer's first word: it helps (IFD < 1); otherwise IFD = 1, not above
    out = scorer.score_batch([rec("Say Blue.", "Blue sky"), rec("Hi", "Blue sky")])
    assert out[0]["ifd.above_1"] == 0.0 and out[0]["ifd"] < 1 and math.isclose(out[1]["ifd"], 1.0)
