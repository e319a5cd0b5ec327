"""Models named once in a recipe (``models: {judge: {...}, embedder: {...}}``), built lazily by role."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.models.cache import CallCache
from dataflywheel.models.cached import CachedEmbedder, CachedLLM

# Options that change how fast a model answers, never what it answers: not part of cache keys.
_SPEED_OPTIONS = {"batch_size", "batch_tokens", "threads", "concurrency", "timeout", "max_retries", "device",
                  "show_progress", "api_key_env", "base_url", "backoff", "gpu_memory_utilization"}
DEFAULT_LLM = {"backend": "transformers", "model": "smollm2"}
DEFAULT_EMBEDDER = {"backend": "sentence-transformers", "model": "minilm"}


class ModelSpec(BaseModel):
    """One model: which backend, which weights, and backend options (passed through)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["transformers", "openai", "vllm", "sentence-transformers", "openai-embeddings"] = "transformers"
    model: str = "smollm2"
    options: dict[str, Any] = Field(default_factory=dict)

    def cache_name(self) -> str:
        """Identity of the outputs: backend, weights and the options that change answers (not speed knobs)."""
        relevant = {k: v for k, v in sorted(self.options.items()) if k not in _SPEED_OPTIONS}
        suffix = json.dumps(relevant, sort_keys=True, separators=(",", ":")) if relevant else ""
        base_url = self.options.get("base_url") or ""
        return ":".join(p for p in (self.backend, base_url, self.model, suffix) if p)

    @property
    def is_embedder(self) -> bool:
        return self.backend in ("sentence-transformers", "openai-embeddings")


def build_model(spec: ModelSpec, quiet: bool = False):
    """Instantiate the backend of a spec (imports only that backend); ``quiet`` hides weight-loading bars."""
    if quiet and spec.backend in ("transformers", "vllm", "sentence-transformers"):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if spec.backend == "transformers":
        from dataflywheel.models.transformers_llm import TransformersLLM
        return TransformersLLM(spec.model, **spec.options)
    if spec.backend == "openai":
        from dataflywheel.models.openai_llm import OpenAILLM
        return OpenAILLM(spec.model, **spec.options)
    if spec.backend == "vllm":
        from dataflywheel.models.vllm_llm import VLLMLLM
        return VLLMLLM(spec.model, **spec.options)
    if spec.backend == "sentence-transformers":
        from dataflywheel.models.embed import SentenceTransformerEmbedder
        return SentenceTransformerEmbedder(spec.model, **spec.options)
    from dataflywheel.models.embed import OpenAIEmbedder
    return OpenAIEmbedder(spec.model, **spec.options)


class ModelRegistry:
    """Roles -> cached models. Roles not named fall back to the bundled defaults ('embedder' -> MiniLM)."""

    def __init__(self, specs: dict[str, dict | ModelSpec] | None = None, cache: CallCache | None = None,
                 quiet: bool = False):
        self.specs = {role: ModelSpec.model_validate(spec) for role, spec in (specs or {}).items()}
        self.cache = cache
        self.quiet = quiet
        self._built: dict[str, Any] = {}

    def spec(self, role: str, embedder: bool = False) -> ModelSpec:
        if role in self.specs:
            return self.specs[role]
        return ModelSpec(**(DEFAULT_EMBEDDER if embedder or role == "embedder" else DEFAULT_LLM))

    def _get(self, role: str, embedder: bool):
        spec = self.spec(role, embedder)
        if spec.is_embedder != embedder:
            kind = "an embedder" if embedder else "an LLM"
            raise ValueError(f"model role {role!r} is a {spec.backend} model, but the operator needs {kind}")
        key = spec.model_dump_json()
        if key not in self._built:
            wrapper = CachedEmbedder if embedder else CachedLLM
            self._built[key] = wrapper(lambda: build_model(spec, self.quiet), self.cache, spec.cache_name())
        return self._built[key]

    def llm(self, role: str = "default") -> CachedLLM:
        return self._get(role, embedder=False)

    def embedder(self, role: str = "embedder") -> CachedEmbedder:
        return self._get(role, embedder=True)

    def usage(self) -> dict[str, dict]:
        """Per model name: calls, cache hits, tokens, seconds so far."""
        return {model.name: model.usage.as_dict() for model in self._built.values()}
