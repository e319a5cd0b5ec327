"""Embedders: sentence-transformers (default: the bundled all-MiniLM-L6-v2) and OpenAI-compatible /embeddings."""

from __future__ import annotations

import numpy as np

from typing import Any, Iterator

from dataflywheel.models.bundled import MINILM, resolve_embedder_path
from dataflywheel.models.openai_client import OpenAIClient
from dataflywheel.models.usage import Usage


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model dir ('minilm' = the bundled all-MiniLM-L6-v2), loaded offline."""

    def __init__(self, model: str = MINILM, *, device: str | None = None, batch_size: int = 64,
                 show_progress: bool = False):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(resolve_embedder_path(model), device=device, local_files_only=True)
        self.name = f"sentence-transformers:{model}"
        self.batch_size, self.show_progress = batch_size, show_progress
        self.usage = Usage()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
            return np.zeros((0, dimension()), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=self.show_progress)
        return _normalise(vectors)


class OpenAIEmbedder:
    """An OpenAI-compatible ``/embeddings`` endpoint (requests of ``batch_size`` texts, several in flight)."""

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 batch_size: int = 64, timeout: float = 120.0, max_retries: int = 5, backoff: float = 0.5,
                 concurrency: int = 4, max_concurrency: int | None = None, max_consecutive_failures: int = 10):
        self.model = model
        self.client = OpenAIClient(base_url, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries,
                                   backoff=backoff, concurrency=concurrency, max_concurrency=max_concurrency,
                                   max_consecutive_failures=max_consecutive_failures)
        self.name = f"openai-embeddings:{self.client.base_url}:{model}"
        self.batch_size = batch_size
        self.usage = Usage()

    @property
    def usage(self) -> Usage:
        return self._usage

    @usage.setter
    def usage(self, usage: Usage) -> None:
        self._usage = usage
        self.client.usage = usage

    def close(self) -> None:
        self.client.close()

    def embed_each(self, texts: list[str]) -> Iterator[tuple[int, Any]]:
        """``(index, unit vector or exception)`` per text, a request's texts together as it answers."""
        def check(data: dict) -> None:
            if not isinstance(data.get("data"), list):
                raise ValueError("no 'data' in the answer")

        async def one(batch: list[str], shared) -> list[np.ndarray]:
            data = await self.client.request("embeddings", {"model": self.model, "input": batch}, check, shared)
            self.usage.count_tokens(int((data.get("usage") or {}).get("prompt_tokens") or 0))
            rows = sorted(data["data"], key=lambda d: d.get("index", 0))
            if len(rows) != len(batch):
                raise ValueError(f"asked for {len(batch)} embeddings, got {len(rows)}")
            # servers that return one vector per token (llama.cpp without pooling) get mean pooling
            vectors = [np.asarray(r["embedding"], dtype=np.float32).reshape(-1, np.shape(r["embedding"])[-1]).mean(0)
                       for r in rows]
            return list(_normalise(np.array(vectors, dtype=np.float32)))

        starts = list(range(0, len(texts), self.batch_size))
        for b, result in self.client.each(one, [list(texts[s:s + self.batch_size]) for s in starts]):
            for offset in range(min(self.batch_size, len(texts) - starts[b])):
                yield starts[b] + offset, result if isinstance(result, Exception) else result[offset]

    def embed(self, texts: list[str]) -> np.ndarray:
        from dataflywheel.models.openai_llm import collect

        vectors = collect(self.embed_each(texts), len(texts))
        return np.array(vectors, dtype=np.float32) if vectors else np.zeros((0, 0), dtype=np.float32)
