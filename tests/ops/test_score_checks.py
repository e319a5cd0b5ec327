"""Selectors and filters over a score that is not there fail loudly; partly missing scores are counted."""

import pytest

from dataflywheel.ops import OpContext, get_operator
from dataflywheel.ops.select.score_check import MissingScoreError
from dataflywheel.records import make_record


def records(n=6, **scores):
    return [make_record([{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"a{i}"}],
                        scores={k: v[i] for k, v in scores.items() if v[i] is not None}) for i in range(n)]


def select(name, rows, **config):
    op = get_operator(name)
    selector = op(op.Config(**config), OpContext())
    return selector, selector.select(lambda: iter([rows[:3], rows[3:]]))


def test_top_k_on_a_score_no_record_has_names_the_score_and_its_producers():
    rows = records(ifd=[0.5, 0.7, 0.1, 0.9, 0.3, 0.2])
    with pytest.raises(MissingScoreError, match=r"'ifdd'.*did you mean 'ifd'"):
        select("select.top_k", rows, scores={"ifdd": 1.0}, count=2)
    with pytest.raises(ValueError, match=r"no record has the score 'judge.alpagasus'.*score.judge"):
        select("select.top_k", rows, scores={"judge.alpagasus": 1.0}, count=2)


def test_a_score_missing_on_some_records_is_counted_and_ranked_last():
    rows = records(q=[0.5, None, 0.1, 0.9, None, 0.2])
    selector, selection = select("select.top_k", rows, scores={"q": 1.0}, count=4)
    assert sorted(set(range(6)) - set(selection.rejected)) == [0, 2, 3, 5]
    assert selector.counters["records without score 'q' (ranked last)"] == 2


def test_other_selectors_check_their_score():
    rows = records(q=[0.5, 0.7, 0.1, 0.9, 0.3, 0.2])
    with pytest.raises(MissingScoreError, match="'quality'"):
        select("select.minhash_dedup", rows, keep="quality")
    with pytest.raises(MissingScoreError, match="'perplexity'.*score.perplexity"):
        select("select.perplexity_filter", rows)


def test_score_range_filter():
    op = get_operator("select.score_range")
    rows = records(judge=[4.5, 3.0, None, 5.0, 4.4, 4.6])
    rules = op(op.Config(score="judge", min=4.5))
    reasons = rules.reject_reasons(rows)
    assert [r is None for r in reasons] == [True, False, False, True, False, True]
    assert reasons[2] == "no score 'judge'" and reasons[1] == "judge 3 < 4.5"
    assert rules.counters["records without score 'judge'"] == 1
    strict = op(op.Config(score="judge", max=4.5, inclusive=False, missing="keep"))
    assert [r is None for r in strict.reject_reasons(rows)] == [False, True, True, False, True, False]
    with pytest.raises(MissingScoreError, match="'judgee'"):
        op(op.Config(score="judgee", min=1)).reject_reasons(rows)
    with pytest.raises(ValueError, match="give min, max or both"):
        op.Config(score="judge")


def test_perplexity_filter_drops_both_tails():
    values = [float(v) for v in range(1, 21)]
    rows = records(20, perplexity=values)
    _, selection = select("select.perplexity_filter", rows, low=0.1, high=0.1)
    assert sorted(selection.rejected) == [0, 1, 18, 19]
    assert "lowest" in selection.rejected[0] and "highest" in selection.rejected[19]


def test_recipe_naming_a_score_nothing_can_write_is_an_error_before_any_work(tmp_path):
    """A typo, or a selector without its scorer, stops at validation (exit 2) naming step and score;
    a score that an earlier step writes, or that the input already carries, passes."""
    from dataflywheel.io import write_records
    from dataflywheel.pipeline import RecipeError, parse_recipe

    plain, scored = tmp_path / "plain.jsonl", tmp_path / "scored.jsonl"
    write_records(records(), plain)
    write_records(records(ifd=[0.5, 0.7, 0.1, 0.9, 0.3, 0.2]), scored, with_scores=True)

    def recipe(path, *steps):
        return {"input": {"path": str(path)}, "output": {"dir": str(tmp_path / "run")}, "steps": list(steps)}

    top = {"op": "select.top_k", "scores": {"ifdd": 1.0}, "count": 2}
    rng = {"op": "select.score_range", "score": "judge.alpagasus", "min": 4}
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe(plain, top, rng))
    message = str(err.value)
    assert "step 1 (select.top_k)" in message and "'ifdd'" in message and "did you mean 'ifd'" in message
    assert "step 2 (select.score_range)" in message and "score.judge" in message  # every problem at once
    assert not (tmp_path / "run").exists()

    parse_recipe(recipe(scored, {**top, "scores": {"ifd": 1.0}}))  # the input carries it
    parse_recipe(recipe(plain, {"op": "score.judge"}, rng))  # an earlier step writes it
    parse_recipe(recipe(plain, {"op": "score.ifd", "score_name": "x"}, {**top, "scores": {"x.answer_loss": 1}}))
    with pytest.raises(RecipeError, match="'ifd'"):  # a scorer renamed to x writes x, not ifd
        parse_recipe(recipe(plain, {"op": "score.ifd", "score_name": "x"}, {**top, "scores": {"ifd": 1.0}}))
    with pytest.raises(RecipeError, match="'ifd'"):  # a built-in mapper writes no score
        parse_recipe(recipe(plain, {"op": "enhance.normalize"}, {**top, "scores": {"ifd": 1.0}}))
    # after a plugin mapper (which may write anything) the check trusts the name; the run checks it
    parse_recipe({**recipe(plain, {"op": "test.shout_batch"}, {**top, "scores": {"ifd": 1.0}}),
                  "plugins": ["tests.pipeline.gen_plugins"]})
