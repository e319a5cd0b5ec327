"""Retries, timeouts and clear errors of the OpenAI-compatible backend, against injected faults."""

import pytest

from dataflywheel.models.cache import CallCache
from dataflywheel.models.cached import CachedLLM
from dataflywheel.models.llm import ModelFeatureError, tokenizer_of
from dataflywheel.models.openai_client import ModelRequestError
from dataflywheel.models.openai_llm import OpenAILLM
from tests.models.fault_server import FaultServer

ASK = [[{"role": "user", "content": "hello"}]]


def client(server, **options):
    return OpenAILLM("test-model", base_url=server.url, backoff=0.01, timeout=1.0, **options)


@pytest.mark.parametrize("faults", [["429"], ["500", "500"], ["hang"], ["badjson"], ["nochoices"],
                                    ["429", "hang", "500", "badjson"]])
def test_transient_faults_are_retried(faults):
    with FaultServer(faults + ["ok"]) as server:
        assert client(server, max_retries=5).chat(ASK, _params()) == [["fine"]]
        assert len(server.requests) == len(faults) + 1


def test_gives_up_after_max_retries_with_the_last_error():
    with FaultServer(["500"] * 10) as server:
        with pytest.raises(ModelRequestError, match=r"failed after 3 attempts; last error: HTTP 500"):
            client(server, max_retries=2).chat(ASK, _params())
        assert len(server.requests) == 3


def test_client_errors_are_not_retried():
    with FaultServer(["400"]) as server:
        with pytest.raises(ModelRequestError, match="HTTP 400.*unsupported parameter"):
            client(server).chat(ASK, _params())
        assert len(server.requests) == 1


def test_missing_logprobs_is_a_clear_feature_error():
    with FaultServer(["nologprobs"]) as server:
        with pytest.raises(ModelFeatureError, match="no prompt logprobs"):
            client(server).logprobs(["prefix"], [" continuation"])


def test_a_server_shows_no_tokenizer_unless_one_is_named_and_says_how_to_name_one():
    llm = OpenAILLM("m", base_url="http://127.0.0.1:9/v1")
    assert tokenizer_of(llm) is None and tokenizer_of(CachedLLM(llm, None)) is None  # operators then estimate
    with pytest.raises(AttributeError, match="set chat_template_from to its tokenizer"):
        llm.tokenizer  # an operator that needs it (prompt compression) gets this message


def test_api_key_is_sent_but_never_logged_or_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DFW_TEST_KEY", "sk-very-secret")
    cache_path = tmp_path / "c.sqlite"
    with FaultServer(["ok", "500", "500"]) as server:
        llm = CachedLLM(client(server, api_key_env="DFW_TEST_KEY", max_retries=1), CallCache(cache_path))
        llm.chat(ASK, _params())
        assert server.requests[0]["authorization"] == "Bearer sk-very-secret"
        with pytest.raises(ModelRequestError) as err:
            llm.chat([[{"role": "user", "content": "other"}]], _params())
        assert "sk-very-secret" not in str(err.value)
    for file in tmp_path.iterdir():
        assert b"sk-very-secret" not in file.read_bytes()


def test_concurrency_keeps_order():
    with FaultServer([]) as server:
        asks = [[{"role": "user", "content": str(i)}] for i in range(12)]
        assert client(server, concurrency=4).chat(asks, _params()) == [["fine"]] * 12
        assert sorted(r["body"]["messages"][0]["content"] for r in server.requests) == sorted(str(i) for i in range(12))


def _params():
    from dataflywheel.models.llm import GenerationParams

    return GenerationParams(max_tokens=4)


# ---- generation at scale: every paid answer kept, server failures stop the run -------------------------

def _asks(count, prefix="q"):
    return [[{"role": "user", "content": f"{prefix}{i}"}] for i in range(count)]


def _echo(body):
    from tests.models.fault_server import last_user

    return f"answer to {last_user(body)}"


def _cached(server, tmp_path, **options):
    from dataflywheel.models.registry import ModelRegistry

    options = {"base_url": server.url, "backoff": 0.01, "timeout": 2.0, **options}
    registry = ModelRegistry({"judge": {"backend": "openai", "model": "m", "options": options}},
                             CallCache(tmp_path / "calls.sqlite"), budget=options.pop("budget", None))
    return registry, registry.llm("judge")


def test_one_failed_request_in_a_batch_of_16_leaves_15_answers_cached(tmp_path):
    rule = lambda body: "400" if body["messages"][-1]["content"] == "q7" else None  # noqa: E731
    with FaultServer(rule=rule, answer=_echo) as server:
        _, llm = _cached(server, tmp_path, concurrency=4)
        with pytest.raises(ModelRequestError, match="HTTP 400"):
            llm.chat(_asks(16), _params())
        assert CallCache(tmp_path / "calls.sqlite").stats()["entries"] == 15
        assert llm.usage.calls == 15 and llm.usage.failures == 1
        seen = len(server.requests)
        with pytest.raises(ModelRequestError):  # again: only the failing one reaches the server
            llm.chat(_asks(16), _params())
        assert len(server.requests) == seen + 1 and llm.usage.cache_hits == 15
        answers = llm.chat([a for i, a in enumerate(_asks(16)) if i != 7], _params())
        assert answers[3] == ["answer to q3"] and len(server.requests) == seen + 1


def test_401_stops_with_a_fatal_error_naming_the_key_variable(tmp_path, monkeypatch):
    from dataflywheel.errors import FatalError
    from dataflywheel.models.errors import ModelAuthError

    monkeypatch.delenv("DFW_MISSING_KEY", raising=False)
    with FaultServer(rule=lambda body: "401") as server:
        _, llm = _cached(server, tmp_path, concurrency=1, api_key_env="DFW_MISSING_KEY")
        with pytest.raises(ModelAuthError, match=r"DFW_MISSING_KEY.*unset.*--resume") as err:
            llm.chat(_asks(8), _params())
        assert isinstance(err.value, FatalError)
        assert len(server.requests) == 1  # no retry, and the other 7 never started
        assert llm.usage.failures == 0  # nothing is blamed on a record


def test_unreachable_server_is_fatal(tmp_path):
    import socket

    from dataflywheel.models.errors import ModelUnavailableError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = OpenAILLM("m", base_url=f"http://127.0.0.1:{port}/v1", backoff=0.01, max_retries=2)
    with pytest.raises(ModelUnavailableError, match="unreachable after 3 attempts.*--resume"):
        llm.chat(_asks(3), _params())


def test_many_failures_in_a_row_become_fatal():
    from dataflywheel.models.errors import ModelUnavailableError

    with FaultServer(rule=lambda body: "400") as server:
        llm = client(server, concurrency=1, max_consecutive_failures=3)
        with pytest.raises(ModelUnavailableError, match="3 requests in a row"):
            llm.chat(_asks(10), _params())
        assert len(server.requests) == 3


def test_429_storm_with_retry_after_finishes_backs_off_and_grows_again(tmp_path):
    with FaultServer(["429:0.2"] * 24, answer=_echo, delay=0.01) as server:
        registry, llm = _cached(server, tmp_path, concurrency=8, max_concurrency=8)
        answers = llm.chat(_asks(16), _params())
        assert answers == [[f"answer to q{i}"] for i in range(16)]
        usage = registry.usage()[llm.name]
        assert usage["rate_limited"] == 24 and usage["backoffs"] >= 2 and usage["concurrency_min"] <= 2
        assert usage["waited_seconds"] >= 0.2 and usage["failures"] == 0
        low = usage["concurrency"]
        llm.chat(_asks(200, "more"), _params())
        assert registry.usage()[llm.name]["concurrency"] > low  # additive increase after the storm


def test_one_keep_alive_pool_across_calls():
    with FaultServer(answer=_echo) as server:
        llm = client(server, concurrency=4, max_concurrency=4)
        for round_ in range(3):
            llm.chat(_asks(8, f"r{round_}-"), _params())
        assert len(server.requests) == 24
        assert len({r["connection"] for r in server.requests}) <= 4
        llm.close()


def test_unseeded_samples_of_identical_prompts_are_never_merged(tmp_path):
    from dataflywheel.models.llm import GenerationParams

    with FaultServer(answer=_echo) as server:
        _, llm = _cached(server, tmp_path)
        sampled = GenerationParams(max_tokens=4, temperature=1.0)
        llm.chat([[{"role": "user", "content": "same"}]] * 4, sampled)
        assert len(server.requests) == 4 and llm.usage.cache_hits == 0
        seeds = [r["body"]["seed"] for r in server.requests]
        assert len(set(seeds)) == 4  # a fresh seed each, so servers with a default seed still vary


@pytest.mark.parametrize("server_n", [True, False])
def test_n_samples_from_the_servers_n_or_distinct_seeds(server_n):
    from dataflywheel.models.llm import GenerationParams

    with FaultServer(answer=_echo, server_n=server_n) as server:
        llm = client(server)
        [samples] = llm.chat(_asks(1), GenerationParams(max_tokens=4, temperature=1.0, n=4))
        assert len(samples) == 4
        if server_n:
            assert len(server.requests) == 1 and server.requests[0]["body"]["n"] == 4
        else:  # one probe with n=4 answered once, then 3 more requests with distinct seeds
            assert len(server.requests) == 4 and len({r["body"]["seed"] for r in server.requests}) == 4
            llm.chat(_asks(1), GenerationParams(max_tokens=4, temperature=1.0, n=2))
            assert "n" not in server.requests[-1]["body"]  # learnt: no more n probes


def test_seeded_samples_are_cached_per_seed(tmp_path):
    from dataflywheel.models.llm import GenerationParams

    with FaultServer(answer=lambda body: f"seed {body['seed']}") as server:
        _, llm = _cached(server, tmp_path)
        first = llm.chat(_asks(1), GenerationParams(temperature=1.0, seed=5, n=2))
        assert first == [["seed 5", "seed 6"]] and len(server.requests) == 2
        more = llm.chat(_asks(1), GenerationParams(temperature=1.0, seed=5, n=4))
        assert more == [["seed 5", "seed 6", "seed 7", "seed 8"]]
        assert sorted(r["body"]["seed"] for r in server.requests[2:]) == [7, 8]


def test_budget_stops_new_calls_and_a_larger_budget_finishes_the_same(tmp_path):
    from dataflywheel.errors import FatalError
    from dataflywheel.models.errors import BudgetExceededError
    from dataflywheel.models.usage import Budget

    with FaultServer(answer=_echo) as server:
        budget = Budget(max_tokens=10)  # each answer costs 3 + 1 tokens
        registry, llm = _cached(server, tmp_path / "a", concurrency=1, max_concurrency=1, budget=budget)
        with pytest.raises(BudgetExceededError, match=r"12 of 10 tokens.*--resume") as err:
            llm.chat(_asks(8), _params())
        assert isinstance(err.value, FatalError)
        assert len(server.requests) == 3 and budget.spent_tokens == 12
        assert CallCache(tmp_path / "a" / "calls.sqlite").stats()["entries"] == 3
        registry.close()
        _, resumed = _cached(server, tmp_path / "a", concurrency=1, budget=Budget(max_tokens=100, spent_tokens=12))
        finished = resumed.chat(_asks(8), _params())
        assert len(server.requests) == 8 and resumed.usage.cache_hits == 3
        _, unbounded = _cached(server, tmp_path / "b")
        assert finished == unbounded.chat(_asks(8), _params())


def test_cost_is_counted_from_the_price(tmp_path):
    from dataflywheel.models.registry import ModelRegistry
    from dataflywheel.models.usage import Budget

    with FaultServer() as server:
        spec = {"backend": "openai", "model": "m", "options": {"base_url": server.url},
                "price": {"prompt_per_1k": 1.0, "completion_per_1k": 2.0}}
        budget = Budget(max_cost=0.02)
        registry = ModelRegistry({"judge": spec}, None, budget=budget)
        registry.llm("judge").chat(_asks(3), _params())
        usage = registry.usage()[registry.llm("judge").name]
        assert usage["cost"] == pytest.approx(3 * (3 * 1.0 + 1 * 2.0) / 1000)
        assert budget.spent_cost == pytest.approx(0.015)


def test_the_cache_key_includes_a_base_url_taken_from_the_environment(tmp_path, monkeypatch):
    from dataflywheel.models.registry import ModelRegistry

    cache = CallCache(tmp_path / "calls.sqlite")
    spec = {"judge": {"backend": "openai", "model": "same-name"}}
    with FaultServer(answer=lambda b: "from A") as a, FaultServer(answer=lambda b: "from B") as b:
        monkeypatch.setenv("OPENAI_BASE_URL", a.url)
        assert ModelRegistry(spec, cache).llm("judge").chat(_asks(1), _params()) == [["from A"]]
        monkeypatch.setenv("OPENAI_BASE_URL", b.url)
        assert ModelRegistry(spec, cache).llm("judge").chat(_asks(1), _params()) == [["from B"]]


def test_structured_output_falls_back_mode_by_mode_and_reasks_once(tmp_path):
    schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
              "required": ["score"]}

    def rule(body):
        kind = (body.get("response_format") or {}).get("type")
        if kind == "json_schema":
            return "400"  # like llama-cpp-python: only json_object (+ schema) is accepted
        content = body["messages"][-1]["content"]
        if content == "q0":
            return 'json:Sure! ```json\n{"score": 4,}\n```'
        if content == "q1":
            return 'json:{"score": 9}'
        return 'json:{"score": 2}'  # the re-ask of q1

    with FaultServer(rule=rule) as server:
        _, llm = _cached(server, tmp_path, concurrency=1)
        values = llm.chat_json(_asks(2), schema, _params())
        assert values == [[{"score": 4}], [{"score": 2}]]
        assert llm.usage.json_repaired == 1 and llm.usage.json_reasked == 1 and llm.usage.json_failed == 0
        assert llm.usage.failures == 0
        formats = [r["body"].get("response_format", {}).get("type") for r in server.requests]
        assert formats[0] == "json_schema" and formats.count("json_object") == 3  # q0, q1, the re-ask
        assert formats[-1] == "json_object"  # learnt: no more probing
        reask = server.requests[-1]["body"]["messages"]
        assert reask[-2] == {"role": "assistant", "content": '{"score": 9}'} and "<= 5" in reask[-1]["content"]


def _fork_child(llm, cache, out):
    import os

    answer = llm.chat([[{"role": "user", "content": "from the child"}]], _params())
    cache.put_many([("child", "m", "chat", {"pid": os.getpid()})])
    out.put((answer, cache._pid == os.getpid()))


def test_registry_and_cache_pickle_and_survive_a_fork(tmp_path):
    import multiprocessing
    import pickle

    with FaultServer(answer=_echo) as server:
        registry, llm = _cached(server, tmp_path)
        llm.chat(_asks(2), _params())  # opens the HTTP loop and the SQLite connection in this process
        again = pickle.loads(pickle.dumps(registry))
        assert not again.llm("judge").loaded and again.llm("judge").chat(_asks(2), _params()) == [["answer to q0"],
                                                                                               ["answer to q1"]]
        assert len(server.requests) == 2  # the copy answered from the cache
        context = multiprocessing.get_context("fork")
        out = context.Queue()
        child = context.Process(target=_fork_child, args=(llm, registry.cache, out))
        child.start()
        answer, own_connection = out.get(timeout=30)
        child.join(30)
        assert child.exitcode == 0 and answer == [["answer to from the child"]] and own_connection
        assert registry.cache.get_many(["child"])["child"]["pid"] == child.pid
        assert llm.chat(_asks(1, "parent"), _params()) == [["answer to parent0"]]  # the parent's loop still works
        registry.close()
