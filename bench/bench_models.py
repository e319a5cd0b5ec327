"""Model layer throughput: our batched ``logprobs`` and generation vs plain transformers loops.

    python bench/bench_models.py [--records 48] [--max-answer-tokens 256]

Scoring: the same (prompt, answer) pairs through (1) a one-sample-at-a-time forward loop, (2) a bare
length-sorted batched forward loop (batch 16, full-vocabulary log-softmax), (3) TransformersLLM.logprobs.
Generation: greedy 64 new tokens for 8 prompts with (1) one ``generate`` call per prompt, (2) ours.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, table, write_section  # noqa: E402

from dataflywheel.models.llm import GenerationParams  # noqa: E402
from dataflywheel.models.transformers_llm import TransformersLLM  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "alpaca_eval_sample.jsonl"


def pairs(llm, n: int, answer_tokens: int) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:n]]
    prompts = [llm.format_chat([{"role": "user", "content": r["instruction"]}]) for r in rows]
    answers = [llm.tokenizer.decode(llm.tokenizer(r["output"], add_special_tokens=False)["input_ids"][:answer_tokens])
               for r in rows]
    return prompts, answers


def encode(llm, prompts, answers):
    out = []
    for p, a in zip(prompts, answers):
        head = llm.tokenizer(p, add_special_tokens=False)["input_ids"]
        tail = llm.tokenizer(a, add_special_tokens=False)["input_ids"]
        out.append((head + tail, len(head)))
    return out


def one_at_a_time(llm, encoded) -> None:
    with torch.inference_mode():
        for ids, start in encoded:
            logits = llm.model(torch.tensor([ids])).logits[0]
            torch.log_softmax(logits[start - 1:-1], -1).gather(1, torch.tensor(ids[start:])[:, None])


def bare_batched(llm, encoded, batch: int = 16) -> None:
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    pad = llm.tokenizer.pad_token_id
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            chunk = [encoded[i] for i in order[s:s + batch]]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in chunk])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in chunk])
            logprobs = torch.log_softmax(llm.model(input_ids=ids, attention_mask=mask).logits, -1)
            for row, (x, start) in enumerate(chunk):
                logprobs[row, start - 1:len(x) - 1].gather(1, torch.tensor(x[start:])[:, None])


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--max-answer-tokens", type=int, default=256)
    args = parser.parse_args()

    llm = TransformersLLM("smollm2", batch_size=16, batch_tokens=16 * 512)
    prompts, answers = pairs(llm, args.records, args.max_answer_tokens)
    encoded = encode(llm, prompts, answers)
    tokens = sum(len(ids) for ids, _ in encoded)
    llm.logprobs(prompts[:2], answers[:2])  # warm-up
    scoring = {
        "one sample at a time (plain transformers)": timed(lambda: one_at_a_time(llm, encoded)),
        "bare length-sorted batched loop (16)": timed(lambda: bare_batched(llm, encoded)),
        "dataflywheel TransformersLLM.logprobs": timed(lambda: llm.logprobs(prompts, answers)),
    }
    base = scoring["bare length-sorted batched loop (16)"]
    rows = [[name, f"{tokens / s:.0f}", f"{base / s:.2f}x"] for name, s in scoring.items()]

    gen_prompts = [llm.format_chat([{"role": "user", "content": r}]) for r in prompts[:8]]
    params = GenerationParams(max_tokens=64)
    tok = llm.tokenizer

    def plain_generate():
        new = 0
        with torch.inference_mode():
            for p in gen_prompts:
                ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]])
                out = llm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=64, do_sample=False,
                                         pad_token_id=tok.pad_token_id)
                new += out.shape[1] - ids.shape[1]
        return new

    started = time.perf_counter()
    plain_tokens = plain_generate()
    plain_s = time.perf_counter() - started
    before = llm.usage.completion_tokens
    ours_s = timed(lambda: llm.complete(gen_prompts, params))
    ours_tokens = llm.usage.completion_tokens - before
    gen_rows = [["plain generate, one prompt at a time", f"{plain_tokens / plain_s:.0f}", "1.00x"],
                ["dataflywheel TransformersLLM.complete (left-padded batch)", f"{ours_tokens / ours_s:.0f}",
                 f"{(ours_tokens / ours_s) / (plain_tokens / plain_s):.2f}x"]]
    body = (f"`python bench/bench_models.py --records {args.records} --max-answer-tokens {args.max_answer_tokens}` "
            f"on {machine()}, bundled SmolLM2-135M fp32, {torch.get_num_threads()} torch threads.\n\n"
            f"Scoring {len(encoded)} prompt+answer pairs, {tokens} tokens (ratio vs the bare batched loop):\n\n"
            + table(["method", "tokens/s", "ratio"], rows)
            + "\n\nGeneration, greedy, 64 new tokens, 8 prompts (completion tokens/s; ratio vs plain):\n\n"
            + table(["method", "tokens/s", "ratio"], gen_rows)
            + "\n\nOur scorer computes the vocabulary projection only at answer positions, in chunks, so memory stays "
              "bounded at any batch size; on 2 CPU cores the model is compute-bound, which caps what batching buys, "
              "and padded positions cost as much as real ones: a batch holds at most 10% (or 256 tokens) of "
              "padding, which is why it beats the bare batched loop (padded to each batch's longest).")
    write_section("Model layer: scoring and generation throughput", body)
    print(body)


if __name__ == "__main__":
    main()
