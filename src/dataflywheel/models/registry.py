"""Models named once in a recipe (``models: {judge: {...}, embedder: {...}}``), built lazily by role."""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dataflywheel.models.cache import CallCache
from dataflywheel.models.cached import CachedEmbedder, CachedLLM
from dataflywheel.models.usage import Budget

# Options that change how fast a model answers, never what it answers: not part of cache keys.
_SPEED_OPTIONS = {"batch_size", "batch_tokens", "threads", "concurrency", "max_concurrency", "timeout",
                  "max_retries", "device", "show_progress", "api_key_env", "base_url", "backoff",
                  "gpu_memory_utilization", "max_consecutive_failures", "rate_limit_patience", "structured",
                  "server_n", "chat_template_from"}
SECRET_OPTIONS = {"api_key", "apikey", "key", "token", "access_token", "secret", "password", "authorization"}
DEFAULT_LLM = {"backend": "transformers", "model": "smollm2"}
DEFAULT_EMBEDDER = {"backend": "sentence-transformers", "model": "minilm"}


class Price(BaseModel):
    """Cost per 1000 tokens (any currency; the ledger's ``cost`` is in the same unit)."""

    model_config = ConfigDict(extra="forbid")

    prompt_per_1k: float = Field(default=0.0, ge=0.0)
    completion_per_1k: float = Field(default=0.0, ge=0.0)


def adapter_digest(adapters: str | list[str]) -> str:
    """Hash of LoRA adapter directories' files: a retrained adapter at the same path is another model, and its
    answers must not come from the call cache of the old one."""
    digest = hashlib.sha256()
    for adapter in [adapters] if isinstance(adapters, str) else adapters:
        folder = Path(adapter)
        for file in sorted(folder.iterdir()) if folder.is_dir() else []:
            if file.is_file():
                digest.update(file.name.encode() + b"\0")
                with file.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
    return digest.hexdigest()[:16]


class ModelSpec(BaseModel):
    """One model: which backend, which weights, backend options (passed through), and its price."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["transformers", "openai", "vllm", "sentence-transformers", "openai-embeddings"] = "transformers"
    model: str = "smollm2"
    options: dict[str, Any] = Field(default_factory=dict)
    price: Price | None = None

    @field_validator("options")
    @classmethod
    def _no_secrets(cls, options: dict[str, Any]) -> dict[str, Any]:
        """A key written in a recipe would be copied to the manifest, the report and the call cache."""
        secret = next((k for k in options if k.lower() in SECRET_OPTIONS), None)
        if secret is not None:
            raise ValueError(f"option {secret!r} would write a secret into the recipe and the run's files: put it "
                             "in an environment variable and name the variable with api_key_env")
        return options

    @model_validator(mode="after")
    def _known_options(self):
        """A misspelt option fails here, naming the backend's options, not when the model first opens mid-run."""
        accepted = backend_options(self.backend)
        unknown = sorted(k for k in self.options if k not in accepted)
        if unknown:
            raise ValueError(f"the {self.backend} backend has no option {', '.join(map(repr, unknown))}; its options: "
                             + ", ".join(sorted(accepted)))
        return self

    def cache_name(self) -> str:
        """Identity of the outputs: backend, endpoint, weights and the options that change answers (not speed
        knobs). The endpoint is the one the client will call, also when it comes from $OPENAI_BASE_URL."""
        relevant = {k: v for k, v in sorted(self.options.items()) if k not in _SPEED_OPTIONS}
        if relevant.get("adapter") and self.backend == "transformers":
            relevant["adapter_digest"] = adapter_digest(relevant["adapter"])
        suffix = json.dumps(relevant, sort_keys=True, separators=(",", ":")) if relevant else ""
        base_url = ""
        if self.backend in ("openai", "openai-embeddings"):
            from dataflywheel.models.openai_client import resolve_base_url
            base_url = resolve_base_url(self.options.get("base_url"))
        return ":".join(p for p in (self.backend, base_url, self.model, suffix) if p)

    @property
    def is_embedder(self) -> bool:
        return self.backend in ("sentence-transformers", "openai-embeddings")

    @property
    def tokenizer_source(self) -> str | None:
        """A tokenizer that formats and counts for this model without loading it (None: none known)."""
        if self.backend in ("transformers", "vllm"):
            return self.model
        return self.options.get("chat_template_from") if self.backend == "openai" else None


BACKENDS = {"transformers": "dataflywheel.models.transformers_llm:TransformersLLM",
            "openai": "dataflywheel.models.openai_llm:OpenAILLM",
            "vllm": "dataflywheel.models.vllm_llm:VLLMLLM",
            "sentence-transformers": "dataflywheel.models.embed:SentenceTransformerEmbedder",
            "openai-embeddings": "dataflywheel.models.embed:OpenAIEmbedder"}
"""Backend name -> its class (the modules import their heavy libraries only when a model is built)."""


def backend_class(backend: str) -> type:
    module, name = BACKENDS[backend].split(":")
    return getattr(importlib.import_module(module), name)


@functools.cache
def backend_options(backend: str) -> frozenset[str]:
    """The options (keyword arguments besides the model) a backend takes."""
    parameters = inspect.signature(backend_class(backend).__init__).parameters
    return frozenset(name for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY)


def build_model(spec: ModelSpec, quiet: bool = False):
    """Instantiate the backend of a spec (imports only that backend); ``quiet`` hides weight-loading bars."""
    if quiet and spec.backend in ("transformers", "vllm", "sentence-transformers"):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    return backend_class(spec.backend)(spec.model, **spec.options)


class ModelRegistry:
    """Roles -> cached models. Roles not named fall back to the bundled defaults ('embedder' -> MiniLM).

    ``budget`` (shared by every model) stops new calls once spent (BudgetExceededError); ``dry_run`` sends
    no LLM call and counts what would be sent, tokens estimated. Picklable: models rebuild lazily where
    unpickled."""

    def __init__(self, specs: dict[str, dict | ModelSpec] | None = None, cache: CallCache | None = None,
                 quiet: bool = False, *, budget: Budget | None = None, dry_run: bool = False):
        self.specs = {role: ModelSpec.model_validate(spec) for role, spec in (specs or {}).items()}
        self.cache = cache
        self.quiet = quiet
        self.budget = budget
        self.dry_run = dry_run
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
            price = (spec.price.prompt_per_1k, spec.price.completion_per_1k) if spec.price else None
            if embedder:
                self._built[key] = CachedEmbedder(functools.partial(build_model, spec, self.quiet), self.cache,
                                                  spec.cache_name(), price=price, budget=self.budget)
            else:
                self._built[key] = CachedLLM(functools.partial(build_model, spec, self.quiet), self.cache,
                                             spec.cache_name(), price=price, budget=self.budget,
                                             tokenizer=spec.tokenizer_source, dry_run=self.dry_run)
        return self._built[key]

    def llm(self, role: str = "default") -> CachedLLM:
        return self._get(role, embedder=False)

    def embedder(self, role: str = "embedder") -> CachedEmbedder:
        return self._get(role, embedder=True)

    def trainable(self, role: str = "default"):
        """A new, unshared, uncached transformers backend for the role (safe to add LoRA to)."""
        spec = self.spec(role)
        if spec.backend != "transformers":
            raise ValueError(f"model role {role!r} uses the {spec.backend} backend; training needs a local "
                             "'transformers' model (set backend: transformers for this role)")
        return build_model(spec, self.quiet)

    def usage(self) -> dict[str, dict]:
        """Per model name: flat counters (calls, cache_hits, failures, prompt/completion tokens, cost, seconds,
        retries, rate_limited, timeouts, backoffs, waited_seconds, json_*) and the gauges concurrency and
        concurrency_min."""
        return {model.name: model.usage.as_dict() for model in self._built.values()}

    def close(self) -> None:
        """Close HTTP clients and the cache's connections (all reopen lazily if used again)."""
        for model in self._built.values():
            model.close()
        if self.cache is not None:
            self.cache.close()
