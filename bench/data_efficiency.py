"""Data efficiency on AlpacaEval: which selected subset trains the best model for the same compute?

    python bench/data_efficiency.py                       # CPU protocol, every arm, then the report
    python bench/data_efficiency.py --arms random5 ifd5   # some arms only (results accumulate)
    python bench/data_efficiency.py --report-only         # rewrite docs/benchmarks.md from saved results

Protocol (issue 7). Instructions are split by a seeded permutation: 20% held out (references: the
gpt4_1106_preview answers), 80% for training, whose answers by all 12 AlpacaEval models form the pool. Every
arm fine-tunes LoRA adapters (r=8, q/k/v/o) on the bundled SmolLM2-135M-Instruct for the same number of
optimizer steps with the same seed, so the comparison is "which data buys most per step". Arms: the full
pool, random 5%/10%, the longest answers 5%/10% (the baseline to beat), and 5%/10% chosen by each scorer
or selector (IFD, Ask-LLM, Alpagasus judge, density sampling, DEITA, LESS, and a combination fixed in
advance). Each arm is scored on the held-out set by the mean token loss of the reference answers (lower =
closer to GPT-4 Turbo's answers; paired bootstrap CI of the difference to the random arm of equal size) and
by a pairwise judge's win rate against that random arm (both orders, ties when they disagree).

On 2 CPU cores the full protocol does not fit (one epoch over the ~7.7k-record pool is ~6 hours), so the
defaults shrink it, and say so in the report: a seeded sample of the training instructions
(--pool-instructions), answers cut for scoring, 256-token sequences, 20 steps of 4 records. On a GPU run
`--pool-instructions all --steps -1 --epochs 3 --max-length 1024 --heldout all --winrate 161`.
Scores, each arm's result and the win rates are saved as JSON under bench/data_efficiency_results/
(committed, so the table fills across sessions); adapters and the model-call cache go to
bench/results/data_efficiency/. A saved result is reused only when its protocol matches.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataflywheel.records import make_record, response_text  # noqa: E402
from report import machine, table, write_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "alpaca_eval" / "outputs"
RESULTS = ROOT / "bench" / "data_efficiency_results"
WORK = ROOT / "bench" / "results" / "data_efficiency"
REFERENCE_MODEL = "gpt4_1106_preview"
METHODS = ("longest", "ifd", "ask_llm", "judge", "density", "deita", "less", "combo")
ARMS = ["base", "random5", "random10", "full"] + [f"{m}{p}" for m in METHODS for p in (5, 10)] + ["flywheel10"]
FLYWHEEL_SELECTION = "length"
"""The flywheel arm's select stage: when the arm was added, longest10 was the best 10% arm measured since issue 13's
fixes (the scorer arms had not been re-run yet). Since then less10 measured slightly better (-0.001 [-0.002, +0.000]
vs longest10); the flywheel arm was not re-run with LESS selection."""
COMBO = {"ifd": 1.0, "ask_llm": 1.0, "length": 1.0}
"""Our combination, fixed before any arm ran: equal-weight z-scores of IFD, Ask-LLM p(yes) and answer length."""
BEFORE = RESULTS / "before_issue13"
"""Results of the arms whose scorers or selectors issue 13 changed, as they were measured before it."""


# ---------------------------------------------------------------- data

def load_outputs() -> dict[str, dict[str, dict]]:
    """model -> instruction -> row, for every model in the AlpacaEval outputs folder."""
    if not DATA.is_dir():
        sys.exit(f"missing {DATA}: the benchmark reads ../shared/data/alpaca_eval beside the repository")
    outputs = {}
    for path in sorted(DATA.glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        outputs[path.stem] = {r["instruction"]: r for r in rows}
    return outputs


def chat(instruction: str, answer: str, **meta) -> dict:
    return make_record([{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}],
                       meta=meta)


def build_split(outputs, protocol: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """Pool (every model's answer to the pool instructions), LESS target examples, held-out references."""
    instructions = list(outputs[REFERENCE_MODEL])
    order = np.random.default_rng(protocol["seed"]).permutation(len(instructions))
    n_heldout = round(0.2 * len(instructions))
    heldout_ids, train_ids = order[:n_heldout], order[n_heldout:]
    size = len(train_ids) if protocol["pool_instructions"] == "all" else int(protocol["pool_instructions"])
    pool_ids, target_ids = train_ids[:size], train_ids[size:size + protocol["target_examples"]]
    if len(target_ids) < protocol["target_examples"]:  # the whole training side is the pool: take targets from it
        target_ids = train_ids[: protocol["target_examples"]]
    pool = [chat(instructions[i], rows[instructions[i]]["output"], generator=model,
                 dataset=rows[instructions[i]].get("dataset"))
            for i in pool_ids for model, rows in outputs.items() if instructions[i] in rows]
    reference = outputs[REFERENCE_MODEL]
    targets = [chat(instructions[i], reference[instructions[i]]["output"]) for i in target_ids]
    n_eval = n_heldout if protocol["heldout"] == "all" else int(protocol["heldout"])
    heldout = [chat(instructions[i], reference[instructions[i]]["output"]) for i in heldout_ids[:n_eval]]
    return pool, targets, heldout


def cut(llm, records: list[dict], max_tokens: int) -> list[dict]:
    """Copies whose final answer keeps its first ``max_tokens`` tokens (scoring and references)."""
    from dataflywheel.ops.score.ifd import truncate

    out = []
    for r in records:
        messages = r["messages"][:-1] + [{"role": "assistant", "content": truncate(llm, response_text(r), max_tokens)}]
        out.append({**r, "messages": messages})
    return out


# ---------------------------------------------------------------- saved results

def load_json(path: Path, protocol: dict) -> dict | None:
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("protocol") == protocol:
            return saved
    return None


def save_json(path: Path, protocol: dict, payload: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"protocol": protocol, **payload}
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return payload


# ---------------------------------------------------------------- scoring

NEEDS = {"longest": {"length"}, "ifd": {"ifd"}, "ask_llm": {"ask_llm"}, "judge": {"judge"}, "deita": {"deita"},
         "less": {"less"}, "combo": set(COMBO), "density": set(), "flywheel": {FLYWHEEL_SELECTION}}
"""The scores each method's arms rank by."""


def compute_scores(pool, targets, protocol: dict, registry, quiet: bool,
                   needed: set[str] | None = None) -> dict[str, list[float]]:
    """The scores the arms use (``needed``; default all), for every pool record (cached in scores.json, calls in
    the model cache)."""
    needed = needed if needed is not None else {"length", "ifd", "ask_llm", "judge", "deita", "less"}
    from dataflywheel.ops import OpContext, get_operator
    from dataflywheel.pipeline.progress import StepProgress

    path = RESULTS / "scores.json"
    saved = load_json(path, protocol) or {"scores": {}, "seconds": {}}
    scores, seconds = saved["scores"], saved["seconds"]
    llm = registry.llm("default")
    scoring = None  # answers cut for the scorers, made when a score is missing (it loads the tokenizer)
    context = OpContext(seed=protocol["seed"], models=registry, quiet=quiet)

    def op(name, **config):
        cls = get_operator(name)
        return cls(cls.Config(**config), context)

    if "length" not in scores and "length" in needed:
        tokenizer = llm.tokenizer
        scores["length"] = [float(len(tokenizer(response_text(r), add_special_tokens=False)["input_ids"]))
                            for r in pool]
    scorers = {"ifd": op("score.ifd", model="default", max_answer_tokens=protocol["score_answer_tokens"]),
               "ask_llm": op("score.ask_llm", model="default"),
               "judge": op("score.judge", rubric="alpagasus", model="default", score_name="judge"),
               "deita": op("score.deita", model="default")}  # DEITA's own score: complexity x quality
    flags = {"ifd": "ifd.above_1"}  # IFD > 1: top_k never picks these (Cherry LLM drops them)
    with StepProgress(quiet) as progress:
        for name, scorer in scorers.items():
            if name in scores or name not in needed:
                continue
            started = time.perf_counter()
            scoring = scoring or cut(llm, pool, protocol["score_answer_tokens"])
            values, flagged = [], []
            with progress.step(f"score {name}", len(scoring)) as advance:
                for start in range(0, len(scoring), 16):
                    for value in scorer.score_batch(scoring[start:start + 16]):
                        values.append(float(value[name] if isinstance(value, dict) else value))
                        if name in flags:
                            flagged.append(float(value[flags[name]]))
                    advance(min(16, len(scoring) - start))
            scores[name], seconds[name] = values, time.perf_counter() - started
            if name in flags:
                scores[flags[name]] = flagged
            save_json(path, protocol, {"scores": scores, "seconds": seconds})
        if "less" not in scores and "less" in needed:
            started = time.perf_counter()
            target_file = WORK / "less_target.jsonl"
            target_file.parent.mkdir(parents=True, exist_ok=True)
            from dataflywheel.io import write_records

            write_records(targets, target_file, "messages")
            with progress.step("score less", 1) as advance:
                selection = op("select.less", target=str(target_file), fraction=0.1,
                               max_length=protocol["score_answer_tokens"]).select(lambda: iter([pool]))
                advance(1)
            scores["less"] = [selection.scores[i]["less"] for i in range(len(pool))]
            seconds["less"] = time.perf_counter() - started
            save_json(path, protocol, {"scores": scores, "seconds": seconds})
    return scores


# ---------------------------------------------------------------- arms

def split_arm(arm: str) -> tuple[str, int | None]:
    """'ifd10' -> ('ifd', 10); 'full' -> ('full', None)."""
    method = arm.rstrip("0123456789")
    return method, int(arm[len(method):]) if arm != method else None


def choose(arm: str, pool, scores, protocol: dict, registry) -> list[int]:
    """Pool positions an arm trains on."""
    from dataflywheel.algorithms.subset import budget_size
    from dataflywheel.ops import OpContext, get_operator

    n = len(pool)
    if arm == "full":
        return list(range(n))
    method, percent = split_arm(arm)
    budget = budget_size(n, None, percent / 100)
    if method == "random":
        return sorted(int(i) for i in np.random.default_rng(protocol["seed"]).choice(n, budget, replace=False))
    scored = [{**r, "scores": {name: values[i] for name, values in scores.items()}} for i, r in enumerate(pool)]
    context = OpContext(seed=protocol["seed"], models=registry, quiet=True)
    configs = {"longest": ("select.top_k", {"scores": {"length": 1.0}}),
               "ifd": ("select.top_k", {"scores": {"ifd": 1.0}}),
               "ask_llm": ("select.top_k", {"scores": {"ask_llm": 1.0}}),
               "judge": ("select.top_k", {"scores": {"judge": 1.0}}),
               "less": ("select.top_k", {"scores": {"less": 1.0}}),
               "combo": ("select.top_k", {"scores": COMBO}),
               "density": ("select.density_sample", {}),
               "deita": ("select.deita", {"score": "deita"})}  # DEITA's evol score, its diversity walk
    name, config = configs[method]
    cls = get_operator(name)
    selection = cls(cls.Config(count=budget, **config), context).select(lambda: iter([scored]))
    return [i for i in range(n) if i not in selection.rejected]




def train_config(protocol: dict):
    from dataflywheel.train.fit import TrainConfig

    return TrainConfig(max_steps=protocol["steps"], epochs=protocol["epochs"], batch_size=protocol["batch_size"],
                       max_length=protocol["max_length"], learning_rate=protocol["lr"], seed=protocol["seed"])


def run_flywheel(arm: str, pool, targets, scores, protocol: dict, quiet: bool) -> tuple[list[dict], dict, dict]:
    """Two `flywheel loop` rounds: select the 10% budget by FLYWHEEL_SELECTION, Evol-Instruct per AlpacaEval
    category (the weakest category of round 1 on the LESS targets gets twice the seeds and synthesis in round
    2), train the arm's steps from the base model each round. The training set and fit of the last round."""
    from dataflywheel.algorithms.subset import budget_size
    from dataflywheel.io import read_all, write_records
    from dataflywheel.loop.recipe import parse_loop_recipe
    from dataflywheel.loop.rounds import run_loop

    folder = WORK / arm
    folder.mkdir(parents=True, exist_ok=True)
    scored = [{**r, "scores": {FLYWHEEL_SELECTION: scores[FLYWHEEL_SELECTION][i]}} for i, r in enumerate(pool)]
    write_records(scored, folder / "pool.jsonl", with_id=True, with_scores=True)
    outputs = load_outputs()[REFERENCE_MODEL]
    steer_set = [{**t, "meta": {**t["meta"], "dataset": outputs[t["messages"][0]["content"]]["dataset"]}}
                 for t in targets]  # never the evaluation's held-out instructions
    write_records(steer_set, folder / "steer.jsonl", with_id=True)
    recipe = parse_loop_recipe({
        "input": {"path": str(folder / "pool.jsonl")}, "output": {"dir": str(folder / "loop")},
        "seed": protocol["seed"], "cache": str(WORK / "cache.sqlite"),
        "models": {"default": {"backend": "transformers", "model": "smollm2"}},
        "select": [{"op": "select.top_k", "scores": {FLYWHEEL_SELECTION: 1.0},
                    "count": budget_size(len(pool), None, 0.10)}],
        "synthesize": [{"op": "synth.evol_instruct", "max_rounds": 2, "max_tokens": 160,
                        "answer_max_tokens": protocol["reference_tokens"], "check_max_tokens": 4}],
        "train": train_config(protocol).model_dump(),
        "evaluate": {"heldout": {"path": str(folder / "steer.jsonl")}},
        "steer": {"category": "dataset", "weakest": 1, "boost": 2.0, "seeds": 2, "target": 2},
        "loop": {"rounds": 2}})
    manifest = run_loop(recipe, resume=(folder / "loop" / "loop.json").exists(), quiet=quiet)
    last = manifest["rounds"][-1]
    train_set, _ = read_all(folder / "loop" / f"round_{last['round']}" / "train_set.jsonl")
    return train_set, last["train"], {"rounds": [{k: m[k] for k in ("round", "curated", "carried", "synthesized",
                                                                    "weak_from_last_round", "plan", "heldout",
                                                                    "seconds")} for m in manifest["rounds"]]}


def run_arm(arm: str, pool, heldout, scores, protocol: dict, registry, quiet: bool, targets=None) -> dict:
    from dataflywheel.models.transformers_llm import TransformersLLM
    from dataflywheel.train.evaluate import answers, reference_loss
    from dataflywheel.train.fit import train

    path = RESULTS / f"{arm}.json"
    saved = load_json(path, protocol)
    if saved is not None:
        return saved
    started = time.perf_counter()
    records, adapter, fit, extra = [], None, None, {}
    if arm.startswith("flywheel"):
        records, fit, extra = run_flywheel(arm, pool, targets, scores, protocol, quiet)
        adapter = fit["adapter"]
    elif arm != "base":
        records = [pool[i] for i in choose(arm, pool, scores, protocol, registry)]
        fit = train(records, WORK / arm, train_config(protocol), quiet=quiet)
        adapter = fit["adapter"]
    trained = time.perf_counter()
    llm = TransformersLLM("smollm2", adapter=adapter, max_length=protocol["max_length"] + 64)
    references = cut(llm, heldout, protocol["reference_tokens"])
    loss = reference_loss(llm, references)
    replies = answers(llm, heldout[: protocol["winrate"]], protocol["answer_tokens"])
    generators = dict(collections.Counter(r["meta"].get("generator", "synthesized") for r in records))
    return save_json(path, protocol, {
        "arm": arm, "records": len(records), "generators": generators, "train": fit, **extra,
        "reference_loss": loss, "answers": replies,
        "seconds": {"train": trained - started, "evaluate": time.perf_counter() - trained}})


def baseline_of(arm: str) -> str | None:
    if arm in ("base", "random5", "random10"):
        return None
    return "random10" if arm == "full" else f"random{split_arm(arm)[1]}"


def judge_arm(arm: str, results: dict, heldout, protocol: dict, registry) -> dict | None:
    """Win rate of ``arm`` over the random arm of equal size (the full pool: over random 10%)."""
    from dataflywheel.train.evaluate import win_rate

    other = baseline_of(arm)
    if other is None or arm not in results or other not in results:
        return None
    judged = {**protocol, "judge": registry.spec("judge").cache_name()}
    path = RESULTS / "winrates" / f"{arm}_vs_{other}.json"
    saved = load_json(path, judged)
    if saved is not None:
        return saved
    started = time.perf_counter()
    verdict = win_rate(registry.llm("judge"), heldout[: protocol["winrate"]], results[arm]["answers"],
                       results[other]["answers"])
    return save_json(path, judged,
                     {"arm": arm, "baseline": other, **verdict, "seconds": time.perf_counter() - started})


# ---------------------------------------------------------------- report

def fmt_ci(value: float, ci: list[float], digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def strongest_models(count: int = 3) -> set[str]:
    """The ``count`` models with the highest AlpacaEval 2 win rate in leaderboard.csv."""
    import csv

    with (DATA.parent / "leaderboard.csv").open(encoding="utf-8") as f:
        rated = [(float(row["win_rate"]), row["model"]) for row in csv.DictReader(f) if row["win_rate"]]
    return {model for _, model in sorted(rated, reverse=True)[:count]}


def judge_name(wins: dict) -> str:
    return next(iter(wins.values()))["protocol"]["judge"] if wins else "the bundled SmolLM2"


def paired_delta(result: dict, other: dict) -> tuple[float, float, float]:
    """Mean per-instruction reference-loss difference and its 95% bootstrap interval."""
    from dataflywheel.train.evaluate import bootstrap_ci

    diff = np.array(result["reference_loss"]["per_record"]) - np.array(other["reference_loss"]["per_record"])
    diff = diff[~np.isnan(diff)]
    return (float(diff.mean()), *bootstrap_ci(diff))


def write_report(protocol: dict, results: dict, wins: dict, scores_seconds: dict, command: str) -> str:
    strong = strongest_models()
    rows = []
    for arm in ARMS:
        if arm not in results:
            rows.append([arm, "not run yet", "", "", "", "", ""])
            continue
        r = results[arm]
        loss = r["reference_loss"]
        other = baseline_of(arm)
        delta = ""
        if other in results:
            d = paired_delta(r, results[other])
            delta = f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] vs {other}"
        win = wins.get(arm)
        win_text = f"{fmt_ci(win['win_rate'], win['ci95'], 2)} ({win['ties']} ties)" if win else ""
        minutes = f"{sum(r['seconds'].values()) / 60:.1f}"
        from_strong = sum(n for model, n in r["generators"].items() if model in strong)
        share = f"{from_strong / r['records']:.0%}" if r["records"] else ""
        rows.append([arm, r["records"], share, fmt_ci(loss["reference_loss"], loss["ci95"]), delta, win_text, minutes])
    for arm in ARMS:  # the same arms as measured before issue 13 fixed their scorers
        old = load_json(BEFORE / f"{arm}.json", protocol)
        if old is None:
            continue
        other = baseline_of(arm)
        delta = ""
        if other in results:
            d = paired_delta(old, results[other])
            delta = f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] vs {other}"
        from_strong = sum(n for model, n in old["generators"].items() if model in strong)
        rows.append([f"*{arm}, before issue 13*", old["records"], f"{from_strong / old['records']:.0%}",
                     fmt_ci(old["reference_loss"]["reference_loss"], old["reference_loss"]["ci95"]), delta, "",
                     f"{sum(old['seconds'].values()) / 60:.1f}"])
    findings = []
    for percent in (5, 10):
        candidates = [a for a in results if split_arm(a)[1] == percent and split_arm(a)[0] not in ("random", "flywheel")]
        if not candidates:
            continue
        best = min(candidates, key=lambda a: results[a]["reference_loss"]["reference_loss"])
        ours = [a for a in candidates if not a.startswith("longest")]
        text = f"best {percent}% arm by reference loss: {best}"
        for other in ("full", f"random{percent}", f"longest{percent}"):
            if other in results and other != best:
                d = paired_delta(results[best], results[other])
                text += f"; vs {other} Δ {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
        if ours and best.startswith("longest"):  # the length baseline won: how far is our best method?
            runner = min(ours, key=lambda a: results[a]["reference_loss"]["reference_loss"])
            d = paired_delta(results[runner], results[best])
            text += f"; our best selection method, {runner}, vs {best}: Δ {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
        findings.append(text + ".")
    if "flywheel10" in results:
        fly = results["flywheel10"]
        one_shot = [a for a in results if split_arm(a)[1] == 10 and split_arm(a)[0] not in ("random", "flywheel")]
        text = (f"Flywheel (two `flywheel loop` rounds, {fly['records']} records in the last round's training set, "
                f"{fly['generators'].get('synthesized', 0)} of them synthesized; round 2 steered at "
                f"{', '.join(fly['rounds'][-1]['weak_from_last_round']) or 'nothing'})")
        best_one_shot = [min(one_shot, key=lambda a: results[a]["reference_loss"]["reference_loss"])] if one_shot else []
        verdict = ""
        for other in best_one_shot + ["random10"]:
            if other in results:
                d = paired_delta(fly, results[other])
                text += f"; vs {other} Δ {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
                if other in best_one_shot:
                    verdict = (f" The loop's synthesized records (the bundled 135M model's) made it worse than {other} "
                               "alone: at this budget a teacher this weak costs more than it brings" if d[1] > 0 else
                               f" It beat {other}: the steered synthesis added value" if d[2] < 0 else
                               f" It is not distinguishable from {other}")
        findings.append(text + " (negative: the flywheel's model is closer to the references)." +
                        (verdict + "." if verdict else ""))
    if wins and all(w["ties"] == w["n"] for w in wins.values()):
        findings.append(f"Every judged pair was a tie: the judge ({judge_name(wins)}) picked the same position in "
                        "both orders, so its win rates say nothing here; set DATAFLYWHEEL_JUDGE_BASE_URL and "
                        "DATAFLYWHEEL_JUDGE_MODEL to judge with a stronger model (answers are saved, only the "
                        "judging reruns).")
    total = sum(sum(r["seconds"].values()) for r in results.values()) + sum(
        w.get("seconds", 0) for w in wins.values()) + sum(scores_seconds.values())
    judge = judge_name(wins)
    one_shot_arm = ("longest" if FLYWHEEL_SELECTION == "length" else FLYWHEEL_SELECTION) + "10"
    p = protocol
    body = (
        f"`{command}` on {machine()}; CPU, bundled SmolLM2-135M-Instruct fp32 (`--report-only` rewrites this "
        f"section from the saved results). Run time {total / 60:.0f} min in all: scoring "
        f"{sum(scores_seconds.values()) / 60:.0f} min, per-arm minutes (training + evaluation) in the table, judging "
        f"the rest; other work shared the 2 cores during parts of it.\n\n"
        f"Protocol, shrunk for 2 CPU cores (issue 7's full protocol needs a GPU): held-out = the seeded 20% of "
        f"AlpacaEval's 805 instructions (seed {p['seed']}), the first {p['heldout']} of them scored; references = "
        f"gpt4_1106_preview's answers cut to {p['reference_tokens']} tokens. Pool = all 12 models' answers to "
        f"{p['pool_instructions']} seeded training instructions ({p['pool_size']} records); scorers see answers cut "
        f"to {p['score_answer_tokens']} tokens. Every arm trains LoRA r=8 (q/k/v/o) for the same {p['steps']} "
        f"optimizer steps of {p['batch_size']} records (lr {p['lr']}, {p['max_length']}-token sequences, seed "
        f"{p['seed']}): equal compute, so the full pool is seen only in part and 5% arms are seen about twice. "
        f"LESS's target = {p['target_examples']} other training instructions with gpt4_1106_preview answers: "
        f"it alone is shown examples of the evaluation's reference style (select.less defaults: LoRA on the top 8 "
        f"layers, a 4-epoch warm-up on 5% of the pool, features at the last checkpoint). "
        f"Combination (fixed in advance) = equal-weight z-scores of IFD, Ask-LLM and answer length; DEITA = "
        f"score.deita (the judge's complexity x quality, DEITA's evol score) walked with cosine tau 0.9 on MiniLM "
        f"embeddings. IFD arms never pick IFD > 1. Rows in italics: the same arms measured before issue 13 fixed "
        f"IFD, the judges, Ask-LLM, density, LESS's warm-up (then 1 epoch, a new permutation per batch) and DEITA "
        f"(whose arm then walked the combination). Win rate = judge ({judge}) preference over "
        f"the random arm of equal size on the first {p['winrate']} held-out instructions, answers of at most "
        f"{p['answer_tokens']} tokens, each pair judged in both orders (a tie when they disagree). Loss CIs are "
        f"95% bootstrap; Δ is paired per instruction (negative = closer to the references than random). "
        f"'From the 3 strongest' = share of the arm's records answered by {', '.join(sorted(strong))} (AlpacaEval 2 "
        f"leaderboard; 25% of the pool). Flywheel arm = two rounds of `flywheel loop` over the pool: select the "
        f"10% budget by {FLYWHEEL_SELECTION} (the one-shot {one_shot_arm} arm's records), Evol-Instruct with the "
        f"bundled model "
        f"from 2 seeds per AlpacaEval category (target 2; round 2 gives the category with the highest loss on "
        f"the LESS targets twice both), what round 1 made kept in round 2; each round trains the same "
        f"{p['steps']} steps from the base model, so the final model has the arms' training budget (the loop also "
        f"spent one more training run and the steering evaluations; its minutes include them).\n\n"
        + table(["arm", "records", "from the 3 strongest models", "reference loss [95% CI]", "Δ loss vs random of equal size [95% CI]",
                 "judge win rate vs random [95% CI]", "minutes"], rows)
        + ("\n\nMeasured: " + " ".join(findings) if findings else "")
        + ("\n\nAt this budget training moves the held-out loss only about 1% from the base model, so the "
           "differences between arms are small; the paired intervals show which of them are not noise. The GPU "
           "protocol (see the script's docstring) has not been run: no GPU was lent to this work.")
    )
    write_section("Data efficiency on AlpacaEval (CPU, equal steps)", body)
    return body


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="*", default=ARMS, choices=ARMS)
    parser.add_argument("--pool-instructions", default="64", help="training instructions in the pool, or 'all'")
    parser.add_argument("--heldout", default="64", help="held-out instructions scored by reference loss, or 'all'")
    parser.add_argument("--winrate", type=int, default=32, help="held-out instructions judged for the win rate")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per arm (-1: --epochs instead)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--quiet", "-q", action="store_true")
    args = parser.parse_args()

    from dataflywheel.models import CallCache, ModelRegistry
    from dataflywheel.train.evaluate import judge_spec_from_env

    protocol = {"seed": args.seed, "pool_instructions": args.pool_instructions, "heldout": args.heldout,
                "winrate": args.winrate, "steps": args.steps, "epochs": args.epochs, "batch_size": args.batch_size,
                "max_length": args.max_length, "lr": args.lr, "target_examples": 16, "score_answer_tokens": 128,
                "reference_tokens": 256, "answer_tokens": 96}
    pool, targets, heldout = build_split(load_outputs(), protocol)
    protocol["pool_size"] = len(pool)
    specs = {"default": {"backend": "transformers", "model": "smollm2"}}
    specs["judge"] = judge_spec_from_env() or specs["default"]
    WORK.mkdir(parents=True, exist_ok=True)
    registry = ModelRegistry(specs, CallCache(WORK / "cache.sqlite"), quiet=args.quiet)

    results = {arm: saved for arm in ARMS if (saved := load_json(RESULTS / f"{arm}.json", protocol))}
    scores_file = load_json(RESULTS / "scores.json", protocol)
    if not args.report_only:
        needed = set().union(*(NEEDS.get(split_arm(arm)[0], set()) for arm in args.arms))
        scores = compute_scores(pool, targets, protocol, registry, args.quiet, needed) if needed else {}
        for arm in args.arms:
            print(f"arm {arm} ...", flush=True)
            results[arm] = run_arm(arm, pool, heldout, scores, protocol, registry, args.quiet, targets)
        scores_file = load_json(RESULTS / "scores.json", protocol)
    wins = {}
    for arm in ARMS:
        if args.report_only:
            other = baseline_of(arm)
            saved = other and load_json(RESULTS / "winrates" / f"{arm}_vs_{other}.json",
                                        {**protocol, "judge": registry.spec("judge").cache_name()})
        else:
            saved = judge_arm(arm, results, heldout, protocol, registry)
        if saved:
            wins[arm] = saved
    command = (f"python bench/data_efficiency.py --pool-instructions {args.pool_instructions} --heldout {args.heldout} "
               f"--winrate {args.winrate} --steps {args.steps} --max-length {args.max_length}")
    print(write_report(protocol, results, wins, (scores_file or {}).get("seconds", {}), command))


if __name__ == "__main__":
    main()
