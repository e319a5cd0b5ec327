"""A process pool for CPU-bound batch work (heuristic filters, language id, MinHash signing).

Workers start from a forkserver (a clean process that imported dataflywheel once), never by forking the
run's process: that one may hold torch or tokenizer threads and the Parquet writer thread, which a fork
would copy in a locked state. They start without the run's ``__main__`` script (a script without an
``if __name__ == "__main__"`` guard would otherwise run again in each) and exit when the run's process is
gone. Operators travel pickled (their ``_`` state stays behind) and are set up once per worker; results
come back in submission order, so a run with workers writes the same bytes as one without. Operators
that use models never come here: they stay in the run's process.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import pickle
import sys
import threading
import time
import uuid
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from dataflywheel.ops.base import Operator
from dataflywheel.pipeline.apply import Item, apply_batch
from dataflywheel.records import loads

START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def default_workers() -> int:
    return os.cpu_count() or 1


def pooled(op: Operator | None) -> bool:
    """Whether an operator's batches may go to worker processes: CPU-bound, and no models."""
    # a class defined in a script's __main__ cannot be unpickled in a worker, which does not run the script
    return (op is not None and getattr(op, "cpu_bound", False) and not op.uses_models()
            and type(op).__module__ != "__main__")


class Pool:
    """Worker processes, started on first use; ``window`` bounds the batches in flight per ordered map."""

    def __init__(self, workers: int):
        self.workers = workers
        self.window = 2 * workers
        self._executor: ProcessPoolExecutor | None = None
        self._tokens: dict[int, tuple[str, bytes]] = {}

    @property
    def started(self) -> bool:
        return self._executor is not None

    def submit(self, fn: Callable, *args) -> Future:
        if self._executor is None:
            self._executor = self._start()
        return self._executor.submit(fn, *args)

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context(START_METHOD)
        if START_METHOD == "forkserver":
            context.set_forkserver_preload([__name__])
        executor = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_watch,
                                       initargs=(os.getpid(),))
        try:
            with _without_main_script():  # every worker starts now, while the script is hidden
                for future in [executor.submit(os.getpid) for _ in range(self.workers)]:
                    future.result()
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        return executor

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        """``fn(item)`` for every item, in order, at most ``window`` at a time in the workers."""
        pending: deque[Future] = deque()
        for item in items:
            pending.append(self.submit(fn, item))
            if len(pending) >= self.window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def submit_batch(self, op: Operator, step: str, rows: list[tuple[dict, str, bytes | str | None]]) -> Future:
        """``apply_batch(op, step, records)`` in a worker; the future's result is ``(items, counters)``."""
        token, blob = self.token(op)
        # the JSON text when every row has it: cheaper to send than the dicts
        payload = [text for _, _, text in rows] if all(text is not None for _, _, text in rows) else \
            [record for record, _, _ in rows]
        return self.submit(_apply, token, blob, step, payload)

    def token(self, op: Operator) -> tuple[str, bytes]:
        """The operator as workers load it (``operator``): a token naming it and its pickle, made once."""
        if id(op) not in self._tokens:
            # with this process's import path, so plugin modules import in workers started earlier
            self._tokens[id(op)] = (uuid.uuid4().hex, pickle.dumps((list(sys.path), pickle.dumps(op))))
        return self._tokens[id(op)]

    @staticmethod
    def collect(op: Operator, rows: list[tuple[dict, str, str | None]], future: Future) -> list[Item]:
        """A worker's items with the parent's records put back where they came back unchanged; its
        counters added to ``op``'s."""
        compact, counters = future.result()
        op.counters.update(counters)
        return [Item(rows[position][0] if same else record, position, reason, raw, error)
                for same, record, position, reason, raw, error in compact]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


@contextmanager
def _without_main_script():
    """Hide the path of a ``__main__`` script, which multiprocessing would import in each new process."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or getattr(main, "__spec__", None) is not None:  # a module (-m) is imported guarded
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


_ACTIVE: Pool | None = None
_OPS: dict[str, Operator] = {}  # in a worker: the operators it has set up, by token


@contextmanager
def active(pool: Pool | None):
    """Make ``pool`` the one ``map_ordered`` uses (whole-dataset operators fan their batches out to it)."""
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, pool
    try:
        yield pool
    finally:
        _ACTIVE = previous


def map_ordered(fn: Callable[[Any], Any], items: Iterable) -> Iterator:
    """``fn(item)`` for every item in order: in the active pool's workers, or here when there is none.
    ``fn`` must be a module-level function (it is pickled by name)."""
    if _ACTIVE is None or _ACTIVE.workers < 2:
        return map(fn, items)
    return _ACTIVE.map(fn, items)


def _watch(run_pid: int) -> None:
    """In a worker: exit when the run's process is gone (killed runs must not leave workers behind)."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(run_pid, 0)
            except OSError:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="dataflywheel-watch-run").start()


def operator(token: str, blob: bytes) -> Operator:
    """In a worker: the operator of ``token`` (``Pool.token``), unpickled and set up on first use."""
    op = _OPS.get(token)
    if op is None:
        path, blob = pickle.loads(blob)
        sys.path.extend(p for p in path if p not in sys.path)
        op = _OPS[token] = pickle.loads(blob)
        op.setup()
        # released when the worker exits (the pool closes at the end of the run): multiprocessing runs
        # finalizers with an exit priority before a worker process ends
        multiprocessing.util.Finalize(op, op.teardown, exitpriority=10)
    return op


def _apply(token: str, blob: bytes, step: str, payload: list) -> tuple[list[tuple], Counter]:
    """In a worker: apply the operator to one batch; unchanged records are sent back as a flag only."""
    op = operator(token, blob)
    op.counters = Counter()
    batch = [r if isinstance(r, dict) else loads(r) for r in payload]  # JSON text (bytes or str) or records
    items = apply_batch(op, step, batch)
    compact = []
    for item in items:
        same = item.position is not None and item.record is batch[item.position]
        compact.append((same, None if same else item.record, item.position, item.reason, item.raw, item.error))
    return compact, op.counters
