"""NearDuplicateIndex: incremental MinHash-LSH screening of new texts against everything indexed before."""

import random

from dataflywheel.algorithms.minhash import NearDuplicateIndex, exact_jaccard, shingle_hashes


def sentence(rng, words=24):
    vocab = [f"w{i}" for i in range(400)]
    return " ".join(rng.choice(vocab) for _ in range(words))


def test_screen_finds_earlier_near_copies_including_those_of_the_same_call():
    rng = random.Random(0)
    pool = [sentence(rng) for _ in range(300)]
    index = NearDuplicateIndex(0.7)
    index.add(pool, list(range(300)))
    edited = pool[17].split()
    edited[-1] = "changed"  # one of 20 shingles differs: Jaccard 19/21
    fresh = [sentence(rng), " ".join(edited), "totally new words " * 3]
    twin = fresh[0].split()
    twin[0] = "other"
    matches = index.screen(fresh + [" ".join(twin)], ["a", "b", "c", "d"])
    assert matches[0] is None and matches[2] is None
    assert matches[1][1] == 17 and 0.75 <= matches[1][0] <= 1.0
    assert matches[3][1] == "a"  # an earlier text of the same call, indexed when it passed
    assert len(index) == 300 + 2  # the two that passed were indexed, the near copies were not


def test_decisions_agree_with_exact_jaccard_away_from_the_threshold():
    rng = random.Random(1)
    base = [sentence(rng, 40) for _ in range(60)]
    index = NearDuplicateIndex(0.7)
    index.add(base, list(range(60)))
    agree = total = 0
    for _ in range(200):
        k = rng.randrange(60)
        words = base[k].split()
        for _ in range(rng.randrange(0, 12)):  # edit 0-11 random positions
            words[rng.randrange(len(words))] = rng.choice(["x1", "x2", "x3", "x4"])
        text = " ".join(words)
        truth = exact_jaccard(shingle_hashes(text), shingle_hashes(base[k]))
        if abs(truth - 0.7) < 0.1:
            continue  # near the threshold the estimate may go either way
        match = index.best_match(index.sign([text])[0])
        agree += (match is not None) == (truth >= 0.7)
        total += 1
    assert total >= 100 and agree / total >= 0.95
