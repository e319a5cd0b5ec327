"""The Ray engine against the local engine: same kept records, same rejects with reasons, same books."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from dataflywheel.pipeline import LocalExecutor, parse_recipe
from dataflywheel.pipeline.executor_ray import RayExecutor
from dataflywheel.pipeline.run_dir import read_table
from tests.conftest import EXAMPLE_DATA, REPO, write_jsonl
from tests.ray.plugins import ServerGone


def _recipe(name: str, tmp_path, rows: list[str], **changes) -> dict:
    data = yaml.safe_load((REPO / "examples" / "recipes" / f"{name}.yaml").read_text())
    data["input"]["path"] = str(write_jsonl(tmp_path / "input.jsonl", rows))
    data.update(changes)
    return data


def _run(cls, data: dict, tmp_path, label: str, **options) -> tuple[dict, dict]:
    data = {**data, "output": {**data["output"], "dir": str(tmp_path / label)}}
    data.setdefault("cache", str(tmp_path / f"{label}.sqlite"))
    executor = cls(parse_recipe(data, label), quiet=True, **options)
    manifest = executor.execute(report=False)
    root = executor.run_dir.root
    final = sorted((root / "checkpoints").glob("*.parquet"))[-1]
    kept = {row["id"]: json.loads(row["record"]) for row in read_table(final).to_pylist()}
    rejects = sorted((r["step"], r["origin"], r["reason"]) for path in sorted((root / "rejected").glob("*.parquet"))
                     for r in read_table(path).to_pylist())
    return manifest, {"kept": kept, "rejects": rejects}


def _books(manifest: dict) -> list[tuple]:
    return [(s["name"], s["in"], s["out"], s["rejected"], s.get("counters")) for s in manifest["steps"]]


def _perturbed(rows: list[str], copies: int, seed: int = 0) -> list[str]:
    """Each row, then chains of near copies of it: every copy changes three words of the one before."""
    rng = random.Random(seed)
    out = []
    for line in rows:
        out.append(line)
        row = json.loads(line)
        for _ in range(copies):
            words = row["output"].split()
            for _ in range(3):
                words[rng.randrange(len(words))] = rng.choice(["alpha", "beta", "gamma", "delta"])
            row = {**row, "output": " ".join(words)}
            out.append(json.dumps(row))
    return out


def test_dedup_recipe_same_on_ray(ray_cluster, tmp_path):
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()
    long = [line for line in lines if len(json.loads(line)["output"].split()) >= 60][:12]
    data = _recipe("dedup", tmp_path, _perturbed(long, 3) + lines[:40] + lines[:5])  # + 5 exact copies
    local, ray = _run(LocalExecutor, data, tmp_path, "local")[1], _run(RayExecutor, data, tmp_path, "ray")
    manifest, ray = ray
    assert ray["kept"] == local["kept"]  # ids and whole records: the cluster notes in meta too
    assert ray["rejects"] == local["rejects"]
    reasons = [r for _, _, r in local["rejects"]]
    assert sum(r.startswith("exact duplicate") for r in reasons) >= 5
    assert sum(r.startswith("near duplicate") for r in reasons) >= 20
    sizes = [r["meta"]["minhash_cluster_size"] for r in local["kept"].values() if "minhash_cluster_size" in r["meta"]]
    assert max(sizes) >= 3  # chains: components joined over more than one edge
    steps = {s["name"]: s for s in manifest["steps"]}
    assert steps["minhash_dedup"]["ray"]["label_rounds"] >= 2
    assert steps["normalize"]["ray"]["runs_on"] == "tasks"
    assert manifest["status"] == "finished"


@pytest.mark.model
def test_clean_recipe_same_on_ray(ray_cluster, tmp_path):
    """Heuristic filters as tasks, exact and MinHash dedup distributed, SemDeDup cluster-then-local."""
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:60]
    data = _recipe("clean", tmp_path, lines + lines[:3])
    local_manifest, local = _run(LocalExecutor, data, tmp_path, "local")
    manifest, ray = _run(RayExecutor, data, tmp_path, "ray")
    assert ray["kept"] == local["kept"]
    assert ray["rejects"] == local["rejects"]
    assert _books(manifest) == _books(local_manifest)
    steps = {s["name"]: s for s in manifest["steps"]}
    assert steps["semantic_dedup"]["ray"]["runs_on"] == "actors (embedding), driver (k-means), shuffle by cluster"
    assert steps["exact_dedup"]["ray"]["runs_on"] == "shuffle"


@pytest.mark.model
def test_select_recipe_same_on_ray_with_scorer_on_actor_pool(ray_cluster, tmp_path):
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:30]
    data = _recipe("select", tmp_path, lines)
    data["steps"][4]["max_answer_tokens"] = 48
    data["models"]["default"]["options"] = {"threads": 1}
    data["ray"] = {"actors": 2, "cache": "merge"}
    data["batch_size"] = 4  # several batches, so both actors get some
    local_manifest, local = _run(LocalExecutor, data, tmp_path, "local")
    manifest, ray = _run(RayExecutor, data, tmp_path, "ray")
    assert sorted(ray["kept"]) == sorted(local["kept"])
    assert ray["rejects"] == local["rejects"]
    for key, record in local["kept"].items():
        assert ray["kept"][key]["scores"]["ifd"] == pytest.approx(record["scores"]["ifd"], rel=1e-4)
    ifd = next(s for s in manifest["steps"] if s["name"] == "ifd")
    assert ifd["ray"] == {"runs_on": "actors", "workers": 2, "setups": 2}  # the model loaded once per actor
    assert sum(m["calls"] for m in ifd["models"].values()) > 0
    # the workers' caches were merged into the run's: a local run on it is served from the cache
    from dataflywheel.models.cache import CallCache

    assert CallCache(tmp_path / "ray.sqlite").stats()["entries"] > 0
    again, _ = _run(LocalExecutor, {**data, "cache": str(tmp_path / "ray.sqlite")}, tmp_path, "again")
    usage = next(s for s in again["steps"] if s["name"] == "ifd")["models"]
    assert sum(m.get("cache_hits", 0) for m in usage.values()) > 0
    assert sum(m.get("calls", 0) for m in usage.values()) == 0  # calls counts fresh calls only


def test_top_k_ranks_scores_gathered_by_tasks_same_as_local(ray_cluster, tmp_path):
    """Only positions, ids and scores reach the driver; flagged records are never picked; same kept and reasons."""
    rows = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:60]
    data = {"input": {"path": str(write_jsonl(tmp_path / "in.jsonl", rows))}, "plugins": ["tests.ray.plugins"],
            "output": {"dir": "unused"}, "cache": "off", "batch_size": 16,
            "steps": [{"op": "test.words"}, {"op": "select.top_k", "scores": {"words": 1.0}, "fraction": 0.25},
                      {"op": "select.top_k", "scores": {"words": 1.0}, "threshold": 340}]}
    local_manifest, local = _run(LocalExecutor, data, tmp_path, "local")
    manifest, ray = _run(RayExecutor, data, tmp_path, "ray")
    assert ray["kept"] == local["kept"] and ray["rejects"] == local["rejects"]
    assert _books(manifest) == _books(local_manifest)
    reasons = [reason for _, _, reason in local["rejects"]]
    assert any("words > 1" in r for r in reasons) and any("outside the budget of 15" in r for r in reasons)
    assert sum("< threshold 340" in r for r in reasons) == 7
    steps = {s["name"]: s for s in manifest["steps"]}
    assert steps["top_k"]["ray"]["runs_on"] == "tasks, ranked on the driver"
    assert steps["top_k"]["ray"]["rows_to_driver"] == 60


def test_resume_on_ray_continues_from_the_last_finished_step(ray_cluster, tmp_path):
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:50]
    data = _recipe("dedup", tmp_path, lines + lines[:4])
    manifest, first = _run(RayExecutor, data, tmp_path, "run")
    root = tmp_path / "run"
    kept_step = root / "checkpoints" / "01-normalize.parquet"
    stamp = kept_step.stat().st_mtime_ns
    # as if killed during the last step: it is not in the manifest and its files are half written
    manifest["steps"] = [s for s in manifest["steps"] if s["name"] != "minhash_dedup"]
    manifest["status"] = "stopped"
    (root / "manifest.json").write_text(json.dumps(manifest))
    for path in root.glob("*/03-minhash_dedup.parquet"):
        path.rename(path.with_name(path.name + ".tmp"))
    data = {**data, "output": {**data["output"], "dir": str(root)}, "cache": str(tmp_path / "run.sqlite")}
    resumed = RayExecutor(parse_recipe(data), quiet=True).execute(resume=True, report=False)
    assert resumed["status"] == "finished" and resumed["resumed"] == 1
    assert kept_step.stat().st_mtime_ns == stamp  # finished steps were not run again
    final = read_table(root / "checkpoints" / "03-minhash_dedup.parquet").column("id").to_pylist()
    assert sorted(final) == sorted(first["kept"])


def test_fatal_error_in_a_ray_worker_stops_the_run_resumably(ray_cluster, tmp_path):
    rows = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:20]
    data = {"input": {"path": str(write_jsonl(tmp_path / "in.jsonl", rows))}, "plugins": ["tests.ray.plugins"],
            "output": {"dir": str(tmp_path / "run")}, "steps": [{"op": "test.fail_at"}], "cache": "off"}
    with pytest.raises(ServerGone, match="server is gone"):
        RayExecutor(parse_recipe(data), quiet=True).execute(report=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "stopped"
    assert not list((tmp_path / "run" / "rejected").glob("01-*.parquet"))  # nothing rejected for it


def test_workers_book_their_batches_the_driver_only_appends(ray_cluster, tmp_path, monkeypatch):
    """A step's checkpoint and rejects (errors included) are booked by the workers, a selector's decisions
    applied there too: the driver never books a record, and the files, counts and reasons are the local
    engine's."""
    from dataflywheel.pipeline.step_writer import StepWriter

    rows = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:60]
    data = {"input": {"path": str(write_jsonl(tmp_path / "in.jsonl", rows))}, "plugins": ["tests.ray.plugins"],
            "output": {"dir": str(tmp_path / "run")}, "batch_size": 8, "cache": "off",
            "steps": [{"op": "test.flaky"}, {"op": "test.words"},
                      {"op": "select.top_k", "scores": {"words": 1.0}, "fraction": 0.3}]}
    local_manifest, local = _run(LocalExecutor, data, tmp_path, "local")
    add = StepWriter.add

    def driver_books(writer, items, rows=()):
        assert writer.name == "read", f"the driver booked records of step {writer.name}"
        return add(writer, items, rows)

    monkeypatch.setattr(StepWriter, "add", driver_books)
    manifest, ray = _run(RayExecutor, data, tmp_path, "ray")
    assert ray == local
    assert _books(manifest) == _books(local_manifest)
    flaky = {s["name"]: s for s in manifest["steps"]}["flaky"]
    assert flaky["errors"] > 0 and flaky["rejected"] > flaky["errors"]  # failures and decisions, both booked
    assert any(reason.startswith("error in test.flaky: ValueError") for _, _, reason in ray["rejects"])


def test_a_step_failing_on_every_batch_stops_on_ray_as_locally(ray_cluster, tmp_path):
    from dataflywheel.pipeline.apply import StepFailed

    rows = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:40]
    data = {"input": {"path": str(write_jsonl(tmp_path / "in.jsonl", rows))}, "plugins": ["tests.ray.plugins"],
            "output": {"dir": str(tmp_path / "run")}, "batch_size": 8, "cache": "off",
            "steps": [{"op": "test.flaky", "fail_every": 1}]}
    with pytest.raises(StepFailed, match="3 batches in a row failed entirely .*cannot judge"):
        RayExecutor(parse_recipe(data), quiet=True).execute(report=False)


def test_tasks_read_the_input_in_shards_same_as_the_driver(ray_cluster, tmp_path, monkeypatch):
    """A directory of a JSONL file cut in line ranges (bad rows among them) and a Parquet file in row groups:
    every record, unreadable row and source name as the local engine reads them, in the same order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataflywheel.io import shards

    monkeypatch.setattr(shards, "MIN_SHARD_BYTES", 2000)
    folder = tmp_path / "input"
    folder.mkdir()
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()
    bad = lines[:30]
    bad[9], bad[22] = '{"instruction": "cut off', '{"no_format": true}'
    write_jsonl(folder / "a.jsonl", bad)
    pq.write_table(pa.Table.from_pylist([json.loads(line) for line in lines[30:80]]), folder / "b.parquet",
                   row_group_size=10)
    data = {"input": {"path": str(folder)}, "output": {"dir": str(tmp_path / "run")}, "cache": "off",
            "steps": [{"op": "select.exact_dedup"}]}

    def read_step(label):
        manifest = (LocalExecutor if label == "local" else RayExecutor)(
            parse_recipe({**data, "output": {"dir": str(tmp_path / label)}}), quiet=True).execute(report=False)
        root = tmp_path / label
        return (manifest["steps"][0], read_table(root / "checkpoints" / "00-read.parquet").to_pylist(),
                [(r["source"], r["reason"], r["raw"]) for r in read_table(root / "rejected" / "00-read.parquet").to_pylist()])

    local, ray = read_step("local"), read_step("ray")
    assert ray[1] == local[1] and ray[2] == local[2]
    assert [r[0] for r in ray[2]] == ["input/a.jsonl:10", "input/a.jsonl:23"]
    assert {k: ray[0][k] for k in ("in", "out", "rejected", "unreadable")} == \
        {k: local[0][k] for k in ("in", "out", "rejected", "unreadable")}
    assert ray[0]["ray"]["runs_on"] == "tasks" and ray[0]["ray"]["shards"] >= 3


def test_input_workers_cannot_open_is_named_and_the_driver_can_read_instead(ray_cluster, tmp_path, monkeypatch):
    from dataflywheel.io.shards import Piece
    from dataflywheel.pipeline import shard_stream
    from dataflywheel.pipeline.run import RunError

    data = {"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / "run")}, "cache": "off",
            "steps": [{"op": "select.exact_dedup"}]}
    # as on a node without the driver's files: the path the driver planned does not exist where the task runs
    monkeypatch.setattr(shard_stream, "plan_shards", lambda *a, **k: [[Piece(str(tmp_path / "elsewhere.jsonl"), "jsonl")]])
    with pytest.raises(RunError, match="cannot open the input .*elsewhere.jsonl.*ray.read_on: driver"):
        RayExecutor(parse_recipe(data), quiet=True).execute(report=False)
    manifest = RayExecutor(parse_recipe({**data, "ray": {"read_on": "driver"}, "output": {"dir": str(tmp_path / "d")}}),
                           quiet=True).execute(report=False)
    assert manifest["status"] == "finished" and "ray" not in manifest["steps"][0]  # read by the driver


@pytest.mark.parametrize("name", ["output.jsonl", "output.jsonl.gz", "final/output.jsonl"])
def test_tasks_write_a_jsonl_output_byte_identical_to_local(ray_cluster, tmp_path, monkeypatch, name):
    import gzip

    from dataflywheel.pipeline import run as run_module

    rows = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:50]
    data = {"input": {"path": str(write_jsonl(tmp_path / "in.jsonl", rows + rows[:5]))}, "cache": "off",
            "output": {"dir": str(tmp_path / "run"), "file": name, "with_lineage": False},
            "batch_size": 8, "steps": [{"op": "select.exact_dedup"}]}
    LocalExecutor(parse_recipe({**data, "output": {**data["output"], "dir": str(tmp_path / "local")}}),
                  quiet=True).execute(report=False)

    def no_driver_output(*args, **kwargs):
        raise AssertionError("the driver converted the output")

    monkeypatch.setattr(run_module, "OutputJob", no_driver_output)
    manifest = RayExecutor(parse_recipe({**data, "output": {**data["output"], "dir": str(tmp_path / "ray")}}),
                           quiet=True).execute(report=False)
    opened = gzip.open if name.endswith(".gz") else open
    with opened(tmp_path / "ray" / name, "rb") as ray_file, opened(tmp_path / "local" / name, "rb") as local_file:
        assert ray_file.read() == local_file.read()
    assert manifest["output"]["count"] == 50 and not list((tmp_path / "ray").glob(".tmp-*"))


def test_a_record_that_does_not_fit_the_output_format_fails_the_output_on_ray(ray_cluster, tmp_path):
    from dataflywheel.pipeline.output import OutputError

    data = {"input": {"path": str(EXAMPLE_DATA)}, "cache": "off", "output": {"dir": str(tmp_path / "run"),
            "format": "trl"}, "steps": [{"op": "select.exact_dedup"}]}  # a format of pairs, SFT records
    with pytest.raises(OutputError, match="holds preference pairs"):
        RayExecutor(parse_recipe(data), quiet=True).execute(report=False)
    assert not (tmp_path / "run" / "output.jsonl").exists() and not list((tmp_path / "run").glob(".tmp-*"))


def test_a_read_task_sends_a_large_shard_in_chunks_and_names_an_unreadable_input(tmp_path, monkeypatch):
    """In the worker's function itself (no cluster): a shard is booked in bounded chunks whose rows, together,
    are the whole shard's; an input it cannot parse stops the run as the local engine's "cannot read input"."""
    import pyarrow as pa

    from dataflywheel.io import read_records
    from dataflywheel.io.shards import plan_shards, shard_json
    from dataflywheel.pipeline import ray_apply
    from dataflywheel.pipeline.run import RunError
    from dataflywheel.pipeline.step_writer import book_read

    monkeypatch.setattr(ray_apply, "READ_CHUNK_RECORDS", 7)
    monkeypatch.setattr(ray_apply, "READ_CHUNK_BYTES", 3000)  # and about 3 KB of record JSON
    [shard] = plan_shards(EXAMPLE_DATA)

    def task(shard_rows):
        table = pa.table({"batch": [0], "shard": [json.dumps(shard_json(shard_rows))]})
        return list(ray_apply.read_task(table, fmt=None, fields=None, step="read"))

    chunks = task(shard)
    tables = [ray_apply.table_from_bytes(chunk.column("checkpoint")[0].as_py()) for chunk in chunks]
    assert len(tables) > 3 and all(t.num_rows <= 7 for t in tables)
    assert all(sum(len(r) for r in t.column("record").to_pylist()) < 3000 + 5000 for t in tables)  # + one record
    rows = [r for t in tables for r in t.to_pylist()]
    whole = book_read("read", list(read_records(EXAMPLE_DATA)))
    assert [(r["id"], r["record"]) for r in rows] == \
        [(i, text.decode()) for i, text in zip(whole.checkpoint["id"], whole.checkpoint["record"])]
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not a parquet file PAR1")
    stop = task(shard + [type(shard[0])(str(broken), "parquet")])[-1]  # the failing file is named, not the first
    with pytest.raises(RunError, match="cannot read input .*broken.parquet"):
        ray_apply.raise_fatal(json.loads(stop.column("stats")[0].as_py()))


def test_an_input_with_nothing_usable_leaves_no_output_behind_on_ray(ray_cluster, tmp_path):
    from dataflywheel.pipeline.run import RunError

    data = {"input": {"path": str(write_jsonl(tmp_path / "in.jsonl", ['{"unknown": 1}'] * 5))}, "cache": "off",
            "output": {"dir": str(tmp_path / "run")}, "steps": [{"op": "select.exact_dedup"}]}
    with pytest.raises(RunError, match="nothing usable"):
        RayExecutor(parse_recipe(data), quiet=True).execute(report=False)
    assert not list((tmp_path / "run").glob("*output*"))  # neither the output nor its temporary file


def test_executor_from_recipe_and_command_line(tmp_path):
    from dataflywheel.pipeline.executor_ray import make_executor

    data = {"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": str(tmp_path / "run")}, "steps": []}
    local = parse_recipe(data)
    assert type(make_executor(local)) is LocalExecutor
    assert type(make_executor(local, executor="ray")) is RayExecutor
    assert make_executor(local, address="ray://head:10001").spec.address == "ray://head:10001"
    on_ray = parse_recipe({**data, "executor": "ray", "ray": {"address": "auto"}})
    assert type(make_executor(on_ray)) is RayExecutor
    assert on_ray.fingerprint() == local.fingerprint()  # a run may be resumed on the other engine
    with pytest.raises(Exception, match="executor"):
        parse_recipe({**data, "executor": "spark"})


def test_python_api_runs_on_ray_as_the_recipe_asks(ray_cluster, tmp_path):
    """``fw.run`` honours ``executor: ray`` (it always ran locally) and the engine given as an argument."""
    import dataflywheel as fw

    rows = [json.loads(line) for line in EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:30]]
    recipe = {"executor": "ray", "cache": "off", "steps": [{"op": "select.exact_dedup"}]}
    result = fw.run(recipe, rows + rows[:5], output=tmp_path / "ray", report=False)
    assert result.manifest["executor"] == "ray"
    local = fw.run({**recipe, "executor": "local"}, rows + rows[:5], output=tmp_path / "local", report=False)
    assert "executor" not in local.manifest
    assert [r["id"] for r in result.records] == [r["id"] for r in local.records]
    assert fw.run({**recipe, "executor": "local"}, rows, output=tmp_path / "asked", report=False,
                  executor="ray").manifest["executor"] == "ray"


def test_max_budget_counts_every_workers_calls(ray_cluster, tmp_path):
    """Two actors each spend about half of what the step costs (2,063 tokens for these 16 records, measured
    locally); a budget of 1,300 stops the run although neither actor alone reaches it (each worker counted only
    its own calls before)."""
    from dataflywheel.models.errors import BudgetExceededError

    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:16]
    data = {"input": {"path": str(write_jsonl(tmp_path / "in.jsonl", lines))}, "output": {"dir": str(tmp_path / "run")},
            "models": {"default": {"options": {"threads": 1}}}, "cache": "off", "batch_size": 2,
            "ray": {"actors": 2}, "max_budget": {"tokens": 1300},
            "steps": [{"op": "score.ifd", "max_answer_tokens": 32}]}
    data["ray"]["cache"], data["cache"] = "merge", str(tmp_path / "run.sqlite")
    with pytest.raises(BudgetExceededError, match="tokens"):
        RayExecutor(parse_recipe(data), quiet=True).execute(report=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "stopped"
    assert 1300 <= manifest["budget"]["spent_tokens"] < 2063
    from dataflywheel.models.cache import CallCache

    assert CallCache(tmp_path / "run.sqlite").stats()["entries"] > 0  # the answers booked reached the run's cache
    # a budget the step spends exactly: it finishes, as it would locally (no call was refused)
    data.update(max_budget={"tokens": 2063}, cache="off", output={"dir": str(tmp_path / "exact")})
    assert RayExecutor(parse_recipe(data), quiet=True).execute(report=False)["status"] == "finished"


SEMANTIC_STEPS = [{"op": "test.words"},
                  {"op": "select.semantic_dedup", "eps": 0.08, "n_clusters": 4},
                  {"op": "select.semantic_dedup", "name": "first_kept", "keep": "first", "compare_with": "kept",
                   "eps": 0.15, "n_clusters": 3},
                  {"op": "select.semantic_dedup", "name": "by_score", "keep": "words", "target_retention": 0.8,
                   "n_clusters": 4}]


def test_semantic_dedup_on_ray_clusters_then_dedups_locally_same_as_local(ray_cluster, tmp_path):
    """Embedding on an actor pool, k-means on the driver, each cluster deduplicated on the workers: the same kept
    records, reasons (ids and cosines) and embedding map as the local selector."""
    rows = _perturbed(EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:40], 1)
    data = {"input": {"path": str(write_jsonl(tmp_path / "in.jsonl", rows))}, "output": {"dir": "unused"},
            "plugins": ["tests.ray.plugins"], "cache": "off", "batch_size": 16, "ray": {"actors": 2},
            "steps": SEMANTIC_STEPS}
    local_manifest, local = _run(LocalExecutor, data, tmp_path, "local")
    manifest, ray = _run(RayExecutor, data, tmp_path, "ray")
    assert ray["rejects"] == local["rejects"] and ray["kept"] == local["kept"]  # whole records: meta map_2d too
    assert _books(manifest) == _books(local_manifest)  # counters too: the eps chosen for the retention
    for step in ("semantic_dedup", "first_kept", "by_score"):
        assert sum(s == step and "semantic duplicate of" in r for s, _, r in local["rejects"]) >= 3, step
    how = {s["name"]: s["ray"] for s in manifest["steps"] if "ray" in s}
    assert how["semantic_dedup"] == {"runs_on": "actors (embedding), driver (k-means), shuffle by cluster",
                                     "shuffles": 1, "shuffled_rows": 80, "clusters": 4, "kmeans_fit_on": 80}
    embedded = next(s for s in manifest["steps"] if s["name"] == "semantic_dedup")["models"]
    assert sum(m["calls"] for m in embedded.values()) > 0  # the workers' embedder calls are in the books


def test_semantic_dedup_on_ray_beyond_the_kmeans_sample_assigns_by_tasks(ray_cluster, tmp_path, monkeypatch):
    """Past the sample k-means is fit on, tasks assign records to the nearest centroid and project them on the
    map; exact copies still go (cosine 1 in any cluster they share)."""
    from dataflywheel.pipeline import ray_semdedup

    monkeypatch.setattr(ray_semdedup, "KMEANS_SAMPLE", 30)
    lines = EXAMPLE_DATA.read_text(encoding="utf-8").splitlines()[:40]
    data = {"input": {"path": str(write_jsonl(tmp_path / "in.jsonl", lines + lines[:10]))},
            "output": {"dir": "unused"}, "cache": "off", "batch_size": 16, "ray": {"actors": 1},
            "steps": [{"op": "select.semantic_dedup", "eps": 0.01}]}
    manifest, ray = _run(RayExecutor, data, tmp_path, "ray")
    step = manifest["steps"][-1]
    assert step["ray"]["kmeans_fit_on"] == 30 and step["out"] <= 40
    copies = {origin for _, origin, reason in ray["rejects"] if "semantic duplicate of" in reason}
    assert len(copies) >= 10
    assert all(len(record["meta"]["map_2d"]) == 2 for record in ray["kept"].values())
