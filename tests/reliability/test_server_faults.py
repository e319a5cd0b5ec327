"""Server faults during a real run: a judge (scorer), a teacher (mapper) and Evol-Instruct (pool generator)
through the OpenAI backend, against the fault-injecting server on loopback.

Every third new request meets one fault: a timeout (no answer; an answer trickling past the deadline), a 429,
a 500, a dropped connection, malformed or truncated JSON, or a slow answer that does arrive; retries of the
same request are answered. Three kinds of records fail for good: a prompt the server always answers 500
(rejected after the retries, with the reason), an empty completion (marked: the teacher keeps the original), an
evolving prompt the server refuses (400: that evolution is rejected, the rest of its round goes on). The run
finishes; the manifest counts each fault the server injected; every answer the server gave is in the call
cache, so a second run against a healthy server asks only for what never arrived."""

import hashlib
import json
import sqlite3
import threading
from collections import Counter

import pyarrow.parquet as pq
from typer.testing import CliRunner

from dataflywheel.cli import app
from tests.conftest import write_jsonl
from tests.models.fault_server import FaultServer, last_user

runner = CliRunner()
FAULTS = ("hang", "slow:3", "429", "500", "drop", "badjson", "truncated", "slow:0.3")
ANSWERED = ("ok", "empty", "slow:0.3")  # a complete, valid answer: paid for, must be kept
EVOLVING = ("#The Given Prompt#", "#Given Prompt#")


def key_of(body: dict) -> str:
    return json.dumps(body, sort_keys=True)


class Faults:
    """The server's rule: which fault each request meets, and a tally of what was sent. After ``heal()`` every
    request is answered and ``asked_after_heal`` lists them."""

    def __init__(self):
        self.inject, self.new = True, 0
        self.seen: Counter = Counter()
        self.sent: Counter = Counter()
        self.answered: set[str] = set()  # request bodies that got a complete answer
        self.asked_after_heal: list[str] = []
        self.lock = threading.Lock()

    def heal(self) -> None:
        self.inject = False

    def __call__(self, body: dict) -> str:
        text, key = last_user(body), key_of(body)
        with self.lock:
            if not self.inject:
                self.asked_after_heal.append(key)
                return "ok"
            self.seen[key] += 1
            if text.startswith("POISON"):
                action = "500"
            elif text.startswith("EMPTY"):
                action = "empty"
            elif "STUCK" in text and any(m in text for m in EVOLVING):
                action = "400"
            elif self.seen[key] == 1:
                self.new += 1
                action = FAULTS[(self.new // 3) % len(FAULTS)] if self.new % 3 == 0 else "ok"
            else:
                action = "ok"
            self.sent[action] += 1
            if action in ANSWERED:
                self.answered.add(key)
        return action


def answer(body: dict) -> str:
    text = last_user(body)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    if "Your Judgement" in text:
        return "Not Equal"
    if any(m in text for m in EVOLVING):
        return f"Describe the history of topic {digest} in detail, with three worked examples and a summary."
    if text.startswith("You are a careful grader"):
        return "4 - accurate and helpful."
    return f"A careful answer ({digest}) covering the main points, each explained with an example and a reason."


def recipe(tmp_path, server, name: str):
    rows = [{"instruction": f"Explain idea number {i} of chemistry.", "output": f"Idea {i} is about atoms."}
            for i in range(12)]
    rows += [{"instruction": "POISON: what breaks the server?", "output": "Nothing."},
             {"instruction": "EMPTY: what has no answer?", "output": "A question."},
             {"instruction": "STUCK: explain sorting algorithms.", "output": "They sort things."}]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    options = {"base_url": server.url, "backoff": 0.01, "max_retries": 2, "timeout": 1.0, "concurrency": 4,
               "max_concurrency": 4}
    spec = {"backend": "openai", "model": "m", "options": options}
    text = {"input": {"path": str(data)}, "output": {"dir": str(tmp_path / name)}, "batch_size": 8,
            "cache": str(tmp_path / "cache.sqlite"), "seed": 3,
            "models": {"judge": spec, "teacher": spec, "generator": spec},
            "steps": [{"op": "score.judge", "method": "generate"},
                      {"op": "distill.teacher"},
                      {"op": "synth.evol_instruct", "model": "generator", "target": 30, "max_rounds": 2}]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(text))
    return path


def rejects(run_dir) -> list[dict]:
    return [row for p in sorted((run_dir / "rejected").glob("*.parquet")) for row in pq.read_table(p).to_pylist()]


def test_a_run_through_every_server_fault_finishes_counts_them_and_keeps_every_paid_answer(tmp_path):
    faults = Faults()
    with FaultServer(rule=faults, answer=answer) as server:
        result = runner.invoke(app, ["run", str(recipe(tmp_path, server, "run")), "-q"])
        with sqlite3.connect(tmp_path / "cache.sqlite") as db:
            cached = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        faults.heal()  # the same server (the cache key holds its address), now answering everything
        again = runner.invoke(app, ["run", str(recipe(tmp_path, server, "again")), "-q"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "run"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    for step in manifest["steps"]:
        assert step["in"] + step["generated"] == step["out"] + step["rejected"], step["name"]

    # every fault was injected, and the manifest counts each kind the client saw
    assert all(faults.sent[f] >= 1 for f in FAULTS), faults.sent
    used = Counter()
    for step in manifest["steps"]:
        for usage in (step.get("models") or {}).values():
            used.update({k: v for k, v in usage.items() if isinstance(v, (int, float))})
    assert used["timeouts"] == faults.sent["hang"] + faults.sent["slow:3"]
    assert used["rate_limited"] == faults.sent["429"]
    assert used["server_errors"] == faults.sent["500"]  # the injected ones and the poisoned prompt's attempts
    assert used["connection_errors"] == faults.sent["drop"]
    assert used["malformed"] == faults.sent["badjson"] + faults.sent["truncated"]
    assert used["failures"] >= 2 and used["calls"] == len(faults.answered)

    # the records that failed for good: rejected or marked, each with its reason
    reasons = {r["reason"] for r in rejects(run_dir)}
    poisoned = [r for r in rejects(run_dir) if "POISON" in (r["record"] or "")]
    assert poisoned and all("HTTP 500" in r["reason"] and "3 attempts" in r["reason"] for r in poisoned)
    assert any(r.startswith("model request failed: ModelRequestError") and "HTTP 400" in r for r in reasons)
    teacher = next(s for s in manifest["steps"] if s["name"] == "teacher")
    assert teacher["counters"]["empty teacher answers: the original kept"] == 1
    evol = manifest["steps"][-1]
    assert evol["generated"] - evol["rejected"] >= 12  # the other evolutions of each round went on

    # nothing paid is lost: every answer the server gave is in the cache ...
    assert cached == len(faults.answered)
    print(f"faults sent {dict(faults.sent)}; answers paid {len(faults.answered)}, cached {cached}; asked again "
          f"after healing {len(faults.asked_after_heal)}")
    # ... and a second run, the server healed, asks for none of them again: only what never arrived
    assert again.exit_code == 0, again.output
    assert faults.asked_after_heal and not set(faults.asked_after_heal) & faults.answered
    assert any(last_user(json.loads(k)).startswith("POISON") for k in faults.asked_after_heal)
