"""The model layer: LLM and Embedder interfaces, backends, and the call cache."""

from dataflywheel.models.cache import CallCache
from dataflywheel.models.cached import CachedEmbedder, CachedLLM, Usage
from dataflywheel.models.llm import LLM, Embedder, GenerationParams, ModelFeatureError
from dataflywheel.models.registry import ModelRegistry, ModelSpec

__all__ = ["LLM", "CachedEmbedder", "CachedLLM", "CallCache", "Embedder", "GenerationParams", "ModelFeatureError",
           "ModelRegistry", "ModelSpec", "Usage"]
