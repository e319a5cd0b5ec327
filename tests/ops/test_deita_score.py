"""DEITA's evol score: complexity x quality per turn, summed over the turns."""

import pytest

from dataflywheel.ops import OpContext, get_operator
from dataflywheel.ops.score import judge
from dataflywheel.records import make_record


@pytest.fixture
def fake_judge(monkeypatch):
    """Complexity = words in the instruction, quality = words in the response (no model)."""
    def score_batch(self, records):
        last = {"deita_complexity": 0, "deita_quality": 1}[self.config.rubric]
        return [float(len(r["messages"][last]["content"].split())) for r in records]

    monkeypatch.setattr(judge.JudgeScorer, "score_batch", score_batch)


def test_single_turn_is_complexity_times_quality(fake_judge):
    record = make_record([{"role": "user", "content": "one two three"}, {"role": "assistant", "content": "a b"}])
    [out] = get_operator("score.deita")(None, OpContext()).score_batch([record])
    assert out == {"deita": 6.0, "deita.complexity": 3.0, "deita.quality": 2.0}


def test_multi_turn_sums_the_turns(fake_judge):
    record = make_record([{"role": "system", "content": "be kind"},
                          {"role": "user", "content": "one two"}, {"role": "assistant", "content": "a b c"},
                          {"role": "user", "content": "one"}, {"role": "assistant", "content": "a b c d"}])
    [out] = get_operator("score.deita")(None, OpContext()).score_batch([record])
    assert out["deita"] == 2 * 3 + 1 * 4


def test_preference_records_score_the_chosen_answer(fake_judge):
    record = make_record([{"role": "user", "content": "one two"}], chosen={"role": "assistant", "content": "a b c"},
                         rejected={"role": "assistant", "content": "x"})
    [out] = get_operator("score.deita")(None, OpContext()).score_batch([record])
    assert out["deita"] == 6.0
