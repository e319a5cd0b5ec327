"""Kills and full disks: `flywheel run` SIGKILLed at random points of a multi-step run with a model scorer, a
model mapper and a generator, then `--resume`d, ends byte-identical to an uninterrupted run; whatever a kill
leaves, no partial checkpoint is read as complete. A disk that fills up fails the run with a clear message,
and `--resume` finishes it once there is space again.

The model is the fault server on loopback answering every request (deterministic answers, a little slow so
that kills land inside steps); each trial has its own call cache, so the kill interrupts real requests."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, write_jsonl
from tests.reliability.test_server_faults import answer
from tests.models.fault_server import FaultServer

ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
CLI = [sys.executable, "-m", "dataflywheel.cli", "run"]
TRIALS = 10


def write_recipe(tmp_path: Path, url: str, name: str) -> Path:
    rows = [{"instruction": f"Explain idea number {i} of physics.", "output": f"Idea {i} is about force."}
            for i in range(16)]
    data = tmp_path / "in.jsonl"
    if not data.exists():
        write_jsonl(data, rows)
    spec = {"backend": "openai", "model": "m", "options": {"base_url": url, "backoff": 0.01, "concurrency": 2,
                                                           "max_concurrency": 2}}
    recipe = {"input": {"path": str(data)}, "output": {"dir": str(tmp_path / name)}, "batch_size": 4,
              "cache": str(tmp_path / f"{name}.sqlite"), "seed": 5,
              "models": {"judge": spec, "teacher": spec, "generator": spec},
              "steps": [{"op": "score.judge", "method": "generate"},
                        {"op": "select.length_filter", "min_response_words": 2},
                        {"op": "distill.teacher"},
                        {"op": "synth.evol_instruct", "model": "generator", "target": 12, "max_rounds": 2}]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(recipe))
    return path


def assert_no_partial_checkpoint_is_complete(run_dir: Path) -> None:
    """Every step the manifest calls done has a complete, readable checkpoint with the rows it counted."""
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        return
    manifest = json.loads(manifest_path.read_text())
    for step in manifest["steps"]:
        if step.get("status") == "done":
            assert pq.read_metadata(step["checkpoint"]).num_rows == step["out"], step["name"]


PHASES = ("start-up", "manifest.json", "checkpoints/03-teacher.parquet", "checkpoints/04-evol_instruct.parquet")
"""Where trial t aims: start-up, then once each file exists (the first four steps stream together; then
Evol-Instruct; then the output and the report)."""


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None:
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def where(run_dir: Path) -> str:
    """What a killed run had done, from its files."""
    if (run_dir / "output.jsonl").exists():
        return "output written"
    for path, label in (("checkpoints/04-evol_instruct.parquet", "writing the output and report"),
                        ("checkpoints/03-teacher.parquet", "inside Evol-Instruct"),
                        ("manifest.json", "inside the streamed steps (read, judge, filter, teacher)")):
        if (run_dir / path).exists():
            return label
    return "start-up"


def test_ten_random_sigkills_each_resume_to_the_uninterrupted_output(tmp_path):
    """Trial t waits for the file of phase t % 4, then kills after a seeded random 0-0.4 s."""
    with FaultServer(answer=answer, delay=0.01) as server:
        started = time.perf_counter()
        subprocess.run(CLI + [str(write_recipe(tmp_path, server.url, "clean")), "-q"], env=ENV, check=True,
                       cwd=tmp_path)
        whole = time.perf_counter() - started
        expected = (tmp_path / "clean" / "output.jsonl").read_bytes()
        rng = random.Random(11)
        outcomes = []
        for trial in range(TRIALS):
            name, phase = f"trial{trial}", PHASES[trial % len(PHASES)]
            run_dir = tmp_path / name
            recipe = write_recipe(tmp_path, server.url, name)
            proc = subprocess.Popen(CLI + [str(recipe), "-q"], env=ENV, cwd=tmp_path)
            if phase != "start-up":
                wait_for(run_dir / phase, proc)
            time.sleep(rng.uniform(0, 0.4))
            finished = proc.poll() is not None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert_no_partial_checkpoint_is_complete(run_dir)
            outcomes.append("finished before the kill" if finished else where(run_dir))
            resumed = subprocess.run(CLI + [str(recipe), "--resume", "-q"], env=ENV, cwd=tmp_path,
                                     capture_output=True, text=True)
            assert resumed.returncode == 0, (trial, outcomes[-1], resumed.stdout, resumed.stderr)
            assert (run_dir / "output.jsonl").read_bytes() == expected, (trial, outcomes[-1])
            assert not list(run_dir.rglob("*.tmp")), (trial, outcomes[-1])
            shutil.rmtree(run_dir)
    print(f"uninterrupted run {whole:.1f}s; killed: {outcomes}")
    assert len(set(outcomes) - {"finished before the kill", "output written"}) >= 3


def _mount_tmpfs(target: Path, size: str, remount: bool = False) -> bool:
    options = f"remount,size={size}" if remount else f"size={size}"
    args = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)]
    return subprocess.run(args, capture_output=True).returncode == 0


def test_a_full_disk_fails_clearly_and_resumes_once_there_is_space(tmp_path):
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount_tmpfs(disk, "600k"):
        pytest.skip("this container may not mount a tmpfs (no CAP_SYS_ADMIN)")
    try:
        rows = [{"instruction": f"Write note {i} about the topic {i % 97}.", "output": f"Note {i}: " + "words " * 40}
                for i in range(3000)]  # ~1 MB of records: more than the disk holds once checkpointed
        data = write_jsonl(tmp_path / "in.jsonl", rows)
        recipe = {"input": {"path": str(data)}, "batch_size": 500,
                  "steps": [{"op": "select.exact_dedup"}, {"op": "select.length_filter", "min_response_words": 5}]}
        path = tmp_path / "recipe.yaml"
        path.write_text(json.dumps(recipe))
        subprocess.run(CLI + [str(path), "--output", str(tmp_path / "clean"), "-q"], env=ENV,
                       check=True, cwd=tmp_path)
        full = subprocess.run(CLI + [str(path), "--output", str(disk / "run"), "-q"], env=ENV,
                              cwd=tmp_path, capture_output=True, text=True)
        message = full.stdout + full.stderr
        print(message)
        assert full.returncode != 0
        assert "No space left on device" in message and "--resume" in message, message
        assert "Traceback" not in message, message
        assert_no_partial_checkpoint_is_complete(disk / "run")
        assert _mount_tmpfs(disk, "64m", remount=True)
        resumed = subprocess.run(CLI + [str(path), "--output", str(disk / "run"), "--resume", "-q"],
                                 env=ENV, cwd=tmp_path, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert (disk / "run" / "output.jsonl").read_bytes() == (tmp_path / "clean" / "output.jsonl").read_bytes()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
