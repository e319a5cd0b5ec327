"""Backend for any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, Ollama, OpenAI)."""

from __future__ import annotations

from dataflywheel.models.cached import Usage
from dataflywheel.models.llm import Conversation, GenerationParams, ModelFeatureError
from dataflywheel.models.openai_client import OpenAIClient


def _has_choices(data: dict) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        raise ValueError("no 'choices' in the answer")


class OpenAILLM:
    """A model behind an OpenAI-compatible HTTP API; the API key comes from an environment variable."""

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 120.0, max_retries: int = 5, backoff: float = 0.5, concurrency: int = 8,
                 chat_template_from: str | None = None):
        self.model = model
        self.client = OpenAIClient(base_url, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries,
                                   backoff=backoff, concurrency=concurrency)
        self.name = f"openai:{self.client.base_url}:{model}"
        self.usage = Usage()
        self._template_source = chat_template_from
        self._tokenizer = None

    def _count(self, data: dict) -> None:
        usage = data.get("usage") or {}
        self.usage.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.usage.completion_tokens += int(usage.get("completion_tokens") or 0)

    @staticmethod
    def _sampling(params: GenerationParams) -> dict:
        body = {"max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
                "n": params.n}
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def chat(self, conversations: list[Conversation], params: GenerationParams) -> list[list[str]]:
        def one(conversation: Conversation) -> list[str]:
            data = self.client.post("chat/completions", {"model": self.model, "messages": conversation,
                                                         **self._sampling(params)}, _has_choices)
            self._count(data)
            return [c.get("message", {}).get("content") or "" for c in data["choices"]]
        return self.client.map(one, conversations)

    def complete(self, prompts: list[str], params: GenerationParams) -> list[list[str]]:
        def one(prompt: str) -> list[str]:
            data = self.client.post("completions", {"model": self.model, "prompt": prompt, **self._sampling(params)},
                                    _has_choices)
            self._count(data)
            return [c.get("text") or "" for c in data["choices"]]
        return self.client.map(one, prompts)

    def logprobs(self, prefixes: list[str], continuations: list[str]) -> list[list[float]]:
        """Prompt log-probabilities via ``/completions`` with ``echo``; needs a server that returns them."""
        def one(pair: tuple[str, str]) -> list[float]:
            prefix, continuation = pair
            text = prefix + continuation
            data = self.client.post("completions", {"model": self.model, "prompt": text, "max_tokens": 1,
                                                    "temperature": 0, "echo": True, "logprobs": 1}, _has_choices)
            self._count(data)
            info = data["choices"][0].get("logprobs") or {}
            offsets, values = info.get("text_offset"), info.get("token_logprobs")
            if not offsets or not values:
                raise ModelFeatureError(f"{self.name} returned no prompt logprobs for echo=true; use a server that "
                                        "does (vLLM; llama.cpp with logits_all) or the transformers backend")
            start = len(prefix)
            return [float(v) for off, v in zip(offsets, values)
                    if start <= off < len(text) and v is not None]
        return self.client.map(one, list(zip(prefixes, continuations, strict=True)))

    def top_logprobs(self, prefixes: list[str], k: int = 20) -> list[dict[str, float]]:
        def one(prefix: str) -> dict[str, float]:
            data = self.client.post("completions", {"model": self.model, "prompt": prefix, "max_tokens": 1,
                                                    "temperature": 0, "logprobs": k}, _has_choices)
            self._count(data)
            tops = (data["choices"][0].get("logprobs") or {}).get("top_logprobs")
            if not tops:
                raise ModelFeatureError(f"{self.name} returned no top_logprobs for /completions")
            return {str(t): float(v) for t, v in tops[0].items()}
        return self.client.map(one, prefixes)

    def chat_top_logprobs(self, conversations: list[Conversation], k: int = 20) -> list[dict[str, float]]:
        """Top-k first tokens of the assistant reply (chat API ``logprobs``/``top_logprobs``)."""
        def one(conversation: Conversation) -> dict[str, float]:
            data = self.client.post("chat/completions", {"model": self.model, "messages": conversation,
                                                         "max_tokens": 1, "temperature": 0, "logprobs": True,
                                                         "top_logprobs": k}, _has_choices)
            self._count(data)
            content = (data["choices"][0].get("logprobs") or {}).get("content")
            if not content:
                raise ModelFeatureError(f"{self.name} returned no chat logprobs; the server may not support them")
            return {e["token"]: float(e["logprob"]) for e in content[0].get("top_logprobs", [])}
        return self.client.map(one, conversations)

    def format_chat(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        if self._template_source is None:
            raise ModelFeatureError(f"{self.name} cannot show its chat template; set chat_template_from to a "
                                    "tokenizer dir or use chat()/chat_top_logprobs()")
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from dataflywheel.models.bundled import resolve_llm_path
            self._tokenizer = AutoTokenizer.from_pretrained(resolve_llm_path(self._template_source))
        return self._tokenizer.apply_chat_template(conversation, tokenize=False,
                                                   add_generation_prompt=add_generation_prompt)
