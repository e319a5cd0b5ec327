import pytest


@pytest.fixture(scope="session")
def smollm2():
    from dataflywheel.models.transformers_llm import TransformersLLM

    return TransformersLLM("smollm2", batch_size=4)


@pytest.fixture(scope="session")
def minilm():
    from dataflywheel.models.embed import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder("minilm")
