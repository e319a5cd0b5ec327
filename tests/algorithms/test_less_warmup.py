"""LESS warm-up: every example is seen once an epoch; the learning rate decays; checkpoints are lr-weighted."""

import numpy as np
import pytest
import torch

from dataflywheel.algorithms import less


class Tokenizer:
    eos_token_id = pad_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [int(word) for word in text.split()]}


def test_every_warm_up_example_is_seen_once_per_epoch(monkeypatch):
    """The old loop drew a fresh permutation for every batch: about a third of the examples were never seen."""
    seen = []

    def fake_losses(model, ids, mask, labels):
        seen.extend(ids[:, 0].tolist())
        return (model.weight.sum() * torch.ones(len(ids))) ** 2

    monkeypatch.setattr(less, "per_sample_losses", fake_losses)
    model = torch.nn.Linear(2, 1)
    examples = [(str(i + 1), "7") for i in range(40)]
    rates = []
    less.warm_up(model, Tokenizer(), examples, epochs=3, batch_size=4, lr=0.1,
                 on_epoch=lambda epoch, rate, optimizer: rates.append(rate))
    assert len(seen) == 120
    for epoch in range(3):
        assert sorted(seen[epoch * 40:(epoch + 1) * 40]) == list(range(1, 41))
    assert rates[0] > rates[1] > rates[2] > 0  # linear decay, mean rate per epoch


def test_min_steps_adds_epochs(monkeypatch):
    calls = []
    monkeypatch.setattr(less, "per_sample_losses",
                        lambda model, ids, mask, labels: calls.append(1) or model.weight.sum() * torch.ones(len(ids)))
    less.warm_up(torch.nn.Linear(2, 1), Tokenizer(), [(str(i + 1), "7") for i in range(10)], epochs=1,
                 batch_size=4, min_steps=10)
    assert len(calls) == 12  # 3 steps an epoch, 4 epochs


def test_epoch_batches_cover_each_epoch():
    batches = less.epoch_batches(10, 3, 2, seed=1)
    assert len(batches) == 8
    assert sorted(sum(batches[:4], [])) == list(range(10)) == sorted(sum(batches[4:], []))


def test_checkpoint_scores_are_weighted_by_learning_rate():
    combined = less.lr_weighted([np.array([1.0, 0.0]), np.array([0.0, 1.0])], [3e-5, 1e-5])
    assert combined.tolist() == pytest.approx([0.75, 0.25])
