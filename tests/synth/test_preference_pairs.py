"""Preference pairs: N samples per prompt, judged, best vs worst with a margin; nothing lost."""

import math

import pytest

from dataflywheel.ops import OpContext, Rejected, get_operator
from dataflywheel.ops.synth.preference_pairs import parse_judgement
from dataflywheel.records import make_record


@pytest.mark.parametrize("text, rubric, expected", [
    ("The response is relevant and answers the question.\nScore: 4", "self_rewarding", 4.0),
    ("Score: 2 at first glance, but on reflection **Score: 3**", "self_rewarding", 3.0),
    ("score = 5", "self_rewarding", 5.0),
    ("It is a great answer. Score: 9", "self_rewarding", math.nan),  # off the scale
    ("Good points and clear.\n4", "self_rewarding", 4.0),  # a bare number on the last line
    ("Points: 1, 2 and 3 apply.", "self_rewarding", math.nan),  # several bare numbers: ambiguous
    ("Rationale: accurate and complete.\nRating: 5", "ultrafeedback", 5.0),
    ("Rating: 0", "ultrafeedback", math.nan),  # UltraFeedback's scale starts at 1
    ("", "self_rewarding", math.nan),
])
def test_parse_judgement(text, rubric, expected):
    value = parse_judgement(text, rubric)
    assert (math.isnan(value) and math.isnan(expected)) or value == expected


def _pair(op, scores, responses=("a", "b", "c")):
    record = make_record([{"role": "user", "content": "q"}])
    return op._pair(record, record["messages"], list(responses), scores)


def test_best_and_worst_with_a_margin_else_rejected_with_everything_kept():
    cls = get_operator("synth.preference_pairs")
    op = cls(cls.Config(min_margin=1.0), OpContext())
    made = _pair(op, [3.0, 4.5, 1.0])
    assert made.record["chosen"]["content"] == "b" and made.record["rejected"]["content"] == "c"
    assert made.record["scores"]["preference.margin"] == 3.5
    tie = _pair(op, [3.0, 3.5, 3.2])
    assert isinstance(tie, Rejected) and "margin 0.50 below 1" in tie.reason and '"c"' in tie.raw
    unscored = _pair(op, [math.nan, 2.0, math.nan])
    assert isinstance(unscored, Rejected) and "fewer than 2" in unscored.reason


@pytest.mark.model
def test_pairs_from_the_bundled_model_end_to_end(tmp_path):
    """Through the executor: prompts in, TRL preference rows out, chosen scored above rejected, lineage."""
    from dataflywheel.pipeline import LocalExecutor, parse_recipe
    from tests.conftest import read_jsonl, write_jsonl

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"messages": [{"role": "user", "content": q}]}
                                                        for q in ("Name a fruit that is yellow.", "What is 2 + 2?")])
    recipe = parse_recipe({"input": {"path": str(prompts)}, "output": {"dir": str(tmp_path / "run")},
                           "cache": str(tmp_path / "calls.sqlite"), "seed": 1,
                           "steps": [{"op": "synth.preference_pairs", "samples": 3, "max_tokens": 24,
                                      "judge_model": "default", "judge_method": "expected", "judge_min_mass": 0.0,
                                      "min_margin": 0.01}]})
    manifest = LocalExecutor(recipe, quiet=True).execute()
    rows = read_jsonl(tmp_path / "run" / "output.jsonl")
    totals = manifest["totals"]
    assert totals["read"] + totals["generated"] == totals["output"] + totals["rejected"]
    assert rows, "no pair cleared the margin"
    for row in rows:
        assert set(row) >= {"prompt", "chosen", "rejected", "scores", "lineage"}
        assert row["scores"]["preference.chosen"] > row["scores"]["preference.rejected"]
        assert row["chosen"] != row["rejected"]
        assert row["lineage"][-1]["op"] == "synth.preference_pairs" and row["lineage"][-1]["parents"]
