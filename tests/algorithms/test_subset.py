import numpy as np

from dataflywheel.algorithms.subset import (budget_size, cluster_balanced, covering_radius, deita_select,
                                            inverse_propensity_sample, k_center_greedy, knn_density, rank_order)


def unit(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def clustered(n=300, d=16, centres=6, spread=0.15, seed=0):
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centres, d))
    return unit(middle[rng.integers(centres, size=n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


def test_budget_and_rank_order():
    assert budget_size(100, 7, None) == 7 and budget_size(100, None, 0.05) == 5 and budget_size(3, 9, None) == 3
    assert list(rank_order(np.array([0.5, np.nan, 0.9, 0.5]))) == [2, 0, 3, 1]


def test_deita_never_keeps_two_records_above_tau():
    emb = clustered()
    scores = np.random.default_rng(1).random(len(emb))
    chosen = deita_select(rank_order(scores), emb, budget=40, tau=0.9)
    sims = emb[chosen] @ emb[chosen].T
    assert (sims[~np.eye(len(chosen), dtype=bool)] < 0.9).all()
    assert chosen[0] == int(np.argmax(scores))  # score first
    loose = deita_select(rank_order(scores), emb, budget=40, tau=1.0)
    assert len(loose) == 40 and loose == list(rank_order(scores)[:40])


def test_k_center_covers_better_than_random():
    emb = clustered(n=400)
    chosen = k_center_greedy(emb, 20, seed=0)
    assert len(set(chosen)) == 20
    random_radius = [covering_radius(emb, list(np.random.default_rng(s).choice(len(emb), 20, replace=False)))
                     for s in range(10)]
    assert covering_radius(emb, chosen) <= min(random_radius)
    assert k_center_greedy(emb, 20, seed=0) == chosen


def test_cluster_balanced_takes_equal_shares():
    labels = np.array([0] * 50 + [1] * 10 + [2] * 200)
    chosen = cluster_balanced(labels, 30, seed=3)
    assert len(chosen) == 30 and len(set(chosen)) == 30
    assert np.bincount(labels[chosen]).tolist() == [10, 10, 10]
    assert cluster_balanced(labels, 30, seed=3) == chosen


def test_density_sampling_prefers_rare_regions():
    rng = np.random.default_rng(0)
    dense = unit(np.array([1.0] + [0.0] * 7) + 0.05 * rng.normal(size=(300, 8)))
    sparse = unit(rng.normal(size=(30, 8)))
    emb = np.concatenate([dense, sparse]).astype(np.float32)
    density = knn_density(emb, k=10)
    assert density[:300].mean() > density[300:].mean()
    chosen = inverse_propensity_sample(density, 60, seed=0)
    assert len(chosen) == 60 and chosen == inverse_propensity_sample(density, 60, seed=0)
    assert sum(i >= 300 for i in chosen) / 60 > 30 / 330  # rare records over-represented vs their share
