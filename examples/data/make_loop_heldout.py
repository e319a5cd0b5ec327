"""Rebuild loop_heldout.jsonl from ../shared/data/alpaca_eval (run from the repository root).

Held-out prompts for examples/recipes/loop.yaml: 4 AlpacaEval instructions per source dataset (the category),
none of them among the 60 of alpaca_eval_sample.jsonl, with GPT-4 Turbo's answer (under 1,500 characters) as
the reference."""

import json
import random
from pathlib import Path

SOURCE = Path("../shared/data/alpaca_eval/outputs/gpt4_1106_preview.jsonl")
rows = [json.loads(line) for line in SOURCE.open()]
in_sample = set(sorted(random.Random(0).sample(range(805), 60)))  # the indices make_sample.py picked
rng = random.Random(7)
heldout = []
for dataset in sorted({r["dataset"] for r in rows}):
    pool = [i for i, r in enumerate(rows) if r["dataset"] == dataset and i not in in_sample
            and len(r["output"]) < 1500]
    for i in sorted(rng.sample(pool, 4)):
        heldout.append({"instruction": rows[i]["instruction"], "input": "", "output": rows[i]["output"],
                        "generator": rows[i]["generator"], "dataset": dataset})
with open(Path(__file__).with_name("loop_heldout.jsonl"), "w", encoding="utf-8") as out:
    for row in heldout:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
print(len(heldout), "rows")
