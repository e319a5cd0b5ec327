"""Rebuild pep_excerpts.jsonl: the opening sections of five Python Enhancement Proposals (their header block of
fields left out), each cut at a paragraph end after about 1500 characters (run from the repository root, with
../shared/data beside it). PEPs are public domain or CC0-1.0; see README.md."""

import json
import re
from pathlib import Path

SOURCE = Path("../shared/data/corpus/python_peps.jsonl")
PEPS = (1, 8, 20, 257, 572)
BUDGET = 1500

rows = {row["pep"]: row for row in map(json.loads, SOURCE.open(encoding="utf-8")) if row["pep"] in PEPS}
with open(Path(__file__).with_name("pep_excerpts.jsonl"), "w", encoding="utf-8") as out:
    for pep in PEPS:
        row = rows[pep]
        blocks = re.split(r"\n\s*\n", row["text"].strip())[1:]  # the first block is the "PEP: / Title: ..." header
        kept, size = [], 0
        for block in blocks:
            if kept and size + len(block) > BUDGET:
                break
            kept.append(block.strip("\n"))
            size += len(block) + 2
        while re.search(r"\n([=\-~^])\1+$", kept[-1]):  # no section heading left dangling at the end
            kept.pop()
        out.write(json.dumps({"pep": pep, "title": row["title"], "origin": f"python/peps@ba4deeb7:{row['path']}",
                              "text": "\n\n".join(kept)}, ensure_ascii=False) + "\n")
