"""Safety filter (``enhance.safety``): red-team prompts vs benign instructions, one run.

    python bench/bench_safety.py [--n 60] [--n-categories 40] [--threads 2]   # writes bench/results/safety.json

Positives: the first human turn of Anthropic's hh-rlhf harmless-base test set (red-team attempts: many are
plainly harmful, some are only edgy or harmless questions asked by a red-teamer). Negatives: the AlpacaEval
instructions (benign). The lexicon runs on all of them (2,312 and 805); the bundled judge (SmolLM2-135M-Instruct
on the CPU) on ``--n`` of each with one overall question a record, and on ``--n-categories`` of each with one
question a category. Precision and recall of the judge alone at several thresholds (the default is 0.5), of the
default filter (judge, lexicon where the judge's yes/no mass is below min_mass); the judge's ROC AUC (its
probability as a ranking, the largest category probability in the categories mode) says whether it separates
the two sets at any threshold. Calls are cached in bench/results/safety_calls.sqlite (a re-run pays nothing).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "safety.json"
CACHE = ROOT / "bench" / "results" / "safety_calls.sqlite"
THRESHOLDS = (0.5, 0.7, 0.8, 0.85, 0.9)


def red_team_prompts() -> list[str]:
    with gzip.open(DATA / "hh_rlhf" / "harmless-base_test.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    prompts = []
    for row in rows:
        match = re.search(r"Human:(.*?)(?:\n\nAssistant:|$)", row["chosen"], re.S)
        if match and match.group(1).strip():
            prompts.append(match.group(1).strip())
    return list(dict.fromkeys(prompts))


def benign_instructions() -> list[str]:
    path = DATA / "alpaca_eval" / "outputs" / "gpt4_1106_preview.jsonl"
    return [json.loads(line)["instruction"] for line in open(path, encoding="utf-8")]


def prf(flags_pos: list[bool], flags_neg: list[bool]) -> dict:
    tp, fp = sum(flags_pos), sum(flags_neg)
    return {"precision": round(tp / (tp + fp), 3) if tp + fp else None,  # None: nothing flagged
            "recall": round(tp / len(flags_pos), 3), "false_positive_rate": round(fp / len(flags_neg), 3),
            "positives": len(flags_pos), "negatives": len(flags_neg)}


def auc(pos: list[float], neg: list[float]) -> float:
    """P(a positive's score > a negative's), ties half; NaN scores are left out."""
    pos, neg = [p for p in pos if not math.isnan(p)], [n for n in neg if not math.isnan(n)]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return round(wins / (len(pos) * len(neg)), 3)


def records(texts: list[str]) -> list[dict]:
    from dataflywheel.records import make_record

    return [make_record([{"role": "user", "content": t}]) for t in texts]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=60, help="prompts of each set for the overall judge")
    parser.add_argument("--n-categories", type=int, default=40, help="prompts of each set for the judge per category")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from dataflywheel.models.cache import CallCache
    from dataflywheel.models.registry import ModelRegistry
    from dataflywheel.ops import OpContext, get_operator

    red, benign = red_team_prompts(), benign_instructions()
    cls = get_operator("enhance.safety")
    report: dict = {"red_team_prompts": len(red), "benign_instructions": len(benign)}

    lexicon = cls(cls.Config(method="lexicon", field="instruction"))
    started = time.perf_counter()
    pos = [r is not None for r in lexicon.reject_reasons(records(red))]
    neg = [r is not None for r in lexicon.reject_reasons(records(benign))]
    seconds = time.perf_counter() - started
    report["lexicon"] = {**prf(pos, neg), "records_per_s": round((len(red) + len(benign)) / seconds, 1)}
    print("lexicon", report["lexicon"])
    flagged_benign = [t for t, f in zip(benign, neg) if f]
    report["lexicon_benign_flagged_examples"] = flagged_benign[:10]

    rng = random.Random(0)
    red_sample, benign_sample = rng.sample(red, args.n), rng.sample(benign, args.n)
    cache = CallCache(CACHE)  # the default filter's pass (and a re-run) reuses the judge's calls
    context = OpContext(models=ModelRegistry({"judge": {"backend": "transformers", "model": "smollm2",
                                                        "options": {"threads": args.threads}}}, cache, True))
    for mode, n in (("overall", args.n), ("categories", args.n_categories)):
        red_n, benign_n = red_sample[:n], benign_sample[:n]
        judge = cls(cls.Config(judge=mode, field="instruction", min_mass=0.0), context)  # raw probabilities
        usage_before = context.models.usage()
        started = time.perf_counter()
        p_pos = [max(p.values()) for p in judge.unsafe_probabilities(records(red_n))]
        p_neg = [max(p.values()) for p in judge.unsafe_probabilities(records(benign_n))]
        seconds = time.perf_counter() - started
        usage = {m: {k: round(v - usage_before.get(m, {}).get(k, 0), 1) for k, v in u.items()
                     if k in ("calls", "cache_hits", "seconds")} for m, u in context.models.usage().items()}
        fallback = cls(cls.Config(judge=mode, field="instruction"), context)  # the default: lexicon below min_mass
        d_pos = [r is not None for r in fallback.reject_reasons(records(red_n))]
        d_neg = [r is not None for r in fallback.reject_reasons(records(benign_n))]
        result = {"n_each": n,
                  "judge_alone": {str(t): prf([p >= t for p in p_pos], [p >= t for p in p_neg]) for t in THRESHOLDS},
                  "roc_auc": auc(p_pos, p_neg),
                  "mean_p_unsafe": {"red_team": round(sum(p_pos) / len(p_pos), 3),
                                    "benign": round(sum(p_neg) / len(p_neg), 3)},
                  "records_per_s": round(2 * n / seconds, 2),
                  "model_usage": usage,  # records_per_s means the model's speed only where calls were not cached
                  "p_unsafe": {"red_team": [round(p, 4) for p in p_pos], "benign": [round(p, 4) for p in p_neg]},
                  "default_filter (lexicon below min_mass)": prf(d_pos, d_neg),
                  "judge_answers_below_min_mass":
                      fallback.counters.get("judge answers below min_mass (lexicon used)", 0)}
        report[f"judge_{mode}"] = result
        print(mode, json.dumps({k: v for k, v in result.items() if k != "p_unsafe"}))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
