"""MinHash near-dup dedup on real near-duplicates (t0: one source example under several templates)."""

import re
from itertools import combinations

import numpy as np
import pytest

from dataflywheel.algorithms.minhash import batch_shingles, optimal_bands, shingle_hashes, signatures
from dataflywheel.io import read_records
from dataflywheel.ops import get_operator
from dataflywheel.records import make_record
from tests.conftest import shared_data

PASSAGE = ("The Amazon rainforest covers much of the Amazon basin of South America. This basin encompasses seven "
           "million square kilometres, of which five and a half million square kilometres are covered by the "
           "rainforest. The region includes territory belonging to nine nations and 3,344 formally acknowledged "
           "indigenous territories. The majority of the forest is contained within Brazil.")


def reference_jaccard(a: str, b: str, n: int = 5) -> float:
    """Plain-Python word 5-gram Jaccard, independent of the code under test."""
    def grams(text):
        words = re.findall(r"\w+", text.lower().replace("_", " "))
        return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}
    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y)


def dedup(records, **config):
    op = get_operator("select.minhash_dedup")
    selector = op(op.Config(**config))
    return selector.select(lambda: iter([records[i:i + 64] for i in range(0, len(records), 64)]))


def rec(text, **scores):
    return make_record([{"role": "user", "content": "Summarise."}, {"role": "assistant", "content": text}],
                       scores=scores)


@pytest.mark.parametrize("engine", ["rensa", "numpy"])
def test_hand_made_edits(engine):
    edited = PASSAGE.replace("majority", "bulk") + " It is vast."
    other = ("Photosynthesis converts light energy into chemical energy stored in glucose. It takes place in the "
             "chloroplasts of plant cells and releases oxygen as a by-product of splitting water molecules.")
    assert reference_jaccard(PASSAGE, edited) > 0.75 and reference_jaccard(PASSAGE, other) < 0.1
    records = [rec(PASSAGE), rec(other), rec(edited)]
    selection = dedup(records, field="response", engine=engine)
    assert set(selection.rejected) == {2}
    assert selection.rejected[2].startswith(f"near duplicate of {records[0]['id']}")
    assert selection.meta[2]["duplicate_of"] == records[0]["id"]
    assert selection.meta[0]["minhash_cluster"] == selection.meta[2]["minhash_cluster"] == records[0]["id"]
    assert 1 not in selection.meta


def test_keeps_the_best_scored_record():
    edited = PASSAGE.replace("seven million", "7 million")
    records = [rec(PASSAGE, quality=0.2), rec(edited, quality=0.9)]
    selection = dedup(records, field="response", keep="quality")
    assert set(selection.rejected) == {0}
    assert records[1]["id"] in selection.rejected[0]


def test_real_template_duplicates_from_t0():
    folder = shared_data("t0_train_50k")
    records = []
    for name in ("adversarial_qa_dbert_answer_the_following_q", "adversarial_qa_dbert_based_on",
                 "adversarial_qa_dbert_question_context_answer"):
        records += [r for r in read_records(folder / f"{name}.jsonl") if isinstance(r, dict)][:150]
    texts = [r["messages"][0]["content"] + "\n\n" + r["messages"][1]["content"] for r in records]
    selection = dedup(records, field="conversation", threshold=0.7)
    cluster = [selection.meta.get(i, {}).get("minhash_cluster", records[i]["id"]) for i in range(len(records))]

    similar, dissimilar = [], []
    for i, j in combinations(range(len(records)), 2):
        jaccard = reference_jaccard(texts[i], texts[j])
        if jaccard >= 0.85:
            similar.append((i, j))
        elif jaccard < 0.3:
            dissimilar.append((i, j))
    assert len(similar) > 50, "the sample should hold real near-duplicates"
    found = sum(cluster[i] == cluster[j] for i, j in similar) / len(similar)
    assert found >= 0.95
    merged_dissimilar = sum(cluster[i] == cluster[j] for i, j in dissimilar)
    assert merged_dissimilar <= 0.001 * len(dissimilar)
    for position, reason in selection.rejected.items():
        kept = selection.meta[position]["duplicate_of"]
        assert kept in reason and kept != records[position]["id"]


def test_band_choice_separates_around_the_threshold():
    bands, rows = optimal_bands(0.7, 128)
    assert bands * rows <= 128
    probability = lambda s: 1 - (1 - s ** rows) ** bands  # noqa: E731
    assert probability(0.9) > 0.99 and probability(0.4) < 0.02


def test_shingles_ignore_case_and_punctuation_and_sign_reproducibly():
    assert np.array_equal(shingle_hashes("Hello, World! It is a fine day"), shingle_hashes("hello world it is a FINE day"))
    flat, counts = batch_shingles(["one two three four five six", "", "short text"], ngram=5)
    assert list(counts) == [2, 1, 1]
    first = signatures(flat, counts, 64, seed=3)
    assert np.array_equal(first, signatures(flat, counts, 64, seed=3)) and first.shape == (3, 64)


def test_members_of_a_bucket_are_verified_with_each_other_not_only_with_the_first():
    """Records 1 and 2 are near duplicates; both share one LSH bucket with record 0, which resembles neither.
    Checked only against the bucket's first member (0), the 1-2 link was lost."""
    from dataflywheel.algorithms.minhash import cluster

    rng = np.random.default_rng(0)
    bands, rows = 16, 8
    sigs = rng.integers(0, 2**32, size=(3, bands * rows), dtype=np.uint64).astype(np.uint32)
    sigs[1, :rows] = sigs[2, :rows] = sigs[0, :rows]  # band 0: one bucket for all three
    sigs[2, rows:] = sigs[1, rows:]
    sigs[2, rows::rows] += 1  # 1 and 2 differ by one value in every other band: a bucket only in band 0
    found = cluster(sigs, 0.7, bands, rows)
    assert found.labels[1] == found.labels[2] != found.labels[0]
    exact = lambda left, right: np.array([0.9 if {a, b} == {1, 2} else 0.1 for a, b in zip(left, right)])  # noqa: E731
    assert cluster(sigs, 0.7, bands, rows, verify=exact).labels.tolist().count(found.labels[1]) == 2
