"""evolve.self_refine: rounds stop when the feedback says no change is needed or at max_rounds; every round is
kept; the judge gate keeps the refinement only when it is judged better."""

from dataflywheel.models.llm import GenerationParams
from dataflywheel.ops import OpContext, get_operator
from dataflywheel.ops.evolve.self_refine import says_stop
from dataflywheel.pipeline.apply import apply_mapper
from dataflywheel.records import make_record
from tests.conftest import OneModel

SelfRefine = get_operator("evolve.self_refine")


class Reviser:
    """A model by rule: feedback asks for more detail until an answer has ``good_after`` refinements, then says
    "NO CHANGE NEEDED"; a refinement adds one more "detail"; the judge scores the number of details (Score: n), or
    with ``judge_prefers_original`` 3 for an answer without details and 1 for one with."""

    name = "reviser"

    def __init__(self, good_after: int, judge_prefers_original: bool = False):
        self.good_after, self.prefers_original = good_after, judge_prefers_original
        self.asked: list[str] = []

    def chat(self, conversations, params: GenerationParams):
        out = []
        for conversation in conversations:
            text = conversation[-1]["content"]
            if text.startswith("Here is an instruction and a response"):
                kind = "feedback"
                details = text.split("Response:")[-1].count("detail")
                answer = "NO CHANGE NEEDED" if details >= self.good_after else "Add one more detail, please."
            elif "Improved response:" in text:
                kind = "refine"
                last = text.split("Response (version")[-1].split("\n\n")[0].split(":", 1)[1].strip()
                answer = f"{last} detail"
            elif "Score:" in text or "score" in text.lower():
                kind = "judge"
                details = text.split("<response>")[-1].count("detail")
                answer = f"Score: {(1 if details else 3) if self.prefers_original else min(5, details)}"
            else:
                kind, answer = "answer", "A first answer"
            self.asked.append(kind)
            out.append([answer] * params.n)
        return out


def sft(question, answer):
    return make_record([{"role": "user", "content": question}, {"role": "assistant", "content": answer}])


def refine(llm, records, **config):
    op = SelfRefine(SelfRefine.Config(judge_samples=1, **config), OpContext(models=OneModel(llm)))
    return op, apply_mapper(op, "refine", records)


def test_rounds_stop_when_the_feedback_says_no_change_is_needed():
    llm = Reviser(good_after=2)
    op, [item] = refine(llm, [sft("Explain rain.", "Rain falls.")], max_rounds=4)
    # feedback, refine, feedback, refine, feedback ("no change") - then only the judge
    assert llm.asked[:5] == ["feedback", "refine", "feedback", "refine", "feedback"]
    assert "refine" not in llm.asked[5:] and "feedback" not in llm.asked[5:]
    assert op.counters["stopped: the feedback said no change is needed"] == 1
    assert item.record["messages"][-1]["content"] == "Rain falls. detail detail"
    [entry] = item.record["lineage"]
    assert entry["original"] == "Rain falls."
    assert [r["feedback"] for r in entry["rounds"]] == ["Add one more detail, please."] * 2 + ["NO CHANGE NEEDED"]
    assert [r["response"] for r in entry["rounds"]] == ["Rain falls.", "Rain falls. detail",
                                                        "Rain falls. detail detail"]
    assert entry["judge"]["refined"] > entry["judge"]["original"]


def test_max_rounds_caps_the_rounds_and_the_last_refinement_is_kept():
    llm = Reviser(good_after=10)
    op, [item] = refine(llm, [sft("Explain snow.", "Snow falls.")], max_rounds=2)
    assert llm.asked.count("refine") == 2 and llm.asked.count("feedback") == 2
    assert op.counters["stopped: max_rounds reached"] == 1
    assert item.record["messages"][-1]["content"] == "Snow falls. detail detail"
    assert item.record["lineage"][-1]["rounds"][-1] == {"response": "Snow falls. detail detail", "feedback": None}


def test_the_judge_keeps_the_original_when_the_refinement_is_not_better():
    llm = Reviser(good_after=1, judge_prefers_original=True)
    op, [item] = refine(llm, [sft("Explain hail.", "Hail falls.")])
    assert item.record["messages"][-1]["content"] == "Hail falls."
    assert not item.record["lineage"]
    kept = item.record["meta"]["self_refine"]
    assert kept["kept"] == "original" and kept["rounds"][0]["feedback"] == "Add one more detail, please."
    assert item.record["scores"]["self_refine.refined"] <= item.record["scores"]["self_refine.original"]
    assert op.counters["refinements not judged better (original kept)"] == 1
    # without the judge (the paper's rule) the last answer replaces the original
    _, [plain] = refine(Reviser(good_after=1, judge_prefers_original=True), [sft("Explain hail.", "Hail falls.")],
                        judge=False)
    assert plain.record["messages"][-1]["content"] == "Hail falls. detail"


def test_an_answer_judged_good_at_once_is_left_as_it_is_with_its_round_in_meta():
    _, [item] = refine(Reviser(good_after=0), [sft("Explain fog.", "Fog forms.")])
    assert item.record["messages"][-1]["content"] == "Fog forms." and not item.record["lineage"]
    assert item.record["meta"]["self_refine"]["rounds"] == [{"response": "Fog forms.", "feedback": "NO CHANGE NEEDED"}]


def test_stop_phrases_are_read_loosely():
    assert says_stop("The response is fine.  No   change needed.", ["no change needed"])
    assert not says_stop("Change the second sentence.", ["no change needed"])
