"""evolve.judge and evolve.pairwise: rubric parsing, sample averaging, both-order verdicts, stored rationales."""

import math
import re

import pytest

from dataflywheel.models.errors import ModelAuthError, ModelFeatureError, ModelRequestError
from dataflywheel.ops import OpContext, get_operator
from dataflywheel.ops.base import Rejected
from dataflywheel.ops.evolve.pairwise import combine, majority, parse_verdict
from dataflywheel.ops.evolve.rubrics import RUBRICS, parse_rating
from dataflywheel.records import make_record
from tests.conftest import OneModel

ANSWER = re.compile(r"\[The Start of Assistant A's Answer\]\n(.*?)\n\[The End of Assistant A's Answer\]", re.S)


class ScriptedJudge:
    """Answers judge prompts by rule: ``rate(prompt, k)`` gives the k-th sample of a pointwise answer,
    ``prefer(first, second)`` a pairwise answer from the two answers as shown; records prompts and params."""

    def __init__(self, rate=None, prefer=None, top=None, error=None):
        self.rate, self.prefer, self.top, self.error = rate, prefer, top, error
        self.prompts, self.params = [], []

    def chat(self, conversations, params):
        if self.error:
            raise self.error
        self.params.append(params)
        out = []
        for conversation in conversations:
            text = conversation[-1]["content"]
            self.prompts.append(text)
            if "Assistant B's Answer" in text:
                first = ANSWER.search(text).group(1)
                second = text.split("[The Start of Assistant B's Answer]\n", 1)[1].split("\n[The End")[0]
                out.append([self.prefer(first, second) for _ in range(params.n)])
            else:
                out.append([self.rate(text, k) for k in range(params.n)])
        return out

    def chat_top_logprobs(self, conversations, k=20, labels=()):
        if self.error:
            raise self.error
        out = []
        for conversation in conversations:
            text = conversation[-1]["content"]
            self.prompts.append(text)
            first = text.split("### Response A:\n", 1)[1].split("\n\n### Response B:")[0]
            second = text.split("### Response B:\n", 1)[1].split("\n\nWhich response")[0]
            out.append(self.top(first, second))
        return out


def judge_op(llm, seed=0, **config):
    cls = get_operator("evolve.judge")
    return cls(cls.Config(**config), OpContext(seed=seed, models=OneModel(llm, roles=("judge",))))


def pairwise_op(llm, **config):
    cls = get_operator("evolve.pairwise")
    return cls(cls.Config(**config), OpContext(models=OneModel(llm, roles=("judge",))))


def sft(question, answer, **meta):
    return make_record([{"role": "user", "content": question}, {"role": "assistant", "content": answer}], meta=meta)


def pair(question, chosen, rejected):
    return make_record([{"role": "user", "content": question}], chosen={"role": "assistant", "content": chosen},
                       rejected={"role": "assistant", "content": rejected})


# ---- parsers ------------------------------------------------------------------------------------------


def test_parse_rating_reads_the_mt_bench_format():
    assert parse_rating("The answer is short but right. Rating: [[7]]") == 7
    assert parse_rating("Rating: [[7.5]]") == 7.5
    assert parse_rating("[[3]] at first, but on reflection: [[8]]") == 8  # the last one
    assert parse_rating("Rating: [6]") == 6  # FastChat's single-bracket fallback
    assert parse_rating("Rating: 4") == 4
    assert math.isnan(parse_rating("Rating: [[11]]"))  # off the 1-10 scale
    assert math.isnan(parse_rating("A fine answer about [[the]] topic."))


def test_parse_verdict_needs_exactly_one_kind_of_verdict():
    assert parse_verdict("A is more detailed. [[A]]") == "A"
    assert parse_verdict("[[b]]") == "B"
    assert parse_verdict("Both are equal. [[C]]") == "tie"
    assert parse_verdict("[[A]] if assistant A is better, [[B]] if assistant B is better") is None  # an echo
    assert parse_verdict("Assistant A is better.") is None
    assert majority(["A", "A", "B"]) == "A" and majority(["A", "B", None]) == "tie" and majority([None]) is None
    assert combine("A", "A") == ("A", True) and combine("tie", "tie") == ("tie", True)
    assert combine("A", "B") == ("tie", False) and combine("A", "tie") == ("tie", False)
    assert combine(None, "A") == (None, None)


def test_reused_rubrics_render_the_existing_templates_and_parse_their_formats():
    prompt = RUBRICS["self_rewarding"].render("Name a prime.", "7")
    assert "additive 5-point scoring system" in prompt and '"Score: <total points>"' in prompt
    assert RUBRICS["self_rewarding"].parse("Relevant and correct.\nScore: 4") == 4
    assert "Give a score from 0 to 5" in RUBRICS["alpagasus"].render("Q", "A")
    assert RUBRICS["alpagasus"].parse("4 - accurate.") == 4
    assert "Give a score from 1 to 6" in RUBRICS["deita_quality"].render("Q", "A")
    assert "[The Start of Reference Answer]\nforty-two" in RUBRICS["reference"].render("Q", "A", "forty-two")


# ---- evolve.judge ---------------------------------------------------------------------------------------


def test_judge_averages_seeded_samples_and_stores_rationales():
    answers = ["Detailed and correct. Rating: [[6]]", "Good. Rating: [[8]]", "I cannot rate this."]
    llm = ScriptedJudge(rate=lambda prompt, k: answers[k])
    op = judge_op(llm, seed=5, rubric="mt_bench", samples=3, temperature=0.9, max_tokens=64)
    [out] = op.map_batch([sft("What is 2+2?", "4", source="x")])
    assert out["scores"]["judge.mt_bench"] == 7.0
    entry = out["meta"]["judge"]["mt_bench"]
    assert entry["score"] == 7.0 and entry["samples"] == [6.0, 8.0, None] and entry["rationales"] == answers
    assert out["meta"]["source"] == "x" and out["id"] == sft("What is 2+2?", "4")["id"]
    [params] = llm.params
    assert (params.n, params.temperature, params.seed, params.max_tokens) == (3, 0.9, 5, 64)
    assert op.counters["judge answers without a readable score"] == 1
    assert "[Question]\nWhat is 2+2?" in llm.prompts[0] and "[The Start of Assistant's Answer]\n4\n" in llm.prompts[0]
    assert op.writes_scores() == ("judge.mt_bench",)


def test_judge_one_sample_is_greedy_and_unreadable_answers_give_nan():
    llm = ScriptedJudge(rate=lambda prompt, k: "Score: 3" if "fine" in prompt else "no idea")
    op = judge_op(llm, rubric="self_rewarding", score_name="sr")
    out = op.map_batch([sft("Q1", "a fine answer"), sft("Q2", "another answer")])
    assert llm.params[0].temperature == 0.0 and llm.params[0].n == 1
    assert out[0]["scores"]["sr"] == 3.0 and math.isnan(out[1]["scores"]["sr"])
    assert out[1]["meta"]["judge"]["self_rewarding"] == {"score": None, "samples": [None],
                                                          "rationales": ["no idea"], "model": "judge"}
    assert op.counters["records without a readable score (score NaN)"] == 1


def test_reference_rubric_reads_a_nested_meta_key_and_skips_records_without_one():
    llm = ScriptedJudge(rate=lambda prompt, k: "Matches the reference. [[9]]")
    op = judge_op(llm, rubric="reference", reference="gold.answer")
    records = [sft("Capital of France?", "Paris", gold={"answer": "Paris."}), sft("Capital of Peru?", "Lima"),
               sft("Capital of Chad?", "N'Djamena", gold={"answer": "  "})]
    out = op.map_batch(records)
    assert out[0]["scores"]["judge.reference"] == 9.0
    assert all(math.isnan(r["scores"]["judge.reference"]) and "judge" not in r["meta"] for r in out[1:])
    assert op.counters["records without a reference in meta.gold.answer (score NaN)"] == 2
    assert len(llm.prompts) == 1 and "[The Start of Reference Answer]\nParis.\n" in llm.prompts[0]


def test_judge_keeps_other_rubrics_and_skips_prompt_only_records():
    llm = ScriptedJudge(rate=lambda prompt, k: "4")
    op = judge_op(llm, rubric="alpagasus")
    record = sft("Q", "A", judge={"mt_bench": {"score": 5.0}})
    prompt_only = make_record([{"role": "user", "content": "Unanswered question"}])
    out = op.map_batch([record, prompt_only])
    assert out[0]["meta"]["judge"]["mt_bench"] == {"score": 5.0} and out[0]["meta"]["judge"]["alpagasus"]["score"] == 4
    assert math.isnan(out[1]["scores"]["judge.alpagasus"]) and len(llm.prompts) == 1
    assert op.counters["records without a response (score NaN)"] == 1


# ---- evolve.pairwise -----------------------------------------------------------------------------------


def prefers_good(first, second):
    """A consistent judge: the answer with 'good' in it wins wherever it is shown."""
    if "good" in first and "good" not in second:
        return "Assistant A is correct. [[A]]"
    if "good" in second and "good" not in first:
        return "Assistant B is correct. [[B]]"
    return "Equally helpful. [[C]]"


def test_pairwise_consistent_judge_gives_a_verdict_with_rationales_of_both_orders():
    llm = ScriptedJudge(prefer=prefers_good)
    op = pairwise_op(llm)
    out = op.map_batch([pair("Q1", "a good answer", "a bad answer"), pair("Q2", "a bad answer", "a good answer"),
                        pair("Q3", "good one", "good two")])
    assert [r["meta"]["pairwise"]["verdict"] for r in out] == ["A", "B", "tie"]
    assert [r["scores"]["judge.pairwise"] for r in out] == [1.0, 0.0, 0.5]
    note = out[0]["meta"]["pairwise"]
    assert note["orders"] == ["A", "A"] and note["consistent"] is True
    assert (note["a"], note["b"]) == ("chosen", "rejected")
    assert note["rationales"] == [["Assistant A is correct. [[A]]"], ["Assistant B is correct. [[B]]"]]
    # both orders were asked: chosen first, then rejected first
    assert ANSWER.search(llm.prompts[0]).group(1) == "a good answer"
    assert ANSWER.search(llm.prompts[1]).group(1) == "a bad answer"
    assert op.counters["pairs where the judge prefers rejected"] == 1
    assert not op.counters["position-inconsistent pairs (tie)"]


def test_pairwise_position_bias_becomes_a_counted_tie():
    llm = ScriptedJudge(prefer=lambda first, second: "The first one. [[A]]")
    op = pairwise_op(llm)
    [out] = op.map_batch([pair("Q", "a good answer", "a bad answer")])
    note = out["meta"]["pairwise"]
    assert note["verdict"] == "tie" and note["orders"] == ["A", "B"] and note["consistent"] is False
    assert out["scores"]["judge.pairwise"] == 0.5 and op.counters["position-inconsistent pairs (tie)"] == 1


def test_pairwise_drop_disagreeing_rejects_pairs_where_the_judge_prefers_rejected():
    op = pairwise_op(ScriptedJudge(prefer=prefers_good), drop_disagreeing=True)
    kept, dropped, tie = op.map_batch([pair("Q1", "good", "bad"), pair("Q2", "bad", "good"), pair("Q3", "x", "y")])
    assert isinstance(dropped, Rejected) and dropped.reason == "the judge prefers rejected over chosen in both orders"
    assert dropped.record["meta"]["pairwise"]["verdict"] == "B"
    assert kept["meta"]["pairwise"]["verdict"] == "A" and tie["meta"]["pairwise"]["verdict"] == "tie"


def test_pairwise_on_meta_answers_with_sample_votes_and_unreadable_answers():
    votes = iter(["[[A]]", "[[A]]", "[[B]]", "[[B]]", "[[B]]", "[[A]]", "nothing", "nothing", "nothing"] * 2)
    llm = ScriptedJudge(prefer=lambda first, second: next(votes))
    op = pairwise_op(llm, a="response", b="answers.other", samples=3)
    records = [sft("Q", "mine", answers={"other": "theirs"}), sft("Q2", "only one answer")]
    out = op.map_batch(records)
    # order 1: A, A, B -> A; order 2: B, B, A -> B (= A of the first order): a consistent A
    assert out[0]["meta"]["pairwise"]["verdict"] == "A" and llm.params[0].n == 3 and llm.params[0].temperature == 0.7
    assert math.isnan(out[1]["scores"]["judge.pairwise"]) and "pairwise" not in out[1]["meta"]
    assert op.counters["records without both answers (response, answers.other): not judged"] == 1
    unreadable = pairwise_op(ScriptedJudge(prefer=lambda first, second: "I like both."))
    [none] = unreadable.map_batch([pair("Q", "a", "b")])
    assert none["meta"]["pairwise"]["verdict"] is None and math.isnan(none["scores"]["judge.pairwise"])
    assert unreadable.counters["judge answers without one of [[A]], [[B]], [[C]]"] == 2


def test_pairwise_logprobs_reads_the_first_token_and_falls_back_to_the_answer():
    def top(first, second):
        if "unsure" in first + second:
            return {"The": -0.1, "A": -4.0, "B": -4.5}  # A and B hold ~3%: not trusted
        if "good" in first:
            return {"A": math.log(0.8), "B": math.log(0.15)}
        return {"A": math.log(0.3), "B": math.log(0.6)}
    llm = ScriptedJudge(top=top, rate=lambda prompt, k: "B, because")
    op = pairwise_op(llm, method="logprobs")
    good, unsure = op.map_batch([pair("Q", "good", "bad"), pair("Q", "unsure", "other")])
    assert good["meta"]["pairwise"]["verdict"] == "A" and good["meta"]["pairwise"]["p_first_shown"] == [0.8421, 0.3333]
    assert unsure["meta"]["pairwise"]["orders"] == ["B", "A"] and unsure["meta"]["pairwise"]["verdict"] == "tie"
    assert op.counters["orders where A and B hold less than 0.5 (answer read)"] == 2
    assert llm.params[0].max_tokens == 4


def test_pairwise_logprobs_on_a_backend_without_logprobs_reads_the_answers():
    """As train/evaluate's win rate always did (one piece of code now): it used to fail every record."""
    class NoLogprobs(ScriptedJudge):
        def chat_top_logprobs(self, conversations, k=20, labels=()):
            raise ModelFeatureError("this backend gives no logprobs")

    llm = NoLogprobs(rate=lambda prompt, k: "A" if "### Response A:\ngood" in prompt else "B")
    op = pairwise_op(llm, method="logprobs")
    [judged] = op.map_batch([pair("Q", "good", "bad")])
    assert judged["meta"]["pairwise"]["verdict"] == "A" and judged["meta"]["pairwise"]["orders"] == ["A", "A"]
    assert op.counters["orders where A and B hold less than 0.5 (answer read)"] == 2

    class Failing(ScriptedJudge):  # a failed request is not a backend without logprobs: it is the record's error
        def chat_top_logprobs(self, conversations, k=20, labels=()):
            raise ModelRequestError("500 from the server")

    with pytest.raises(ModelRequestError):
        pairwise_op(Failing(rate=lambda prompt, k: "A"), method="logprobs").map_batch([pair("Q", "good", "bad")])


@pytest.mark.parametrize("error", [ModelAuthError("401 from the server"), ModelRequestError("request failed")])
def test_model_errors_propagate_not_ties_or_nan(error):
    with pytest.raises(type(error)):
        judge_op(ScriptedJudge(error=error)).map_batch([sft("Q", "A")])
    with pytest.raises(type(error)):
        pairwise_op(ScriptedJudge(error=error)).map_batch([pair("Q", "a", "b")])
    with pytest.raises(type(error)):
        pairwise_op(ScriptedJudge(error=error), method="logprobs").map_batch([pair("Q", "a", "b")])


def test_recipe_check_knows_the_scores_the_judges_write(tmp_path):
    from dataflywheel.pipeline import parse_recipe
    from tests.conftest import write_jsonl

    rows = [{"messages": [{"role": "user", "content": "Q"}]}]
    data = {"input": {"path": str(write_jsonl(tmp_path / "in.jsonl", rows))}, "output": {"dir": str(tmp_path / "run")}}
    judge = {"op": "evolve.judge", "rubric": "reference"}
    parse_recipe({**data, "steps": [judge, {"op": "select.score_range", "score": "judge.reference", "min": 5}]})
    parse_recipe({**data, "steps": [{"op": "evolve.pairwise", "score_name": "win"},
                                    {"op": "select.score_range", "score": "win", "min": 0.5}]})
    with pytest.raises(ValueError, match="judge.mt_bench.*come from .*evolve.judge"):
        parse_recipe({**data, "steps": [judge, {"op": "select.score_range", "score": "judge.mt_bench", "min": 5}]})
