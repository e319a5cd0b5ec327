"""Local executor: reads the input, streams batches through each step, checkpoints every step.

A killed run resumes from its last finished step (``resume=True``) and ends with the same output.
"""

from __future__ import annotations

import platform
import shutil
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

from dataflywheel.io import ReadReject, detect_file_type, read_records, write_records
from dataflywheel.models.cache import CallCache
from dataflywheel.models.registry import ModelRegistry
from dataflywheel.ops.base import Filter, Generator, Mapper, OpContext, Operator, Scorer, Selector
from dataflywheel.pipeline.progress import StepProgress
from dataflywheel.pipeline.recipe import Recipe
from dataflywheel.pipeline.run_dir import RunDir, account, iter_checkpoint, record_row, reject_row
from dataflywheel.records import RecordError, record_id, validate_record

READ_STEP = "read"


class RunError(RuntimeError):
    """A run that cannot start or continue; the message says what to do."""


class InvariantError(RuntimeError):
    """Records were lost or duplicated by a step: a bug in an operator."""


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for package in ("dataflywheel", "pyarrow", "pydantic", "torch", "transformers"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class LocalExecutor:
    """Runs a validated recipe in this process."""

    def __init__(self, recipe: Recipe, run_dir: str | Path | None = None, *, quiet: bool = False):
        self.recipe = recipe
        self.run = RunDir(run_dir or recipe.output.dir)
        self.quiet = quiet
        cache = None if recipe.cache == "off" else CallCache(recipe.cache)
        self.models = ModelRegistry(recipe.models, cache, quiet)
        self.context = OpContext(seed=recipe.seed, models=self.models, quiet=quiet)

    # ---- run control ----------------------------------------------------------------------------

    def _start_manifest(self, resume: bool, force: bool) -> dict:
        existing = self.run.read_manifest()
        if existing and resume:
            if existing["fingerprint"] != self.recipe.fingerprint():
                raise RunError(f"{self.run.root} holds a run of a different recipe; resume needs the same recipe "
                               "(or run without --resume into a new --output)")
            self.run.clear_partial()
            existing["status"] = "running"
            existing["resumed"] = existing.get("resumed", 0) + 1
            return existing
        if existing and not force:
            raise RunError(f"{self.run.root} already holds a run; pass --resume to continue it, --force to start "
                           "over, or --output for a new directory")
        if self.run.root.exists() and force:
            for sub in (self.run.checkpoints, self.run.rejected):
                shutil.rmtree(sub, ignore_errors=True)
        return {"dataflywheel": _versions().get("dataflywheel"), "status": "running", "started": _now(),
                "fingerprint": self.recipe.fingerprint(), "recipe": self.recipe.model_dump(),
                "seed": self.recipe.seed, "versions": _versions(), "steps": []}

    def execute(self, *, resume: bool = False, force: bool = False) -> dict:
        """Run every step not yet finished; return the manifest."""
        if not Path(self.recipe.input.path).exists():
            raise RunError(f"input not found: {self.recipe.input.path} (relative paths resolve against {Path.cwd()})")
        manifest = self._start_manifest(resume, force)
        self.run.write_manifest(manifest)
        done = {s["name"] for s in manifest["steps"] if s["status"] == "done"}
        operators = self.recipe.build_operators(self.context)
        with StepProgress(quiet=self.quiet) as progress:
            if READ_STEP not in done:
                self._finish_step(manifest, self._read_input(progress))
            previous = manifest["steps"][0]
            for index, (spec, op) in enumerate(zip(self.recipe.steps, operators), start=1):
                if spec.name not in done:
                    self._finish_step(manifest, self._run_step(index, spec.name, op, previous, progress))
                previous = next(s for s in manifest["steps"] if s["name"] == spec.name)
        self._write_output(manifest)
        return manifest

    def _finish_step(self, manifest: dict, step: dict) -> None:
        manifest["steps"] = [s for s in manifest["steps"] if s["name"] != step["name"]] + [step]
        self.run.write_manifest(manifest)

    # ---- steps ----------------------------------------------------------------------------------

    def _read_input(self, progress: StepProgress) -> dict:
        spec = self.recipe.input
        started = time.perf_counter()
        records = self.run.record_sink(0, READ_STEP)
        rejects = self.run.reject_sink(0, READ_STEP)
        fmt = None if spec.format == "auto" else spec.format
        file_type = None if spec.file_type == "auto" else spec.file_type
        try:
            items = read_records(spec.path, fmt, file_type)
            with progress.step(READ_STEP, total=None) as advance:
                for item in items:
                    if isinstance(item, ReadReject):
                        rejects.add(reject_row(READ_STEP, item.reason, source=item.source, raw=item.raw))
                    else:
                        records.add(record_row(item))
                    advance(1)
        except (FileNotFoundError, RecordError, ValueError) as err:
            raise RunError(f"cannot read input {spec.path}: {err}") from err
        records.commit()
        rejects.commit()
        return {"name": READ_STEP, "op": "read", "kind": "reader", "status": "done", "in": records.count + rejects.count,
                "out": records.count, "rejected": rejects.count, "generated": 0,
                "seconds": round(time.perf_counter() - started, 3), "checkpoint": str(self.run.checkpoint(0, READ_STEP))}

    def _run_step(self, index: int, name: str, op: Operator, previous: dict, progress: StepProgress) -> dict:
        source = Path(previous["checkpoint"])
        size = self.recipe.batch_size

        def scan() -> Iterator[list[dict]]:
            return iter_checkpoint(source, size)

        started = time.perf_counter()
        usage_before = self.models.usage()
        out = self.run.record_sink(index, name)
        rejects = self.run.reject_sink(index, name)
        counts = {"in": 0, "generated": 0}
        with progress.step(name, total=previous["out"]) as advance:
            if isinstance(op, Selector):
                self._apply_selection(op, scan, name, out, rejects, counts, advance)
            else:
                for batch in scan():
                    counts["in"] += len(batch)
                    self._apply_batch(op, name, batch, out, rejects, counts)
                    advance(len(batch))
        if counts["in"] + counts["generated"] != out.count + rejects.count:
            raise InvariantError(f"step {name} ({op.name}): {counts['in']} in + {counts['generated']} generated != "
                                 f"{out.count} out + {rejects.count} rejected")
        out.commit()
        rejects.commit()
        return {"name": name, "op": op.name, "kind": op.kind, "status": "done", "in": counts["in"], "out": out.count,
                "rejected": rejects.count, "generated": counts["generated"],
                "seconds": round(time.perf_counter() - started, 3), "checkpoint": str(self.run.checkpoint(index, name)),
                "models": _usage_delta(usage_before, self.models.usage()), "warnings": dict(op.counters)}

    def _apply_selection(self, op: Selector, scan: Callable, name: str, out, rejects, counts, advance) -> None:
        selection = op.select(scan)
        position = 0
        for batch in scan():
            for record in batch:
                note, scores = selection.meta.get(position), selection.scores.get(position)
                if note:
                    record = {**record, "meta": {**record["meta"], **note}}
                if scores:
                    record = {**record, "scores": {**record["scores"], **scores}}
                reason = selection.rejected.get(position)
                if reason is None:
                    out.add(record_row(record))
                else:
                    rejects.add(reject_row(name, reason, record=record))
                position += 1
            counts["in"] += len(batch)
            advance(len(batch))

    def _apply_batch(self, op: Operator, name: str, batch: list[dict], out, rejects, counts) -> None:
        if isinstance(op, Filter):
            for record, reason in zip(batch, _per_record(op.reject_reasons, op.reject_reason, batch)):
                if isinstance(reason, Exception):
                    rejects.add(reject_row(name, f"error in {op.name}: {type(reason).__name__}: {reason}", record=record))
                elif reason is None:
                    out.add(record_row(record))
                else:
                    rejects.add(reject_row(name, reason, record=record))
        elif isinstance(op, Mapper):
            for record, mapped in zip(batch, _per_record(op.map_batch, op.map, batch)):
                if isinstance(mapped, Exception):
                    rejects.add(reject_row(name, f"error in {op.name}: {type(mapped).__name__}: {mapped}", record=record))
                    continue
                try:
                    out.add(record_row(_with_lineage(record, mapped, op, name)))
                except RecordError as err:
                    rejects.add(reject_row(name, f"{op.name} produced an invalid record: {err}", record=record))
        elif isinstance(op, Scorer):
            values = op.score_batch(batch)
            if len(values) != len(batch):
                raise InvariantError(f"step {name}: {op.name} returned {len(values)} scores for {len(batch)} records")
            for record, value in zip(batch, values):
                named = value if isinstance(value, dict) else {op.score_name: value}
                named = {k: float("nan") if v is None else float(v) for k, v in named.items()}
                out.add(record_row({**record, "scores": {**record["scores"], **named}}))
        elif isinstance(op, Generator):
            for record in batch:
                out.add(record_row(record))
            for new in op.generate(batch):
                validate_record({k: v for k, v in new.items() if k != "id"})
                new["id"] = record_id(new)
                out.add(record_row(new))
                counts["generated"] += 1
        else:
            raise RunError(f"step {name}: {type(op).__name__} is not a known operator kind")

    def _write_output(self, manifest: dict) -> None:
        last = Path(manifest["steps"][-1]["checkpoint"])
        unaccounted = account(self.run, last, self.run.checkpoint(0, READ_STEP))
        if unaccounted:
            raise InvariantError(f"{sum(unaccounted.values())} input records are not in the output or the rejects "
                                 f"exactly once (e.g. {next(iter(unaccounted))})")
        spec = self.recipe.output
        target = self.run.root / spec.file
        tmp = target.with_name(target.name + ".tmp")
        records = (r for batch in iter_checkpoint(last, 1024) for r in batch)
        count = write_records(records, tmp, spec.format, detect_file_type(target), with_meta=spec.with_meta,
                              with_id=spec.with_id, with_scores=spec.with_scores)
        tmp.replace(target)
        manifest.update(status="finished", finished=_now(), output={"path": str(target), "count": count},
                        models=self.models.usage(),
                        totals={"read": manifest["steps"][0]["in"], "output": count,
                                "rejected": sum(s["rejected"] for s in manifest["steps"]),
                                "generated": sum(s["generated"] for s in manifest["steps"])})
        self.run.write_manifest(manifest)
        from dataflywheel.report import write_run_report

        manifest["report"] = str(write_run_report(self.run.root))
        self.run.write_manifest(manifest)


def _usage_delta(before: dict, after: dict) -> dict:
    """Model usage of one step: per model, the counters' growth during the step."""
    delta = {}
    for model, counters in after.items():
        start = before.get(model, {})
        grown = {k: round(v - start.get(k, 0), 3) for k, v in counters.items()}
        if any(grown.values()):
            delta[model] = grown
    return delta


def _per_record(batch_fn: Callable, one_fn: Callable, batch: list[dict]) -> list:
    """Results of ``batch_fn``; if it raises, retry one by one so only the bad records fail."""
    try:
        return batch_fn(batch)
    except Exception:  # noqa: BLE001 - isolate the failing record, keep the rest
        results = []
        for record in batch:
            try:
                results.append(one_fn(record))
            except Exception as err:  # noqa: BLE001
                results.append(err)
        return results


def _with_lineage(before: dict, after: dict, op: Operator, step: str) -> dict:
    after = {**after, "id": before["id"]}
    validate_record({k: v for k, v in after.items() if k != "id"})
    new_id = record_id(after)
    if new_id == before["id"]:
        return after
    entry = {"op": op.name, "step": step, "kind": "mapper", "parents": [before["id"]]}
    return {**after, "id": new_id, "lineage": list(after.get("lineage", [])) + [entry]}

