import numpy as np
import pytest

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


def test_one_farther_neighbour_cannot_make_a_record_thousands_of_times_likelier():
    """The issue's case: a record whose nearest neighbour is at cosine distance 0.5 instead of 0.2 was ~36,000x
    likelier to be drawn (k=1, bandwidth 0.1). With the record's own kernel term, 1/density is at most k + 1."""
    def at(distance, side=1.0):
        angle = np.arccos(1 - distance)
        return [np.cos(angle), side * np.sin(angle), 0.0]

    # record 1's nearest neighbour (0) is at 0.2, record 2's (0) at 0.5; record 3 is far from everything
    emb = np.array([[1.0, 0.0, 0.0], at(0.2), at(0.5, -1.0), [0.0, 0.0, 1.0]], dtype=np.float32)
    for bandwidth in (0.1, None):
        weights = 1 / knn_density(emb, k=1, bandwidth=bandwidth)
        assert weights.max() / weights.min() <= 2.0 + 1e-9
    rng = np.random.default_rng(3)
    for k in (1, 5, 20):
        weights = 1 / knn_density(unit(rng.normal(size=(200, 8))), k=k)
        assert 1.0 - 1e-9 <= weights.min() and weights.max() <= k + 1 + 1e-9


def test_density_bandwidth_defaults_to_the_median_neighbour_distance():
    from dataflywheel.algorithms.subset import knn_distances, median_bandwidth

    emb = clustered(n=120)
    distances = knn_distances(emb, 5)
    assert np.allclose(knn_density(emb, 5), knn_density(emb, 5, bandwidth=median_bandwidth(distances)))
    brute = np.sort(1 - (emb @ emb.T - 2 * np.eye(len(emb))), axis=1)[:, :5]
    assert np.allclose(distances, brute, atol=1e-5)


def test_weights_are_clipped():
    density = np.array([1.0, 0.5, 1e-6])
    chosen = [inverse_propensity_sample(density, 1, seed=s, max_weight_ratio=2.0)[0] for s in range(400)]
    assert np.bincount(chosen, minlength=3)[0] > 40  # weights 1, 2, 2: record 0 drawn ~1/5 of the time


def test_cluster_proportional_follows_cluster_sizes():
    from dataflywheel.algorithms.subset import cluster_proportional

    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    chosen = cluster_proportional(labels, 20, seed=1)
    assert len(set(chosen)) == 20 and np.bincount(labels[chosen]).tolist() == [12, 6, 2]
    assert cluster_proportional(labels, 7, seed=1) == cluster_proportional(labels, 7, seed=1)
    assert len(cluster_proportional(labels, 7, seed=1)) == 7


def test_facility_location_covers_every_cluster_and_beats_random():
    from dataflywheel.algorithms.subset import facility_location

    emb = clustered(n=300, centres=6, spread=0.1)
    chosen = facility_location(emb, 6)
    assert len(set(chosen)) == 6

    def coverage(subset):
        return ((1 + emb @ emb[subset].T) / 2).max(axis=1).sum()

    randoms = [coverage(np.random.default_rng(s).choice(len(emb), 6, replace=False)) for s in range(20)]
    assert coverage(chosen) >= max(randoms)
    # lazy greedy = plain greedy
    plain, cover = [], np.zeros(len(emb))
    for _ in range(6):
        gains = np.maximum((1 + emb @ emb.T) / 2 - cover[:, None], 0).sum(axis=0)
        best = int(np.argmax(gains))
        plain.append(best)
        cover = np.maximum(cover, (1 + emb @ emb[best]) / 2)
    assert coverage(plain) == pytest.approx(coverage(chosen))
