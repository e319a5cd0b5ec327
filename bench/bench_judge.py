"""Judge agreement (``evolve.pairwise``): the bundled SmolLM2 (and a server, when env vars name one) vs human
judgments on MT-Bench and vs GPT-4 Turbo's preferences on AlpacaEval, one run.

    python bench/bench_judge.py [--n 30] [--n-generate 2] [--threads 2]   # writes bench/results/judge.json

MT-Bench: ``--n`` seeded (question, model A, model B) items of ../shared/data/mt_bench_human_subset, first turn only
(the pairwise prompt shows one question and two answers), with every human vote on them (an item may have
several); the file's GPT-4 pair judgments on the same items are a reference row. AlpacaEval: ``--n`` seeded
instructions from the GPT-4 Turbo annotations of seven models vs gpt4_1106_preview (../shared/data/alpaca_eval/
annotations), half where GPT-4 Turbo preferred the model's answer and half where it preferred the baseline's (the
raw data is ~95% baseline wins: balanced, a judge has to read the answers to beat 50%). Answers and instructions
are cut to ``--max-text-tokens`` tokens each in the judge's prompt.

Judges: SmolLM2 with ``method: logprobs`` (the single-letter prompt of ``train/evaluate``: A vs B by the first
token's probability, read with min_mass 0, i.e. always) on every pair; SmolLM2 with ``method: generate`` (FastChat's
pair-v2 prompt, explanation then [[A]]/[[B]]/[[C]]) on the first ``--n-generate`` pairs of each set (generation is
~0.2 s a token on 2 CPU cores); a server judge on every pair with both methods when DATAFLYWHEEL_JUDGE_BASE_URL
and DATAFLYWHEEL_JUDGE_MODEL are set (``train/evaluate.judge_spec_from_env``); and a "longer answer wins" rule.

Agreement as in the MT-Bench paper (Zheng et al., 2023): with ties (S1: every vote; a tie matches a tie) and
without ties (S2: only votes where neither side says tie), per vote, with 95% bootstrap CIs; a verdict the judge
did not give in readable form counts as a tie. Position consistency: the share of pairs whose two orders agree.
Calls are cached in bench/results/judge_calls.sqlite (a re-run pays nothing).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "judge.json"
CACHE = ROOT / "bench" / "results" / "judge_calls.sqlite"
HUMAN = {"model_a": "A", "model_b": "B", "tie": "tie", "tie (inconsistent)": "tie"}
ALPACA_MODELS = ("alpaca-7b", "chatglm2-6b", "falcon-7b-instruct", "oasst-sft-pythia-12b", "text_davinci_003",
                 "vicuna-7b", "wizardlm-13b")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def mt_bench_items(n: int, rng: random.Random) -> list[dict]:
    """First-turn items with their human votes (A = model_a) and the file's GPT-4 pair verdict."""
    folder = DATA / "mt_bench_human_subset"
    answers = {(r["question_id"], r["model"]): r["conversation"] for r in read_jsonl(folder / "model_answers.jsonl")}
    votes, gpt4 = defaultdict(list), {}
    for row in read_jsonl(folder / "human_judgments.jsonl"):
        if row["turn"] == 1:
            votes[(row["question_id"], row["model_a"], row["model_b"])].append(HUMAN[row["winner"]])
    for row in read_jsonl(folder / "gpt4_pair_judgments.jsonl"):
        if row["turn"] == 1:
            gpt4[(row["question_id"], row["model_a"], row["model_b"])] = HUMAN[row["winner"]]
    keys = sorted(k for k in votes if (k[0], k[1]) in answers and (k[0], k[2]) in answers)
    items = []
    for key in rng.sample(keys, n):
        question, model_a, model_b = key
        conv_a, conv_b = answers[(question, model_a)], answers[(question, model_b)]
        items.append({"instruction": conv_a[0]["content"], "a": conv_a[1]["content"], "b": conv_b[1]["content"],
                      "labels": votes[key], "gpt4": gpt4.get(key), "key": f"{question}:{model_a}:{model_b}"})
    return items  # an item whose answer is empty is dropped by ``judgeable`` (evolve.pairwise judges no blank answer)


def judgeable(items: list[dict]) -> tuple[list[dict], int]:
    """The items with both answers non-blank, and how many were dropped."""
    kept = [it for it in items if it["a"].strip() and it["b"].strip()]
    return kept, len(items) - len(kept)


def alpaca_eval_items(n: int, rng: random.Random) -> list[dict]:
    """GPT-4 Turbo's preference between gpt4_1106_preview (A) and a weaker model (B), half of each outcome."""
    rows = []
    for model in ALPACA_MODELS:
        for idx, row in enumerate(read_jsonl(DATA / "alpaca_eval" / "annotations" / f"{model}.jsonl")):
            if row["preference"] is not None and row["preference"] != 1.5:
                rows.append({"instruction": row["instruction"], "a": row["output_1"], "b": row["output_2"],
                             "labels": ["B" if row["preference"] > 1.5 else "A"], "key": f"{model}:{idx}"})
    wins_b = [r for r in rows if r["labels"] == ["B"]]
    wins_a = [r for r in rows if r["labels"] == ["A"]]
    chosen = rng.sample(wins_b, n // 2) + rng.sample(wins_a, n - n // 2)
    rng.shuffle(chosen)
    return chosen


def records(items: list[dict]) -> list[dict]:
    from dataflywheel.records import make_record

    return [make_record([{"role": "user", "content": it["instruction"]}], meta={"a": it["a"], "b": it["b"]})
            for it in items]


def agreement(verdicts: list[str | None], items: list[dict]) -> dict:
    """S1 (ties included) and S2 (ties excluded) agreement per vote, with bootstrap CIs."""
    from dataflywheel.train.evaluate import bootstrap_ci

    s1, s2 = [], []
    for verdict, item in zip(verdicts, items):
        verdict = verdict or "tie"  # no readable verdict: no preference
        for label in item["labels"]:
            s1.append(float(verdict == label))
            if verdict != "tie" and label != "tie":
                s2.append(float(verdict == label))

    def summary(values):
        low, high = bootstrap_ci(values)
        return {"agreement": round(sum(values) / len(values), 3) if values else None,
                "ci95": [round(low, 3), round(high, 3)] if values else None, "votes": len(values)}
    return {"with_ties": summary(s1), "without_ties": summary(s2)}


def judged(notes: list[dict], items: list[dict], seconds: float | None = None) -> dict:
    """Agreement, position consistency, tie and unreadable rates of one judge's meta.pairwise notes."""
    verdicts = [n["verdict"] for n in notes]
    both = [n for n in notes if None not in n["orders"]]
    singles = [o for n in notes for o in n["orders"] if o in ("A", "B")]
    first_shown = [o for n in notes for o, shown_first in zip(n["orders"], ("A", "B")) if o == shown_first]
    out = {"pairs": len(notes), **agreement(verdicts, items),
           "position_consistency": round(sum(n["consistent"] for n in both) / len(both), 3) if both else None,
           "pairs_with_both_orders_readable": len(both),
           "tie_rate": round(sum(v == "tie" for v in verdicts) / len(verdicts), 3),
           "unreadable_rate": round(sum(v is None for v in verdicts) / len(verdicts), 3),
           "first_shown_preferred": round(len(first_shown) / len(singles), 3) if singles else None,
           "verdicts": {str(k or "unreadable"): sum(v == k for v in verdicts) for k in ("A", "B", "tie", None)}}
    if seconds is not None:
        out["seconds"] = round(seconds, 1)
    if notes and "ab_mass" in notes[0]:
        masses = [m for n in notes for m in n["ab_mass"]]
        out["mean_ab_mass"] = round(sum(masses) / len(masses), 3)
        out["orders_with_ab_mass_below_0.5"] = round(sum(m < 0.5 for m in masses) / len(masses), 3)
    return out


def run_judge(context, role: str, method: str, items: list[dict], args) -> dict:
    from dataflywheel.ops import get_operator

    cls = get_operator("evolve.pairwise")
    config = {"a": "a", "b": "b", "model": role, "method": method, "max_text_tokens": args.max_text_tokens,
              "max_tokens": args.max_tokens}
    if method == "logprobs" and role == "smollm2":
        config["min_mass"] = 0.0  # always the A-vs-B comparison (the mass is reported); no fallback generation
    op = cls(cls.Config(**config), context)
    started = time.perf_counter()
    out = op.map_batch(records(items))
    result = judged([r["meta"]["pairwise"] for r in out], items, time.perf_counter() - started)
    result["counters"] = dict(op.counters)
    if method == "logprobs":
        result["_p_first_shown"] = [r["meta"]["pairwise"]["p_first_shown"] for r in out]
    result["examples"] = [{"key": it["key"], "labels": it["labels"], **{k: r["meta"]["pairwise"].get(k) for k in
                                                                        ("verdict", "orders", "rationales")}}
                          for it, r in list(zip(items, out))[:2]]
    return result


def averaged(result: dict, items: list[dict]) -> dict:
    """The same calls read another way: A wins when P(A wins) averaged over both orders (the second order's
    P(first shown) is B's) exceeds 1/2 (Balanced Position Calibration, Wang et al. 2023); no ties."""
    notes = []
    for p in result.pop("_p_first_shown"):
        mean = (p[0] + 1 - p[1]) / 2 if None not in p else 0.5
        verdict = "A" if mean > 0.5 else "B" if mean < 0.5 else "tie" if None not in p else None
        notes.append({"verdict": verdict, "orders": [verdict, verdict], "consistent": True})
    out = judged(notes, items)
    for key in ("position_consistency", "pairs_with_both_orders_readable", "first_shown_preferred"):
        out.pop(key)
    return out


def longer_wins(items: list[dict]) -> list[str]:
    return ["A" if len(it["a"]) > len(it["b"]) else "B" if len(it["b"]) > len(it["a"]) else "tie" for it in items]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30, help="pairs of each set (MT-Bench, AlpacaEval)")
    parser.add_argument("--n-generate", type=int, default=2, help="pairs of each set for SmolLM2 with method generate")
    parser.add_argument("--max-text-tokens", type=int, default=256, help="instruction and each answer cut to this")
    parser.add_argument("--max-tokens", type=int, default=128, help="length of a generated judgement")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from dataflywheel.models.cache import CallCache
    from dataflywheel.models.errors import ModelFeatureError
    from dataflywheel.models.registry import ModelRegistry
    from dataflywheel.ops import OpContext
    from dataflywheel.train.evaluate import judge_spec_from_env

    rng = random.Random(0)
    sampled = {"mt_bench_human": mt_bench_items(args.n, rng), "alpaca_eval_gpt4_turbo": alpaca_eval_items(args.n, rng)}
    sets, dropped = {}, {}
    for name, items in sampled.items():
        sets[name], dropped[name] = judgeable(items)
    specs = {"smollm2": {"backend": "transformers", "model": "smollm2", "options": {"threads": args.threads}}}
    server = judge_spec_from_env()
    if server:
        specs["server"] = server
    context = OpContext(models=ModelRegistry(specs, CallCache(CACHE), True))
    report: dict = {"settings": vars(args), "sets": {}}
    for name, items in sets.items():
        votes = sum(len(it["labels"]) for it in items)
        rows: dict = {"longer answer wins (rule)": judged(
            [{"verdict": v, "orders": [v, v], "consistent": True} for v in longer_wins(items)], items)}
        if name == "mt_bench_human":
            with_gpt4 = [(it, it["gpt4"]) for it in items if it["gpt4"] is not None]
            rows["GPT-4 pair judgments from the file"] = {"pairs": len(with_gpt4), **agreement(
                [v for _, v in with_gpt4], [it for it, _ in with_gpt4])}
        rows["SmolLM2-135M logprobs"] = run_judge(context, "smollm2", "logprobs", items, args)
        rows["SmolLM2-135M logprobs, P averaged over both orders"] = averaged(rows["SmolLM2-135M logprobs"], items)
        print(name, "logprobs", json.dumps({k: v for k, v in rows["SmolLM2-135M logprobs"].items() if k != "examples"}))
        if args.n_generate:
            rows["SmolLM2-135M generate"] = run_judge(context, "smollm2", "generate", items[:args.n_generate], args)
            print(name, "generate", json.dumps({k: v for k, v in rows["SmolLM2-135M generate"].items()
                                                 if k != "examples"}))
        if server:
            for method in ("generate", "logprobs"):
                try:
                    rows[f"server {server['model']} {method}"] = run_judge(context, "server", method, items, args)
                    if method == "logprobs":
                        rows[f"server {server['model']} logprobs, P averaged over both orders"] = averaged(
                            rows[f"server {server['model']} logprobs"], items)
                except ModelFeatureError as err:  # e.g. no logprobs from this server: say so, run the rest
                    rows[f"server {server['model']} {method}"] = {"unsupported": str(err)}
        labels = [label for it in items for label in it["labels"]]
        report["sets"][name] = {"pairs": len(items), "dropped_for_a_blank_answer": dropped[name], "votes": votes,
                                "label_shares": {k: round(labels.count(k) / len(labels), 3) for k in ("A", "B", "tie")},
                                "judges": rows}
    report["model_usage"] = context.models.usage()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
