"""Coreset condensation: k-medoids representatives with their cluster sizes as weights."""

import numpy as np

from dataflywheel.ops import OpContext, get_operator
from dataflywheel.ops.distill.kmedoids import k_medoids
from dataflywheel.records import make_record


def blobs(sizes, dim=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(sizes), dim))
    x = np.concatenate([c + spread * rng.normal(size=(n, dim)) for c, n in zip(centers, sizes)])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_k_medoids_finds_one_medoid_per_blob_and_each_is_its_clusters_best():
    x, truth = blobs([30, 12, 5])
    medoids, labels = k_medoids(x, 3, seed=1)
    assert sorted(np.bincount(labels).tolist()) == [5, 12, 30]
    assert sorted(truth[medoids].tolist()) == [0, 1, 2]
    for c, m in enumerate(medoids):  # no member has a smaller total cosine distance to its cluster
        members = np.flatnonzero(labels == c)
        cost = (1 - x[members] @ x[members].T).sum(1)
        assert cost[list(members).index(m)] <= cost.min() + 1e-4


def test_k_medoids_with_duplicates_and_k_equal_n():
    x = np.repeat(blobs([1, 1])[0], 3, axis=0)
    medoids, labels = k_medoids(x, 6)
    assert sorted(medoids.tolist()) == list(range(6)) and sorted(labels.tolist()) == list(range(6))


class FakeEmbedder:
    def __init__(self, vectors):
        self.vectors = vectors

    def embed(self, texts):
        return np.stack([self.vectors[t] for t in texts])


class Models:
    def __init__(self, embedder):
        self.e = embedder

    def embedder(self, role):
        return self.e


def test_coreset_selector_keeps_medoids_with_weights_and_names_the_representative():
    x, _ = blobs([6, 3])
    records = [make_record([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}])
               for i in range(len(x))]
    vectors = {f"q{i}\n\na": v for i, v in enumerate(x)}
    op = get_operator("distill.coreset")
    selection = op(op.Config(count=2), OpContext(models=Models(FakeEmbedder(vectors)))).select(lambda: iter([records]))
    kept = sorted(set(range(len(x))) - set(selection.rejected))
    assert len(kept) == 2 and sorted(selection.meta[i]["coreset"]["weight"] for i in kept) == [3, 6]
    for i, reason in selection.rejected.items():
        assert reason.startswith("represented by coreset medoid ") and any(records[k]["id"] in reason for k in kept)
