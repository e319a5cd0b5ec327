"""The dedup recipe (examples/recipes/dedup.yaml) on the local engine vs the Ray engine with 1 and 2 workers.

    python bench/bench_ray.py [--limit N] [--copies 10] [--skip-large]

Data: all of t0_train_50k (~55k records; the same example often appears under several templates), and a
version with each record plus ``copies - 1`` perturbed copies (two words replaced at random per copy). Each
run is a fresh subprocess; its peak memory is the largest sum of RSS over it and all its descendants (Ray's
raylet, GCS, workers and aggregator actors included), sampled every 0.2 s. Results go to
bench/results/ray.json; docs/scaling.md explains the 16-node estimate derived from them.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "t0_train_50k"
WORK = Path(os.environ.get("BENCH_RAY_DIR", "/tmp/bench_ray"))
RESULTS = ROOT / "bench" / "results" / "ray.json"
ENGINES = {"local": {"executor": "local", "workers": 2}, "ray-1": {"executor": "ray", "cpus": 1},
           "ray-2": {"executor": "ray", "cpus": 2}}
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]


def prepare(limit: int | None, copies: int) -> dict[str, Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in sorted(glob.glob(str(DATA / "*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            rows.extend({"instruction": r["prompt"], "output": r["completion"]} for r in map(json.loads, handle))
    rows = rows[:limit] if limit else rows
    base, large = WORK / f"t0_{len(rows)}.jsonl", WORK / f"t0_{len(rows)}_x{copies}.jsonl"
    if not base.exists():
        base.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if not large.exists():
        rng = random.Random(0)
        with open(large, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")
                for _ in range(copies - 1):
                    words = row["instruction"].split()
                    for _ in range(2):
                        words[rng.randrange(len(words))] = rng.choice(WORDS)
                    out.write(json.dumps({**row, "instruction": " ".join(words)}) + "\n")
    return {"t0_train_50k": base, f"t0_train_50k_x{copies}": large}


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        total = root.memory_info().rss
        for child in root.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0


def one(engine: str, path: Path, out_dir: Path) -> dict:
    """In a subprocess: run the dedup recipe once; print the figures as JSON."""
    import logging

    import yaml

    sys.path.insert(0, str(ROOT / "src"))
    from dataflywheel.pipeline import parse_recipe
    from dataflywheel.pipeline.executor_ray import make_executor

    spec = ENGINES[engine]
    data = yaml.safe_load((ROOT / "examples" / "recipes" / "dedup.yaml").read_text())
    data.update(input={"path": str(path)}, output={"dir": str(out_dir)}, cache="off")
    started = time.perf_counter()
    if spec["executor"] == "ray":
        import ray

        ray.init(num_cpus=spec["cpus"], include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ray_start = time.perf_counter() - started
    executor = make_executor(parse_recipe(data), executor=spec["executor"], quiet=True,
                             workers=spec.get("workers"))
    manifest = executor.execute(force=True, report=False)
    seconds = time.perf_counter() - started
    return {"engine": engine, "records": manifest["totals"]["read"], "kept": manifest["totals"]["output"],
            "seconds": round(seconds, 2), "cluster_start_seconds": round(ray_start, 2),
            "records_per_second": round(manifest["totals"]["read"] / seconds, 1),
            "steps": {s["name"]: {"seconds": s["seconds"], "rejected": s["rejected"], **({"ray": s["ray"]}
                                                                                          if "ray" in s else {})}
                      for s in manifest["steps"]}}


def measure(engine: str, name: str, path: Path, timeout: int) -> dict:
    out_dir = WORK / f"run_{name}_{engine}"
    command = [sys.executable, __file__, "--one", engine, str(path), str(out_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss(process.pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return {"engine": engine, "dataset": name, "error": f"timed out after {timeout} s",
                "peak_rss_mb": round(peak[0] / 2**20)}
    watcher.join()
    if process.returncode:
        return {"engine": engine, "dataset": name, "error": stderr.strip().splitlines()[-1][:300]}
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "dataset": name, "peak_rss_mb": round(peak[0] / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--one", nargs=3, metavar=("ENGINE", "PATH", "OUT"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], Path(args.one[1]), Path(args.one[2]))))
        return
    datasets = prepare(args.limit, args.copies)
    if args.skip_large:
        datasets = dict(list(datasets.items())[:1])
    results = []
    load = os.getloadavg()[0]
    for name, path in datasets.items():
        for engine in args.engines.split(","):
            result = measure(engine, name, path, args.timeout)
            print(json.dumps(result), flush=True)
            results.append(result)
    for result in results:  # ratios against the local engine on the same data, same run
        base = next((r for r in results if r["dataset"] == result["dataset"] and r["engine"] == "local"
                     and "seconds" in r), None)
        if base and "seconds" in result:
            result["speed_vs_local"] = round(base["seconds"] / result["seconds"], 3)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cpu_count": os.cpu_count(), "load_average_at_start": round(load, 2),
                                   "load_average_at_end": round(os.getloadavg()[0], 2), "results": results},
                                  indent=1) + "\n")


if __name__ == "__main__":
    main()
