"""The model layer: LLM and Embedder interfaces, backends, the call cache, the ledger and the budget."""

from dataflywheel.models.cache import CallCache
from dataflywheel.models.cached import CachedEmbedder, CachedLLM
from dataflywheel.models.errors import (BudgetExceededError, ModelAuthError, ModelFeatureError, ModelRequestError,
                                        ModelUnavailableError)
from dataflywheel.models.llm import LLM, Embedder, GenerationParams
from dataflywheel.models.registry import ModelRegistry, ModelSpec, Price
from dataflywheel.models.tokenizer import load_tokenizer
from dataflywheel.models.usage import Budget, Usage

__all__ = ["LLM", "Budget", "BudgetExceededError", "CachedEmbedder", "CachedLLM", "CallCache", "Embedder",
           "GenerationParams", "ModelAuthError", "ModelFeatureError", "ModelRegistry", "ModelRequestError", "ModelSpec",
           "ModelUnavailableError", "Price", "Usage", "load_tokenizer"]
