"""LESS gradient features: our batched per-sample LoRA gradients vs a plain one-backward-per-record loop.

    python bench/bench_less.py [--records 48] [--max-length 256]

Both compute the same per-record LoRA gradients of the bundled SmolLM2 (r=8 on q/k/v/o) on AlpacaEval
answers; ours runs one backward pass per batch (1 or 8) and recovers each record's gradient from hooks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataflywheel.algorithms.less import _batch, _encode, add_lora, gradient_features, per_sample_losses  # noqa: E402
from dataflywheel.models.transformers_llm import TransformersLLM  # noqa: E402
from report import machine, table, write_section  # noqa: E402

SAMPLE = ROOT / "examples" / "data" / "alpaca_eval_sample.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    backend = TransformersLLM("smollm2")
    torch.manual_seed(0)
    model = add_lora(backend.model, 8)
    tok = backend.tokenizer
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[: args.records]]
    examples = [(tok.apply_chat_template([{"role": "user", "content": r["instruction"]}], tokenize=False,
                                         add_generation_prompt=True), r["output"]) for r in rows]
    tokens = sum(len(ids) for ids, _ in _encode(tok, examples, args.max_length))

    ours = {}
    for batch_size in (1, 8):
        started = time.perf_counter()
        gradient_features(model, tok, examples, dims=8192, batch_size=batch_size, max_length=args.max_length)
        ours[f"batch {batch_size}, every layer"] = time.perf_counter() - started
    top = add_lora(TransformersLLM("smollm2").model, 8, last_layers=8)
    started = time.perf_counter()
    gradient_features(top, tok, examples, dims=8192, batch_size=1, max_length=args.max_length)
    top_label = "batch 1, top 8 layers: select.less default"
    ours[top_label] = time.perf_counter() - started
    with torch.no_grad():  # the ceiling: a forward pass alone over the same tokens
        started = time.perf_counter()
        for example in _encode(tok, examples, args.max_length):
            per_sample_losses(top, *_batch([example], tok.pad_token_id))
        forward = time.perf_counter() - started

    params = [p for p in model.parameters() if p.requires_grad]
    started = time.perf_counter()
    for example in _encode(tok, examples, args.max_length):
        model.zero_grad(set_to_none=True)
        per_sample_losses(model, *_batch([example], tok.pad_token_id)).sum().backward()
        torch.cat([p.grad.reshape(-1) for p in params])
    plain = time.perf_counter() - started

    rows = [["plain loop: one backward per record", f"{len(examples) / plain:.2f}", f"{tokens / plain:.0f}", "1.00x"]]
    rows += [[f"dataflywheel gradient_features ({label}, hooks, projected)", f"{len(examples) / t:.2f}",
              f"{tokens / t:.0f}", f"{plain / t:.2f}x"] for label, t in ours.items()]
    rows.append(["forward pass only, no gradients (ceiling)", f"{len(examples) / forward:.2f}",
                 f"{tokens / forward:.0f}", f"{plain / forward:.2f}x"])
    body = (f"`python bench/bench_less.py --records {args.records} --max-length {args.max_length}` on {machine()}: "
            f"per-record LoRA gradients (921,600 parameters with LoRA on every layer) of {len(examples)} AlpacaEval answers, {tokens} tokens; "
            "ours also projects them to 8,192 dimensions.\n\n"
            + table(["method", "records/s", "tokens/s", "speed-up"], rows)
            + "\n\nOn 2 CPU cores padding and the batched vocabulary projection cost more than batching saves, so "
              "`select.less` uses batch 1 on CPU and 8 on a GPU. With LoRA on every layer our path is slower than the "
              "bare loop, which neither projects nor reads gradients per module. `select.less` puts LoRA on the top 8 "
              "of the 30 layers by default (`last_layers`; null = every layer, the paper's setting): the backward pass "
              f"stops there, so a record costs {ours[top_label] / forward:.1f}x its forward pass alone, the ceiling "
              f"for any gradient method. At this rate 2,000 such records take {2000 / (len(examples) / ours[top_label]) / 60:.0f} "
              "minutes on 2 cores (a shorter `max_length` is cheaper); a GPU (unmeasured here: no device in "
              "this task) is the way to go faster.")
    write_section("LESS gradient features", body)
    print(body)


if __name__ == "__main__":
    main()
