"""Rebalance: targets reached on the AlpacaEval `dataset` labels, best-by-score down-sampling, repeats."""

import json
from collections import Counter

import pytest

from dataflywheel.ops import get_operator
from dataflywheel.ops.enhance.rebalance import largest_remainder, repeats, tag_of
from dataflywheel.records import make_record
from tests.conftest import EXAMPLE_DATA, run_steps, shared_data

OP = get_operator("enhance.rebalance")


def alpaca_eval() -> list[dict]:
    path = shared_data("alpaca_eval/outputs/gpt4_1106_preview.jsonl")
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    return [make_record([{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}],
                        meta={"dataset": r["dataset"]}, scores={"quality": float(len(r["output"]) % 97)}) for r in rows]


def distribution(records, selection) -> Counter:
    """Group -> records counted after the step (repeats included)."""
    after = Counter()
    for i, r in enumerate(records):
        if i not in selection.rejected:
            after[r["meta"]["dataset"]] += selection.meta[i].get("repeat", 1)
    return after


def scan_of(records):
    return lambda: (records[i:i + 100] for i in range(0, len(records), 100))


def shares(counts: Counter) -> dict[str, float]:
    total = sum(counts.values())
    return {g: c / total for g, c in counts.items()}


@pytest.mark.parametrize("config, expected", [
    ({"target": "uniform"}, {g: 0.2 for g in ("helpful_base", "koala", "oasst", "selfinstruct", "vicuna")}),
    ({"target": "uniform", "upsample": False}, {g: 0.2 for g in ("helpful_base", "koala", "oasst", "selfinstruct",
                                                                  "vicuna")}),
    ({"target": "proportions", "size": 600,
      "proportions": {"selfinstruct": 0.1, "oasst": 0.3, "koala": 0.2, "helpful_base": 0.2, "vicuna": 0.2}},
     {"selfinstruct": 0.1, "oasst": 0.3, "koala": 0.2, "helpful_base": 0.2, "vicuna": 0.2}),
])
def test_reaches_the_target_distribution_within_one_percent(config, expected):
    records = alpaca_eval()
    before = Counter(r["meta"]["dataset"] for r in records)
    assert before == {"selfinstruct": 252, "oasst": 188, "koala": 156, "helpful_base": 129, "vicuna": 80}
    op = OP(OP.Config(**config))
    selection = op.select(scan_of(records))
    after = distribution(records, selection)
    print(config, dict(after))
    for group, share in expected.items():
        assert abs(shares(after)[group] - share) <= 0.01, (group, shares(after))
    if not config.get("upsample", True):
        assert after == {g: 80 for g in before} and not any("repeat" in m for m in selection.meta.values())
    assert op.counters["records in group 'vicuna' before rebalancing"] == 80
    assert op.counters["records in group 'vicuna' after rebalancing (repeats counted)"] == after["vicuna"]


def test_capped_and_floor():
    records = alpaca_eval()
    op = OP(OP.Config(target="capped", cap=150, floor=100))
    after = distribution(records, op.select(scan_of(records)))
    assert after == {"selfinstruct": 150, "oasst": 150, "koala": 150, "helpful_base": 129, "vicuna": 100}


def test_down_sampling_keeps_the_best_by_score_and_up_sampling_repeats_the_best():
    records = alpaca_eval()
    selection = OP(OP.Config(target="uniform", size=500, score="quality")).select(scan_of(records))
    for group in ("selfinstruct", "vicuna"):
        positions = [i for i, r in enumerate(records) if r["meta"]["dataset"] == group]
        kept = [records[i]["scores"]["quality"] for i in positions if i not in selection.rejected]
        dropped = [records[i]["scores"]["quality"] for i in positions if i in selection.rejected]
        if dropped:
            assert min(kept) >= max(dropped)
    vicuna = [i for i, r in enumerate(records) if r["meta"]["dataset"] == "vicuna"]  # 80 records to 100
    repeated = [records[i]["scores"]["quality"] for i in vicuna if selection.meta[i].get("repeat") == 2]
    single = [records[i]["scores"]["quality"] for i in vicuna if "repeat" not in selection.meta[i]]
    assert len(repeated) == 20 and min(repeated) >= max(single)
    reason = next(iter(selection.rejected.values()))
    assert reason.startswith("rebalanced: group") and "best by quality" in reason


def test_random_sampling_is_seeded_and_max_repeat_is_counted():
    records = alpaca_eval()
    a = OP(OP.Config(target="uniform")).select(scan_of(records))
    b = OP(OP.Config(target="uniform")).select(scan_of(records))
    assert a.rejected == b.rejected and a.meta == b.meta
    op = OP(OP.Config(target="proportions", proportions={"vicuna": 1.0, "koala": 1.0}, max_repeat=2))
    after = distribution(records, op.select(scan_of(records)))
    assert after == {"vicuna": 160, "koala": 312}  # each wanted 403 (half of 805): at most 2 x its size
    assert any("'vicuna' below its target" in k for k in op.counters)
    assert any("'koala' below its target" in k for k in op.counters)


def test_helpers():
    assert largest_remainder(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert repeats([2, 0, 1], 2, 5) == {2: 1, 0: 1, 1: 0}
    assert repeats([2, 0], 5, 5) == {2: 3, 0: 2}
    assert tag_of({"meta": {"a": {"b": 3}}}, "meta.a.b") == "3" and tag_of({"meta": {}}, "meta.x") == "(none)"
    with pytest.raises(ValueError):
        OP.Config(target="proportions")


def test_rebalance_step_on_the_example_data(tmp_path):
    rows = [json.loads(line) for line in EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()]
    _, manifest, out, rejects = run_steps(tmp_path, [{"op": "enhance.rebalance", "target": "uniform",
                                                      "upsample": False}], rows)
    groups = ("helpful_base", "koala", "oasst", "selfinstruct", "vicuna")
    assert Counter(r["rebalance_group"] for r in out) == {g: 18 for g in groups}  # meta is flattened in output rows
    assert len(rejects) == len(rows) - 90
    warnings = manifest["steps"][-1]["counters"]
    assert warnings["records in group 'selfinstruct' before rebalancing"] == 82
    assert warnings["records in group 'selfinstruct' after rebalancing (repeats counted)"] == 18


class KeywordEmbedder:
    """Two directions: texts about cooking and the rest (a stand-in for the embedder role)."""

    def embedder(self, role):
        assert role == "embedder"
        return self

    def embed(self, texts):
        import numpy as np
        return np.array([[1.0, 0.0] if "cook" in t else [0.0, 1.0] for t in texts], dtype=np.float32)


def test_cluster_groups_are_balanced():
    from dataflywheel.ops import OpContext

    records = [make_record([{"role": "user", "content": f"cook dish {i}"}]) for i in range(30)] + \
        [make_record([{"role": "user", "content": f"prove lemma {i}"}]) for i in range(10)]
    op = OP(OP.Config(by="cluster", clusters=2, target="uniform", upsample=False), OpContext(models=KeywordEmbedder()))
    selection = op.select(scan_of(records))
    kept = [records[i]["messages"][0]["content"] for i in range(40) if i not in selection.rejected]
    assert sum("cook" in t for t in kept) == 10 and sum("prove" in t for t in kept) == 10
    groups = {selection.meta[i]["rebalance_group"] for i in selection.meta}
    assert groups == {"cluster 0", "cluster 1"}


class LetterTagger:
    """Answers 'A' (math) for texts with digits, 'B' (writing) otherwise, 'C'-ish noise for 'hmm'."""

    tokenizer = None

    def chat_top_logprobs(self, conversations, k, labels):
        import math
        assert labels == ("A", "B", "C")
        out = []
        for [turn] in conversations:
            text = turn["content"].split("###")[1]
            if "hmm" in text:
                out.append({"Well": math.log(0.9), "A": math.log(0.05)})
            else:
                out.append({" A" if any(c.isdigit() for c in text) else "B": math.log(0.8), "C.": math.log(0.1)})
        return out


def test_llm_tagger_groups_and_records_it_cannot_place():
    from dataflywheel.ops import OpContext
    from tests.conftest import OneModel

    records = [make_record([{"role": "user", "content": f"add {i} and {i}"}]) for i in range(12)] + \
        [make_record([{"role": "user", "content": "write a poem" + " please" * i}]) for i in range(4)] + \
        [make_record([{"role": "user", "content": "hmm"}])]
    op = OP(OP.Config(by="llm", labels=["math", "writing", "other"], target="uniform", upsample=False),
            OpContext(models=OneModel(LetterTagger(), ("judge",))))
    selection = op.select(scan_of(records))
    kept = Counter(selection.meta[i]["rebalance_group"] for i in range(len(records)) if i not in selection.rejected)
    assert kept == {"math": 1, "writing": 1, "(none)": 1}  # the smallest group has one record
    assert op.counters["records the LLM tagger could not place (group (none))"] == 1
    assert op.counters["records in group 'math' before rebalancing"] == 12
    with pytest.raises(ValueError):
        OP.Config(by="llm", labels=["one"])
