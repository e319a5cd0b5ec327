"""ROUGE-L equals the rouge-score package, and reproduces a real Self-Instruct run's novelty decisions."""

import json
import random

import numpy as np
import pytest

from dataflywheel.algorithms.rouge import RougePool, rouge_l, rouge_l_max, tokenize
from tests.conftest import shared_data

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer", reason="rouge-score is a dev dependency")
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def instructions(relative: str) -> list[str]:
    return [json.loads(line)["instruction"] for line in shared_data(relative).read_text().splitlines()]


def alpaca_libre(version: int) -> list[dict]:
    rows = []
    for line in shared_data(f"alpaca_libre/alpaca_libre_tasks_v{version}.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # v2 holds 14 lines broken in the original file
            continue
    return rows


def test_tokens_and_scores_equal_rouge_score_on_real_pairs():
    seeds = instructions("self_instruct/seed_tasks.jsonl")
    generated = [r["instruction"] for r in alpaca_libre(1)]
    rng = random.Random(0)
    texts = seeds + rng.sample(generated, 300)
    texts += ["Ünïcode façade — naïve café?", "", "!!!", "word " * 70 + "tail", "a b " * 40]  # odd and > 64 tokens
    for text in texts:
        assert tokenize(text) == SCORER._tokenizer.tokenize(text)
    pool = RougePool(texts)
    queries = rng.sample(texts, 40) + texts[-5:]
    pairs = 0
    for query in queries:
        ours = pool.scores(query)
        expected = [SCORER.score(query, t)["rougeL"].fmeasure for t in texts]
        assert np.abs(ours - expected).max() <= 1e-9
        pairs += len(texts)
    assert pairs > 10_000
    assert rouge_l("Give me a list of fruits.", "Give me a list of vegetables.") == pytest.approx(
        SCORER.score("Give me a list of fruits.", "Give me a list of vegetables.")["rougeL"].fmeasure, abs=1e-12)


def test_adding_entries_one_by_one_scores_like_a_pool_built_at_once():
    texts = [r["instruction"] for r in alpaca_libre(3)][:530]
    grown = RougePool()
    for text in texts[:500]:
        grown.add(text)
    for query in texts[500:]:  # the tail is merged into the main block at the 514th entry
        assert np.array_equal(grown.scores(query), RougePool(texts[:len(grown)]).scores(query))
        score, index = rouge_l_max(query, grown)
        assert score == pytest.approx(max(SCORER.score(query, t)["rougeL"].fmeasure for t in texts[:len(grown)]),
                                      abs=1e-12)
        assert grown.scores(query)[index] == score
        grown.add(query)
    assert len(grown) == 530 and rouge_l_max("anything", []) == (0.0, -1)


def _runs(similarity: np.ndarray, recorded: np.ndarray) -> list[tuple[int, int]]:
    """Split the file into the runs that were appended to it: from each start, the longest stretch whose
    nearest-neighbour similarities (within the stretch) all equal the recorded ones, never exceeding them."""
    n, start, runs = len(recorded), 0, []
    while start < n:
        nearest, end = np.full(n, -1.0), None
        for stop in range(start + 1, n + 1):
            k = stop - 1
            nearest[start:k] = np.maximum(nearest[start:k], similarity[start:k, k])
            nearest[k] = similarity[k, start:k].max() if k > start else -1.0
            rounded = np.round(nearest[start:stop], 3)
            if (rounded > recorded[start:stop] + 1e-9).any():
                break
            if np.allclose(rounded, recorded[start:stop], rtol=0, atol=1e-9):
                end = stop
        runs.append((start, end or stop))
        start = end or stop
    return runs


@pytest.mark.parametrize("version", [1, 2, 3])
def test_novelty_decisions_agree_with_a_real_self_instruct_run(version):
    """alpaca-libre's generate.py (mobarski/alpaca-libre @ 9024e0cb, check_similarity) scores each task of a run
    against every other task of that run (rouge-score, no stemmer), records the highest score rounded to 3
    places and marks an otherwise 'ok' task 'too similar' above 0.7. Each file holds several runs appended."""
    rows = alpaca_libre(version)
    texts = [r["instruction"] for r in rows]
    recorded = np.array([r["similarity"] if "similarity" in r else r["other"]["similarity"] for r in rows])
    pool = RougePool(texts)
    similarity = np.stack([pool.scores(t) for t in texts])
    np.fill_diagonal(similarity, -1.0)
    runs = _runs(similarity, recorded)
    assert len(runs) <= 3 and min(e - s for s, e in runs) >= 90  # whole runs (v1: 1166, 1114, 95), not crumbs
    ours = np.concatenate([np.round(similarity[s:e, s:e].max(axis=1), 3) for s, e in runs])
    similar_rate = float(np.mean(np.abs(ours - recorded) < 1e-9))
    judged = [(r["status"] == "too similar", o > 0.7) for r, o in zip(rows, ours) if r["status"] in ("ok", "too similar")]
    decision_rate = float(np.mean([theirs == mine for theirs, mine in judged]))
    print(f"alpaca-libre v{version}: runs {[e - s for s, e in runs]}, similarity agreement {similar_rate:.4f}, "
          f"decision agreement {decision_rate:.4f} on {len(judged)} ok / too similar tasks")
    assert similar_rate >= 0.99  # measured 0.9987 / 0.9969 / 1.0
    assert decision_rate >= 0.99  # measured 1.0 / 0.9995 / 1.0
