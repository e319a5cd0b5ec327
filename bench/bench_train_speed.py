"""SFT vs DPO step time on CPU with the bundled SmolLM2 (LoRA, TRL), on the same preference records.

Arms: SFT on (prompt, chosen) and DPO as `flywheel train` runs them (fp32, no gradient checkpointing); each
with TRL's gradient checkpointing on; DPO with the reference log-probabilities precomputed once; DPO with bf16
on, TRL's default that `flywheel train` turns off on CPU (the cause of the 10-minute DPO test: a CPU without
bf16 units emulates it). Step time = median of the optimizer steps after the
first (warm-up), measured with a TrainerCallback; model loading is not counted.

    python bench/bench_train_speed.py [--steps 6] [--threads 2]

Writes bench/results/train_speed.json and prints the table for docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

from dataflywheel.records import make_record
from dataflywheel.train.fit import TrainConfig, train

RESULTS = Path(__file__).with_name("results") / "train_speed.json"
PAIRS = [("Is the Earth round?", "Yes, the Earth is roughly a sphere, slightly flattened at the poles.",
          "No, the Earth is flat and sits on the back of a turtle."),
         ("What is 2 + 2?", "2 + 2 equals 4.", "2 + 2 equals 5, as everyone knows."),
         ("Is water wet?", "Water makes other things wet; whether water itself is wet is a matter of definition.",
          "No, water is completely dry."),
         ("Which is bigger, an elephant or a mouse?", "An elephant is far bigger than a mouse.",
          "A mouse is bigger than an elephant.")]


class StepTimer(TrainerCallback):
    def __init__(self):
        self.seconds: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._started)


def arm(records, steps: int, **config) -> dict:
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = train(records, out, TrainConfig(max_steps=steps, batch_size=4, max_length=128, learning_rate=1e-4,
                                                 **config), quiet=True, callbacks=[timer])
        whole = time.perf_counter() - started
    after_warmup = timer.seconds[1:] or timer.seconds
    return {"method": result["method"], "steps": len(timer.seconds), "step_s": round(statistics.median(after_warmup), 3),
            "first_step_s": round(timer.seconds[0], 3), "train_call_s": round(whole, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = [make_record([{"role": "user", "content": q}], chosen={"role": "assistant", "content": c},
                         rejected={"role": "assistant", "content": r}) for q, c, r in PAIRS]
    sft = [make_record([{"role": "user", "content": q}, {"role": "assistant", "content": c}]) for q, c, _ in PAIRS]
    arms = {"sft (flywheel train)": arm(sft, args.steps),
            "sft, gradient checkpointing (TRL's default)": arm(sft, args.steps, gradient_checkpointing=True),
            "dpo (flywheel train)": arm(pairs, args.steps),
            "dpo, gradient checkpointing": arm(pairs, args.steps, gradient_checkpointing=True),
            "dpo, reference precomputed": arm(pairs, args.steps, precompute_ref=True),
            "dpo, bf16 + gradient checkpointing (TRL's defaults on CPU)": _bf16_arm(pairs, min(args.steps, 3))}
    sft_step = arms["sft (flywheel train)"]["step_s"]
    for values in arms.values():
        values["x_sft_step"] = round(values["step_s"] / sft_step, 2)
    report = {"threads": torch.get_num_threads(), "records": len(PAIRS), "batch_size": 4, "arms": arms}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    print(f"| arm | step (s, median after the first) | x SFT step | first step (s) |  ({report['threads']} threads)")
    print("|---|---|---|---|")
    for name, values in arms.items():
        print(f"| {name} | {values['step_s']} | {values['x_sft_step']} | {values['first_step_s']} |")


def _bf16_arm(pairs, steps: int) -> dict:
    """DPO with TRL's bf16 default, by patching the config the trainer receives (flywheel train never does)."""
    import trl

    real = trl.DPOConfig

    def with_bf16(*a, **k):
        k["bf16"] = True
        return real(*a, **k)

    trl.DPOConfig = with_bf16
    try:
        return arm(pairs, steps, gradient_checkpointing=True)
    finally:
        trl.DPOConfig = real


if __name__ == "__main__":
    main()
