"""Steps in a row, each given its input in batches of one size: what a step keeps is the next step's input."""

from __future__ import annotations

from typing import Callable

from dataflywheel.pipeline.step_writer import Rows


class Rebatch:
    """The input buffers of steps ``0..steps-1``. ``push(k, rows)`` adds rows to step k's input and calls
    ``process(k, batch)`` for each full batch (``process`` pushes what step k kept to step k + 1);
    ``flush(k)`` processes what is left of step k's input, once no more can come (call it in step order).
    Each step sees the batches it would see reading the previous step's checkpoint: a resumed run's steps
    get the same batches."""

    def __init__(self, steps: int, size: int, process: Callable[[int, Rows], None]):
        self.size, self.process = size, process
        self.buffers: list[Rows] = [[] for _ in range(steps)]

    def push(self, k: int, rows: Rows) -> None:
        if k >= len(self.buffers):
            return
        buffer = self.buffers[k]
        buffer.extend(rows)
        while len(buffer) >= self.size:
            batch = buffer[:self.size]
            del buffer[:self.size]
            self.process(k, batch)

    def flush(self, k: int) -> None:
        if self.buffers[k]:
            batch, self.buffers[k] = self.buffers[k], []
            self.process(k, batch)
