"""Backend for any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, Ollama, OpenAI).

Every method has an ``*_each`` form yielding ``(index, answer or exception)`` as answers arrive, so the
cache keeps each paid answer at once and a failed request fails alone."""

from __future__ import annotations

import asyncio
import random
from typing import Any, Callable, Iterator, Sequence

from dataflywheel.errors import FatalError
from dataflywheel.models.errors import ModelFeatureError
from dataflywheel.models.llm import Conversation, GenerationParams
from dataflywheel.models.openai_client import FeatureRefused, OpenAIClient
from dataflywheel.models.usage import Usage

# How a JSON schema is sent, tried in this order by structured="auto" until the server accepts one:
# OpenAI / vLLM / llama.cpp's own server; llama-cpp-python (grammar from the schema); older vLLM; none (parse).
STRUCTURED_MODES = ("json_schema", "json_object", "guided_json", "none")


def _has_choices(data: dict) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        raise ValueError("no 'choices' in the answer")


def collect(pairs: Iterator[tuple[int, Any]], count: int) -> list:
    """The answers of an ``*_each`` iterator in input order; raises the first fatal, else first, error."""
    results: list = [None] * count
    errors: list[Exception] = []
    for index, value in pairs:
        if isinstance(value, Exception):
            errors.append(value)
        else:
            results[index] = value
    if errors:
        raise next((e for e in errors if isinstance(e, FatalError)), errors[0])
    return results


class OpenAILLM:
    """A model behind an OpenAI-compatible HTTP API; the API key comes from an environment variable.

    ``structured``: how ``params.json_schema`` reaches the server (one of STRUCTURED_MODES, or "auto")."""

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 120.0, max_retries: int = 5, backoff: float = 0.5, concurrency: int = 8,
                 max_concurrency: int | None = None, max_consecutive_failures: int = 10,
                 rate_limit_patience: float = 600.0, chat_template_from: str | None = None,
                 structured: str = "auto", server_n: bool | None = None):
        if structured not in STRUCTURED_MODES + ("auto",):
            raise ValueError(f"structured must be one of {STRUCTURED_MODES + ('auto',)}, not {structured!r}")
        self.model = model
        self.client = OpenAIClient(base_url, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries,
                                   backoff=backoff, concurrency=concurrency, max_concurrency=max_concurrency,
                                   max_consecutive_failures=max_consecutive_failures,
                                   rate_limit_patience=rate_limit_patience)
        self.name = f"openai:{self.client.base_url}:{model}"
        self.usage = Usage()
        self._template_source = chat_template_from
        self._tokenizer = None
        self._structured = structured
        self._learned_mode = STRUCTURED_MODES[0]  # under "auto": the first mode the server accepted
        self._server_n = server_n  # None: find out (a server that ignores n returns one choice)

    @property
    def usage(self) -> Usage:
        return self._usage

    @usage.setter
    def usage(self, usage: Usage) -> None:
        self._usage = usage
        self.client.usage = usage

    def close(self) -> None:
        self.client.close()

    def _count(self, data: dict) -> None:
        usage = data.get("usage") or {}
        self.usage.count_tokens(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))

    # ---- generation ----------------------------------------------------------------------------

    def _sampling(self, params: GenerationParams, n: int, seed: int | None) -> dict:
        body: dict = {"max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p}
        if n > 1:
            body["n"] = n
        if seed is not None:
            body["seed"] = seed
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def _structure(self, body: dict, schema: dict | None, mode: str) -> dict:
        if schema is None or mode == "none":
            return body
        if mode == "json_schema":
            return {**body, "response_format": {"type": "json_schema",
                                                "json_schema": {"name": "answer", "schema": schema}}}
        if mode == "json_object":
            return {**body, "response_format": {"type": "json_object", "schema": schema}}
        return {**body, "guided_json": schema}

    async def _ask(self, path: str, body: dict, params: GenerationParams, batch) -> dict:
        """One request; with a schema under structured="auto", falls back mode by mode while the server refuses."""
        if params.json_schema is None or self._structured != "auto":
            mode = self._structured if self._structured != "auto" else "none"
            return await self.client.request(path, self._structure(body, params.json_schema, mode), _has_choices, batch)
        for mode in STRUCTURED_MODES[STRUCTURED_MODES.index(self._learned_mode):]:
            probe = {"json_schema": "response_format", "json_object": "response_format",
                     "guided_json": "guided_json"}.get(mode)
            try:
                data = await self.client.request(path, self._structure(body, params.json_schema, mode), _has_choices,
                                                 batch, probe=probe)
            except FeatureRefused:
                continue
            self._learned_mode = mode
            return data
        raise AssertionError("unreachable: mode 'none' returns or raises")

    def _sample_work(self, path: str, make_body: Callable[[Any], dict], extract: Callable[[dict], str],
                     params: GenerationParams) -> Callable:
        """Per item: ``params.n`` answers, from the server's ``n`` where it gives them, else one seed each.

        Greedy asks once and repeats the answer; unseeded sampling sends a fresh random seed per request so
        servers that reuse a default seed still sample independently."""
        sampling = params.temperature > 0

        def seed_for(k: int) -> int | None:
            if not sampling:
                return None
            return params.seed + k if params.seed is not None else random.getrandbits(31)

        async def work(item, batch) -> list[str]:
            base = make_body(item)
            want = params.n if sampling else 1
            first_n = want if self._server_n is not False else 1
            data = await self._ask(path, {**base, **self._sampling(params, first_n, seed_for(0))}, params, batch)
            self._count(data)
            texts = [extract(c) for c in sorted(data["choices"], key=lambda c: c.get("index", 0))][:want]
            if first_n > 1:
                self._server_n = len(texts) >= first_n
            if len(texts) < want:
                async def extra(k: int) -> str:
                    more = await self._ask(path, {**base, **self._sampling(params, 1, seed_for(k))}, params, batch)
                    self._count(more)
                    return extract(more["choices"][0])
                texts += await asyncio.gather(*(extra(k) for k in range(len(texts), want)))
            return texts if sampling else texts * params.n
        return work

    def chat_each(self, conversations: list[Conversation], params: GenerationParams) -> Iterator[tuple[int, Any]]:
        work = self._sample_work("chat/completions", lambda c: {"model": self.model, "messages": c},
                                 lambda c: (c.get("message") or {}).get("content") or "", params)
        return self.client.each(work, conversations)

    def complete_each(self, prompts: list[str], params: GenerationParams) -> Iterator[tuple[int, Any]]:
        work = self._sample_work("completions", lambda p: {"model": self.model, "prompt": p},
                                 lambda c: c.get("text") or "", params)
        return self.client.each(work, prompts)

    def chat(self, conversations: list[Conversation], params: GenerationParams) -> list[list[str]]:
        return collect(self.chat_each(conversations, params), len(conversations))

    def complete(self, prompts: list[str], params: GenerationParams) -> list[list[str]]:
        return collect(self.complete_each(prompts, params), len(prompts))

    # ---- scoring -------------------------------------------------------------------------------

    def logprobs_each(self, prefixes: list[str], continuations: list[str]) -> Iterator[tuple[int, Any]]:
        """Prompt log-probabilities via ``/completions`` with ``echo``; needs a server that returns them."""
        async def work(pair: tuple[str, str], batch) -> list[float]:
            prefix, continuation = pair
            text = prefix + continuation
            data = await self.client.request("completions", {"model": self.model, "prompt": text, "max_tokens": 1,
                                                             "temperature": 0, "echo": True, "logprobs": 1},
                                             _has_choices, batch)
            self._count(data)
            info = data["choices"][0].get("logprobs") or {}
            offsets, values = info.get("text_offset"), info.get("token_logprobs")
            if not offsets or not values:
                raise ModelFeatureError(f"{self.name} returned no prompt logprobs for echo=true; use a server that "
                                        "does (vLLM; llama.cpp with logits_all) or the transformers backend")
            start = len(prefix)
            return [float(v) for off, v in zip(offsets, values) if start <= off < len(text) and v is not None]
        return self.client.each(work, list(zip(prefixes, continuations, strict=True)))

    def logprobs(self, prefixes: list[str], continuations: list[str]) -> list[list[float]]:
        return collect(self.logprobs_each(prefixes, continuations), len(prefixes))

    def top_logprobs_each(self, prefixes: list[str], k: int = 20, labels: Sequence[str] = ()) -> Iterator[tuple[int, Any]]:
        """Top-k next tokens (the API gives no others: ``labels`` beyond the top k stay unseen)."""
        async def work(prefix: str, batch) -> dict[str, float]:
            data = await self.client.request("completions", {"model": self.model, "prompt": prefix, "max_tokens": 1,
                                                             "temperature": 0, "logprobs": k}, _has_choices, batch)
            self._count(data)
            tops = (data["choices"][0].get("logprobs") or {}).get("top_logprobs")
            if not tops:
                raise ModelFeatureError(f"{self.name} returned no top_logprobs for /completions")
            return {str(t): float(v) for t, v in tops[0].items()}
        return self.client.each(work, prefixes)

    def top_logprobs(self, prefixes: list[str], k: int = 20, labels: Sequence[str] = ()) -> list[dict[str, float]]:
        return collect(self.top_logprobs_each(prefixes, k), len(prefixes))

    def chat_top_logprobs_each(self, conversations: list[Conversation], k: int = 20,
                               labels: Sequence[str] = ()) -> Iterator[tuple[int, Any]]:
        """Top-k first tokens of the assistant reply (chat API ``logprobs``/``top_logprobs``; ``labels``
        beyond the top k stay unseen)."""
        async def work(conversation: Conversation, batch) -> dict[str, float]:
            data = await self.client.request("chat/completions", {"model": self.model, "messages": conversation,
                                                                  "max_tokens": 1, "temperature": 0, "logprobs": True,
                                                                  "top_logprobs": k}, _has_choices, batch)
            self._count(data)
            content = (data["choices"][0].get("logprobs") or {}).get("content")
            if not content:
                raise ModelFeatureError(f"{self.name} returned no chat logprobs; the server may not support them")
            return {e["token"]: float(e["logprob"]) for e in content[0].get("top_logprobs", [])}
        return self.client.each(work, conversations)

    def chat_top_logprobs(self, conversations: list[Conversation], k: int = 20,
                          labels: Sequence[str] = ()) -> list[dict[str, float]]:
        return collect(self.chat_top_logprobs_each(conversations, k), len(conversations))

    # ---- prompts -------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        if self._template_source is None:
            # an AttributeError, so that tokenizer_of(llm) is None: no tokenizer here
            raise AttributeError(f"{self.name} shows no tokenizer; set chat_template_from to its tokenizer (a model "
                                 "name or dir) in the model's options")
        if self._tokenizer is None:
            from dataflywheel.models.tokenizer import load_tokenizer
            self._tokenizer = load_tokenizer(self._template_source)
        return self._tokenizer

    def format_chat(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        if self._template_source is None:
            raise ModelFeatureError(f"{self.name} cannot show its chat template; set chat_template_from to a "
                                    "tokenizer dir or use chat()/chat_top_logprobs()")
        return self.tokenizer.apply_chat_template(conversation, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokenizer": None}
