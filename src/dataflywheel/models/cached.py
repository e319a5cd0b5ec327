"""Every model call goes through here: cache lookup per item, the backend only for misses, usage counted."""

from __future__ import annotations

import base64
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from dataflywheel.models.cache import CallCache, cache_key
from dataflywheel.models.llm import Conversation, GenerationParams


@dataclass
class Usage:
    """Counters of one model: items computed by the backend, cache hits, tokens, seconds."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _through_cache(cache: CallCache | None, usage: Usage, model: str, method: str, items: list, params: Any,
                   compute: Callable[[list], list], cacheable: bool = True) -> list:
    keys = [cache_key(model, method, item, params) for item in items]
    found = cache.get_many(list(dict.fromkeys(keys))) if (cache and cacheable) else {}
    todo: dict[str, Any] = {}
    for key, item in zip(keys, items):
        if key not in found and key not in todo:
            todo[key] = item
    if todo:
        started = time.perf_counter()
        results = compute(list(todo.values()))
        usage.seconds += time.perf_counter() - started
        if len(results) != len(todo):
            raise RuntimeError(f"{model}.{method} returned {len(results)} results for {len(todo)} inputs")
        fresh = dict(zip(todo, results))
        if cache and cacheable:
            cache.put_many([(k, model, method, v) for k, v in fresh.items()])
        found.update(fresh)
    usage.calls += len(todo)
    usage.cache_hits += len(items) - len(todo)
    return [found[k] for k in keys]


class _Lazy:
    """Builds the backend on first use, so a run served wholly from the cache never loads a model.

    Takes a backend, or a factory and the cache name its backend will have."""

    def __init__(self, backend_or_factory, cache: CallCache | None, name: str | None = None):
        self.cache = cache
        if callable(backend_or_factory) and name is not None:
            self._factory, self._backend, self.name = backend_or_factory, None, name
            self.usage = Usage()
        else:
            self._factory, self._backend, self.name = None, backend_or_factory, backend_or_factory.name
            self.usage = getattr(backend_or_factory, "usage", None) or Usage()

    @property
    def backend(self):
        if self._backend is None:
            self._backend = self._factory()
            self._backend.usage = self.usage  # one set of counters, whoever counts
        return self._backend


class CachedLLM(_Lazy):
    """An LLM whose every answer is looked up in (and stored to) the call cache."""

    @property
    def llm(self):
        return self.backend

    def chat(self, conversations: list[Conversation], params: GenerationParams | None = None) -> list[list[str]]:
        params = params or GenerationParams()
        return _through_cache(self.cache, self.usage, self.name, "chat", conversations, params.model_dump(),
                              lambda xs: self.llm.chat(xs, params), params.cacheable)

    def complete(self, prompts: list[str], params: GenerationParams | None = None) -> list[list[str]]:
        params = params or GenerationParams()
        return _through_cache(self.cache, self.usage, self.name, "complete", prompts, params.model_dump(),
                              lambda xs: self.llm.complete(xs, params), params.cacheable)

    def logprobs(self, prefixes: list[str], continuations: list[str]) -> list[list[float]]:
        pairs = [[p, c] for p, c in zip(prefixes, continuations, strict=True)]
        return _through_cache(self.cache, self.usage, self.name, "logprobs", pairs, None,
                              lambda xs: self.llm.logprobs([p for p, _ in xs], [c for _, c in xs]))

    def top_logprobs(self, prefixes: list[str], k: int = 20) -> list[dict[str, float]]:
        return _through_cache(self.cache, self.usage, self.name, "top_logprobs", prefixes, k,
                              lambda xs: self.llm.top_logprobs(xs, k))

    def chat_top_logprobs(self, conversations: list[Conversation], k: int = 20) -> list[dict[str, float]]:
        return _through_cache(self.cache, self.usage, self.name, "chat_top_logprobs", conversations, k,
                              lambda xs: self.llm.chat_top_logprobs(xs, k))

    def format_chat(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        return self.llm.format_chat(conversation, add_generation_prompt)

    def __getattr__(self, attribute: str):  # backend extras (tokenizer, model) stay reachable
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self.llm, attribute)


class CachedEmbedder(_Lazy):
    """An embedder whose vectors are cached per text."""

    @property
    def embedder(self):
        return self.backend

    def embed(self, texts: list[str]) -> np.ndarray:
        def compute(batch: list[str]) -> list[str]:
            vectors = np.asarray(self.embedder.embed(batch), dtype=np.float32)
            return [base64.b64encode(v.tobytes()).decode("ascii") for v in vectors]

        encoded = _through_cache(self.cache, self.usage, self.name, "embed", texts, None, compute)
        if not encoded:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([np.frombuffer(base64.b64decode(e), dtype=np.float32) for e in encoded])
