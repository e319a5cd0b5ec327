"""Heuristic quality filters: symbols, repetition, refusals and boilerplate, broken responses."""

from __future__ import annotations

from pydantic import Field

from dataflywheel.algorithms.text_quality import (duplicate_line_shares, duplicate_ngram_char_share, non_alnum_share,
                                                  split_code, top_ngram_char_share, truncation_sign, words)
from dataflywheel.ops.base import Filter, OpConfig
from dataflywheel.ops.registry import register
from dataflywheel.records import TextField, instruction_text, response_text, text_of
from dataflywheel.text import dedup_key


def prose_of(record: dict, field: str, code_aware: bool) -> str:
    """The text a prose rule judges: without its code when ``code_aware``."""
    text = text_of(record, field)
    return split_code(text)[0] if code_aware else text


class SymbolRatioConfig(OpConfig):
    field: TextField = "response"
    max_share: float = Field(default=0.5, ge=0.0, le=1.0)
    """Largest share of characters that are neither alphanumeric nor whitespace."""
    code_aware: bool = True
    """Judge the prose only: fenced code blocks and unfenced lines that read as code are left out."""


@register
class SymbolRatioFilter(Filter):
    """Reject text made mostly of symbols (markup debris, ASCII art, encoding garbage)."""

    name = "select.symbol_ratio_filter"
    cpu_bound = True
    Config = SymbolRatioConfig

    def reject_reason(self, record: dict) -> str | None:
        share = non_alnum_share(prose_of(record, self.config.field, self.config.code_aware))
        if share > self.config.max_share:
            return f"{self.config.field} is {share:.2f} symbols > {self.config.max_share}"
        return None


# Gopher's thresholds (Rae et al., 2021): top 2/3/4-gram shares, duplicate 5..10-gram shares.
TOP_NGRAM = {2: 0.20, 3: 0.18, 4: 0.16}
DUPLICATE_NGRAM = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


class RepetitionConfig(OpConfig):
    field: TextField = "response"
    min_words: int = Field(default=30, ge=1)
    """Texts shorter than this are not judged (the statistics are noise on a few words)."""
    top_ngram: dict[int, float] = Field(default_factory=lambda: dict(TOP_NGRAM))
    duplicate_ngram: dict[int, float] = Field(default_factory=lambda: dict(DUPLICATE_NGRAM))
    max_duplicate_lines: float = 0.3
    max_duplicate_line_chars: float = 0.2
    code_aware: bool = True
    """Judge only the prose (code repeats names and lines by nature); code blocks are left out."""


@register
class RepetitionFilter(Filter):
    """Reject repetitive text by Gopher's repeated n-gram and duplicate-line rules, each with its own reason."""

    name = "select.repetition_filter"
    cpu_bound = True
    Config = RepetitionConfig

    def reject_reason(self, record: dict) -> str | None:
        cfg = self.config
        text = prose_of(record, cfg.field, cfg.code_aware)
        tokens = words(text)
        if len(tokens) < cfg.min_words:
            return None
        lines, chars = duplicate_line_shares(text)
        if lines > cfg.max_duplicate_lines:
            return f"{cfg.field} repeats lines: {lines:.2f} of lines are duplicates > {cfg.max_duplicate_lines}"
        if chars > cfg.max_duplicate_line_chars:
            return f"{cfg.field} repeats lines: {chars:.2f} of characters in duplicate lines > {cfg.max_duplicate_line_chars}"
        for n, limit in sorted(cfg.top_ngram.items()):
            share = top_ngram_char_share(tokens, n)
            if share > limit:
                return f"{cfg.field} repeats a {n}-gram: it covers {share:.2f} of characters > {limit}"
        for n, limit in sorted(cfg.duplicate_ngram.items()):
            share = duplicate_ngram_char_share(tokens, n)
            if share > limit:
                return f"{cfg.field} repeats {n}-grams: {share:.2f} of characters are in duplicated {n}-grams > {limit}"
        return None


REFUSAL_PHRASES = [
    "as an ai language model", "as a language model", "as an ai assistant", "i'm just an ai", "i am just an ai",
    "i cannot fulfill", "i can't fulfill", "i cannot provide", "i can't provide", "i cannot assist", "i can't assist",
    "i'm sorry, but i cannot", "i'm sorry, but i can't", "i am sorry, but i cannot", "i am unable to",
    "i'm unable to", "i do not have the ability", "i don't have the ability", "i don't have personal",
    "i do not have personal", "my knowledge cutoff", "as of my last update", "i'm not able to",
    "i was trained by openai", "i was created by openai", "i am an ai developed by", "i'm an ai developed by",
    "as a large language model",
]


class RefusalConfig(OpConfig):
    field: TextField = "response"
    phrases: list[str] = Field(default_factory=lambda: list(REFUSAL_PHRASES))
    """Case-insensitive phrases; a response containing any of them is rejected (no bare product names:
    code and prose about OpenAI's API are not refusals)."""
    code_aware: bool = True
    """Look for the phrases in the prose only (a string literal in code is not a refusal)."""


@register
class RefusalFilter(Filter):
    """Reject refusals and assistant boilerplate ("as an AI language model", "I cannot ...")."""

    name = "select.refusal_filter"
    cpu_bound = True
    Config = RefusalConfig

    def reject_reason(self, record: dict) -> str | None:
        text = prose_of(record, self.config.field, self.config.code_aware).lower().replace("\u2019", "'")
        for phrase in self.config.phrases:
            if phrase.lower() in text:
                return f"{self.config.field} contains refusal/boilerplate phrase {phrase!r}"
        return None


class BrokenResponseConfig(OpConfig):
    check_truncation: bool = True
    code_aware: bool = True
    """An answer that ends in code is truncated only if its code leaves brackets open (not by its last
    character: ';' or '{' end complete code)."""


@register
class BrokenResponseFilter(Filter):
    """Reject empty responses, responses that repeat the instruction, and responses that look truncated."""

    name = "select.broken_response_filter"
    cpu_bound = True
    Config = BrokenResponseConfig

    def reject_reason(self, record: dict) -> str | None:
        response = response_text(record)
        if not response.strip():
            return "empty response"
        if dedup_key(response) == dedup_key(instruction_text(record)):
            return "response repeats the instruction"
        if self.config.check_truncation:
            sign = truncation_sign(response, self.config.code_aware)
            if sign:
                return f"truncated response: {sign}"
        return None
