"""The local engine: moves batches through the steps in this process; the books are the Run's.

Consecutive record-by-record steps (reading, filters, mappers, scorers) run as one stream: a batch goes
through all of them without re-reading checkpoints, and each step still writes its own checkpoint and
sees exactly the batches it would see reading the previous checkpoint (outputs are re-batched to
``batch_size``), so a resumed run ends byte-identical. Selectors and generators run on their own.
CPU-bound operators without models run their batches in a process pool (``workers``), booked in order.
With workers and an input file whose first step is CPU-bound, workers read the input in shards and run
the CPU-bound steps that follow over their shard (``shard_stream``): the same rows in the same order, but
a step's batches restart at each shard.
"""

from __future__ import annotations

import time
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Iterator

from dataflywheel.errors import DiskFullError, FatalError, out_of_space
from dataflywheel.io import ReadReject
from dataflywheel.io.shards import bounded, shard_json
from dataflywheel.ops.base import (Filter, Generator, Mapper, NoveltyConfig, PoolGenerator, PoolView, Scorer, Selection,
                                    Selector)
from dataflywheel.pipeline.apply import Item, apply_batch, apply_selection, passed_inputs
from dataflywheel.pipeline.collector import few_collections
from dataflywheel.pipeline.novelty import PoolNovelty, screen_outputs, screen_round
from dataflywheel.pipeline.progress import StepProgress
from dataflywheel.pipeline.rebatch import Rebatch
from dataflywheel.pipeline.recipe import Recipe
from dataflywheel.pipeline.run import Run, RunError, Step, add_usage, usage_delta
from dataflywheel.pipeline.run_dir import iter_checkpoint_rows, utf8_values
from dataflywheel.pipeline.shard_stream import READ_ERRORS, ShardReadError, plan_input, stream_shard, unreadable_input
from dataflywheel.pipeline.step_writer import Rows, StepWriter
from dataflywheel.pipeline.workers import Pool, active, default_workers, pooled
from dataflywheel.records import loads

STREAMED = (Filter, Mapper, Scorer)

def _stream(path: Path, size: int) -> Iterator[Rows]:
    for rows in iter_checkpoint_rows(path, size):
        yield [(loads(text), origin, text) for _, origin, text in rows]


def _records(rows: Rows) -> list[dict]:
    return [record for record, _, _ in rows]


def _ready(future) -> bool:
    return future is not None and future.done()


class _Stage:
    """One streamed step: its operator, its books, its time and usage, and its batches out in the pool."""

    def __init__(self, step: Step, writer: StepWriter, advance):
        self.step, self.writer, self.advance = step, writer, advance
        self.seconds = 0.0
        self.usage: dict = {}  # model usage of this step alone (the stream's steps share the models)
        self.pending: deque = deque()  # (rows, future or None) sent to the pool, booked in this order


class LocalEngine:
    """Runs a plan in this process, one step (or one stream of record-by-record steps) at a time."""

    name = "local"

    def __init__(self, batch_size: int, progress: StepProgress, workers: int | None = None):
        self.size = batch_size
        self.progress = progress
        self.pool = Pool(workers or default_workers())
        self._rebatch: Rebatch | None = None  # the stream running: each step's input, re-batched

    def run(self, run: Run, plan: list[Step]) -> None:
        with active(self.pool):
            try:
                self._run(run, plan)
            finally:
                self.pool.close()

    def _run(self, run: Run, plan: list[Step]) -> None:
        i = 0
        while i < len(plan):
            step = plan[i]
            if step.done:
                i += 1
                continue
            if step.op is None or isinstance(step.op, STREAMED):
                group = [step]
                while i + len(group) < len(plan) and isinstance(plan[i + len(group)].op, STREAMED):
                    group.append(plan[i + len(group)])
                self._run_stream(run, plan[i - 1] if i else None, group)
                i += len(group)
                continue
            previous = plan[i - 1]
            step.op.setup()
            try:
                if isinstance(step.op, Selector):
                    self._run_selector(run, previous, step)
                elif isinstance(step.op, PoolGenerator):
                    self._run_pool_generator(run, previous, step)
                elif isinstance(step.op, Generator):
                    self._run_batch_generator(run, previous, step)
                else:
                    raise RunError(f"step {step.name}: {type(step.op).__name__} is not a known operator kind")
            finally:
                step.op.teardown()
            i += 1

    # ---- streamed steps --------------------------------------------------------------------------

    def _run_stream(self, run: Run, previous: Step | None, group: list[Step]) -> None:
        self.models = run.models
        stages = []
        with self.progress.many([(s.name, run.step_record(previous.name)["out"] if previous else None)
                                 for s in group]) as advances:
            for step, advance in zip(group, advances):
                stages.append(_Stage(step, run.begin_step(step), advance))
                if step.op is not None:
                    step.op.setup()
            self._rebatch = Rebatch(len(stages), self.size, lambda k, batch: self._process(stages, k, batch))
            try:
                shards = self._shards(run, group)
                if shards:  # workers read and run the leading worker steps
                    first = 1 + self._worker_steps(group)
                    source = self._read_shards(run, stages[:first], shards, more=first < len(stages))
                elif group[0].op is None:
                    source, first = self._read(run, stages[0]), 1
                else:
                    source, first = _stream(run.checkpoint_of(previous), self.size), 0
                for rows in source:
                    self._rebatch.push(first, rows)
                for k in range(first, len(stages)):
                    self._drain(stages, k)
            finally:
                self._rebatch = None  # it refers to this stream's stages
                for step in group:
                    if step.op is not None:
                        step.op.teardown()
            for stage in stages:
                run.finish_step(stage.step, stage.writer, stage.seconds, stage.usage)

    def _read(self, run: Run, stage: _Stage) -> Iterator[Rows]:
        """Reading as the first stage: books every record and unreadable row, yields the records."""
        started = time.perf_counter()
        batch: Rows = []
        try:
            for item in run.read_input():
                if isinstance(item, ReadReject):
                    stage.writer.unreadable(item.reason, item.source, item.raw)
                    stage.advance(1)
                    continue
                batch.append(item)
                if len(batch) >= self.size:
                    yield self._book_read(stage, batch, started)
                    started, batch = time.perf_counter(), []
        except READ_ERRORS as err:
            raise unreadable_input(run.recipe.input.path if run.recipe.input else "data", err) from err
        if batch:
            yield self._book_read(stage, batch, started)

    @staticmethod
    def _worker_steps(group: list[Step]) -> int:
        """How many steps after reading may run in workers (CPU-bound, no models), in a row."""
        count = 0
        while 1 + count < len(group) and pooled(group[1 + count].op):
            count += 1
        return count

    def _shards(self, run: Run, group: list[Step]) -> list | None:
        """The input's shards when workers should read it (several workers, an input file, a worker step
        right after reading, more than one shard, each of bounded size: no compressed file, CSV or JSON array,
        which a worker would read and hold whole); None to read it here."""
        spec = run.recipe.input
        if self.pool.workers < 2 or group[0].op is not None or run.data is not None or spec is None \
                or not self._worker_steps(group):
            return None
        shards = plan_input(spec, self.pool.workers)
        return shards if len(shards) > 1 and all(bounded(shard) for shard in shards) else None

    def _read_shards(self, run: Run, stages: list[_Stage], shards: list, *, more: bool) -> Iterator[Rows]:
        """Reading and the worker steps (``stages``) in workers, a shard each; books each step's tables in
        shard order and yields the last worker step's kept rows, a batch at a time, when steps follow
        (``more``). A step's seconds are its share, by its workers' time, of the time spent here (not in the
        steps that follow)."""
        spec = run.recipe.input
        task = partial(stream_shard, fmt=None if spec.format == "auto" else spec.format, fields=spec.fields,
                       size=self.size, read_step=stages[0].step.name,
                       steps=[(s.step.name, *self.pool.token(s.step.op)) for s in stages[1:]])
        started, read, elsewhere = time.perf_counter(), 0, 0.0
        worker_seconds = [0.0] * len(stages)
        results = self.pool.map(task, [shard_json(shard) for shard in shards])
        while True:
            try:
                books = next(results, None)
            except ShardReadError as err:  # as reading here reports it
                raise unreadable_input(spec.path, err) from err
            if books is None:
                break
            for n, (stage, part) in enumerate(zip(stages, books)):
                batches = part.booked()
                stage.writer.add_booked(part.checkpoint, part.rejects, *batches)
                if stage.step.op is not None:
                    stage.step.op.counters.update(part.counters)
                worker_seconds[n] += part.seconds
                stage.advance(sum(b.counts["in"] for b in batches))
            if not read:  # the workers go on with the next shards meanwhile
                run.prepare_report()
            read += books[0].checkpoint.num_rows
            run.read_so_far(read)
            if more:
                last = books[-1].checkpoint
                origins, texts = last.column("origin").to_pylist(), utf8_values(last.column("record"))
                for i in range(0, len(texts), self.size):
                    rows = [(loads(text), origin, text) for origin, text in zip(origins[i:i + self.size],
                                                                                texts[i:i + self.size])]
                    away = time.perf_counter()
                    yield rows
                    elsewhere += time.perf_counter() - away
        wall, total = time.perf_counter() - started - elsewhere, sum(worker_seconds) or 1.0
        for stage, seconds in zip(stages, worker_seconds):
            stage.seconds += wall * seconds / total

    @staticmethod
    def _book_read(stage: _Stage, batch: list[dict], started: float) -> Rows:
        kept = stage.writer.add([Item(r, i) for i, r in enumerate(batch)], [(r, r["id"], None) for r in batch])
        stage.advance(len(batch))
        stage.seconds += time.perf_counter() - started
        return kept

    def _drain(self, stages: list[_Stage], k: int) -> None:
        stage = stages[k]
        self._rebatch.flush(k)
        while stage.pending:
            self._book_pooled(stages, k, last=True)

    def _process(self, stages: list[_Stage], k: int, rows: Rows) -> None:
        stage = stages[k]
        if self.pool.workers > 1 and pooled(stage.step.op):
            stage.pending.append((rows, None))
            if len(stage.pending) > 1 or self.pool.started:
                self._submit(stage)
            while stage.pending and (len(stage.pending) > self.pool.window or _ready(stage.pending[0][1])):
                self._book_pooled(stages, k)
            return
        started = time.perf_counter()
        usage_before = self.models.usage()
        items = apply_batch(stage.step.op, stage.step.name, _records(rows))
        stage.usage = add_usage(stage.usage, usage_delta(usage_before, self.models.usage()))
        self._book(stages, k, rows, items, started)

    def _book(self, stages: list[_Stage], k: int, rows: Rows, items: list[Item], started: float) -> None:
        stage = stages[k]
        kept = stage.writer.add(items, rows)
        stage.seconds += time.perf_counter() - started
        stage.advance(len(rows))
        self._rebatch.push(k + 1, kept)

    def _submit(self, stage: _Stage) -> None:
        for n, (rows, future) in enumerate(stage.pending):
            if future is None:
                stage.pending[n] = (rows, self.pool.submit_batch(stage.step.op, stage.step.name, rows))

    def _book_pooled(self, stages: list[_Stage], k: int, last: bool = False) -> None:
        """Send the stage's waiting batches to the pool, then book its oldest one. A step's only batch
        (``last``, before the pool started) runs here: one batch is not worth starting workers."""
        stage, started = stages[k], time.perf_counter()
        op = stage.step.op
        if last and not self.pool.started and len(stage.pending) == 1:
            rows, _ = stage.pending.popleft()
            return self._book(stages, k, rows, apply_batch(op, stage.step.name, _records(rows)), started)
        self._submit(stage)
        rows, future = stage.pending.popleft()
        self._book(stages, k, rows, self.pool.collect(op, rows, future), started)

    # ---- whole-dataset steps ---------------------------------------------------------------------

    def _scan(self, source: Path):
        """``scan()`` for a whole-dataset operator: the records of ``source`` in batches, as often as asked."""
        return lambda: (_records(rows) for rows in _stream(source, self.size))

    def _run_selector(self, run: Run, previous: Step, step: Step) -> None:
        source = run.checkpoint_of(previous)
        scan = self._scan(source)
        writer = run.begin_step(step)
        with self.progress.step(step.name, run.step_record(previous.name)["out"]) as advance:
            try:
                selection = self._selection(step, source, scan)
            except FatalError:
                raise
            except Exception as err:  # noqa: BLE001 - a selector decides over all records: it cannot fail one alone
                raise RunError(f"step {step.name} ({step.op.name}) failed: {type(err).__name__}: {err}") from err
            self._book_selection(step, writer, source, selection, advance)
        run.finish_step(step, writer)

    def _book_selection(self, step: Step, writer: StepWriter, source: Path, selection: Selection, advance) -> None:
        """Apply a selector's decisions to the records of ``source`` and book them, batch by batch."""
        offset = 0
        for rows in _stream(source, self.size):
            writer.add(apply_selection(selection, _records(rows), offset), rows)
            offset += len(rows)
            advance(len(rows))

    def _selection(self, step: Step, source: Path, scan) -> Selection:
        """The selector's decision over the records of ``source`` (another engine may decide elsewhere)."""
        return step.op.select(scan)

    def _run_batch_generator(self, run: Run, previous: Step, step: Step) -> None:
        """Per input batch: inputs and generated records, each batch a committed part (resumable)."""
        writer = run.begin_step(step, parts=True)
        done = len(writer.states)
        novelty = None  # a generator with a NoveltyConfig: its outputs are screened against the step's so far
        if isinstance(step.op.config, NoveltyConfig):
            made = [r for r in writer.part_records(first=0) if (r.get("lineage") or [{}])[-1].get("step") == step.name]
            novelty = PoolNovelty(step.op, lambda: iter(()), made)
        with self.progress.step(step.name, run.step_record(previous.name)["out"]) as advance:
            for number, rows in enumerate(_stream(run.checkpoint_of(previous), self.size)):
                if number < done:
                    advance(len(rows))
                    continue
                items = apply_batch(step.op, step.name, _records(rows))
                if novelty is not None:
                    screen_outputs(items, novelty)
                writer.add(items, rows)
                writer.commit_part({"batch": number})
                advance(len(rows))
        run.finish_step(step, writer)

    def _run_pool_generator(self, run: Run, previous: Step, step: Step) -> None:
        """Rounds of propose -> verify -> accept until the target, the round limit or a collapse."""
        op, cfg = step.op, step.op.config
        source = run.checkpoint_of(previous)
        scan = self._scan(source)
        writer = run.begin_step(step, parts=True)
        if not writer.states:  # part 0: the inputs, passed on or replaced
            for rows in _stream(source, self.size):
                writer.add(passed_inputs(op, step.name, _records(rows)), rows)
            writer.commit_part({"inputs": True})
        accepted = writer.part_records(first=1)  # part 0 holds the inputs
        novelty = PoolNovelty(op, scan, accepted)
        round_ = len(writer.states) - 1
        with self.progress.step(step.name, cfg.target) as advance:
            advance(len(accepted))
            while round_ < cfg.max_rounds and len(accepted) < cfg.target:
                view = PoolView(scan=scan, accepted=list(accepted), round=round_, target=cfg.target)
                items = screen_round(op, step.name, view, novelty)
                fresh = [i.record for i in items if i.reason is None]
                accepted.extend(fresh)
                writer.add(items)
                writer.commit_part({"round": round_, "proposed": len(items), "accepted": len(fresh)})
                advance(len(fresh))
                round_ += 1
                if not items:
                    op.counters["rounds that proposed nothing (stopped)"] += 1
                    break
                if round_ > 1 and len(fresh) < cfg.min_acceptance * len(items):
                    op.counters[f"stopped: acceptance {len(fresh)}/{len(items)} below {cfg.min_acceptance}"] += 1
                    break
        if len(accepted) < cfg.target:
            op.counters[f"target {cfg.target} not reached: {len(accepted)} accepted in {round_} rounds"] += 1
        run.finish_step(step, writer)


class LocalExecutor:
    """Runs a validated recipe in this process: a Run keeps the books, the LocalEngine moves the batches."""

    def __init__(self, recipe: Recipe, run_dir: str | Path | None = None, *, quiet: bool = False,
                 data: Iterable[dict] | Any | None = None, dry_run: bool = False, workers: int | None = None):
        self.recipe = recipe
        self.workers = workers or recipe.workers  # None: one per core
        self.books = Run(recipe, run_dir, quiet=quiet, data=data, dry_run=dry_run)
        self.run_dir = self.books.dir
        self.quiet = quiet

    def _engine(self, progress: StepProgress) -> LocalEngine:
        return LocalEngine(self.recipe.batch_size, progress, self.workers)

    def execute(self, *, resume: bool = False, force: bool = False, report: bool = True) -> dict:
        """Run every step not yet finished; return the manifest."""
        self.books.report_wanted = report
        plan = self.books.start(resume=resume, force=force)
        try:
            with few_collections():
                with StepProgress(quiet=self.quiet) as progress:
                    engine = self._engine(progress)
                    self.books.manifest["workers"] = engine.pool.workers
                    engine.run(self.books, plan)
                return self.books.finish(plan, report=report)
        except BaseException as err:
            if out_of_space(err):  # not the data's fault and not a crash: a stop that --resume continues
                full = DiskFullError(f"the disk of {self.run_dir.root} is full ({type(err).__name__}: {err}); "
                                     "finished steps are kept: free some space")
                self.books.fail(full)
                raise full from err
            self.books.fail(err)
            raise
        finally:
            self.books.close()
