"""Offline vLLM backend (GPU): ``pip install dataflywheel[vllm]``. Imported only when used."""

from __future__ import annotations

from typing import Sequence

from dataflywheel.models.bundled import SMOLLM2, resolve_llm_path
from dataflywheel.models.llm import Conversation, GenerationParams, ModelFeatureError
from dataflywheel.models.usage import Usage


class VLLMLLM:
    """A model run in-process by vLLM; same interface as the other backends."""

    def __init__(self, model: str = SMOLLM2, *, dtype: str = "auto", max_length: int = 4096,
                 gpu_memory_utilization: float = 0.85, seed: int = 0):
        try:
            import vllm
        except ImportError as err:
            raise ModelFeatureError("the vllm backend needs `pip install 'dataflywheel[vllm]'` and a GPU") from err
        self._vllm = vllm
        self.engine = vllm.LLM(model=resolve_llm_path(model), dtype=dtype, max_model_len=max_length,
                               gpu_memory_utilization=gpu_memory_utilization, seed=seed)
        self.tokenizer = self.engine.get_tokenizer()
        self.name = f"vllm:{model}:{dtype}"
        self.usage = Usage()

    def _sampling(self, params: GenerationParams):
        extra = {}
        if params.json_schema is not None:  # guided decoding: the answer always parses
            sampling_params = self._vllm.sampling_params
            if hasattr(sampling_params, "StructuredOutputsParams"):  # vLLM >= 0.11
                extra["structured_outputs"] = sampling_params.StructuredOutputsParams(json=params.json_schema)
            else:
                extra["guided_decoding"] = sampling_params.GuidedDecodingParams(json=params.json_schema)
        return self._vllm.SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature,
                                         top_p=params.top_p, n=params.n, seed=params.seed, stop=list(params.stop),
                                         **extra)

    def format_chat(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def complete(self, prompts: list[str], params: GenerationParams) -> list[list[str]]:
        outputs = self.engine.generate(list(prompts), self._sampling(params), use_tqdm=False)
        for out in outputs:
            self.usage.count_tokens(len(out.prompt_token_ids), sum(len(o.token_ids) for o in out.outputs))
        return [[o.text for o in out.outputs] for out in outputs]

    def chat(self, conversations: list[Conversation], params: GenerationParams) -> list[list[str]]:
        return self.complete([self.format_chat(c) for c in conversations], params)

    def logprobs(self, prefixes: list[str], continuations: list[str]) -> list[list[float]]:
        encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        pairs = [(encode(p) or [self.tokenizer.eos_token_id], encode(c)) for p, c in zip(prefixes, continuations,
                                                                                        strict=True)]
        prompts = [{"prompt_token_ids": head + tail} for head, tail in pairs]
        sampling = self._vllm.SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0)
        outputs = self.engine.generate(prompts, sampling, use_tqdm=False)
        results = []
        for (head, tail), out in zip(pairs, outputs):
            ids = head + tail
            per_token = out.prompt_logprobs
            results.append([per_token[j][ids[j]].logprob for j in range(len(head), len(ids))])
            self.usage.count_tokens(len(ids))
        return results

    def top_logprobs(self, prefixes: list[str], k: int = 20, labels: Sequence[str] = ()) -> list[dict[str, float]]:
        """Top-k next tokens; ``labels`` are not added (vLLM returns ranked tokens only; untested here)."""
        sampling = self._vllm.SamplingParams(max_tokens=1, temperature=0, logprobs=k)
        outputs = self.engine.generate(list(prefixes), sampling, use_tqdm=False)
        results = []
        for out in outputs:
            top = out.outputs[0].logprobs[0]
            ranked = sorted(top.values(), key=lambda lp: -lp.logprob)[:k]
            results.append({lp.decoded_token: lp.logprob for lp in ranked})
        return results

    def chat_top_logprobs(self, conversations: list[Conversation], k: int = 20,
                          labels: Sequence[str] = ()) -> list[dict[str, float]]:
        return self.top_logprobs([self.format_chat(c) for c in conversations], k, labels)
