"""The vLLM backend: only where a CUDA GPU and vllm are present."""

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_vllm_logprobs_match_transformers(smollm2):
    pytest.importorskip("vllm", reason="needs pip install 'dataflywheel[vllm]'")
    from dataflywheel.models.vllm_llm import VLLMLLM

    llm = VLLMLLM("smollm2", dtype="float32", max_length=1024, gpu_memory_utilization=0.3)
    [values] = llm.logprobs(["The capital of France is"], [" Paris, a city of light."])
    [reference] = smollm2.logprobs(["The capital of France is"], [" Paris, a city of light."])
    assert len(values) == len(reference)
    assert max(abs(a - b) for a, b in zip(values, reference)) < 1e-2
