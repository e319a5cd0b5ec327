"""Retries, timeouts and clear errors of the OpenAI-compatible backend, against injected faults."""

import pytest

from dataflywheel.models.cache import CallCache
from dataflywheel.models.cached import CachedLLM
from dataflywheel.models.llm import ModelFeatureError
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
