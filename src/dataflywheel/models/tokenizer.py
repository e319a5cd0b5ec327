"""Tokenizers without weights, for operators and cached runs that only count, cut or format text."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str):
    """The Hugging Face tokenizer of a model name or dir ('smollm2' = the bundled SmolLM2), loaded once."""
    from transformers import AutoTokenizer

    from dataflywheel.models.bundled import resolve_llm_path

    return AutoTokenizer.from_pretrained(resolve_llm_path(name))
