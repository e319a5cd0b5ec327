"""A run's books: the manifest, each step's counts and model usage, the invariant, the output and the report.

Engines move batches; everything that must be the same whichever engine ran the steps is here.
"""

from __future__ import annotations

import platform
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

from dataflywheel.errors import FatalError, RunError
from dataflywheel.io import ReadReject, read_rows
from dataflywheel.io.files import detect_file_type_for_writing
from dataflywheel.models.cache import CallCache
from dataflywheel.models.registry import ModelRegistry
from dataflywheel.models.usage import Budget
from dataflywheel.ops.base import OpContext, Operator
from dataflywheel.pipeline import output as outputs
from dataflywheel.pipeline.output import OutputJob, Writer, checkpoint_count
from dataflywheel.pipeline.recipe import Recipe
from dataflywheel.pipeline.run_dir import InvariantError, RunDir, account, iter_rejects, read_table
from dataflywheel.pipeline.step_writer import StepWriter

READ_STEP = "read"

__all__ = ["READ_STEP", "InvariantError", "Run", "RunError", "Step"]


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


@dataclass
class Step:
    """One step of the plan: position (0 = reading the input), name, operator (None for reading)."""

    index: int
    name: str
    op: Operator | None
    done: bool


class Run:
    """The books of one run of a recipe in a run directory.

    ``data`` (rows or a ``datasets.Dataset``) replaces the recipe's ``input`` for runs from Python."""

    def __init__(self, recipe: Recipe, root: str | Path | None = None, *, quiet: bool = False,
                 data: Iterable[dict] | Any | None = None, dry_run: bool = False):
        self.recipe = recipe
        self.dir = RunDir(root or recipe.output.dir)
        self.quiet = quiet
        self.data = data
        self.cache = None if recipe.cache == "off" else CallCache(recipe.cache)
        self.dry_run = dry_run
        self.models = self._registry()
        self.context = OpContext(seed=recipe.seed, models=self.models, quiet=quiet)
        self.manifest: dict = {}
        self._usage_before: dict = {}
        self._started = 0.0
        self.written_output = None  # an output file the engine wrote itself (``output.WrittenOutput``)
        self._writer: Writer | None = None  # a writer process started while reading a large input
        self.report_wanted = True  # whether this run will write report.html (``finish(report=...)``)

    def _registry(self, spent: dict | None = None) -> ModelRegistry:
        limits = self.recipe.max_budget
        budget = Budget(limits.tokens, limits.cost, (spent or {}).get("spent_tokens", 0),
                        (spent or {}).get("spent_cost", 0.0)) if limits and not self.dry_run else None
        return ModelRegistry(self.recipe.models, self.cache, self.quiet, budget=budget, dry_run=self.dry_run)

    # ---- start -----------------------------------------------------------------------------------

    def start(self, *, resume: bool = False, force: bool = False) -> list[Step]:
        """Open (or reopen) the run; return the plan, finished steps marked done."""
        spec = self.recipe.input
        if self.data is None and spec is not None and not Path(spec.path).exists():
            raise RunError(f"input not found: {spec.path} (relative paths resolve against {Path.cwd()})")
        if self.dir.root.exists() and not self.dir.root.is_dir():
            raise RunError(f"the run directory {self.dir.root} is a file; choose another --output")
        self.written_output = None
        existing = self.dir.read_manifest()
        if existing and resume:
            if existing["fingerprint"] != self.recipe.fingerprint():
                raise RunError(f"{self.dir.root} holds a run of a different recipe; resume needs the same recipe "
                               "(or run without --resume into a new --output)")
            self.dir.clear_partial()
            existing.update(status="running", resumed=existing.get("resumed", 0) + 1)
            existing.pop("error", None)
            self.manifest = existing
            if existing.get("budget"):  # what the earlier attempts spent counts against the budget
                self.models = self._registry(existing["budget"])
                self.context.models = self.models
        elif existing and not force and existing.get("status") != "failed":
            raise RunError(f"{self.dir.root} already holds a run; pass --resume to continue it, --force to start "
                           "over, or --output for a new directory")
        else:
            for sub in (self.dir.checkpoints, self.dir.rejected):
                shutil.rmtree(sub, ignore_errors=True)
            self.manifest = {"dataflywheel": _versions().get("dataflywheel"), "status": "running", "started": _now(),
                             "fingerprint": self.recipe.fingerprint(), "recipe": self.recipe.model_dump(),
                             "seed": self.recipe.seed, "versions": _versions(), "steps": []}
        try:
            self.dir.write_manifest(self.manifest)
        except OSError as err:
            raise RunError(f"cannot write to the run directory {self.dir.root}: {err.strerror or err}") from err
        done = {s["name"] for s in self.manifest["steps"] if s["status"] == "done"}
        operators = self.recipe.build_operators(self.context)
        return [Step(0, READ_STEP, None, READ_STEP in done)] + [
            Step(i, spec.name, op, spec.name in done)
            for i, (spec, op) in enumerate(zip(self.recipe.steps, operators), start=1)]

    # ---- input and checkpoints -------------------------------------------------------------------

    def read_input(self) -> Iterator[dict | ReadReject]:
        """Records and unreadable rows of the input (nothing when the recipe starts with a source)."""
        if self.data is not None:
            return self._warming(read_rows(self.data))
        spec = self.recipe.input
        if spec is None:
            return iter(())
        return self._warming(spec.read())  # format, file type and field mapping

    def _warming(self, items: Iterator) -> Iterator:
        """``items``, noting how many were read (see ``read_so_far``)."""
        for n, item in enumerate(items, 1):
            if n == outputs.PARALLEL_FROM:
                self.read_so_far(n)
            yield item

    def prepare_report(self) -> None:
        """Load what the report will need (its tokenizer), when this process would otherwise wait. A bundled
        tokenizer that is there but cannot be loaded stops the run here, as it would stop it at the report."""
        if self.report_wanted:
            from dataflywheel.report.build import prepare

            prepare()

    def read_so_far(self, count: int) -> None:
        """Once the input has shown it is large, start the output's writer process (it starts and imports
        while the steps run). Only a head start: a writer that cannot start now is started, or reported, at
        the end."""
        if count >= outputs.PARALLEL_FROM and self._writer is None:
            try:
                self._writer = Writer()
            except OSError:
                pass  # the end of the run starts one (and says why when it cannot)

    def checkpoint_of(self, step: Step) -> Path:
        return self.dir.checkpoint(step.index, step.name)

    def step_record(self, name: str) -> dict:
        return next(s for s in self.manifest["steps"] if s["name"] == name)

    # ---- steps -----------------------------------------------------------------------------------

    def begin_step(self, step: Step, *, parts: bool = False) -> StepWriter:
        self._usage_before[step.name] = self.models.usage()
        self._started = time.perf_counter()
        return StepWriter(self.dir, step.index, step.name, parts=parts)

    def output_spec(self) -> tuple[Path, str, str, dict]:
        """Where the output goes and how: (path, format, file type, ``write_records`` options)."""
        spec = self.recipe.output
        target = self.dir.root / spec.file
        return target, spec.format, detect_file_type_for_writing(target), spec.write_options()

    def finish_step(self, step: Step, writer: StepWriter, seconds: float | None = None,
                    usage: dict | None = None) -> dict:
        """Commit the step's files and record it in the manifest (``seconds``/``usage``: the step's own, when
        the engine ran it interleaved with others)."""
        counts = writer.commit()
        op = step.op
        record = {"name": step.name, "op": op.name if op else "read", "kind": op.kind if op else "reader",
                  "status": "done", **counts,
                  "seconds": round(seconds if seconds is not None else time.perf_counter() - self._started, 3),
                  "checkpoint": str(self.checkpoint_of(step))}
        if op is not None:
            before = self._usage_before.pop(step.name, {})
            record["models"] = usage if usage is not None else usage_delta(before, self.models.usage())
            record["counters"] = dict(op.counters)
        self.manifest["steps"] = [s for s in self.manifest["steps"] if s["name"] != step.name] + [record]
        self._note_budget()
        self.dir.write_manifest(self.manifest)
        return record

    def charge(self, usage: dict) -> None:
        """Count model usage spent in another process (a Ray worker's batch, per model) against the run's budget
        (``check_budget`` stops the run once it is spent, as the next local call would)."""
        budget = self.models.budget
        if budget is None or not usage:
            return
        for counters in usage.values():
            budget.charge(counters.get("prompt_tokens", 0) + counters.get("completion_tokens", 0),
                          counters.get("cost", 0.0))
        self._note_budget()

    def budget_spent(self) -> bool:
        return self.models.budget is not None and self.models.budget.exhausted

    def check_budget(self) -> None:
        """Raise BudgetExceededError if the budget is spent."""
        if self.models.budget is not None:
            self.models.budget.check()

    def _note_budget(self) -> None:
        if self.models.budget is not None:
            self.manifest["budget"] = self.models.budget.as_dict()

    # ---- end -------------------------------------------------------------------------------------

    def fail(self, err: BaseException) -> None:
        """Record why the run stopped; ``--resume`` continues it (a plain re-run starts over)."""
        if not self.manifest:
            return
        stopped = isinstance(err, (FatalError, KeyboardInterrupt))
        self.manifest.update(status="stopped" if stopped else "failed", error=f"{type(err).__name__}: {err}",
                             ended=_now(), models=self.models.usage())
        self._note_budget()
        try:
            self.dir.write_manifest(self.manifest)
        except OSError:
            pass  # the original error is what the user must see

    def finish(self, plan: list[Step], *, report: bool = True) -> dict:
        """Check the invariant, write the output and the report; return the manifest.

        A large output is written in a second process while this one checks and builds the report. A run
        that read no usable record and generated none fails, naming why the input was unusable."""
        written, self.written_output = self.written_output, None
        try:
            self._check_usable()
            self._check_steps_worked()
        except BaseException:
            if written is not None:  # an output the engine wrote: not for a run that failed
                written.cancel()
            raise
        last = self.checkpoint_of(plan[-1])
        target, *spec = self.output_spec()
        writer, self._writer = self._writer, None
        if written is not None and writer is not None:
            writer.dismiss()
        output = written or OutputJob(last, target, *spec, writer=writer)
        try:
            generated = sum(s.get("generated", 0) for s in self.manifest["steps"])
            problems = account(self.dir, last, self.checkpoint_of(plan[0]), generated)
            if problems:
                raise InvariantError("; ".join(problems))
            count = checkpoint_count(last)
            steps = self.manifest["steps"]
            finished = dict(self.manifest, status="finished", finished=_now(),
                            output={"path": str(target), "count": count}, models=self.models.usage(),
                            totals={"read": steps[0]["in"], "output": count,
                                    "rejected": sum(s["rejected"] for s in steps),
                                    "generated": sum(s.get("generated", 0) for s in steps),
                                    "errors": sum(s.get("errors", 0) for s in steps)})
            page = None
            try:
                if report:
                    from dataflywheel.report import write_run_report

                    page = write_run_report(self.dir.root, manifest=finished)
            finally:
                written = output.commit()  # the output is kept even when the report fails
        finally:
            output.cancel()
        if written != count:
            raise InvariantError(f"the output holds {written} records, the final checkpoint {count}")
        self.manifest.update(finished)
        if page is not None:
            self.manifest["report"] = str(page)
        self._note_budget()
        self.dir.write_manifest(self.manifest)
        return self.manifest

    def _check_usable(self) -> None:
        read = self.step_record(READ_STEP)
        if read["out"] > 0 or any(s.get("generated", 0) for s in self.manifest["steps"]):
            return
        if self.data is None and self.recipe.input is None:
            raise RunError("nothing to work on: the recipe has no input and its steps generated nothing")
        source = self.recipe.input.path if self.data is None else "the rows given"
        if read["in"] == 0:
            raise RunError(f"nothing to work on: {source} holds no records (an empty file?)")
        first = read_table(self.dir.rejects(0, READ_STEP), columns=["reason", "source"]).slice(0, 1).to_pylist()[0]
        raise RunError(f"nothing usable in {source}: all {read['in']} rows were rejected on reading (first, at "
                       f"{first['source']}: {first['reason']}); every row and its reason is in {self.dir.rejected}")

    def _check_steps_worked(self) -> None:
        """A step that failed (raised) on every record it was given and made nothing is a broken step, not bad
        data: the run fails naming it (a step that *decided* to reject everything is a result, and the run
        finishes; a pool generator with some failed rounds that still proposed records worked)."""
        for step in self.manifest["steps"]:
            if step.get("in", 0) > 0 and step.get("errors", 0) >= step["in"] and not step.get("generated", 0):
                first = next((r["reason"] for r in iter_rejects(self.dir) if r["step"] == step["name"] and r["error"]),
                             "?")
                raise RunError(f"step {step['name']} failed on every one of its {step['in']} records (first: "
                               f"{first}); each record and its reason is in {self.dir.rejected}")

    def close(self) -> None:
        if self._writer is not None:  # the run stopped before its output was written
            self._writer.dismiss()
            self._writer = None
        close = getattr(self.models, "close", None)
        if close is not None:
            close()


GAUGES = ("concurrency", "concurrency_min")
"""Usage values that are states, not counts: a step records where they ended."""


def usage_delta(before: dict, after: dict) -> dict:
    """Model usage of one step: per model, the growth of its counters during the step (and its gauges)."""
    delta = {}
    for model, counters in after.items():
        start = before.get(model, {})
        grown = {k: round(v - start.get(k, 0), 6 if k == "cost" else 3) for k, v in counters.items()
                 if isinstance(v, (int, float)) and k not in GAUGES}
        if any(grown.values()):
            delta[model] = {**grown, **{k: counters[k] for k in GAUGES if k in counters}}
    return delta


def add_usage(total: dict, delta: dict) -> dict:
    """Per-model usage summed over batches (gauges: the latest value)."""
    out = {model: dict(counters) for model, counters in total.items()}
    for model, counters in delta.items():
        into = out.setdefault(model, {})
        for k, v in counters.items():
            into[k] = v if k in GAUGES else round(into.get(k, 0) + v, 6 if k == "cost" else 3)
    return out
