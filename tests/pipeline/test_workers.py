"""The process pool: CPU-bound operators in worker processes give the same files as one process."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from dataflywheel.pipeline import LocalExecutor, parse_recipe
from dataflywheel.pipeline import workers as workers_module
from tests.conftest import EXAMPLE_DATA, REPO

PLUGIN = "tests.pipeline.cpu_plugins"
STEPS = [
    {"op": "enhance.normalize"},
    {"op": "select.alpaca_rules"},  # length, broken, symbols, repetition, refusals, language id
    {"op": "test.odd_words"},
    {"op": "select.repetition_filter", "min_words": 5},
    {"op": "select.exact_dedup", "field": "instruction"},
    {"op": "select.minhash_dedup", "threshold": 0.5, "verify": "exact"},
]


def run_files(root):
    """Every file a run leaves that its outcome decides (not the manifest's timings or the report)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".jsonl")}


def run_with(tmp_path, workers, data, steps):
    """(manifest, run_files) of ``steps`` over ``data`` with ``workers`` worker processes."""
    recipe = parse_recipe({"input": {"path": str(data)}, "output": {"dir": str(tmp_path / f"w{workers}")},
                           "plugins": [PLUGIN], "batch_size": 8, "workers": workers, "steps": steps})
    executor = LocalExecutor(recipe, quiet=True)
    return executor.execute(), run_files(executor.run_dir.root)


def test_workers_write_the_same_files_as_one_process(tmp_path, monkeypatch):
    sent = []
    submit_batch, map_ordered = workers_module.Pool.submit_batch, workers_module.Pool.map

    def spy_submit(self, op, step, rows):
        sent.append(step)
        return submit_batch(self, op, step, rows)

    def spy_map(self, fn, items):
        sent.append(fn.__name__)
        return map_ordered(self, fn, items)

    monkeypatch.setattr(workers_module.Pool, "submit_batch", spy_submit)
    monkeypatch.setattr(workers_module.Pool, "map", spy_map)
    manifests, files = {}, {}
    for workers in (1, 2):
        manifests[workers], files[workers] = run_with(tmp_path, workers, EXAMPLE_DATA, STEPS)
        if workers == 1:
            assert sent == [], "workers: 1 must run everything in this process"
    # the CPU-bound steps went to the pool, batch by batch; normalize and the selectors' decisions stayed here
    assert {"alpaca_rules", "odd_words", "repetition_filter", "sign_batch"} <= set(sent)
    assert sent.count("odd_words") > 10 and "normalize" not in sent

    assert files[1].keys() == files[2].keys() and any(k.startswith("checkpoints/") for k in files[1])
    for name in files[1]:
        assert files[1][name] == files[2][name], f"{name} differs with workers: 2"
    steps = {w: [{k: s[k] for k in ("name", "in", "out", "rejected", "counters") if k in s}
                 for s in manifests[w]["steps"]] for w in (1, 2)}
    assert steps[1] == steps[2]
    judged = next(s for s in manifests[2]["steps"] if s["name"] == "odd_words")["counters"]
    assert judged == {"records judged": next(s for s in manifests[2]["steps"] if s["name"] == "odd_words")["in"]}


def test_operators_are_torn_down_in_every_worker_that_set_them_up(tmp_path):
    marker = tmp_path / "released"
    steps = [{"op": "test.odd_words", "teardown_marker": str(marker), "seconds_per_batch": 0.05}]
    recipe = parse_recipe({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / "run")},
                           "plugins": [PLUGIN], "batch_size": 8, "workers": 2, "steps": steps})
    LocalExecutor(recipe, quiet=True).execute(report=False)
    released = {int(p.suffix[1:]): int(p.read_text()) for p in tmp_path.glob("released.*")}
    assert os.getpid() in released  # the run's own operator
    workers = {pid: judged for pid, judged in released.items() if pid != os.getpid()}
    assert workers and sum(workers.values()) > 0  # each worker released its copy when the pool closed


def test_workers_are_not_part_of_the_recipe_fingerprint():
    def recipe(**extra):
        return parse_recipe({"input": {"path": str(EXAMPLE_DATA)}, "steps": STEPS[:2], **extra})

    assert recipe(workers=1).fingerprint() == recipe(workers=2).fingerprint() == recipe().fingerprint()
    with pytest.raises(ValueError, match="workers"):
        recipe(workers=0)


def test_resume_after_sigkill_with_workers_is_byte_identical(tmp_path):
    psutil = pytest.importorskip("psutil")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}

    def write_recipe(name, workers):
        path = tmp_path / f"{name}.yaml"
        steps = [STEPS[0], STEPS[4], STEPS[1], {"op": "test.odd_words", "seconds_per_batch": 0.2}, STEPS[5]]
        path.write_text(json.dumps({"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / name)},
                                    "plugins": [PLUGIN], "batch_size": 8, "workers": workers, "steps": steps}))
        return path

    cli = [sys.executable, "-m", "dataflywheel.cli", "run"]
    subprocess.run(cli + [str(write_recipe("clean", 1)), "--quiet"], env=env, check=True, cwd=tmp_path)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli + [str(write_recipe("killed", 2)), "--quiet"], env=env, cwd=tmp_path)
    deadline = time.time() + 60
    while not (killed / "checkpoints" / "04-odd_words.parquet.tmp").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    children = psutil.Process(proc.pid).children(recursive=True)
    while len(children) < 3:  # a forkserver and two workers
        assert proc.poll() is None and time.time() < deadline, f"no pool of two workers: {children}"
        time.sleep(0.05)
        children = psutil.Process(proc.pid).children(recursive=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"worker processes outlived the killed run: {alive}"
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["status"] == "running"
    assert [s["name"] for s in manifest["steps"]] == ["read", "normalize", "exact_dedup"]

    subprocess.run(cli + [str(tmp_path / "killed.yaml"), "--resume", "--quiet"], env=env, check=True, cwd=tmp_path)
    assert json.loads((killed / "manifest.json").read_text())["status"] == "finished"
    assert not list(killed.rglob("*.tmp"))
    clean, resumed = run_files(tmp_path / "clean"), run_files(killed)
    assert clean.keys() == resumed.keys()
    for name in clean:
        assert clean[name] == resumed[name], f"{name} differs after a resumed run with workers"
    for a, b in zip(sorted((killed / "rejected").iterdir()), sorted((tmp_path / "clean" / "rejected").iterdir())):
        assert pq.read_table(a).equals(pq.read_table(b))


@pytest.fixture
def sharded(tmp_path, monkeypatch):
    """(input directory split into several shards, the (function, items) of every pool map)."""
    from dataflywheel.io import shards as shards_module

    data = tmp_path / "data"
    data.mkdir()
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()
    (data / "a.jsonl").write_text("\n".join(lines[:120]) + "\n", encoding="utf-8")
    (data / "b.jsonl").write_text("\n".join(lines[120:150] + ["{not json", '{"instruction": 3}'] + lines[150:]) + "\n",
                                  encoding="utf-8")
    monkeypatch.setattr(shards_module, "MIN_SHARD_BYTES", 4096)  # several shards of a small input
    maps = []
    map_ordered = workers_module.Pool.map

    def spy_map(self, fn, items):
        items = list(items)
        maps.append((getattr(fn, "func", fn).__name__, len(items)))
        return map_ordered(self, fn, items)

    monkeypatch.setattr(workers_module.Pool, "map", spy_map)
    return data, maps


def test_workers_read_the_input_in_shards_and_write_the_same_files(tmp_path, sharded):
    """With workers and an input file, workers read shards of it and run the worker steps that follow reading
    (the rest stays here): the same checkpoints, rejects, output and counts as one process, unreadable rows
    included."""
    data, sharded = sharded
    steps = [{"op": "select.alpaca_rules"}, {"op": "test.odd_words"}, {"op": "enhance.normalize"},
             {"op": "select.repetition_filter", "min_words": 5}, {"op": "select.exact_dedup", "field": "instruction"}]
    (manifest_1, files_1), (manifest_2, files_2) = (run_with(tmp_path, w, data, steps) for w in (1, 2))
    manifests, files = {1: manifest_1, 2: manifest_2}, {1: files_1, 2: files_2}
    assert sharded and sharded[0][0] == "stream_shard" and sharded[0][1] > 3
    assert files[1].keys() == files[2].keys()
    for name in files[1]:
        assert files[1][name] == files[2][name], f"{name} differs when workers read shards"
    steps = {w: [{k: s[k] for k in ("name", "in", "out", "rejected", "unreadable", "errors", "counters") if k in s}
                 for s in manifests[w]["steps"]] for w in (1, 2)}
    assert steps[1] == steps[2]
    assert steps[2][0]["unreadable"] == 2 and steps[2][2]["counters"] == {"records judged": steps[2][2]["in"]}


def test_a_step_after_the_worker_steps_keeps_its_own_seconds(tmp_path, sharded):
    """The steps run by workers are timed without the steps that follow them here (which run while reading
    waits for them to take the next batch)."""
    data, maps = sharded
    started = time.perf_counter()
    manifest, _ = run_with(tmp_path, 2, data, [{"op": "test.odd_words"},
                                               {"op": "test.slow_here", "seconds_per_batch": 0.2}])
    wall = time.perf_counter() - started
    seconds = {s["name"]: s["seconds"] for s in manifest["steps"]}
    assert maps and maps[0][0] == "stream_shard"
    assert seconds["slow_here"] >= 0.2 * (manifest["steps"][2]["in"] // 8)  # its own sleeps, batch by batch
    assert sum(seconds.values()) <= wall  # each second counted once (the slow step's ~2 s were counted twice)


def test_an_error_of_a_worker_step_is_not_called_a_read_error(tmp_path, sharded):
    data, maps = sharded
    with pytest.raises(ValueError, match="set-up broke") as raised:
        run_with(tmp_path, 2, data, [{"op": "test.broken_setup"}])
    assert "cannot read input" not in str(raised.value) and maps[0][0] == "stream_shard"


def test_compressed_input_and_token_bounds_stay_out_of_shards(tmp_path, sharded):
    """A gzipped file is read whole (a worker would hold it all): the run's process reads it. The length
    filter goes to workers only without token bounds (those load a tokenizer)."""
    import gzip

    from dataflywheel.ops import get_operator
    from dataflywheel.pipeline.workers import pooled

    data, maps = sharded
    packed = tmp_path / "packed"
    packed.mkdir()
    for file in data.iterdir():
        with gzip.open(packed / (file.name + ".gz"), "wb") as out:
            out.write(file.read_bytes())
    manifest, files = run_with(tmp_path, 2, packed, [{"op": "test.odd_words"}])
    assert not [m for m in maps if m[0] == "stream_shard"] and manifest["steps"][0]["unreadable"] == 2
    length = get_operator("select.length_filter")
    assert pooled(length(length.Config())) and not pooled(length(length.Config(max_response_tokens=100)))
