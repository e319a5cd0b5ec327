import numpy as np
import pytest

from dataflywheel.algorithms.semdedup import semdedup
from dataflywheel.models import ModelRegistry
from dataflywheel.ops import OpContext, get_operator
from dataflywheel.records import make_record


def test_algorithm_drops_only_above_the_threshold():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 16)).astype(np.float32)
    near = base[:10] + 0.01 * rng.normal(size=(10, 16)).astype(np.float32)
    emb = np.concatenate([base, near])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    found = semdedup(emb, eps=0.05, n_clusters=4, seed=0)
    dropped = np.flatnonzero(found.duplicate_of >= 0)
    assert len(dropped) == 10
    for i in dropped:
        j = found.duplicate_of[i]
        assert found.duplicate_of[j] == -1 and emb[i] @ emb[j] > 0.95
    kept = np.flatnonzero(found.duplicate_of < 0)
    sims = emb[kept] @ emb[kept].T
    same = found.labels[kept][:, None] == found.labels[kept][None, :]
    assert (sims[same & ~np.eye(len(kept), dtype=bool)] <= 0.95).all()


@pytest.mark.model
def test_operator_with_the_bundled_embedder(tmp_path):
    texts = ["How do I reset my password on the website?", "How can I reset my password on the website?",
             "What is the boiling point of water at sea level?", "Write a haiku about autumn leaves.",
             "Name three primary colours."]
    records = [make_record([{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]) for t in texts]
    op = get_operator("select.semantic_dedup")
    selector = op(op.Config(field="instruction", eps=0.1, n_clusters=2, keep="first"),
                  OpContext(models=ModelRegistry(cache=None)))
    selection = selector.select(lambda: iter([records]))
    assert set(selection.rejected) == {1}
    assert records[0]["id"] in selection.rejected[1]


def chain(n_noise=0):
    """a, b, c on a great circle: cos(a, b) = cos(b, c) = 0.97, cos(a, c) ~ 0.88."""
    angle = np.arccos(0.97)
    rows = [[np.cos(k * angle), np.sin(k * angle), 0.0] for k in range(3)]
    return np.array(rows, dtype=np.float32)


def test_every_earlier_record_counts_dropped_or_not_as_in_the_paper():
    emb = chain()
    order = np.array([3.0, 2.0, 1.0])  # visit a, b, c
    paper = semdedup(emb, eps=0.05, n_clusters=1, priority=order)
    assert paper.duplicate_of.tolist() == [-1, 0, 1]  # c is a duplicate of b, which was dropped
    kept_only = semdedup(emb, eps=0.05, n_clusters=1, priority=order, compare_with="kept")
    assert kept_only.duplicate_of.tolist() == [-1, 0, -1]


def test_eps_is_chosen_for_a_target_retention():
    from dataflywheel.algorithms.semdedup import eps_for_retention

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(200, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    found = semdedup(emb, n_clusters=4, seed=0)
    for retention in (0.5, 0.8, 0.95):
        eps = eps_for_retention(found.max_similarity, found.nearest, retention)
        kept = (semdedup(emb, eps=eps, n_clusters=4, seed=0).duplicate_of < 0).mean()
        assert abs(kept - retention) <= 0.02
