"""The heuristic preset for instruction data: every rule in one pass, the first failing rule's reason."""

from __future__ import annotations

from pydantic import Field

from dataflywheel.ops.base import Filter, OpConfig
from dataflywheel.ops.registry import register
from dataflywheel.ops.select.heuristic_filters import (BrokenResponseFilter, RefusalFilter, RepetitionFilter,
                                                       SymbolRatioFilter)
from dataflywheel.ops.select.language_filter import LanguageFilter
from dataflywheel.ops.select.length_filter import LengthFilter


INSTRUCTION_DUPLICATE_NGRAM = {10: 0.15}  # repeated occurrences only (Gopher / DataTrove counting)


class AlpacaRulesConfig(OpConfig):
    length: bool = True
    """Word-count bounds on instruction and response."""
    min_instruction_words: int = 3
    max_instruction_words: int = 1024
    min_response_words: int = 2
    max_response_words: int = 2048
    broken: bool = True
    """Empty responses and responses that repeat the instruction."""
    truncation: bool = True
    """Responses that look cut off (prose ending mid-sentence, code leaving brackets open)."""
    symbols: bool = True
    max_symbol_share: float = 0.5
    repetition: bool = True
    refusals: bool = True
    languages: list[str] = Field(default_factory=lambda: ["en"])
    """Accepted languages; an empty list turns the language rule off."""
    min_language_confidence: float = 0.65
    code_aware: bool = True
    """Truncation, symbol, repetition, refusal and language rules judge the prose and leave code out."""


@register
class AlpacaRules(Filter):
    """Preset for instruction data: length, broken/truncated response, symbols, repetition, refusals, language."""

    name = "select.alpaca_rules"
    cpu_bound = True
    Config = AlpacaRulesConfig

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        cfg = self.config
        code = cfg.code_aware
        self.rules: list[tuple[str, Filter]] = []
        if cfg.length:
            self.rules.append(("length", LengthFilter(LengthFilter.Config(
                min_instruction_words=cfg.min_instruction_words, max_instruction_words=cfg.max_instruction_words,
                min_response_words=cfg.min_response_words, max_response_words=cfg.max_response_words))))
        if cfg.broken or cfg.truncation:
            # one rule, so reasons stay "broken: ..." whichever part of it rejects
            broken = BrokenResponseFilter(BrokenResponseFilter.Config(check_truncation=cfg.truncation,
                                                                      code_aware=code))
            self.rules.append(("broken", broken if cfg.broken else _TruncationOnly(broken)))
        if cfg.symbols:
            self.rules.append(("symbols", SymbolRatioFilter(SymbolRatioFilter.Config(max_share=cfg.max_symbol_share,
                                                                                     code_aware=code))))
        if cfg.repetition:
            # Gopher's duplicate 5..10-gram limits were made for web pages; see docs/decisions.md for the
            # limits the preset uses on instruction data and what they reject on AlpacaEval.
            self.rules.append(("repetition", RepetitionFilter(RepetitionFilter.Config(
                duplicate_ngram=INSTRUCTION_DUPLICATE_NGRAM, code_aware=code))))
        if cfg.refusals:
            self.rules.append(("refusal", RefusalFilter(RefusalFilter.Config(code_aware=code))))
        if cfg.languages:
            self.rules.append(("language", LanguageFilter(LanguageFilter.Config(
                languages=cfg.languages, min_confidence=cfg.min_language_confidence, code_aware=code))))

    def reject_reason(self, record: dict) -> str | None:
        for rule, check in self.rules:
            reason = check.reject_reason(record)
            if reason:
                return f"{rule}: {reason}"
        return None


class _TruncationOnly:
    """The truncation part of a BrokenResponseFilter (when the empty/echo checks are switched off)."""

    def __init__(self, broken: BrokenResponseFilter):
        self.broken = broken

    def reject_reason(self, record: dict) -> str | None:
        reason = self.broken.reject_reason(record)
        return reason if reason and reason.startswith("truncated") else None
