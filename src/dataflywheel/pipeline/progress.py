"""Per-step progress bars (rich), silenced by ``quiet``; ``silence_library_bars`` quiets the libraries' own."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class StepProgress:
    """One bar per step; ``with progress.step(name, total) as advance: advance(n)``."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._progress = None if quiet else Progress(
            TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True))

    def __enter__(self) -> "StepProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    @contextmanager
    def many(self, steps: list[tuple[str, int | None]]) -> Iterator[list[Callable[[int], None]]]:
        """Bars for steps that advance together (a stream of record-by-record steps)."""
        if self._progress is None:
            yield [lambda n: None for _ in steps]
            return
        tasks = [self._progress.add_task(name, total=total) for name, total in steps]
        yield [lambda n, t=t: self._progress.advance(t, n) for t in tasks]
        for task in tasks:
            self._progress.update(task, total=self._progress.tasks[task].completed)

    @contextmanager
    def step(self, name: str, total: int | None) -> Iterator[Callable[[int], None]]:
        if self._progress is None:
            yield lambda n: None
            return
        task = self._progress.add_task(name, total=total)
        yield lambda n: self._progress.advance(task, n)
        self._progress.update(task, total=self._progress.tasks[task].completed)


def silence_library_bars() -> None:
    """No progress bars from Hugging Face libraries (model loading, dataset maps, TRL's preprocessing) in this
    process or the ones it starts: by environment for modules not imported yet, by their switches for the
    ones that are (importing them here would cost start-up time)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    switches = {"huggingface_hub.utils": "disable_progress_bars", "datasets.utils.tqdm": "disable_progress_bars",
                "transformers.utils.logging": "disable_progress_bar"}
    for module, switch in switches.items():
        if module in sys.modules:
            getattr(sys.modules[module], switch)()
