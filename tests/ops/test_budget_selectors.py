import numpy as np
import pytest

from dataflywheel.models import ModelRegistry
from dataflywheel.ops import OpContext, get_operator
from dataflywheel.records import make_record


def records_with(values):
    return [make_record([{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"a{i}"}],
                        scores={"q": v, "len": float(i)}) for i, v in enumerate(values)]


def run(name, records, context=None, **config):
    cls = get_operator(name)
    return cls(cls.Config(**config), context or OpContext()).select(lambda: iter([records[:7], records[7:]]))


def test_top_k_budget_is_met_exactly_and_reasons_name_the_rank():
    records = records_with([0.3, 0.9, float("nan"), 0.5, 0.1, 0.8, 0.7, 0.2, 0.6, 0.4])
    selection = run("select.top_k", records, scores={"q": 1.0}, count=3)
    kept = sorted(set(range(10)) - set(selection.rejected))
    assert kept == [1, 5, 6]
    assert selection.rejected[2].startswith("not selected: rank 10 of 10 by 1*q")
    assert len(run("select.top_k", records, scores={"q": 1.0}, fraction=0.5).rejected) == 5
    threshold = run("select.top_k", records, scores={"q": 1.0}, threshold=0.65)
    assert sorted(set(range(10)) - set(threshold.rejected)) == [1, 5, 6]
    assert "< threshold 0.65" in threshold.rejected[0]
    both = run("select.top_k", records, scores={"q": 1.0}, threshold=0.65, fraction=0.2)
    assert sorted(set(range(10)) - set(both.rejected)) == [1, 5]  # 20% of all 10 records, among those passing


def test_top_k_weighted_combination():
    records = records_with([1.0, 0.0, 0.5])
    combined = run("select.top_k", records, scores={"q": 1.0, "len": 1.0}, count=1)
    assert set(combined.rejected) == {0, 1}  # record 2: mid q, highest len


def test_top_k_needs_a_score():
    with pytest.raises(ValueError, match="name at least one score"):
        get_operator("select.top_k").Config(count=3)


@pytest.mark.model
def test_embedding_selectors_with_the_bundled_embedder():
    texts = ["How do I bake bread?", "How can I bake bread at home?", "Give me a bread recipe.",
             "What is the capital of France?", "Name the capital city of France.", "Explain quantum tunnelling.",
             "Write a poem about the sea.", "Translate 'hello' into Spanish.", "What is 17 times 3?",
             "List three prime numbers."]
    records = records_with(np.linspace(1, 0, len(texts)))
    for record, text in zip(records, texts):
        record["messages"][0]["content"] = text
    context = OpContext(seed=0, models=ModelRegistry(cache=None))
    deita = run("select.deita", records, context, score="q", tau=0.7, count=5, field="instruction")
    kept = sorted(set(range(10)) - set(deita.rejected))
    assert len(kept) == 5 and 0 in kept and not {0, 1} <= set(kept)
    for name in ("select.k_center", "select.density_sample"):
        first = run(name, records, context, count=4, field="instruction")
        assert len(first.rejected) == 6
        assert run(name, records, context, count=4, field="instruction").rejected == first.rejected
    balanced = run("select.cluster_balanced", records, context, count=4, n_clusters=2, field="instruction")
    assert len(balanced.rejected) == 6


@pytest.mark.model
def test_embedding_scores_are_written_and_drop_nothing(tmp_path):
    from dataflywheel.pipeline import LocalExecutor, parse_recipe
    from tests.conftest import EXAMPLE_DATA, read_jsonl

    recipe = parse_recipe({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / "run")},
                           "cache": "off", "steps": [{"op": "score.embedding", "field": "instruction"}]})
    manifest = LocalExecutor(recipe, quiet=True).execute()
    assert manifest["totals"]["rejected"] == 0
    rows = read_jsonl(tmp_path / "run" / "output.jsonl")
    assert all({"density", "centroid_distance"} <= set(r["scores"]) for r in rows)
    # four answers share each instruction: their instruction embeddings are identical, so densities are high
    assert max(r["scores"]["density"] for r in rows) > min(r["scores"]["density"] for r in rows)


class _FixedEmbedder:
    """Two tight groups of records: 'a...' texts near e1, 'b...' texts near e2."""

    def embed(self, texts):
        rows = np.array([[1.0, 0.05 * i, 0.0] if t.startswith("a") else [0.0, 0.05 * i, 1.0]
                         for i, t in enumerate(texts)], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


class _Models:
    def embedder(self, role):
        return _FixedEmbedder()


def grouped(n_a, n_b, **scores):
    texts = [f"a{i}" for i in range(n_a)] + [f"b{i}" for i in range(n_b)]
    return [make_record([{"role": "user", "content": t}, {"role": "assistant", "content": "x"}],
                        scores={k: v[i] for k, v in scores.items()}) for i, t in enumerate(texts)]


def test_facility_location_represents_both_groups_and_narrows_by_score():
    records = grouped(12, 4, ifd=[0.9] * 12 + [0.1] * 4)
    context = OpContext(models=_Models())
    cls = get_operator("select.facility_location")
    plain = cls(cls.Config(count=2, field="instruction"), context).select(lambda: iter([records]))
    kept = sorted(set(range(16)) - set(plain.rejected))
    assert len(kept) == 2 and kept[0] < 12 <= kept[1]
    top = cls(cls.Config(count=2, field="instruction", score="ifd", score_fraction=0.5), context)
    kept = sorted(set(range(16)) - set(top.select(lambda: iter([records])).rejected))
    assert len(kept) == 2 and max(kept) < 12  # only the top half by ifd (all 'a') were candidates


def test_cluster_proportional_operator():
    records = grouped(12, 4)
    cls = get_operator("select.cluster_proportional")
    selection = cls(cls.Config(count=8, n_clusters=2, field="instruction"), OpContext(models=_Models())).select(
        lambda: iter([records]))
    kept = sorted(set(range(16)) - set(selection.rejected))
    assert sum(i < 12 for i in kept) == 6 and sum(i >= 12 for i in kept) == 2
