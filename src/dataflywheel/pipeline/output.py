"""Write a run's output file from its final checkpoint, beside the report when the run is large.

Converting and writing tens of thousands of records and building the report are both CPU-bound Python;
for a large output the file is written in a second process while this one builds the report, so a run
ends in the longer of the two instead of their sum. Small outputs are written here and now (starting a
process would cost more than it saves). Feeding the writer during the final step instead was measured
slower on 2 cores (the steps' own Parquet writer threads already use the second core).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import pyarrow.parquet as pq

from dataflywheel.errors import RunError
from dataflywheel.io import write_records
from dataflywheel.io.files import open_jsonl
from dataflywheel.pipeline.run_dir import iter_checkpoint
from dataflywheel.records import RecordError

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


class Writer:
    """A writer process: a fresh interpreter running this module (not multiprocessing), so a user's script
    needs no ``if __name__ == "__main__"`` guard and no parent thread or lock is inherited. It starts and
    imports at once, then waits for its job on stdin: a run expecting a large output starts one while its
    steps run, so the end of the run does not wait for an interpreter to start. Its stderr goes to a file,
    not a pipe, so a writer with much to say can never block on it."""

    def __init__(self):
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                                          os.environ.get("PYTHONPATH")]))}
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen([sys.executable, "-m", "dataflywheel.pipeline.output"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env,
                                        text=True)

    def start(self, args: list) -> None:
        """Give the writer its job (``write_output``'s arguments)."""
        try:
            self.process.stdin.write(json.dumps(args) + "\n")
        except BrokenPipeError:
            pass  # the writer is gone: ``wait`` reports how it ended
        self._close_stdin()

    def wait(self) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) once the writer has finished."""
        with self.process.stdout:  # stdin is closed and stderr is a file: nothing else can block
            out = self.process.stdout.read()
        self.process.wait()
        self.log.seek(0)
        err = self.log.read().decode("utf-8", "replace")
        self.log.close()
        return self.process.returncode, out, err

    def dismiss(self) -> None:
        """Let a writer that got no job go: it exits when its stdin closes, writing nothing."""
        self._close_stdin()
        self._end()

    def kill(self) -> None:
        self.process.kill()
        self._close_stdin()
        self._end()

    def _close_stdin(self) -> None:
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass

    def _end(self) -> None:
        self.process.stdout.close()
        self.process.wait()
        self.log.close()


def _put_in_place(target: Path) -> None:
    """Move the file written under the temporary name to ``target`` (replacing a dataset directory there)."""
    if target.is_dir():
        shutil.rmtree(target)
    _tmp(target).replace(target)


def _stop(writer: Writer, target: Path) -> None:
    writer.kill()
    tmp = _tmp(target)
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def write_chunks(chunks: Iterable[bytes], target: Path) -> None:
    """Write JSONL already serialized (``chunks`` of UTF-8 lines) under the temporary name beside ``target``,
    gzipped when its name says so (the same content as ``write_records``; a gzip header's name and time
    differ)."""
    tmp = _tmp(target)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.unlink(missing_ok=True)
    with open_jsonl(tmp, gzipped=target.name.endswith(".gz")) as handle:
        for chunk in chunks:
            handle.write(chunk)


class WrittenOutput:
    """An output file an engine already wrote under the temporary name; ``commit()`` puts it in place and
    returns its record count, ``cancel()`` removes it (the same interface as ``OutputJob``)."""

    def __init__(self, target: Path, count: int):
        self.target, self.count = target, count

    def commit(self) -> int:
        _put_in_place(self.target)
        return self.count

    def cancel(self) -> None:
        _tmp(self.target).unlink(missing_ok=True)


class OutputError(RunError):
    """Writing the output file failed, here or in a second process; the message carries the cause. ``refused``:
    a record does not fit the output's format (the recipe's to change), else the writer failed."""

    def __init__(self, message: str, *, refused: bool = False):
        super().__init__(message)
        self.refused = refused


REFUSED = 3
"""The writer process's exit status when a record does not fit the output's format (its message on stderr)."""


def output_failed(target: Path, cause, *, refused: bool = False) -> OutputError:
    """The run's error for an output that could not be written, the same wherever it was written (``refused``:
    a record does not fit the output's format, which the recipe can change)."""
    hint = ("\nevery step had finished; to write another format, change the recipe's output and run it again (its "
            "steps run again; with the call cache on, no model answer is paid twice)") if refused else ""
    return OutputError(f"writing {target} failed: {cause}{hint}", refused=refused)


class OutputJob:
    """The output file of a run, being written under a temporary name; ``commit()`` waits for it, moves it
    to its name and returns the record count (or raises what writing raised). Large outputs start writing
    in a second process at once; small ones are written by ``commit()``."""

    def __init__(self, checkpoint: Path, target: Path, fmt: str, file_type: str, options: dict, *,
                 parallel: bool | None = None, writer: Writer | None = None):
        """``writer``: a writer process started earlier, used when the output is written in parallel (and
        let go otherwise)."""
        self.target = target
        self._args = [str(checkpoint), str(target), fmt, file_type, options]
        if parallel is None:
            try:
                parallel = checkpoint_count(checkpoint) >= PARALLEL_FROM
            except BaseException:
                if writer is not None:
                    writer.dismiss()
                raise
        if parallel:
            self._writer = writer or Writer()
            self._writer.start(self._args)
        else:
            self._writer = None
            if writer is not None:
                writer.dismiss()

    def commit(self) -> int:
        if self._writer is None:
            try:
                count = write_output(*self._args)
            except RecordError as err:  # a record the format cannot hold: as a writer process reports it
                raise output_failed(self.target, err, refused=True) from err
        else:
            (code, out, err), self._writer = self._writer.wait(), None
            if code == REFUSED:  # the refusal's message alone
                raise output_failed(self.target, err.strip(), refused=True)
            if code != 0:
                last = err.strip().splitlines()[-1] if err.strip() else f"exit status {code}"
                raise output_failed(self.target, last)
            count = int(out)
        _put_in_place(self.target)
        return count

    def cancel(self) -> None:
        """Stop writing (the run failed before the output was needed) and remove what was written."""
        if self._writer is not None:
            _stop(self._writer, self.target)
            self._writer = None


if __name__ == "__main__":
    job = sys.stdin.readline()  # nothing: the run needed no writer (or is gone)
    if job:
        try:
            print(write_output(*json.loads(job)))
        except RecordError as refused:  # the data's error, not ours: its message alone, no traceback
            print(refused, file=sys.stderr)
            sys.exit(REFUSED)
