"""``flywheel run --dry-run``: what a recipe will cost in model calls and tokens, before spending anything.

The recipe runs on the first records of its input with a model registry that sends no request (cache
hits count as hits; a miss counts a call, its prompt tokens and ``max_tokens`` completion tokens, an
upper bound, and answers with a placeholder); each step's usage is then scaled to the whole input.
Steps after a generator or a model-backed filter see placeholder answers, so their figures are rougher.
"""

from __future__ import annotations

import tempfile

from dataflywheel.io import ReadReject
from dataflywheel.io.writers import record_to_row
from dataflywheel.pipeline.executor_local import LocalExecutor
from dataflywheel.pipeline.recipe import Recipe

COUNTED = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "cost")


def estimate(recipe: Recipe, sample: int = 20, quiet: bool = True) -> dict:
    """Estimated model usage of ``recipe``, per step and in total (see the module doc)."""
    rows, total = None, 0
    if recipe.input is not None:
        rows = []
        for record in recipe.input.read():  # count every record, keep the first ``sample``
            if isinstance(record, ReadReject):
                continue
            total += 1
            if len(rows) < sample:
                rows.append(record_to_row(record, "auto", with_meta=True, with_id=True, with_scores=True,
                                          with_lineage=True))
    with tempfile.TemporaryDirectory(prefix="flywheel-dry-run-") as tmp:
        manifest = LocalExecutor(recipe, tmp, quiet=quiet, data=rows, dry_run=True).execute(report=False)
    scale = total / len(rows) if rows else 1.0
    steps, totals = [], dict.fromkeys(COUNTED, 0.0)
    for step in manifest["steps"][1:]:
        usage = {k: sum(m.get(k, 0) for m in step.get("models", {}).values()) for k in COUNTED}
        source = step["kind"] == "generator" and step["in"] == 0
        factor = 1.0 if source else scale  # a source's rounds do not grow with the input
        scaled = {k: round(v * factor, 6 if k == "cost" else 0) for k, v in usage.items()}
        steps.append({"name": step["name"], "op": step["op"], "models": sorted(step.get("models", {})), **scaled})
        for k in COUNTED:
            totals[k] += scaled[k]
    return {"input_records": total, "sample": len(rows or []), "scale": round(scale, 3), "steps": steps,
            "totals": {k: round(v, 6 if k == "cost" else 0) for k, v in totals.items()}}
