"""Rebuild enhance_sample.jsonl from ../shared/data/alpaca_eval (run from the repository root).

Eight AlpacaEval instructions with GPT-4 Turbo's answers (answers under 500 characters, picked with seed 1);
the last two records are mislabelled on purpose: each carries the answer of another record (``planted``)."""

import json
import random
from pathlib import Path

SOURCE = Path("../shared/data/alpaca_eval/outputs/gpt4_1106_preview.jsonl")
rows = [json.loads(line) for line in SOURCE.open()]
rows = [r for r in rows if len(r["output"]) < 500]
random.Random(1).shuffle(rows)
sample = [{"instruction": r["instruction"], "input": "", "output": r["output"], "dataset": r["dataset"],
           "planted": False} for r in rows[:8]]
sample[6]["output"], sample[7]["output"] = sample[0]["output"], sample[1]["output"]  # mislabelled
sample[6]["planted"] = sample[7]["planted"] = True
with open(Path(__file__).with_name("enhance_sample.jsonl"), "w", encoding="utf-8") as out:
    for row in sample:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
print(len(sample), "rows")
