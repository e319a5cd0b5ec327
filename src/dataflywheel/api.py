"""Run a recipe from Python: on a list of rows or a ``datasets.Dataset``, with records or a Dataset back.

    import dataflywheel as fw
    result = fw.run({"steps": [{"op": "select.exact_dedup"}]}, dataset)
    result.data        # a datasets.Dataset again (rows in TRL's training format, ids, scores, lineage)
    result.records     # the records as dicts
    result.run_dir     # manifest.json, rejected/, report.html
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataflywheel.pipeline.recipe import Recipe, load_recipe, parse_recipe
from dataflywheel.pipeline.run_dir import iter_checkpoint


@dataclass
class RunResult:
    """What a run made: its records, the run directory, its manifest; ``data`` has the input's type."""

    records: list[dict]
    run_dir: Path
    manifest: dict
    data: Any = field(default=None, repr=False)

    def to_dataset(self, fmt: str = "auto", **options: bool) -> Any:
        """The records as a ``datasets.Dataset`` of rows in ``fmt`` (id, scores, lineage and meta kept)."""
        from dataflywheel.io import records_to_dataset

        options = {"with_meta": True, "with_id": True, "with_scores": True, "with_lineage": True, **options}
        return records_to_dataset(self.records, fmt, **options)


def _recipe(recipe: Recipe | dict | str | Path, has_data: bool) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return parse_recipe(recipe, "recipe", allow_no_input=has_data)
    return load_recipe(recipe, allow_no_input=has_data)


def _is_dataset(data: Any) -> bool:
    return type(data).__module__.startswith("datasets.")


def run(recipe: Recipe | dict | str | Path, data: Any = None, *, output: str | Path | None = None,
        resume: bool = False, force: bool = False, quiet: bool = True, report: bool = True,
        executor: str | None = None, address: str | None = None, workers: int | None = None) -> RunResult:
    """Run ``recipe`` (a Recipe, a mapping like the YAML, or a YAML path) on ``data`` (rows in any format
    the readers know, or a ``datasets.Dataset``; None = the recipe's ``input``).

    ``output`` is the run directory (default: a new ``runs/run-<time>-<hex>``, so a notebook cell can be
    re-run; model answers come from the call cache the second time). ``executor`` ("local" or "ray"),
    ``address`` (a Ray cluster) and ``workers`` override the recipe's, as on the command line."""
    from dataflywheel.pipeline.executor_ray import make_executor

    parsed = _recipe(recipe, data is not None)
    if executor not in (None, "local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    if output is None and not resume:
        output = Path("runs") / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    executor = make_executor(parsed, output, executor=executor, address=address, quiet=quiet, data=data,
                             workers=workers)
    manifest = executor.execute(resume=resume, force=force, report=report)
    last = Path(manifest["steps"][-1]["checkpoint"])
    records = [r for batch in iter_checkpoint(last, 1024) for r in batch]
    result = RunResult(records, executor.run_dir.root.resolve(), manifest)
    result.data = result.to_dataset() if _is_dataset(data) else records
    return result
