"""The Ray engine: the same operators and the same books, with the work done by Ray Data on a cluster.

* The books stay the driver's ``Run`` (same checkpoints, ``rejected/``, manifest, invariant, resume by finished
  step). Tasks read the input's shards (``io.shards``: files, line ranges, row groups) and book them.
* Filters, mappers and scorers run ``apply_batch`` and ``book`` in ``map_batches`` over the previous checkpoint,
  one Ray Data block per batch (``batch_size`` records, in order): stateless operators as Ray tasks, operators
  with models on an actor pool, so a model loads once per actor. Workers send back each batch booked (its
  checkpoint and reject rows as Arrow tables); the driver appends them to the step's files.
* Exact and MinHash dedup, top-k and SemDeDup decide distributed (``ray_dedup``, ``ray_semdedup``); other
  selectors decide on the driver as the local engine does, and the engine logs it (docs/scaling.md lists
  which). Either way, tasks apply the decisions to the batches and book them. Generators run on the driver.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from dataflywheel.errors import FatalError
from dataflywheel.io.shards import shard_json
from dataflywheel.ops.base import Selection
from dataflywheel.pipeline.executor_local import LocalEngine, LocalExecutor
from dataflywheel.pipeline.output import WrittenOutput, output_failed, write_chunks
from dataflywheel.pipeline.progress import StepProgress
from dataflywheel.pipeline.ray_apply import (ApplyActor, apply_task, decide_task, operator_blob, output_task,
                                              raise_fatal, read_task, table_from_bytes)
from dataflywheel.pipeline.recipe import RaySpec
from dataflywheel.pipeline.shard_stream import plan_input
from dataflywheel.pipeline.run import Run, RunError, Step, add_usage
from dataflywheel.pipeline.step_writer import Booked
from dataflywheel.records import dumps

log = logging.getLogger("dataflywheel.ray")

MAX_DEFAULT_ACTORS = 4
BULK_ROWS, BULK_BYTES = 8192, 256 * 2**20
"""Records (at most, and about bytes) per Ray task for work that is cheap per record (applying a selector's
decisions, converting the output): Ray Data's cost per task (~50 ms here) would outweigh ``batch_size``."""


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise RunError("executor 'ray' needs Ray Data: pip install 'dataflywheel[ray]'") from err
    return ray


@contextmanager
def ray_session(spec: RaySpec, quiet: bool, cpus: int | None = None) -> Iterator:
    """Connect to the cluster (or start a local one), with ordered, quiet-aware Ray Data; disconnect after."""
    ray = _ray()
    started = False
    if not ray.is_initialized():
        options = {"logging_level": logging.WARNING if quiet else logging.INFO, "log_to_driver": not quiet}
        if spec.address is None:
            options.update(include_dashboard=False, num_cpus=cpus)
        ray.init(address=spec.address, **options)
        started = True
    context = ray.data.DataContext.get_current()
    data_log = logging.getLogger("ray.data")
    saved = context.execution_options.preserve_order, context.enable_progress_bars, data_log.level
    context.execution_options.preserve_order = True  # batches come back in the order sent: the same books
    context.enable_progress_bars = not quiet  # Ray Data's own progress bars are the run's progress
    if quiet:
        data_log.setLevel(logging.ERROR)
    try:
        yield ray
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars, level = saved
        data_log.setLevel(level)
        if started:
            ray.shutdown()


def _fatal_in(err: BaseException) -> FatalError | None:
    """The ``FatalError`` a Ray worker raised, found in the exceptions that wrap it."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, FatalError) and not type(err).__module__.startswith("ray."):
            return err
        err = getattr(err, "cause", None) or err.__cause__
    return None


def _strings(values: list[str | None]) -> pa.Array:
    return pa.array(values, pa.string())


def checkpoint_dataset(ray, source: Path, size: int, columns: tuple[str, ...], position: bool = False,
                       extra: Callable[[int, int], dict[str, pa.Array]] | None = None):
    """A checkpoint as a Ray dataset of ``size``-record blocks, in order, numbered (``batch``) and, when asked,
    with each record's ``position`` and the ``extra(offset, rows)`` columns of the block's rows. The driver reads
    it and puts the blocks in the object store, so workers need no access to the run directory."""
    refs, number, offset = [], 0, 0
    pending: list[pa.RecordBatch] = []
    held = 0

    def block(batches: list[pa.RecordBatch]) -> pa.Table:
        table = pa.Table.from_batches(batches).combine_chunks()
        table = table.append_column("batch", pa.array([number] * table.num_rows, pa.int64()))
        if position:
            table = table.append_column("position", pa.array(range(offset, offset + table.num_rows), pa.int64()))
        for name, values in (extra(offset, table.num_rows) if extra else {}).items():
            table = table.append_column(name, values)
        return table

    for batch in pq.ParquetFile(source).iter_batches(batch_size=size, columns=list(columns)):
        pending.append(batch)
        held += batch.num_rows
        while held >= size:
            table = pa.Table.from_batches(pending).combine_chunks()
            head, rest = table.slice(0, size), table.slice(size)
            refs.append(ray.put(block(head.to_batches())))
            number, offset = number + 1, offset + size
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        refs.append(ray.put(block(pending)))
    return ray.data.from_arrow_refs(refs) if refs else None


class RayEngine(LocalEngine):
    """Runs a plan with Ray Data; the books are the driver's ``Run``."""

    name = "ray"

    def __init__(self, batch_size: int, progress: StepProgress, spec: RaySpec, fingerprint: str, quiet: bool,
                 workers: int | None = None):
        super().__init__(batch_size, progress, workers)
        self.spec, self.fingerprint, self.quiet = spec, fingerprint, quiet
        self.ray = None
        self._books: Run | None = None
        self._how: dict[str, dict] = {}  # per selector step: where it ran, its shuffles
        self._worker_usage: dict = {}  # model usage of the workers of the selector step running

    def run(self, run: Run, plan: list[Step]) -> None:
        with ray_session(self.spec, self.quiet, self.pool.workers) as ray:
            self.ray, self._books = ray, run
            super().run(run, plan)
            run.written_output = self._write_output(run, plan[-1])

    def _write_output(self, run: Run, last: Step) -> WrittenOutput | None:
        """A JSONL output converted by tasks, batch by batch; the driver writes the lines in order. Other
        containers (Parquet, CSV, JSON, a dataset directory) are built by the run's books as locally (None)."""
        target, fmt, file_type, options = run.output_spec()
        if file_type != "jsonl":
            return None
        data = checkpoint_dataset(self.ray, run.checkpoint_of(last), self._bulk(run.checkpoint_of(last)), ("record",))
        count = 0

        def chunks():
            nonlocal count
            if data is None:
                return
            converted = data.map_batches(output_task, fn_kwargs={"fmt": fmt, "options": options}, batch_size=None,
                                         batch_format="pyarrow")
            for table in converted.iter_batches(batch_size=None, batch_format="pyarrow"):
                for lines, n, error in zip(*(table.column(c).to_pylist() for c in ("lines", "count", "error"))):
                    if error is not None:
                        raise output_failed(target, error, refused=True)  # output_task reports RecordErrors
                    count += n
                    yield lines

        written = WrittenOutput(target, 0)
        try:
            write_chunks(chunks(), target)
        except BaseException:
            written.cancel()
            raise
        written.count = count
        return written

    def _bulk(self, checkpoint: Path) -> int:
        """Records per block for cheap per-record work over ``checkpoint``: ``BULK_ROWS``, fewer for long records."""
        meta = pq.ParquetFile(checkpoint).metadata
        size = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)) / max(1, meta.num_rows)
        return max(self.size, min(BULK_ROWS, int(BULK_BYTES / max(size, 1.0))))

    def cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    # ---- record-by-record steps ------------------------------------------------------------------

    def _run_stream(self, run: Run, previous: Step | None, group: list[Step]) -> None:
        if group[0].op is None:
            if run.data is None and run.recipe.input is not None and self.spec.read_on == "workers":
                self._ray_read(run, group[0])
            else:  # rows given from Python (the driver has them), or ray.read_on: driver
                super()._run_stream(run, previous, group[:1])
            previous, group = group[0], group[1:]
        for step in group:
            self._ray_step(run, previous, step)
            previous = step

    def _ray_read(self, run: Run, step: Step) -> None:
        """Reading the input: tasks read its shards (files, line ranges, row groups) and book them; the driver
        appends what they booked, in order."""
        spec, started = run.recipe.input, time.perf_counter()
        writer = run.begin_step(step)
        plan = plan_input(spec, self.cpus())
        if plan:
            shards = [{"batch": n, "shard": json.dumps(shard_json(shard))} for n, shard in enumerate(plan)]
            data = self.ray.data.from_items(shards, override_num_blocks=len(shards)).map_batches(
                read_task, fn_kwargs={"fmt": None if spec.format == "auto" else spec.format, "fields": spec.fields,
                                      "step": step.name}, batch_size=1, batch_format="pyarrow")
            for _ in self._book_results(data, writer, None):
                pass
        record = run.finish_step(step, writer, time.perf_counter() - started)
        record["ray"] = {"runs_on": "tasks", "shards": len(plan)}
        run.dir.write_manifest(run.manifest)

    def _ray_step(self, run: Run, previous: Step, step: Step) -> None:
        op, started = step.op, time.perf_counter()
        writer = run.begin_step(step)
        data = checkpoint_dataset(self.ray, run.checkpoint_of(previous), self.size, ("origin", "record"))
        usage: dict = {}
        workers: dict[int, int] = {}
        cache_rows: list = []
        if data is not None:
            options = {"token": uuid.uuid4().hex, "blob": operator_blob(op), "step": step.name,
                       "cache": self.spec.cache, "fingerprint": self.fingerprint}
            if op.uses_models():
                actors = self._pool_size()
                # one batch in flight per actor: a model-bound batch keeps its actor busy, so batches spread
                pool = self.ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1)
                data = data.map_batches(ApplyActor, fn_constructor_kwargs=options, batch_size=None,
                                        batch_format="pyarrow", compute=pool, num_cpus=1,
                                        num_gpus=self.spec.gpus or None)
            else:
                data = data.map_batches(apply_task, fn_kwargs=options, batch_size=None, batch_format="pyarrow")
            try:
                for stats in self._book_results(data, writer, op):
                    spent = run.budget_spent()  # by the batches before this one, which was in flight: booked
                    usage = add_usage(usage, stats["usage"])
                    run.charge(stats["usage"])  # every worker's spending counts against the one budget
                    workers[stats["pid"]] = stats["setups"]
                    cache_rows.extend(stats.get("cache", ()))
                    if spent:
                        run.check_budget()
            finally:  # per-worker caches, merged into the run's at the end of the step (also when it stops)
                if cache_rows and run.cache is not None:
                    run.cache.put_many([tuple(row) for row in cache_rows])
        record = run.finish_step(step, writer, time.perf_counter() - started, usage)
        record["ray"] = {"runs_on": "actors" if op.uses_models() else "tasks", "workers": len(workers),
                         "setups": sum(workers.values())}
        run.dir.write_manifest(run.manifest)

    def _book_results(self, data, writer, op) -> Iterator[dict]:
        """Book each batch, in order, as the workers booked it; yield each batch's statistics (``op``: the
        operator whose counters they carry; None when reading or applying a selector's decisions)."""
        try:
            for table in data.iter_batches(batch_size=None, batch_format="pyarrow"):
                for number, checkpoint, rejects, text in zip(*(table.column(c).to_pylist() for c in
                                                              ("batch", "checkpoint", "rejects", "stats"))):
                    stats = json.loads(text)
                    raise_fatal(stats)
                    if op is not None:
                        op.counters.update(stats["counters"])
                    writer.add_booked(table_from_bytes(checkpoint), table_from_bytes(rejects),
                                      Booked.from_summary(stats["booked"]))
                    yield stats
        except Exception as err:  # noqa: BLE001 - a worker's FatalError arrives wrapped by Ray; anything else is a bug
            fatal = _fatal_in(err)
            if fatal is not None:
                raise fatal from err
            raise

    # ---- selectors -------------------------------------------------------------------------------

    def _book_selection(self, step: Step, writer, source: Path, selection: Selection, advance) -> None:
        """Tasks apply the decisions to their batches and book them; the driver sends each record's decision
        beside it and appends what was booked."""

        def decisions(offset: int, rows: int) -> dict[str, pa.Array]:
            span = range(offset, offset + rows)
            return {"reason": _strings([selection.rejected.get(p) for p in span]),
                    "note": _strings([dumps(selection.meta[p]) if p in selection.meta else None for p in span]),
                    "scores": _strings([dumps(selection.scores[p]) if p in selection.scores else None for p in span])}

        data = checkpoint_dataset(self.ray, source, self._bulk(source), ("origin", "record"), extra=decisions)
        if data is None:
            return
        data = data.map_batches(decide_task, fn_kwargs={"step": step.name}, batch_size=None, batch_format="pyarrow")
        for stats in self._book_results(data, writer, None):
            advance(stats["booked"]["counts"]["in"])

    def _run_selector(self, run: Run, previous: Step, step: Step) -> None:
        self._how[step.name] = {"runs_on": "driver"}
        self._worker_usage = {}
        super()._run_selector(run, previous, step)
        record = run.step_record(step.name)
        record["ray"] = self._how.pop(step.name)
        if self._worker_usage:
            record["models"] = add_usage(record.get("models") or {}, self._worker_usage)
        run.dir.write_manifest(run.manifest)

    def _spent(self, usage: dict, cache_rows: list) -> None:
        """What a distributed selector's workers spent on models: the budget, the step's books, the cache."""
        self._books.charge(usage)
        self._worker_usage = add_usage(self._worker_usage, usage)
        if cache_rows and self._books.cache is not None:
            self._books.cache.put_many(cache_rows)

    def _selection(self, step: Step, source: Path, scan) -> Selection:
        from dataflywheel.pipeline.ray_dedup import distributed_selection

        data = checkpoint_dataset(self.ray, source, self.size, ("record",), position=True)
        if data is not None:
            try:
                found = distributed_selection(step.op, data, self.cpus(), lambda: self._actors(step.op))
            except Exception as err:  # noqa: BLE001 - a worker's FatalError arrives wrapped by Ray
                fatal = _fatal_in(err)
                if fatal is not None:
                    raise fatal from err
                raise
            if found is not None:
                selection, self._how[step.name] = found
                return selection
            log.warning("step %s (%s) has no distributed form on Ray: its selector runs on the driver over the "
                        "collected records", step.name, step.op.name)
        return super()._selection(step, source, scan)

    def _actors(self, op) -> dict:
        """How a model-backed part of a step runs: the operator to load, the cache mode, the pool's size and GPUs."""
        return {"token": uuid.uuid4().hex, "blob": operator_blob(op), "cache": self.spec.cache,
                "fingerprint": self.fingerprint, "size": self._pool_size(), "gpus": self.spec.gpus,
                "spent": self._spent}

    def _pool_size(self) -> int:
        return self.spec.actors or min(self.cpus(), MAX_DEFAULT_ACTORS)

    def _run_batch_generator(self, run: Run, previous: Step, step: Step) -> None:
        log.warning("step %s (%s): generators run on the driver under the Ray engine", step.name, step.op.name)
        super()._run_batch_generator(run, previous, step)

    def _run_pool_generator(self, run: Run, previous: Step, step: Step) -> None:
        log.warning("step %s (%s): generators run on the driver under the Ray engine", step.name, step.op.name)
        super()._run_pool_generator(run, previous, step)


class RayExecutor(LocalExecutor):
    """Runs a validated recipe with Ray: a Run keeps the books, the RayEngine moves the batches."""

    def __init__(self, recipe, run_dir=None, *, address: str | None = None, **options):
        super().__init__(recipe, run_dir, **options)
        self.spec = recipe.ray.model_copy(update={"address": address}) if address else recipe.ray

    def _engine(self, progress: StepProgress) -> RayEngine:
        _ray()  # say what to install before any work
        self.books.manifest["executor"] = "ray"
        return RayEngine(self.recipe.batch_size, progress, self.spec, self.recipe.fingerprint(), self.quiet,
                         self.workers)


def make_executor(recipe, run_dir=None, *, executor: str | None = None, address: str | None = None,
                  **options) -> LocalExecutor:
    """The executor a recipe asks for (``executor``/``address`` given on the command line win; an address
    alone means Ray)."""
    kind = executor or ("ray" if address else recipe.executor)
    if kind == "ray":
        return RayExecutor(recipe, run_dir, address=address, **options)
    return LocalExecutor(recipe, run_dir, **options)
