"""Write a run's output file, in a second process while the run goes on when the output is large.

Converting and writing tens of thousands of records is CPU-bound Python. For a large output the file is
written by a second interpreter: fed the final step's kept records while that step runs (``OutputTee``),
or, when the final step did not run in this process (a resumed run, a generator's committed parts),
reading the final checkpoint while this process checks the invariant and builds the report. Small
outputs are written here at the end (starting a process would cost more than it saves).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from dataflywheel.io import write_records
from dataflywheel.pipeline.run_dir import iter_checkpoint
from dataflywheel.records import loads

PARALLEL_FROM = 20_000
"""Outputs of at least this many records are written in a second process."""


def checkpoint_count(checkpoint: Path) -> int:
    """Records in a checkpoint (from the Parquet footer; nothing is read)."""
    return pq.ParquetFile(checkpoint).metadata.num_rows


def _tmp(target: Path) -> Path:
    return target.with_name(".tmp-" + target.name)


def write_output(checkpoint: str, target: str, fmt: str, file_type: str, options: dict) -> int:
    """Write the records of ``checkpoint`` under a temporary name beside ``target``; return the count."""
    tmp = _tmp(Path(target))
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    records = (r for batch in iter_checkpoint(Path(checkpoint), 1024) for r in batch)
    return write_records(records, tmp, fmt, file_type, **options)


def write_lines(lines, target: str, fmt: str, file_type: str, options: dict) -> int:
    """Write records given as lines of JSON text (one record each) under a temporary name beside ``target``."""
    tmp = _tmp(Path(target))
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    return write_records((loads(line) for line in lines if line.strip()), tmp, fmt, file_type, **options)


class _Writer:
    """A writer process: a fresh interpreter running this module (not multiprocessing), so a user's script
    needs no ``if __name__ == "__main__"`` guard and no parent thread or lock is inherited. Its stderr goes
    to a file, not a pipe: a writer fed through stdin that filled an unread stderr pipe would block, and
    the run with it."""

    def __init__(self, mode: str, args: list, **popen):
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                                          os.environ.get("PYTHONPATH")]))}
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen([sys.executable, "-m", "dataflywheel.pipeline.output", mode, json.dumps(args)],
                                        stdout=subprocess.PIPE, stderr=self.log, env=env, **popen)

    def wait(self) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) once the writer has finished (its stdin, if any, closed)."""
        out, _ = self.process.communicate()
        self.log.seek(0)
        err = self.log.read().decode("utf-8", "replace")
        self.log.close()
        return self.process.returncode, out, err

    def kill(self) -> None:
        self.process.kill()
        self.process.communicate()
        self.log.close()


def _writer_process(mode: str, args: list, **popen) -> _Writer:
    return _Writer(mode, args, **popen)


def _stop(writer: _Writer, target: Path) -> None:
    writer.kill()
    tmp = _tmp(target)
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


class OutputError(RuntimeError):
    """Writing the output file failed (in the second process); the message carries its error."""


class OutputJob:
    """The output file of a run, being written under a temporary name; ``commit()`` waits for it, moves it
    to its name and returns the record count (or raises what writing raised). Large outputs start writing
    in a second process at once (or were written meanwhile by an ``OutputTee``: ``writer``); small ones are
    written by ``commit()``."""

    def __init__(self, checkpoint: Path, target: Path, fmt: str, file_type: str, options: dict, *,
                 parallel: bool | None = None, writer: _Writer | None = None):
        self.target = target
        self._args = [str(checkpoint), str(target), fmt, file_type, options]
        if parallel is None and writer is None:
            parallel = checkpoint_count(checkpoint) >= PARALLEL_FROM
        self._writer = writer
        if parallel and writer is None:
            self._writer = _writer_process("checkpoint", self._args, text=True)

    def commit(self) -> int:
        if self._writer is None:
            count = write_output(*self._args)
        else:
            (code, out, err), self._writer = self._writer.wait(), None
            if code != 0:
                last = err.strip().splitlines()[-1] if err.strip() else f"exit status {code}"
                raise OutputError(f"writing {self.target} failed: {last}")
            count = int(out)
        if self.target.is_dir():
            shutil.rmtree(self.target)
        _tmp(self.target).replace(self.target)
        return count

    def cancel(self) -> None:
        """Stop writing (the run failed before the output was needed) and remove what was written."""
        if self._writer is not None:
            _stop(self._writer, self.target)
            self._writer = None


class OutputTee:
    """The final step's kept records, fed (as the JSON text of its checkpoint rows) to a second process
    that writes the output while the step runs. Nothing starts until ``PARALLEL_FROM`` records have come
    (they are held until then): ``process()`` is None for a smaller output, written at the end as before.
    A writer that died is not fed further; ``OutputJob.commit()`` reports its error."""

    def __init__(self, target: Path, fmt: str, file_type: str, options: dict):
        self._args = [str(target), fmt, file_type, options]
        self._held: list[str] = []
        self._writer: _Writer | None = None
        self._closed = False

    def __call__(self, texts: list[str]) -> None:
        if self._closed or not texts:
            return
        if self._writer is None:
            self._held.extend(texts)
            if len(self._held) < PARALLEL_FROM:
                return
            self._writer = _writer_process("lines", self._args, stdin=subprocess.PIPE, text=True,
                                            encoding="utf-8")
            texts, self._held = self._held, []
        try:
            self._writer.process.stdin.write("\n".join(texts) + "\n")
        except BrokenPipeError:  # the writer failed: its error comes out of commit()
            self._closed = True

    def writer(self) -> _Writer | None:
        """The writer, fed everything (None when the output was too small to start one)."""
        self._closed, self._held = True, []
        return self._writer

    def cancel(self) -> None:
        """Stop writing (the step failed or was interrupted) and remove what was written."""
        self._closed, self._held = True, []
        if self._writer is not None:
            _stop(self._writer, Path(self._args[0]))
            self._writer = None


if __name__ == "__main__":
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    if mode == "lines":
        print(write_lines(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="\n"), *args))
    else:
        print(write_output(*args))
