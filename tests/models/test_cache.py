import json
import multiprocessing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.models.cache import CallCache
from dataflywheel.models.cached import CachedLLM
from dataflywheel.models.llm import GenerationParams
from dataflywheel.pipeline import LocalExecutor, parse_recipe
from tests.conftest import EXAMPLE_DATA, write_jsonl


class CountingLLM:
    """A deterministic stand-in *backend* that counts what reaches it (the cache is what is under test)."""

    name = "counting"

    def __init__(self):
        self.seen = []

    def chat(self, conversations, params):
        self.seen += conversations
        return [[f"reply to {c[-1]['content']} #{i}" for i in range(params.n)] for c in conversations]

    def logprobs(self, prefixes, continuations):
        self.seen += prefixes
        return [[-float(len(p)), -1.0] for p in prefixes]


def test_second_call_hits_the_cache_and_only_misses_reach_the_backend(tmp_path):
    backend = CountingLLM()
    llm = CachedLLM(backend, CallCache(tmp_path / "c.sqlite"))
    asks = [[{"role": "user", "content": q}] for q in ("a", "b", "a")]
    first = llm.chat(asks)
    assert len(backend.seen) == 2  # the repeated question is computed once
    assert llm.chat(asks) == first and len(backend.seen) == 2
    more = llm.chat(asks + [[{"role": "user", "content": "c"}]])
    assert more[-1] == ["reply to c #0"] and len(backend.seen) == 3
    assert llm.usage.calls == 3 and llm.usage.cache_hits == 7


def test_unseeded_sampling_is_not_cached_but_seeded_is(tmp_path):
    backend = CountingLLM()
    llm = CachedLLM(backend, CallCache(tmp_path / "c.sqlite"))
    ask = [[{"role": "user", "content": "q"}]]
    for _ in range(2):
        llm.chat(ask, GenerationParams(temperature=0.8))
    assert len(backend.seen) == 2
    for _ in range(2):
        llm.chat(ask, GenerationParams(temperature=0.8, seed=1))
    assert len(backend.seen) == 3


def test_params_and_model_are_part_of_the_key(tmp_path):
    cache = CallCache(tmp_path / "c.sqlite")
    backend = CountingLLM()
    llm = CachedLLM(backend, cache)
    ask = [[{"role": "user", "content": "q"}]]
    llm.chat(ask, GenerationParams(max_tokens=5))
    llm.chat(ask, GenerationParams(max_tokens=6))
    other = CountingLLM()
    other.name = "other"
    CachedLLM(other, cache).chat(ask, GenerationParams(max_tokens=5))
    assert len(backend.seen) == 2 and len(other.seen) == 1


def test_a_retrained_adapter_at_the_same_path_is_another_model(tmp_path):
    """`flywheel loop --force` and Self-Rewarding retrain adapters where the old ones were: the cache must not
    answer for the new weights with the old ones' outputs."""
    from dataflywheel.models.registry import ModelSpec

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights one")
    spec = ModelSpec(backend="transformers", model="smollm2", options={"adapter": str(adapter)})
    before = spec.cache_name()
    assert before == ModelSpec(backend="transformers", model="smollm2", options={"adapter": [str(adapter)]}
                               ).cache_name().replace(f'["{adapter}"]', f'"{adapter}"')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights two")
    assert spec.cache_name() != before
    assert ModelSpec(backend="transformers", model="smollm2").cache_name() == "transformers:smollm2"


def _writer(path, worker):
    cache = CallCache(path)
    for i in range(50):
        cache.put_many([(f"{worker}-{i}", "m", "chat", {"worker": worker, "i": i})])
        assert cache.get_many([f"{worker}-{i}"])[f"{worker}-{i}"]["i"] == i


def test_several_processes_share_one_cache(tmp_path):
    path = tmp_path / "shared.sqlite"
    CallCache(path)
    processes = [multiprocessing.get_context("spawn").Process(target=_writer, args=(path, w)) for w in range(3)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
        assert p.exitcode == 0
    assert CallCache(path).stats()["entries"] == 150


def test_cache_stats_and_clear_cli(tmp_path):
    path = tmp_path / "c.sqlite"
    CachedLLM(CountingLLM(), CallCache(path)).chat([[{"role": "user", "content": "q"}]])
    runner = CliRunner()
    stats = runner.invoke(app, ["cache", "stats", "--path", str(path), "--json"])
    assert stats.exit_code == 0 and json.loads(stats.output)["entries"] == 1
    cleared = runner.invoke(app, ["cache", "clear", "--path", str(path)])
    assert cleared.exit_code == 0 and "removed 1" in cleared.output
    assert CallCache(path).stats()["entries"] == 0


@pytest.mark.model
def test_second_identical_run_makes_no_model_calls(tmp_path):
    rows = [json.loads(line) for line in EXAMPLE_DATA.read_text().splitlines()[:6]]
    data = write_jsonl(tmp_path / "six.jsonl", rows)

    def run(name):
        recipe = parse_recipe({"input": {"path": str(data)}, "output": {"dir": str(tmp_path / name)},
                               "cache": str(tmp_path / "calls.sqlite"), "steps": [{"op": "score.ifd"}]})
        return LocalExecutor(recipe, quiet=True).execute()

    first, second = run("first"), run("second")
    [(model, usage)] = first["steps"][-1]["models"].items()
    assert usage["calls"] == 12 and usage["cache_hits"] == 0  # with and without the instruction, 6 records
    assert second["models"][model]["calls"] == 0 and second["models"][model]["cache_hits"] == 12
    assert Path(first["output"]["path"]).read_bytes() == Path(second["output"]["path"]).read_bytes()
