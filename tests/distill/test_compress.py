"""Prompt compression: the requested ratio is met within 5% and protected spans are never touched."""

import hashlib
import re

import pytest

from dataflywheel.models import ModelRegistry
from dataflywheel.ops import OpContext, get_operator
from dataflywheel.ops.distill.units import build_units, protected_spans, render
from dataflywheel.pipeline.apply import apply_mapper
from dataflywheel.records import make_record
from tests.conftest import OneModel, shared_data

CODE = "```python\ndef area(r):\n    return 3.14159 * r ** 2\n```"
QUESTION = "Which function in the code computes the area, and what constant does it use?"


def prompt(body: str) -> str:
    return f"{body}\n\nHere is the code we talked about:\n\n{CODE}\n\nThe deadline is 2024-05-17 and the budget is 12,500 dollars.\n\n{QUESTION}"


class RuleLLM:
    """Scripted token losses (a hash of the token and its position): varied, deterministic, no weights."""

    name = "rule"

    def __init__(self):
        from dataflywheel.models.tokenizer import load_tokenizer
        self.tokenizer = load_tokenizer("smollm2")
        self.calls = 0

    def logprobs(self, prefixes, continuations):
        self.calls += 1
        out = []
        for prefix, text in zip(prefixes, continuations):
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            out.append([-(int(hashlib.md5(f"{len(prefix)}:{i}:{t}".encode()).hexdigest()[:6], 16) % 1000) / 100
                        for i, t in enumerate(ids)])
        return out


def protected_in(text: str) -> list[str]:
    return [CODE, QUESTION, "2024-05-17", "12,500"]


@pytest.fixture(scope="module")
def corpus_texts():
    import json
    rows = [json.loads(line) for line in shared_data("corpus/c4_demo.jsonl").read_text().splitlines()[:40]]
    return [r["text"] for r in rows if len(r["text"]) > 1500][:4]


@pytest.mark.parametrize("op_name,level", [("distill.selective_context", "phrase"),
                                           ("distill.selective_context", "word"),
                                           ("distill.selective_context", "sentence"),
                                           ("distill.llmlingua", "word"), ("distill.llmlingua", "token")])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_ratio_met_and_protected_spans_untouched(op_name, level, ratio, corpus_texts):
    op = get_operator(op_name)
    records = [make_record([{"role": "user", "content": prompt(t[:3000])}]) for t in corpus_texts]
    out = op(op.Config(ratio=ratio, level=level), OpContext(models=OneModel(RuleLLM()))).map_batch(records)
    for before, after in zip(records, out):
        text = after["messages"][0]["content"]
        for span in protected_in(before["messages"][0]["content"]):
            assert span in text
        info = after["meta"]["compress"]
        assert abs(info["achieved"] - ratio) <= 0.05 * ratio, info
        assert after["scores"]["compress.ratio"] == pytest.approx(info["achieved"], abs=1e-3)
        assert info["original"] == {"0": before["messages"][0]["content"]}


def test_protected_question_sentences_and_alpaca_instruction():
    text = "Some context here. More context follows! Is this the question? And the end."
    spans = protected_spans(text, ("question",))
    assert [text[a:b] for a, b in spans] == ["Is this the question?"]
    plain = "Summarize the text below. It is long. It ends here."
    assert [plain[a:b] for a, b in protected_spans(plain, ("question",))] == ["Summarize the text below.",
                                                                             "It ends here."]
    assert [plain[a:b] for a, b in protected_spans(plain, ("question",), question="It is long.")] == ["It is long."]


def test_render_keeps_paragraph_breaks_and_the_untouched_text():
    from dataflywheel.ops.distill.compressors import offsets
    tokenizer = RuleLLM().tokenizer
    text = "First words here.\n\nSecond paragraph   with   spaces."
    units = build_units(text, offsets(tokenizer, text), [], "word")
    assert render(units, set()) == text
    second = units.unit_of[next(t for t, (a, b) in enumerate(units.spans) if "Second" in text[a:b])]
    here = units.unit_of[next(t for t, (a, b) in enumerate(units.spans) if "here" in text[a:b])]
    assert render(units, {here, second}) == "First words\n\nparagraph   with   spaces."


def test_alpaca_record_keeps_its_instruction_and_lineage_names_the_original(corpus_texts):
    instruction = "Summarize the following article in two sentences for a busy reader"
    record = make_record([{"role": "user", "content": f"{instruction}\n\n{corpus_texts[0][:2000]}"},
                          {"role": "assistant", "content": "A summary."}],
                         meta={"alpaca": {"instruction": instruction, "input": corpus_texts[0][:2000]}})
    op = get_operator("distill.selective_context")
    [item] = apply_mapper(op(op.Config(ratio=0.4), OpContext(models=OneModel(RuleLLM()))), "compress", [record])
    after = item.record
    assert after["messages"][0]["content"].startswith(instruction + "\n\n")
    assert after["messages"][1] == record["messages"][1]
    assert after["lineage"][-1]["parents"] == [record["id"]] and after["lineage"][-1]["op"] == "distill.selective_context"
    assert after["meta"]["compress"]["original"]["0"] == record["messages"][0]["content"]


def test_short_turns_are_left_as_they_were():
    op = get_operator("distill.llmlingua")
    record = make_record([{"role": "user", "content": "A short question about 3 cats?"}])
    model = RuleLLM()
    [out] = op(op.Config(ratio=0.3), OpContext(models=OneModel(model))).map_batch([record])
    assert out["messages"] == record["messages"] and out["scores"]["compress.ratio"] == 1.0 and model.calls == 0


@pytest.mark.model
def test_real_model_meets_the_ratio_and_keeps_what_is_protected(corpus_texts):
    """The bundled SmolLM2's token losses: both methods at ratio 0.4, one batch of two prompts."""
    context = OpContext(models=ModelRegistry({"compressor": {"options": {"threads": 1}}}, cache=None, quiet=True))
    records = [make_record([{"role": "user", "content": prompt(t[:1200])}]) for t in corpus_texts[:2]]
    for name in ("distill.selective_context", "distill.llmlingua"):
        op = get_operator(name)
        out = op(op.Config(ratio=0.4, iterative_size=120) if name.endswith("llmlingua") else op.Config(ratio=0.4),
                 context).map_batch(records)
        for before, after in zip(records, out):
            text = after["messages"][0]["content"]
            assert all(span in text for span in protected_in(before["messages"][0]["content"]))
            assert abs(after["meta"]["compress"]["achieved"] - 0.4) <= 0.02
            assert len(re.findall(r"\S+", text)) < 0.8 * len(re.findall(r"\S+", before["messages"][0]["content"]))


class LoggingLLM(RuleLLM):
    """RuleLLM that keeps every (prefix, text) pair it scored, call by call."""

    def __init__(self):
        super().__init__()
        self.log = []

    def logprobs(self, prefixes, continuations):
        self.log.append(list(zip(prefixes, continuations)))
        return super().logprobs(prefixes, continuations)


def test_llmlingua_scores_each_window_once_and_after_the_compressed_text(corpus_texts):
    """One self-information pass over the original text; after it, only windows that follow a drop are
    scored again, each after the compressed text before it (never after the original text)."""
    op = get_operator("distill.llmlingua")
    texts = [prompt(t[:2500]) for t in corpus_texts[:2]]
    model = LoggingLLM()
    op(op.Config(ratio=0.4, iterative_size=64), OpContext(models=OneModel(model))).map_batch(
        [make_record([{"role": "user", "content": t}]) for t in texts])
    first, *later = model.log
    for text in texts:  # the first call reads each text whole, every window after its original prefix
        own = [c for p, c in first if text.startswith(p + c)]
        assert sum(len(c) for c in own) >= 0.95 * len(text)
    assert later, "windows after a drop are scored after the compressed text"
    for pairs in later:
        for prefix, window in pairs:
            original = next(t for t in texts if window in t)
            assert not original.startswith(prefix + window), "a window scored again after the original text"
    scored_again = sum(len(c) for pairs in later for _, c in pairs)
    assert scored_again < sum(len(t) for t in texts)


def test_whole_units_land_as_close_to_the_ratio_as_their_sizes_allow():
    """Dropping by score alone overshoots with big units; moves of one unit (drop, restore, swap) get closer."""
    from dataflywheel.ops.distill.compressors import Job, fit_ratio, offsets
    tokenizer = RuleLLM().tokenizer
    sentences = ["One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
                 "seventeen eighteen nineteen twenty.", "Alpha beta gamma delta.",
                 "Red green blue yellow purple orange pink brown black white grey.", "Cats sleep well."]
    text = " ".join(sentences)
    units = build_units(text, offsets(tokenizer, text), [], "sentence")
    sizes = [len(u) for u in units.units]
    assert len(sizes) == 4 and sizes[0] > sizes[2] + sizes[1]
    job = Job(units, sizes[2] / len(units.spans))  # the target: keep exactly sentence 2
    job.scores = [4.0, 1.0, 3.0, 2.0]  # by score alone: drop 1, 3, 2 and keep the long sentence 0
    count = fit_ratio(job, tokenizer)
    assert abs(count - sizes[2]) <= 1 and job.dropped == {0, 1, 3}


def test_a_unit_without_score_never_hides_a_scored_unit_of_its_size():
    from types import SimpleNamespace

    from dataflywheel.ops.distill.compressors import _closest_move

    job = SimpleNamespace(scores=[float("nan"), 1.0, 2.0])  # the unscored unit is seen first
    assert _closest_move(job, [5, 5, 3], set(), 5) == ({1}, set())  # drop the scored 5-token unit
