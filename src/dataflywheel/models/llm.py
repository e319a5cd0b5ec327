"""The LLM and Embedder interfaces every operator uses; backends live behind them."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dataflywheel.models.errors import ModelFeatureError

Conversation = list[dict]
__all__ = ["LLM", "Conversation", "Embedder", "GenerationParams", "ModelFeatureError", "tokenizer_of"]


class GenerationParams(BaseModel):
    """Sampling parameters shared by every backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: dict | None = None
    """Constrain the answer to this JSON schema where the backend can (guided decoding, grammar)."""

    @property
    def cacheable(self) -> bool:
        """Greedy or seeded sampling gives the same answer again; unseeded sampling must not be cached."""
        return self.temperature == 0.0 or self.seed is not None


def tokenizer_of(llm):
    """The model's Hugging Face tokenizer, or None where its backend shows none (an OpenAI-compatible server
    without ``chat_template_from``); callers then estimate. A tokenizer that is named but cannot load raises."""
    return getattr(llm, "tokenizer", None)


def reads_as(token: str, labels: Sequence[str]) -> str | None:
    """The label a token's text reads as (surrounding space and case ignored: ' Yes' reads as 'yes')."""
    text = token.strip().lower()
    return next((label for label in labels if label.lower() == text), None)


@runtime_checkable
class LLM(Protocol):
    """A language model. ``name`` identifies backend and weights (it is part of every cache key)."""

    name: str

    def chat(self, conversations: list[Conversation], params: GenerationParams) -> list[list[str]]:
        """``params.n`` assistant replies per conversation (chat template applied)."""

    def complete(self, prompts: list[str], params: GenerationParams) -> list[list[str]]:
        """``params.n`` raw continuations per prompt (no chat template)."""

    def logprobs(self, prefixes: list[str], continuations: list[str]) -> list[list[float]]:
        """Log-probability of each continuation token given prefix + earlier continuation tokens."""

    def top_logprobs(self, prefixes: list[str], k: int = 20, labels: Sequence[str] = ()) -> list[dict[str, float]]:
        """The ``k`` most likely next tokens after each prefix, with their log-probabilities. Backends that
        hold the whole distribution (transformers) add every token that ``reads_as`` one of ``labels``,
        wherever it ranks; API backends give the top ``k`` only (at most 20)."""

    def chat_top_logprobs(self, conversations: list[Conversation], k: int = 20,
                          labels: Sequence[str] = ()) -> list[dict[str, float]]:
        """The ``k`` most likely first tokens of the assistant reply to each conversation (and
        ``labels``, as in top_logprobs)."""

    def format_chat(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        """The raw prompt text of a conversation under this model's chat template."""


@runtime_checkable
class Embedder(Protocol):
    """A text embedder; rows are L2-normalised float32."""

    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 array [len(texts), dim], each row of unit length."""
