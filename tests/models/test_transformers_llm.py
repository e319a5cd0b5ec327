"""The bundled SmolLM2 through the transformers backend (loaded offline: HF_HUB_OFFLINE=1)."""

import os
import random

import pytest
import torch

from dataflywheel.models.llm import GenerationParams

pytestmark = pytest.mark.model

FLUENT = "The cat sat on the warm mat and fell asleep in the afternoon sun."


def test_loads_offline(smollm2):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert smollm2.model.config.model_type == "llama"
    assert smollm2.format_chat([{"role": "user", "content": "hi"}]).endswith("<|im_start|>assistant\n")


def plain_forward_logprobs(llm, prefix, continuation):
    head = llm.tokenizer(prefix, add_special_tokens=False)["input_ids"]
    tail = llm.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = llm.model(torch.tensor([head + tail])).logits[0]
    return torch.log_softmax(logits.float(), -1)[len(head) - 1:-1].gather(1, torch.tensor(tail)[:, None])[:, 0]


def test_logprobs_equal_a_plain_forward_pass(smollm2):
    prefixes = ["The capital of France is", "Q: What is 12 times 3?\nA:", smollm2.format_chat(
        [{"role": "user", "content": "Give me a synonym for happy."}])]
    continuations = [" Paris, a city on the Seine.", " 36", "Joyful. Another option is cheerful, or content."]
    batched = smollm2.logprobs(prefixes, continuations)  # different lengths: exercises padding
    for prefix, continuation, values in zip(prefixes, continuations, batched):
        reference = plain_forward_logprobs(smollm2, prefix, continuation)
        assert len(values) == len(reference)
        assert torch.allclose(torch.tensor(values), reference, atol=1e-4)
        assert abs(sum(values) / len(values) - reference.mean().item()) < 1e-4


def test_fluent_text_has_lower_loss_than_shuffled_words(smollm2):
    words = FLUENT.split()
    random.Random(0).shuffle(words)
    fluent, shuffled = smollm2.logprobs(["", ""], [FLUENT, " ".join(words)])
    assert -sum(fluent) / len(fluent) < -sum(shuffled) / len(shuffled)


def test_top_logprobs_of_next_token(smollm2):
    [top] = smollm2.top_logprobs(["The capital of France is"], k=5)
    assert max(top, key=top.get) == " Paris"
    assert all(v <= 0 for v in top.values()) and len(top) <= 5


def test_generation_is_deterministic_with_a_seed(smollm2):
    chat = [[{"role": "user", "content": "Write one word about the sea."}],
            [{"role": "user", "content": "Name a fruit."}]]
    sampled = GenerationParams(max_tokens=12, temperature=1.0, seed=7, n=2)
    first, second = smollm2.chat(chat, sampled), smollm2.chat(chat, sampled)
    assert first == second
    assert len(first) == 2 and all(len(choices) == 2 for choices in first)
    greedy = GenerationParams(max_tokens=12)
    assert smollm2.chat(chat, greedy) == smollm2.chat(chat, greedy)


def test_stop_strings_cut_the_text(smollm2):
    [[text]] = smollm2.complete(["1, 2, 3, 4,"], GenerationParams(max_tokens=12, stop=(" 7",)))
    assert " 7" not in text and text.strip().startswith("5")


def test_labels_give_the_whole_distribution_over_their_tokens(smollm2):
    """A judge's scale tokens outside the top 20 still count: every token that reads as a label, summed."""
    conversation = [{"role": "user", "content": "Write a short poem about the sea."}]
    [top] = smollm2.chat_top_logprobs([conversation], 20)
    labels = [str(s) for s in range(1, 7)]
    missing = [label for label in labels if not any(token.strip() == label for token in top)]
    assert missing, "every digit is in the top 20: pick another prompt"
    [with_labels] = smollm2.chat_top_logprobs([conversation], 20, labels)

    prefix = smollm2.format_chat(conversation)
    head = smollm2.tokenizer(prefix, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        full = torch.log_softmax(smollm2.model(torch.tensor([head])).logits[0, -1].float(), -1)
    for label in labels:
        ids = [i for i in range(len(smollm2.tokenizer))
               if smollm2.tokenizer.decode([i]).strip() == label]
        assert ids, label
        expected = torch.logsumexp(full[ids], 0).item()
        got = [v for token, v in with_labels.items() if token.strip() == label]
        assert got, f"label {label} missing (in the top 20: {label not in missing})"
        assert abs(torch.logsumexp(torch.tensor(got), 0).item() - expected) < 1e-3
    for token, value in top.items():  # the top 20 are unchanged
        assert with_labels[token] == pytest.approx(value, abs=1e-4)


def test_scoring_batches_bound_padding_and_keep_short_texts_together():
    """A long text after shorter ones starts its own batch instead of padding the others to its length (padded
    positions cost as much as real ones); short texts still share one batch."""
    from dataflywheel.models.transformers_llm import _batches

    lengths = [212, 290, 294, 309, 313, 403]  # the compress benchmark's six prompts, sorted
    batches = list(_batches(list(range(6)), lengths, 8192, 16))
    assert batches == [[0, 1, 2, 3, 4], [5]]
    for batch in batches:
        real = sum(lengths[i] for i in batch)
        assert max(lengths[i] for i in batch) * len(batch) - real <= max(0.1 * real, 256)
    short = [8, 9, 12, 15, 20, 31, 40, 48]
    assert list(_batches(list(range(8)), short, 8192, 16)) == [list(range(8))]
    assert list(_batches(list(range(8)), short, 8192, 3)) == [[0, 1, 2], [3, 4, 5], [6, 7]]
