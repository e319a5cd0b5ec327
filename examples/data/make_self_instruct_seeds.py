"""Rebuild self_instruct_seeds.jsonl: 40 of the 175 Self-Instruct seed tasks (seed 0), one instance each, in
Alpaca format (run from the repository root)."""

import json
import random
from pathlib import Path

SOURCE = Path("src/dataflywheel/data/self_instruct_seed_tasks.jsonl")
tasks = [json.loads(line) for line in SOURCE.open(encoding="utf-8")]
with open(Path(__file__).with_name("self_instruct_seeds.jsonl"), "w", encoding="utf-8") as out:
    for task in sorted(random.Random(0).sample(tasks, 40), key=lambda t: int(t["id"].rsplit("_", 1)[1])):
        instance = task["instances"][0]
        out.write(json.dumps({"instruction": task["instruction"], "input": instance["input"],
                              "output": instance["output"], "is_classification": task["is_classification"],
                              "name": task["name"]}, ensure_ascii=False) + "\n")
