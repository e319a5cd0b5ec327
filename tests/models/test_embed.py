import numpy as np
import pytest

pytestmark = pytest.mark.model


def test_paraphrases_are_closer_than_unrelated_sentences(minilm):
    vectors = minilm.embed(["How do I bake bread at home?", "What is a simple recipe for homemade bread?",
                            "The stock market fell sharply on Monday."])
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3


def test_empty_input(minilm):
    assert minilm.embed([]).shape == (0, 384)
