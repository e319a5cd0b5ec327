"""Self-Rewarding iterations with the bundled SmolLM2: pairs with chosen scored above rejected, a second
iteration generating and judging with the first iteration's adapter and training on top of it, and a re-run
that redoes nothing."""

import json

import pytest

from dataflywheel.loop.self_rewarding import SelfRewardingConfig, self_rewarding
from dataflywheel.train.fit import TrainConfig
from tests.conftest import write_jsonl

pytestmark = pytest.mark.model

PROMPTS = ["Name a fruit that is yellow.", "What is the capital of France?", "Give one tip for better sleep.",
           "What do bees make?"]


def test_two_iterations_each_training_on_the_last(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"instruction": p} for p in PROMPTS])
    config = SelfRewardingConfig(iterations=2, samples=2, max_tokens=16, judge_method="expected", judge_min_mass=0.0,
                                 min_margin=0.05, train=TrainConfig(max_steps=1, batch_size=2, max_length=64))
    history = self_rewarding(prompts, tmp_path / "sr", config, quiet=True)
    assert [m["iteration"] for m in history] == [1, 2]
    for metrics in history:
        assert metrics["pairs"] >= 1 and metrics["steps"] == 1
        pairs = [json.loads(line) for line in (tmp_path / "sr" / f"iteration_{metrics['iteration']}" / "data" /
                                               "output.jsonl").read_text().splitlines()]
        for pair in pairs:  # chosen is the answer the model's own judge scored higher, by the margin
            assert pair["scores"]["preference.chosen"] >= pair["scores"]["preference.rejected"] + 0.05
    first, second = history
    assert first["generator"]["options"] == {}
    assert second["generator"]["options"] == {"adapter": [first["adapter"]]}  # M1 generates and judges
    manifest = json.loads((tmp_path / "sr" / "iteration_2" / "data" / "manifest.json").read_text())
    assert any(first["adapter"] in name for name in manifest["models"])  # the model M1 answered and judged
    trained = json.loads((tmp_path / "sr" / "iteration_2" / "train" / "train_config.json").read_text())
    assert trained["base_adapters"] == [first["adapter"]] and trained["method"] == "dpo"
    # a finished iteration is not redone
    stamp = (tmp_path / "sr" / "iteration_2" / "metrics.json").stat().st_mtime_ns
    assert self_rewarding(prompts, tmp_path / "sr", config, quiet=True) == history
    assert (tmp_path / "sr" / "iteration_2" / "metrics.json").stat().st_mtime_ns == stamp
