"""Rebuild alpaca_eval_sample.jsonl from ../shared/data/alpaca_eval (run from the repository root)."""

import json
import random
from pathlib import Path

SOURCE = Path("../shared/data/alpaca_eval/outputs")
MODELS = ["gpt4_1106_preview", "Meta-Llama-3-8B-Instruct", "falcon-7b-instruct", "oasst-sft-pythia-12b"]
rows = {m: [json.loads(line) for line in (SOURCE / f"{m}.jsonl").open()] for m in MODELS}
indices = sorted(random.Random(0).sample(range(805), 60))
sample = []
for i in indices:
    for m in MODELS:
        row = rows[m][i]
        if len(row["output"]) <= 2500:  # keep the file small
            sample.append({"instruction": row["instruction"], "input": "", "output": row["output"],
                           "generator": row["generator"], "dataset": row["dataset"]})
# two exact duplicates, as real scraped data has, so the quick start shows dedup at work
sample += [dict(sample[0]), dict(sample[5], output=sample[5]["output"].upper())]
with open(Path(__file__).with_name("alpaca_eval_sample.jsonl"), "w", encoding="utf-8") as out:
    for row in sample:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
print(len(sample), "rows")
