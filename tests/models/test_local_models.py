"""Local backends beyond SmolLM2: other architectures, cached runs without weights, trainable copies, tokenizers."""

import pickle

import pytest
import torch

from dataflywheel.models.cache import CallCache
from dataflywheel.models.llm import GenerationParams
from dataflywheel.models.registry import ModelRegistry

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A small randomly initialised GPT-2 (``.transformer``, tied ``lm_head``) with SmolLM2's tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from dataflywheel.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer("smollm2")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=64, n_layer=2, n_head=2,
                                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_gpt2_style_models_score_like_a_plain_forward_pass(tiny_gpt2):
    from dataflywheel.models.transformers_llm import TransformersLLM

    llm = TransformersLLM(tiny_gpt2, batch_size=2)
    prefixes, continuations = ["The capital of France is", "Q: 12 times 3?\nA:"], [" Paris, on the Seine.", " 36"]
    for prefix, continuation, values in zip(prefixes, continuations, llm.logprobs(prefixes, continuations)):
        head = llm.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        tail = llm.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = llm.model(torch.tensor([head + tail])).logits[0]
        reference = torch.log_softmax(logits.float(), -1)[len(head) - 1:-1].gather(1, torch.tensor(tail)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(values), reference, atol=1e-4)
    [top] = llm.top_logprobs(["The capital of France is"], 5)
    assert len(top) >= 1 and all(v <= 0 for v in top.values())


def test_a_fully_cached_run_loads_no_weights(tmp_path):
    cache_path = tmp_path / "calls.sqlite"
    conversation = [{"role": "user", "content": "Name a colour."}]

    def work(registry):
        llm = registry.llm("default")
        prompt = llm.format_chat(conversation)
        ids = llm.tokenizer(" Blue is a colour.", add_special_tokens=False)["input_ids"]
        scores = llm.logprobs([prompt], [" Blue is a colour."])
        answer = llm.chat([conversation], GenerationParams(max_tokens=6))
        return llm, (prompt, ids, scores, answer)

    first_llm, first = work(ModelRegistry(None, CallCache(cache_path)))
    assert first_llm.loaded
    again_llm, again = work(ModelRegistry(None, CallCache(cache_path)))
    assert again == first
    assert not again_llm.loaded and again_llm.usage.calls == 0 and again_llm.usage.cache_hits == 2


def test_trainable_gives_a_fresh_unshared_backend_and_refuses_servers():
    registry = ModelRegistry({"server": {"backend": "openai", "model": "m", "options": {"base_url": "http://x/v1"}}})
    first, second = registry.trainable("default"), registry.trainable("default")
    assert first is not second and first.model is not second.model
    assert registry.trainable("default").model is not registry.llm("default").model
    with pytest.raises(ValueError, match="'server' uses the openai backend.*transformers"):
        registry.trainable("server")


def test_load_tokenizer_is_loaded_once():
    from dataflywheel.models import load_tokenizer

    assert load_tokenizer("smollm2") is load_tokenizer("smollm2")
    assert load_tokenizer("smollm2")("hello", add_special_tokens=False)["input_ids"]


def test_a_used_registry_pickles_without_its_weights(tmp_path):
    registry = ModelRegistry(None, CallCache(tmp_path / "calls.sqlite"))
    [[answer]] = registry.llm("default").chat([[{"role": "user", "content": "Hi"}]], GenerationParams(max_tokens=4))
    blob = pickle.dumps(registry)
    assert len(blob) < 100_000  # no weights inside
    copy = pickle.loads(blob)
    assert copy.llm("default").chat([[{"role": "user", "content": "Hi"}]], GenerationParams(max_tokens=4)) == [[answer]]
    assert not copy.llm("default").loaded
    registry.close()
