"""Word-count bounds on instruction and response."""

from __future__ import annotations

from pydantic import model_validator

from dataflywheel.ops.base import Filter, OpConfig
from dataflywheel.ops.registry import register
from dataflywheel.records import instruction_text, response_text
from dataflywheel.text import word_count


class LengthFilterConfig(OpConfig):
    min_instruction_words: int = 1
    max_instruction_words: int | None = None
    min_response_words: int = 1
    max_response_words: int | None = None
    max_instruction_tokens: int | None = None
    max_response_tokens: int | None = None
    tokenizer: str = "smollm2"
    """Tokenizer for the token bounds: 'smollm2' (bundled) or a Hugging Face model dir; loaded only when used."""

    @model_validator(mode="after")
    def _bounds_in_order(self):
        for part in ("instruction", "response"):
            low, high = getattr(self, f"min_{part}_words"), getattr(self, f"max_{part}_words")
            if high is not None and high < low:
                raise ValueError(f"max_{part}_words ({high}) is below min_{part}_words ({low})")
        return self


@register
class LengthFilter(Filter):
    """Reject records whose instruction or response word (or token) count is outside the bounds."""

    name = "select.length_filter"
    Config = LengthFilterConfig

    @property
    def cpu_bound(self) -> bool:
        """Word counts are pure Python, worth worker processes; token bounds load a tokenizer (once, here)."""
        return self.config.max_instruction_tokens is None and self.config.max_response_tokens is None

    def _tokens(self, text: str) -> int:
        from dataflywheel.models import load_tokenizer

        return len(load_tokenizer(self.config.tokenizer)(text, add_special_tokens=False)["input_ids"])

    def reject_reason(self, record: dict) -> str | None:
        for part, text in (("instruction", instruction_text(record)), ("response", response_text(record))):
            words = word_count(text)
            low, high = getattr(self.config, f"min_{part}_words"), getattr(self.config, f"max_{part}_words")
            if words < low:
                return f"{part} too short: {words} words < {low}"
            if high is not None and words > high:
                return f"{part} too long: {words} words > {high}"
            max_tokens = getattr(self.config, f"max_{part}_tokens")
            if max_tokens is not None and (tokens := self._tokens(text)) > max_tokens:
                return f"{part} too long: {tokens} tokens > {max_tokens}"
        return None
