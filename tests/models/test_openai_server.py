"""The OpenAI-compatible backend against a real server started here: llama-cpp-python serving the bundled GGUF."""

import numpy as np
import pytest

from dataflywheel.models.llm import GenerationParams
from dataflywheel.models.openai_llm import OpenAILLM
from tests.llama_server import llama_server_fixture

pytestmark = pytest.mark.server
server_url = llama_server_fixture()  # llama-cpp-python serving the bundled GGUF, for this module


@pytest.fixture(scope="module")
def served(server_url):
    return OpenAILLM("smollm2", base_url=server_url, concurrency=2, timeout=120)


def test_chat_and_completion(served):
    greedy = GenerationParams(max_tokens=24)
    [[answer]] = served.chat([[{"role": "user", "content": "What is 2+2? Answer with the number."}]], greedy)
    assert "4" in answer
    [[again]] = served.chat([[{"role": "user", "content": "What is 2+2? Answer with the number."}]], greedy)
    assert again == answer
    [[text]] = served.complete(["The capital of France is"], GenerationParams(max_tokens=4))
    assert "Paris" in text
    assert served.usage.prompt_tokens > 0 and served.usage.completion_tokens > 0


def test_next_token_agrees_with_the_transformers_backend(served, smollm2):
    prefix = "The capital of France is"
    [server_top] = served.top_logprobs([prefix], 5)
    [local_top] = smollm2.top_logprobs([prefix], 5)
    assert max(server_top, key=server_top.get) == max(local_top, key=local_top.get) == " Paris"
    assert abs(server_top[" Paris"] - local_top[" Paris"]) < 0.1


def test_chat_top_logprobs(served):
    [top] = served.chat_top_logprobs([[{"role": "user", "content": "Is the sky blue? Answer yes or no."}]], 5)
    assert 1 <= len(top) <= 5 and all(v <= 0 for v in top.values())
    assert {"Yes", "No"} & set(top)


def test_prompt_logprobs_cover_the_continuation_tokens(served, smollm2):
    # llama-cpp-python scores echoed prompt tokens one position late (abetlen/llama-cpp-python#1983), so only
    # the shape is checked here; the transformers and vLLM backends give exact values.
    [values] = served.logprobs(["The capital of France is"], [" Paris, a city of light."])
    expected = len(smollm2.tokenizer(" Paris, a city of light.", add_special_tokens=False)["input_ids"])
    assert len(values) == expected and all(v <= 0 for v in values)


def test_embeddings_endpoint(server_url):
    from dataflywheel.models.embed import OpenAIEmbedder

    embedder = OpenAIEmbedder("smollm2", base_url=server_url, batch_size=2)
    texts = ["How do I bake bread?", "The stock market fell.", "How do I bake bread?"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, 576) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], vectors[2], atol=1e-5) and not np.allclose(vectors[0], vectors[1], atol=1e-2)


POEM = [{"role": "user", "content": "Write one short sentence about the sea."}]


def test_eight_unseeded_samples_of_one_prompt_are_distinct(server_url, tmp_path):
    from dataflywheel.models.cache import CallCache
    from dataflywheel.models.cached import CachedLLM

    llm = CachedLLM(OpenAILLM("smollm2", base_url=server_url, concurrency=4), CallCache(tmp_path / "c.sqlite"))
    sampled = GenerationParams(max_tokens=16, temperature=1.0)
    separate = [answers[0] for answers in llm.chat([POEM] * 8, sampled)]  # 8 identical prompts, n=1
    assert len(set(separate)) >= 6 and llm.usage.cache_hits == 0
    [together] = llm.chat([POEM], sampled.model_copy(update={"n": 8}))  # one prompt, n=8
    assert len(together) == 8 and len(set(together)) >= 6
    assert llm.usage.completion_tokens > 0


def test_seeded_samples_repeat_from_the_cache_and_differ_by_seed(server_url, tmp_path):
    from dataflywheel.models.cache import CallCache
    from dataflywheel.models.cached import CachedLLM

    llm = CachedLLM(OpenAILLM("smollm2", base_url=server_url), CallCache(tmp_path / "c.sqlite"))
    seeded = GenerationParams(max_tokens=16, temperature=1.0, seed=11, n=4)
    [first] = llm.chat([POEM], seeded)
    assert llm.chat([POEM], seeded) == [first] and llm.usage.calls == 4 and llm.usage.cache_hits == 4
    assert len(set(first)) >= 3


def test_structured_output_with_the_servers_grammar(server_url, tmp_path):
    from dataflywheel.models.cache import CallCache
    from dataflywheel.models.cached import CachedLLM

    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"]}
    backend = OpenAILLM("smollm2", base_url=server_url)
    llm = CachedLLM(backend, CallCache(tmp_path / "c.sqlite"))
    asks = [[{"role": "user", "content": f"Name a big city in {c}. Answer in JSON with keys city and country."}]
            for c in ("France", "Japan", "Brazil")]
    values = llm.chat_json(asks, schema, GenerationParams(max_tokens=48))
    assert all(isinstance(v, dict) and {"city", "country"} <= set(v) for [v] in values)
    assert llm.usage.json_failed == 0 and llm.usage.json_reasked == 0
    assert backend._learned_mode == "json_object"  # llama-cpp-python: a grammar from the schema
