"""LESS with the bundled SmolLM2 on a tiny pool: records like the target examples rank highest."""

import numpy as np
import pytest
import torch

from dataflywheel.io import write_records
from dataflywheel.ops import OpContext, get_operator
from dataflywheel.records import make_record

pytestmark = pytest.mark.model

MATH = [("What is 12 plus 30?", "12 plus 30 is 42."), ("What is 7 times 8?", "7 times 8 is 56."),
        ("What is 100 minus 45?", "100 minus 45 is 55."), ("What is 9 plus 16?", "9 plus 16 is 25."),
        ("What is 6 times 7?", "6 times 7 is 42."), ("What is 81 divided by 9?", "81 divided by 9 is 9.")]
POEMS = [("Write a line about the sea.", "The grey sea sighs beneath a sleepy moon."),
         ("Write a line about autumn.", "Red leaves drift down like slow and quiet fire."),
         ("Write a line about snow.", "Soft snow hushes every street to sleep."),
         ("Write a line about spring.", "Green buds wake and stretch toward the sun."),
         ("Write a line about rain.", "Rain taps its silver fingers on the glass."),
         ("Write a line about night.", "Night folds the hills in velvet dark.")]


def rec(q, a):
    return make_record([{"role": "user", "content": q}, {"role": "assistant", "content": a}])


def test_less_prefers_records_like_the_target(tmp_path):
    target = tmp_path / "target.jsonl"
    write_records([rec("What is 15 plus 27?", "15 plus 27 is 42."), rec("What is 4 times 9?", "4 times 9 is 36.")],
                  target, "messages")
    pool = [rec(q, a) for q, a in MATH + POEMS]
    op = get_operator("select.less")
    selector = op(op.Config(target=str(target), count=6, dims=1024, max_length=64, warmup_fraction=0.5, lr=1e-3),
                  OpContext(seed=0))
    selection = selector.select(lambda: iter([pool[:5], pool[5:]]))
    scores = np.array([selection.scores[i]["less"] for i in range(len(pool))])
    assert scores[:6].mean() > scores[6:].mean()
    kept = set(range(len(pool))) - set(selection.rejected)
    assert len(kept) == 6 and len(kept & set(range(6))) >= 5
    assert "not selected by LESS" in next(iter(selection.rejected.values()))


def test_less_sums_checkpoints_weighted_by_learning_rate(tmp_path, monkeypatch):
    """checkpoints: 2 scores the pool at the last two warm-up epochs' checkpoints; the result is their sum
    weighted by each epoch's mean learning rate (renormalised), the earlier (higher-rate) epoch weighing more."""
    from dataflywheel.algorithms import less

    per_checkpoint = []
    scores_of = less.less_scores
    monkeypatch.setattr(less, "less_scores", lambda *a, **k: per_checkpoint.append(scores_of(*a, **k)) or per_checkpoint[-1])
    target = tmp_path / "target.jsonl"
    write_records([rec("What is 15 plus 27?", "15 plus 27 is 42.")], target, "messages")
    pool = [rec(q, a) for q, a in MATH + POEMS]
    op = get_operator("select.less")
    config = op.Config(target=str(target), count=6, dims=256, max_length=48, warmup_fraction=0.5, lr=1e-3,
                       warmup_epochs=3, checkpoints=2)
    selection = op(config, OpContext(seed=0)).select(lambda: iter([pool]))
    combined = np.array([selection.scores[i]["less"] for i in range(len(pool))])
    assert len(per_checkpoint) == 2 and not np.allclose(per_checkpoint[0], per_checkpoint[1])
    first, second = per_checkpoint
    weight = float(np.dot(combined - second, first - second) / np.dot(first - second, first - second))
    assert np.allclose(combined, weight * first + (1 - weight) * second, atol=1e-6)
    # 6 warm-up records, 2 steps an epoch, rates lr * (1 - step/6): epochs 2 and 3 average 7/12 and 3/12 of lr
    assert weight == pytest.approx(0.7, abs=1e-3)
    with pytest.raises(ValueError, match="checkpoints"):
        op.Config(target=str(target), warmup_epochs=2, checkpoints=3)


def test_per_sample_gradients_match_one_at_a_time():
    from dataflywheel.algorithms.less import _GradientTap, _batch, _encode, add_lora, per_sample_losses
    from dataflywheel.models.transformers_llm import TransformersLLM

    backend = TransformersLLM("smollm2")
    torch.manual_seed(0)
    model = add_lora(backend.model, 4)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)  # B starts at zero: give A a gradient too
    examples = _encode(backend.tokenizer, [("Q: 2+2?\nA:", " 4"), ("Say something long about cats.", " Cats purr.")], 32)
    tap = _GradientTap(model)
    per_sample_losses(model, *_batch(examples, backend.tokenizer.pad_token_id)).sum().backward()
    name, module = next((n, m) for n, m in tap.modules if n.endswith("lora_A.default"))
    batched = tap.per_sample(name)
    for row, example in enumerate(examples):
        model.zero_grad(set_to_none=True)
        per_sample_losses(model, *_batch([example], backend.tokenizer.pad_token_id)).sum().backward()
        assert torch.allclose(batched[row], module.weight.grad.reshape(-1), atol=1e-5, rtol=1e-3)
    tap.close()


def test_less_follows_an_alpaca_eval_category(tmp_path):
    """Target = 8 vicuna instructions with GPT-4 Turbo's answers; pool = 16 of each of AlpacaEval's 5 source
    datasets (80). LESS keeps 16, where the base rate of each dataset is 3.2.

    The signal is modest: with a 135M model the gradients of GPT-4 Turbo's answers barely tell the other four
    datasets apart; vicuna's coding, math and role-play questions stand out. Measured with the earlier 1-epoch
    warm-up: 7, 6 and 5 vicuna records kept with seeds 0, 1, 2 (24 of 120 with two seeds: 9 and 8, base 4.8).
    Asserted for seed 0 with the 4-epoch default (a warm-up on 4 records and 88 per-sample gradients: ~105 s on 2
    quiet cores): at least 5, above the base rate with a margin."""
    import collections
    import json

    from tests.conftest import shared_data

    rows = [json.loads(line) for line in shared_data("alpaca_eval/outputs/gpt4_1106_preview.jsonl").read_text().splitlines()]
    by_dataset = collections.defaultdict(list)
    for row in rows:
        by_dataset[row["dataset"]].append(row)
    rng = np.random.default_rng(0)
    pool, labels, target = [], [], []
    for dataset in sorted(by_dataset):
        picked = [by_dataset[dataset][i] for i in rng.permutation(len(by_dataset[dataset]))[:32]]
        pool += [rec(r["instruction"], r["output"]) for r in picked[:16]]
        labels += [dataset] * 16
        if dataset == "vicuna":
            target = [rec(r["instruction"], r["output"]) for r in picked[24:32]]
    target_file = tmp_path / "target.jsonl"
    write_records(target, target_file, "messages")
    op = get_operator("select.less")
    selector = op(op.Config(target=str(target_file), count=16, max_length=96), OpContext(seed=0))
    selection = selector.select(lambda: iter([pool]))
    kept = [labels[i] for i in range(len(pool)) if i not in selection.rejected]
    assert len(kept) == 16
    assert collections.Counter(kept)["vicuna"] >= 5, collections.Counter(kept)  # base rate 3.2 of 16


def test_less_score_is_the_best_task_mean_not_the_best_single_example():
    from dataflywheel.algorithms.less import less_scores

    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    target = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # record 0 matches one example of task "a" perfectly and its other example not at all: mean 0
    assert less_scores(train, target, ["a", "a", "b", "b"]).tolist() == [0.0, 1.0]
    assert less_scores(train, target).tolist() == [0.0, 0.5]  # one task: the mean over all four
