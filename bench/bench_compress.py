"""Prompt compression vs the llmlingua package: requested vs achieved ratio, speed, and fidelity.

    python bench/bench_compress.py [--alpaca 3 --corpus 3 --ratios 0.3 0.5 0.7] [--write]
    (the peer needs `make bench-peers`: the llmlingua package in .venv-llmlingua)

Prompts: the AlpacaEval instructions with the longest text (reference answer: gpt4_1106_preview's output),
and c4 documents from ../shared/data/corpus followed by "Summarize the text above in two sentences."
(reference answer: the model's own greedy answer to the full prompt). Every method compresses the same
prompts at each ratio with the same bundled SmolLM2 (float32, 2 threads):

- ours: distill.selective_context (phrase level) and distill.llmlingua (word level), with their defaults;
- llmlingua: the PyPI package, LLMLingua-1 (``PromptCompressor(<our converted SmolLM2 dir>).compress_prompt``
  with its defaults), in its own venv with transformers 4.46.3 (llmlingua 0.2.2 needs tuple KV caches); it gets the question we protect as its instruction/question and the
  rest as its context. Its tokenizer for counting (tiktoken's gpt-3.5 encoding, a download) is replaced by
  SmolLM2's, so its rate means the same tokens as ours;
- random: random words dropped to the same ratio, with the same protected spans (our units, random scores);
- "@ package's": ours again, each prompt at the share of tokens the package actually kept for it (the package
  keeps more than asked), so fidelity is also compared at equal ratio (speed not measured: one prompt a call).

Measured: achieved ratio (SmolLM2 tokens of the compressed / the original prompt), compression tokens/s
(original tokens over wall time, model load excluded, one warm-up call first), and fidelity: the mean
per-token loss of the reference answer (its first 64 tokens) after the compressed prompt minus that after the
full prompt (lower is better), and answer agreement, ROUGE-L F1 between the model's greedy answer
(``--answer-tokens``) to the compressed and to the full prompt (higher is better).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PEER_PYTHON = ROOT / ".venv-llmlingua" / "bin" / "python"
ASK = "Summarize the text above in two sentences."


# ---- the peer, run inside .venv-llmlingua (imports nothing of ours) ---------------------------------------

def peer_main(inp: str, out: str) -> None:
    import tiktoken
    import torch
    from transformers import AutoTokenizer

    job = json.loads(Path(inp).read_text())
    torch.set_num_threads(job["threads"])
    model_dir = _with_architecture(job["model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    class Encoding:  # tiktoken's gpt-3.5 encoding is a download: count with the compressor's own tokenizer
        @staticmethod
        def encode(text, **_):
            return tokenizer(text, add_special_tokens=False)["input_ids"]

    tiktoken.encoding_for_model = lambda name: Encoding()
    from llmlingua import PromptCompressor

    compressor = PromptCompressor(model_name=model_dir, device_map="cpu")
    first = job["prompts"][0]
    compressor.compress_prompt([first["context"][:400]], instruction=first["instruction"],
                               question=first["question"], rate=0.5)  # warm-up
    results = {}
    for ratio in job["ratios"]:
        start = time.perf_counter()
        texts = [compressor.compress_prompt([p["context"]], instruction=p["instruction"], question=p["question"],
                                            rate=ratio)["compressed_prompt"] for p in job["prompts"]]
        results[str(ratio)] = {"texts": texts, "seconds": time.perf_counter() - start}
    Path(out).write_text(json.dumps(results))


def _with_architecture(model_dir: str) -> str:
    """Our converted SmolLM2 as transformers 4 reads it (llmlingua 0.2.2 needs its tuple KV caches): the
    architecture named, rope_theta, a fast tokenizer class, and safetensors with format metadata. Made once
    in the temp dir; the weights are the same."""
    source = Path(model_dir)
    target = Path(tempfile.gettempdir()) / f"smollm2-transformers4-{(source / 'model.safetensors').stat().st_size}"
    if (target / "config.json").exists():
        return str(target)
    from safetensors.torch import load_file, save_file

    work = Path(tempfile.mkdtemp(prefix="smollm2-", dir=tempfile.gettempdir()))
    for item in source.iterdir():
        if item.name not in ("config.json", "tokenizer_config.json", "model.safetensors"):
            (work / item.name).symlink_to(item)
    weights = load_file(str(source / "model.safetensors"))
    if "model.embed_tokens.weight" not in weights:  # tied weights, saved once as lm_head
        weights["model.embed_tokens.weight"] = weights["lm_head.weight"].clone()
    save_file(weights, str(work / "model.safetensors"), metadata={"format": "pt"})
    tokenizer_config = json.loads((source / "tokenizer_config.json").read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"  # transformers 4 has no TokenizersBackend
    (work / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    config = json.loads((source / "config.json").read_text())
    config["architectures"] = config.get("architectures") or ["LlamaForCausalLM"]
    config.setdefault("rope_theta", (config.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    (work / "config.json").write_text(json.dumps(config))
    work.rename(target)
    return str(target)


# ---- ours -------------------------------------------------------------------------------------------------

def load_prompts(n_alpaca: int, n_corpus: int, max_chars: int) -> list[dict]:
    rows = [json.loads(line) for line in (DATA / "alpaca_eval" / "outputs" / "gpt4_1106_preview.jsonl").open()]
    rows.sort(key=lambda r: (-len(r["instruction"]), r["instruction"]))
    prompts = [{"source": "alpaca_eval", "prompt": r["instruction"][:max_chars], "reference": r["output"]}
               for r in rows[:n_alpaca]]
    docs = [json.loads(line)["text"] for line in (DATA / "corpus" / "c4_demo.jsonl").open()]
    docs = [d for d in docs if len(d) >= max_chars]
    for doc in docs[:n_corpus]:
        cut = doc[:max_chars]
        cut = cut[: cut.rfind(". ") + 1] if ". " in cut else cut
        prompts.append({"source": "corpus", "prompt": f"{cut.strip()}\n\n{ASK}", "reference": None})
    return prompts


def split_for_peer(text: str) -> dict:
    """Our protected question as llmlingua's instruction (a leading span) and question (a trailing span)."""
    from dataflywheel.ops.distill.units import question_spans

    spans = question_spans(text)
    instruction = question = ""
    start, end = 0, len(text)
    if spans and spans[0][0] == 0:
        instruction, start = text[:spans[0][1]], spans[0][1]
    if spans and spans[-1][1] == len(text) and spans[-1][0] >= start:
        question, end = text[spans[-1][0]:], spans[-1][0]
    return {"instruction": instruction.strip(), "context": text[start:end].strip(), "question": question.strip()}


def compress_ours(name: str, texts: list[str], ratio: float, registry) -> tuple[list[str], float]:
    from dataflywheel.ops import OpContext, get_operator
    from dataflywheel.records import make_record

    op_class = get_operator(name)
    op = op_class(op_class.Config(ratio=ratio, min_tokens=1), OpContext(models=registry))
    records = [make_record([{"role": "user", "content": t}]) for t in texts]
    start = time.perf_counter()
    out = op.map_batch(records)
    return [r["messages"][0]["content"] for r in out], time.perf_counter() - start


def compress_random(texts: list[str], ratio: float, tokenizer, seed: int) -> list[str]:
    from dataflywheel.ops.distill.compressors import Job, drop_lowest, fit_ratio, offsets
    from dataflywheel.ops.distill.units import build_units, protected_spans, render

    rng = random.Random(seed)
    out = []
    for text in texts:
        units = build_units(text, offsets(tokenizer, text), protected_spans(text, ("question", "code", "numbers")),
                            "word")
        job = Job(units, ratio)
        job.scores = [rng.random() for _ in units.units]
        drop_lowest(job, list(range(len(units.units))), job.keep_target)
        fit_ratio(job, tokenizer)
        out.append(render(units, job.dropped))
    return out


def run_peer(prompts: list[dict], ratios: list[float], threads: int) -> tuple[dict | None, str]:
    if not PEER_PYTHON.exists():
        return None, f"{PEER_PYTHON} missing (make bench-peers)"
    from dataflywheel.models.bundled import smollm2_dir

    with tempfile.TemporaryDirectory() as tmp:
        job = {"model_dir": str(smollm2_dir()), "threads": threads, "ratios": ratios,
               "prompts": [split_for_peer(p["prompt"]) for p in prompts]}
        (Path(tmp) / "in.json").write_text(json.dumps(job))
        done = subprocess.run([str(PEER_PYTHON), __file__, "--peer", str(Path(tmp) / "in.json"), str(Path(tmp) / "out.json")],
                              capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode != 0:
            return None, done.stderr[-2000:]
        version = subprocess.run([str(PEER_PYTHON), "-c", "import importlib.metadata as m; print(m.version('llmlingua'))"],
                                 capture_output=True, text=True).stdout.strip()
        return json.loads((Path(tmp) / "out.json").read_text()), version


def fidelity(llm, texts: list[str], references: list[str], answer_tokens: int):
    """(per-prompt reference loss, per-prompt answers) for prompts ``texts``."""
    from dataflywheel.models.llm import GenerationParams

    prefixes = [llm.format_chat([{"role": "user", "content": t}]) for t in texts]
    losses = [-sum(v) / len(v) for v in llm.logprobs(prefixes, references)]
    answers = [a[0] for a in llm.chat([[{"role": "user", "content": t}] for t in texts],
                                       GenerationParams(max_tokens=answer_tokens))]
    return losses, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--alpaca", type=int, default=3, help="AlpacaEval instructions (the longest)")
    parser.add_argument("--corpus", type=int, default=3, help="c4 documents")
    parser.add_argument("--max-chars", type=int, default=1400, help="prompt text cut to this many characters")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--answer-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "compress.json"))
    parser.add_argument("--write", action="store_true", help="write the section into docs/benchmarks.md")
    parser.add_argument("--from-json", help="only write the section from a results file of an earlier run")
    args = parser.parse_args()
    if args.peer:
        peer_main(*args.peer)
        return
    if args.from_json:
        write_doc(json.loads(Path(args.from_json).read_text()))
        return
    sys.path.insert(0, str(ROOT / "src"))
    from dataflywheel.algorithms.rouge import rouge_l
    from dataflywheel.models import ModelRegistry
    from dataflywheel.models.cache import CallCache
    from dataflywheel.models.llm import GenerationParams

    began, load_before = time.perf_counter(), os.getloadavg()[0]
    prompts = load_prompts(args.alpaca, args.corpus, args.max_chars)
    texts = [p["prompt"] for p in prompts]
    spec = {"backend": "transformers", "model": "smollm2", "options": {"threads": args.threads}}
    registry = ModelRegistry({"compressor": spec}, cache=None, quiet=True)  # compression: never from a cache
    # fidelity calls are cached, so a rerun pays only for prompts it has not scored yet
    llm = ModelRegistry({"default": spec}, cache=CallCache(Path(args.out).with_suffix(".calls.sqlite")),
                        quiet=True).llm("default")
    tokenizer = llm.tokenizer
    counts = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    print(f"{len(texts)} prompts, {sum(counts)} tokens (mean {statistics.mean(counts):.0f})", flush=True)

    full_answers = [a[0] for a in llm.chat([[{"role": "user", "content": t}] for t in texts],
                                           GenerationParams(max_tokens=args.answer_tokens))]
    references = []
    for p, own in zip(prompts, full_answers):
        ids = tokenizer(p["reference"] or own, add_special_tokens=False)["input_ids"][:64]
        references.append(tokenizer.decode(ids))
    full_losses, _ = fidelity(llm, texts, references, 1)
    print(f"full prompts answered and scored: {time.perf_counter() - began:.0f} s", flush=True)

    compress_ours("distill.selective_context", texts[:1], 0.5, registry)  # warm-up (loads the weights)
    variants: dict[tuple[str, float], tuple[list[str], float | None]] = {}
    for ratio in args.ratios:
        for name, op in (("selective_context", "distill.selective_context"), ("llmlingua (ours)", "distill.llmlingua")):
            variants[(name, ratio)] = compress_ours(op, texts, ratio, registry)
            print(f"{name} {ratio}: {variants[(name, ratio)][1]:.1f}s", flush=True)
        variants[("random", ratio)] = (compress_random(texts, ratio, tokenizer, 0), None)
    peer, peer_note = run_peer(prompts, args.ratios, args.threads)
    if peer is not None:
        for ratio in args.ratios:
            variants[("llmlingua (package)", ratio)] = (peer[str(ratio)]["texts"], peer[str(ratio)]["seconds"])
    print(f"peer: {peer_note if peer is None else 'llmlingua ' + peer_note}", flush=True)
    targets: dict[tuple[str, float], list[float]] = {}  # per prompt, where it differs from the requested ratio
    if peer is not None:  # the package keeps more than asked: ours again at the share it actually kept
        for ratio in args.ratios:
            kept = [min(1.0, len(tokenizer(t, add_special_tokens=False)["input_ids"]) / c)
                    for t, c in zip(peer[str(ratio)]["texts"], counts)]
            for name, op in (("selective_context", "distill.selective_context"), ("llmlingua (ours)", "distill.llmlingua")):
                variants[(f"{name} @ package's", ratio)] = (
                    [compress_ours(op, [t], k, registry)[0][0] for t, k in zip(texts, kept)], None)
                targets[(f"{name} @ package's", ratio)] = kept

    rows = []
    for (method, ratio), (compressed, seconds) in variants.items():
        losses, answers = fidelity(llm, compressed, references, args.answer_tokens)
        for source in ("alpaca_eval", "corpus", "all"):
            idx = [i for i, p in enumerate(prompts) if source in ("all", p["source"])]
            if not idx:
                continue
            achieved = [len(tokenizer(compressed[i], add_special_tokens=False)["input_ids"]) / counts[i] for i in idx]
            rows.append({
                "source": source, "method": method, "ratio": ratio, "n": len(idx),
                "achieved": round(statistics.mean(achieved), 4),
                "ratio_error_max": round(max(abs(a - targets.get((method, ratio), [ratio] * len(texts))[i])
                                             for a, i in zip(achieved, idx)), 4),
                "tokens_per_s": round(sum(counts) / seconds, 1) if seconds else None,
                "loss_delta": round(statistics.mean(losses[i] - full_losses[i] for i in idx), 4),
                "agreement_rouge_l": round(statistics.mean(rouge_l(answers[i], full_answers[i]) for i in idx), 4),
            })
        print(f"{method} {ratio} scored: {time.perf_counter() - began:.0f} s", flush=True)
    result = {
        "benchmark": "bench_compress", "prompts": len(texts), "alpaca": args.alpaca, "corpus": args.corpus,
        "max_chars": args.max_chars, "tokens": sum(counts), "answer_tokens": args.answer_tokens,
        "threads": args.threads, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "peer": peer_note, "full_prompt_loss": round(statistics.mean(full_losses), 4),
        "seconds": round(time.perf_counter() - began, 1), "date": str(date.today()), "rows": rows,
        "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{'source':12} {'method':22} {'ratio':>5} {'achieved':>8} {'tok/s':>8} {'dloss':>7} {'agree':>6}")
    for r in rows:
        print(f"{r['source']:12} {r['method']:22} {r['ratio']:5.2f} {r['achieved']:8.3f} "
              f"{r['tokens_per_s'] or float('nan'):8.1f} {r['loss_delta']:7.3f} {r['agreement_rouge_l']:6.3f}")
    print(f"wrote {args.out} in {result['seconds']} s")
    if args.write:
        write_doc(result)


def _load(result: dict) -> str:
    if "load" not in result:
        return "on a shared, busy machine: the speeds are comparable within this run only"
    before, after = result["load"]
    return f"1-minute load average {before} at the start and {after} at the end (2 = this run alone)"


def write_doc(result: dict) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from report import table, write_section

    methods = ["selective_context", "llmlingua (ours)", "llmlingua (package)", "selective_context @ package's",
               "llmlingua (ours) @ package's", "random"]
    rows = {(r["source"], r["method"], r["ratio"]): r for r in result["rows"]}
    ratios = sorted({r["ratio"] for r in result["rows"]})
    main_rows = []
    for ratio in ratios:
        peer = rows.get(("all", "llmlingua (package)", ratio))
        for method in methods:
            r = rows.get(("all", method, ratio))
            if r is None:
                continue
            speed = f"{r['tokens_per_s'] / peer['tokens_per_s']:.2f}x" if peer and r["tokens_per_s"] else ""
            main_rows.append([ratio, method, f"{r['achieved']:.3f}", f"{r['ratio_error_max']:.3f}",
                              r["tokens_per_s"] or "", speed, f"{r['loss_delta']:+.3f}", f"{r['agreement_rouge_l']:.3f}"])
    by_source = []
    for source in ("alpaca_eval", "corpus"):
        for method in methods:
            cells = [rows.get((source, method, ratio)) for ratio in ratios]
            if any(c is None for c in cells):
                continue
            by_source.append([source, method] + [f"{c['loss_delta']:+.3f} / {c['agreement_rouge_l']:.2f}" for c in cells])
    body = f"""`python bench/bench_compress.py --alpaca {result['alpaca']} --corpus {result['corpus']} --write` on {result['machine']}, \
{result.get('date', '')}: {result['prompts']} prompts ({result['alpaca']} AlpacaEval instructions with the longest text, \
{result['corpus']} c4 documents + "{ASK}"), cut to {result['max_chars']} characters, {result['tokens']} tokens \
in all; the bundled SmolLM2-135M (fp32, {result['threads']} torch threads) compresses and answers; peer: llmlingua \
{result['peer']} (LLMLingua-1, same model and weights, defaults) from `.venv-llmlingua` with transformers 4.46.3 \
(0.2.2 needs the tuple KV caches that transformers 5 dropped). Full run: {result['seconds']:.0f} s, \
{_load(result)}.

Achieved = SmolLM2 tokens of the compressed prompt / the original (mean; "max error": the largest |achieved -
requested| of any prompt; "@ package's" rows: ours at each prompt's share kept by the package, so their
"requested" is the package's achieved). Speed: original tokens per second of compression, and its ratio to the llmlingua
package. Fidelity: Δloss = mean per-token loss of the reference answer (first 64 tokens) after the compressed
prompt minus after the full prompt (lower is better; the full prompt's loss is {result['full_prompt_loss']:.3f});
agreement = ROUGE-L F1 of the model's greedy answer ({result['answer_tokens']} tokens) to the compressed vs
the full prompt (higher is better).

{table(["ratio", "method", "achieved", "max error", "tokens/s", "speed vs package", "Δloss", "agreement"], main_rows)}

By source (Δloss / agreement at each requested ratio):

{table(["source", "method"] + [str(r) for r in ratios], by_source)}
"""
    write_section("Prompt compression vs llmlingua", body + result.get("notes", ""))


if __name__ == "__main__":
    main()
