"""Synthesis against a real OpenAI-compatible server (llama-cpp-python serving the bundled SmolLM2), ours vs
distilabel, the same server, model and target count.

    python bench/bench_synth.py [--target 20] [--write]

Arms: our ``synth.self_instruct`` and ``synth.evol_instruct`` (generate -> verify -> accept, every candidate in
rejected/ with its reason) and distilabel 1.5's ``SelfInstruct`` and ``EvolInstruct`` tasks (run from
``.venv-distilabel``: ``python -m venv .venv-distilabel && .venv-distilabel/bin/pip install 'distilabel[openai]'``),
each asked for ``--target`` new instructions from the 175 Self-Instruct seed tasks. Per arm: wall time to the
target, accepted records per minute, the share of the output that is a near duplicate (MinHash Jaccard >= 0.7
of 5-word shingles, or ROUGE-L > 0.7, against the seeds or an earlier output), distinct-1/2 and the mean
pairwise embedding distance (all-MiniLM-L6-v2) of the output instructions, beside the seeds' own. For our arms,
the share of candidates stopped by each check. distilabel's tasks keep every line the model writes (its
SelfInstruct asks for instructions *about* a seed text; EvolInstruct has no elimination step), so their count
is reached sooner: the near-duplicate share says what that costs.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-distilabel" / "bin" / "python"
SEEDS = ROOT / "src" / "dataflywheel" / "data" / "self_instruct_seed_tasks.jsonl"
OUTPUTS = ROOT / "bench" / "synth_results" / "outputs.json"


def seed_instructions() -> list[str]:
    return [json.loads(line)["instruction"] for line in SEEDS.read_text(encoding="utf-8").splitlines()]


# ---- distilabel, run in its own venv ------------------------------------------------------------


def peer_worker(task: str, url: str, target: int, seed: int) -> None:
    """Runs under .venv-distilabel: distilabel's task until ``target`` instructions; prints JSON."""
    from distilabel.models import OpenAILLM
    from distilabel.steps.tasks import EvolInstruct, SelfInstruct

    seeds = seed_instructions()
    random.Random(seed).shuffle(seeds)
    kwargs = {"max_new_tokens": 256, "temperature": 0.7, "top_p": 0.5} if task == "self_instruct" else \
        {"max_new_tokens": 256, "temperature": 1.0, "top_p": 0.95}
    llm = OpenAILLM(model="smollm2", base_url=url, api_key="none", generation_kwargs=kwargs)
    if task == "self_instruct":
        step = SelfInstruct(llm=llm, num_instructions=5, input_batch_size=4)
    else:
        step = EvolInstruct(llm=llm, num_evolutions=1, generate_answers=True, input_batch_size=4)
    step.load()
    started, out, calls = time.perf_counter(), [], 0
    while len(out) < target and calls < len(seeds):
        batch = seeds[calls:calls + 4]
        calls += len(batch)
        inputs = [{"input": s} for s in batch] if task == "self_instruct" else [{"instruction": s} for s in batch]
        for row in next(step.process(inputs)):
            if task == "self_instruct":
                out += [i for i in row.get("instructions") or [] if i and i.strip()]
            elif row.get("evolved_instruction"):
                out.append(row["evolved_instruction"])
    print(json.dumps({"instructions": out[:target], "seconds": time.perf_counter() - started,
                      "proposed": len(out)}))


def run_peer(task: str, url: str, target: int) -> dict:
    if not PEER_PYTHON.exists():
        return {"error": "skipped: no .venv-distilabel"}
    done = subprocess.run([str(PEER_PYTHON), __file__, "--worker", task, "--url", url, "--target", str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": f"failed: {done.stderr.strip().splitlines()[-1][:160]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- ours -----------------------------------------------------------------------------------------


def run_ours(op: str, url: str, target: int, extra: dict) -> dict:
    from dataflywheel.pipeline import LocalExecutor, parse_recipe
    from dataflywheel.pipeline.run_dir import iter_checkpoint, iter_rejects
    from dataflywheel.records import instruction_text

    work = Path(tempfile.mkdtemp(prefix=f"bench-synth-{op}-"))
    steps = [{"op": op, "target": target, "max_rounds": 40, "keep_inputs": False, **extra}]
    spec = {"default": {"backend": "openai", "model": "smollm2",
                        "options": {"base_url": url, "chat_template_from": "smollm2"}}}
    recipe = {"output": {"dir": str(work / "run")}, "steps": steps, "seed": 0, "cache": "off", "models": spec}
    if op != "synth.self_instruct":  # evolve the seed tasks themselves (Self-Instruct starts from them alone)
        seeds = work / "seeds.jsonl"
        seeds.write_text("".join(json.dumps({"instruction": s, "output": ""}) + "\n" for s in seed_instructions()))
        recipe["input"] = {"path": str(seeds)}
    executor = LocalExecutor(parse_recipe(recipe), quiet=True)
    started = time.perf_counter()
    manifest = executor.execute(report=False)
    seconds = time.perf_counter() - started
    final = [r for batch in iter_checkpoint(Path(manifest["steps"][-1]["checkpoint"])) for r in batch]
    reasons = Counter(_kind(r["reason"]) for r in iter_rejects(executor.run_dir)
                      if not r["reason"].startswith("replaced by generated records"))
    return {"instructions": [instruction_text(r) for r in final], "seconds": seconds,
            "proposed": len(final) + sum(reasons.values()), "reasons": reasons}


def _kind(reason: str) -> str:
    """The check a reject reason names (its words before the first colon, parenthesis or number)."""
    head = reason.split(":")[0].split("(")[0].strip()
    return " ".join(w for w in head.split() if not any(c.isdigit() for c in w))[:60]


# ---- measures -------------------------------------------------------------------------------------


def rule_breaks(arm: str, instructions: list[str]) -> float:
    """Share of outputs that the method's own rules reject: Self-Instruct's filters (length, keywords,
    punctuation, banned starts) or Evol-Instruct's copied-prompt rule."""
    from dataflywheel.ops.synth.evol_instruct import COPY_PHRASES, copied_phrase
    from dataflywheel.ops.synth.self_instruct import SelfInstructConfig, rule_violation

    if "evol" in arm:
        broken = [copied_phrase(i, COPY_PHRASES) for i in instructions]
    else:
        broken = [rule_violation(i, SelfInstructConfig()) if i.strip() else "empty" for i in instructions]
    return sum(b is not None for b in broken) / max(1, len(instructions))


def measures(instructions: list[str], seeds: list[str], embedder) -> dict:
    import numpy as np

    from dataflywheel.algorithms.minhash import NearDuplicateIndex
    from dataflywheel.algorithms.rouge import RougePool

    index = NearDuplicateIndex(0.7)
    index.add(seeds, list(range(len(seeds))))
    minhash = sum(m is not None for m in index.screen(instructions, list(range(len(instructions)))))
    pool, rouge = RougePool(seeds), 0
    for text in instructions:
        score, _ = pool.max(text)
        rouge += score > 0.7
        pool.add(text)
    vectors = embedder.embed(instructions) if len(instructions) > 1 else np.zeros((1, 1))
    similarity = vectors @ vectors.T
    n = len(instructions)
    distance = float(1 - (similarity.sum() - np.trace(similarity)) / (n * (n - 1))) if n > 1 else float("nan")
    return {"minhash_dup": minhash / max(1, n), "rouge_dup": rouge / max(1, n), "distinct1": distinct(instructions, 1),
            "distinct2": distinct(instructions, 2), "distance": distance}


def distinct(texts: list[str], n: int) -> float:
    grams = [tuple(words[i:i + n]) for t in texts for words in [t.lower().split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=int, default=20)
    parser.add_argument("--arms", default="ours-self-instruct,distilabel-self-instruct,ours-evol,distilabel-evol")
    parser.add_argument("--write", action="store_true", help="write the section into docs/benchmarks.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        peer_worker(args.worker, args.url, args.target, 0)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import machine, table, write_section

    from dataflywheel.models.embed import SentenceTransformerEmbedder
    from dataflywheel.models.llama_server import llama_server

    seeds = seed_instructions()
    embedder = SentenceTransformerEmbedder("minilm")
    results = {}
    with llama_server(Path(tempfile.mkdtemp()) / "server.log") as url:
        for arm in args.arms.split(","):
            print(f"{arm} ...", file=sys.stderr, flush=True)
            if arm == "ours-self-instruct":
                results[arm] = run_ours("synth.self_instruct", url, args.target, {"prompts_per_round": 4})
            elif arm == "ours-evol":
                results[arm] = run_ours("synth.evol_instruct", url, args.target,
                                        {"per_round": 8, "max_tokens": 256, "answer_max_tokens": 256})
            elif arm == "distilabel-self-instruct":
                results[arm] = run_peer("self_instruct", url, args.target)
            elif arm == "distilabel-evol":
                results[arm] = run_peer("evol", url, args.target)
            print(f"  {json.dumps({k: v for k, v in results[arm].items() if k != 'instructions'}, default=str)}",
                  file=sys.stderr, flush=True)
    base = measures(seeds, [], embedder)
    rows = [["175 seed tasks (reference)", len(seeds), "", "", "", "", f"{base['distinct1']:.2f}",
             f"{base['distinct2']:.2f}", f"{base['distance']:.3f}"]]
    funnel = []
    for arm, result in results.items():
        if "error" in result:
            rows.append([arm, result["error"], "", "", "", "", "", "", ""])
            continue
        got = result["instructions"]
        m = measures(got, seeds, embedder)
        rows.append([arm, len(got), f"{result['seconds']:.0f}", f"{60 * len(got) / result['seconds']:.1f}",
                     f"{m['minhash_dup']:.0%} / {m['rouge_dup']:.0%}", f"{rule_breaks(arm, got):.0%}",
                     f"{m['distinct1']:.2f}",
                     f"{m['distinct2']:.2f}", f"{m['distance']:.3f}"])
        if "reasons" in result:
            total = result["proposed"]
            parts = ", ".join(f"{k}: {v / total:.0%}" for k, v in result["reasons"].most_common())
            funnel.append(f"- {arm}: {total} candidates, {len(got) / max(1, total):.0%} accepted; stopped by {parts}")
    body = (f"`python bench/bench_synth.py --target {args.target}` on {machine()}: the bundled SmolLM2-135M-Instruct "
            "behind llama-cpp-python's OpenAI-compatible server (one server, arms in turn), new instructions from "
            "the 175 Self-Instruct seed tasks. Near duplicates: against the seeds or an earlier output "
            "(MinHash Jaccard >= 0.7 / ROUGE-L > 0.7). distilabel 1.5 from its own venv.\n\n"
            + table(["arm", "instructions", "wall s", "per minute", "near duplicates (MinHash / ROUGE-L)",
                     "break the method's rules", "distinct-1", "distinct-2", "mean embedding distance"], rows)
            + "\n\nWhere our candidates went:\n\n" + "\n".join(funnel) + "\n\n"
            "Our Self-Instruct writes an instance (input and output) for each new task, classifying it first "
            "(three calls per task); distilabel's SelfInstruct keeps each line of a list of instructions *about* "
            "the seed, with no instance. \"Break the method's rules\": the share of the output that Self-Instruct's "
            "own filters (length 4-150 words, image/file/... keywords, leading punctuation, 'Write a program') or "
            "Evol-Instruct's elimination rule d (the evolved instruction copies the evolving prompt's words) would "
            "remove. The instructions of every arm are in `bench/synth_results/outputs.json`.\n")
    print(body)
    OUTPUTS.parent.mkdir(parents=True, exist_ok=True)
    OUTPUTS.write_text(json.dumps({arm: r.get("instructions", r.get("error")) for arm, r in results.items()},
                                  indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.write:
        write_section("Synthesis vs distilabel (Self-Instruct, Evol-Instruct)", body)


if __name__ == "__main__":
    main()
