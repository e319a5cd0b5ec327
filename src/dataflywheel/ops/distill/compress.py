"""Prompt compression operators: Selective Context and LLMLingua-style, by the token losses of a small LM.

Two operators rather than one with a ``method`` field: their knobs differ (unit level and scoring window vs
iterative window, coarse paragraph filter and its slack), and a recipe reads better when the op name says
the method. They share the record handling below: which turns, what is protected, the ratio, the meta.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dataflywheel.ops.base import Mapper, OpConfig
from dataflywheel.ops.distill.compressors import Job, count_tokens, llmlingua, offsets, selective_context
from dataflywheel.ops.distill.units import build_units, protected_spans, render
from dataflywheel.ops.registry import register

Protect = Literal["question", "code", "numbers"]


class CompressConfig(OpConfig):
    ratio: float = Field(default=0.5, gt=0.0, le=1.0)
    """Share of the prompt's tokens to keep (LLMLingua's rate): 0.3 keeps about 30%."""
    model: str = "compressor"
    """Model role whose token losses decide (without one in the recipe: the bundled SmolLM2)."""
    turns: Literal["last_user", "user"] = "last_user"
    """Compress the last user turn (the prompt the answer follows), or every user turn."""
    protect: list[Protect] = Field(default_factory=lambda: ["question", "code", "numbers"])
    """Never touched: ``question`` (an Alpaca record's instruction when the turn is instruction + input; else
    every sentence ending in '?'; else the first and last sentence), ``code`` (fenced blocks, inline code),
    ``numbers``."""
    protect_patterns: list[str] = Field(default_factory=list)
    """More regular expressions whose matches are never touched."""
    min_tokens: int = Field(default=64, ge=1)
    """Turns shorter than this are left as they are."""
    keep_original: bool = True
    """Keep each compressed turn's original text in ``meta.compress.original`` (lineage names the parent record
    by id; this keeps its text with the record)."""


class _Compressor(Mapper):
    method = ""

    def writes_scores(self) -> tuple[str, ...]:
        return ("compress.ratio",)

    def _compress(self, llm, jobs: list[Job]) -> None:
        raise NotImplementedError

    def _targets(self, record: dict) -> list[int]:
        users = [i for i, m in enumerate(record["messages"]) if m["role"] == "user"]
        if self.config.turns == "user":
            return users
        answered = [i for i, m in enumerate(record["messages"]) if m["role"] == "assistant"]
        before = [i for i in users if not answered or record.get("chosen") is not None or i < answered[-1]]
        return before[-1:]

    @staticmethod
    def _question(record: dict, text: str) -> str | None:
        alpaca = (record.get("meta") or {}).get("alpaca") or {}
        if alpaca.get("input") and text == f"{alpaca.get('instruction')}\n\n{alpaca['input']}":
            return alpaca["instruction"]
        return None

    def map_batch(self, records: list[dict]) -> list[dict]:
        cfg = self.config
        llm = self.context.models.llm(cfg.model)
        tokenizer = llm.tokenizer
        jobs: list[tuple[int, int, Job]] = []
        for r, record in enumerate(records):
            for turn in self._targets(record):
                text = record["messages"][turn]["content"]
                spans = offsets(tokenizer, text)
                if len(spans) < cfg.min_tokens:
                    self.counters[f"turns shorter than {cfg.min_tokens} tokens left as they were"] += 1
                    continue
                protect = protected_spans(text, tuple(cfg.protect), self._question(record, text),
                                          tuple(cfg.protect_patterns))
                units = build_units(text, spans, protect, cfg.level, getattr(cfg, "phrase_words", 4))  # phrase: SC only
                jobs.append((r, turn, Job(units, cfg.ratio)))
        self._compress(llm, [job for _, _, job in jobs])
        out = [dict(r, scores=dict(r.get("scores") or {}, **{"compress.ratio": 1.0})) for r in records]
        done: dict[int, list[tuple[int, Job, str]]] = {}
        for r, turn, job in jobs:
            done.setdefault(r, []).append((turn, job, render(job.units, job.dropped)))
        for r, changes in done.items():
            record = out[r]
            messages = list(record["messages"])
            before = after = 0
            for turn, job, text in changes:
                messages[turn] = {**messages[turn], "content": text}
                before += job.total
                after += count_tokens(tokenizer, text)
            info = {"method": self.method, "ratio": cfg.ratio, "achieved": round(after / before, 4),
                    "tokens": before, "kept_tokens": after}
            if after / before > cfg.ratio + 0.05:
                self.counters["prompts whose protected spans exceed the ratio (kept above it)"] += 1
            if cfg.keep_original:
                info["original"] = {str(turn): records[r]["messages"][turn]["content"] for turn, _, _ in changes}
            out[r] = {**record, "messages": messages, "meta": {**(record.get("meta") or {}), "compress": info},
                      "scores": {**record["scores"], "compress.ratio": after / before}}
        return out


class SelectiveContextConfig(CompressConfig):
    level: Literal["token", "word", "phrase", "sentence"] = "phrase"
    """Lexical unit dropped whole: a model token, a word, a phrase (see phrase_words) or a sentence."""
    window: int = Field(default=512, ge=16)
    """Tokens scored per model call; each window sees the original text before it as context."""
    phrase_words: int = Field(default=4, ge=1)
    """level phrase: a phrase ends at punctuation, a line break, or after this many words."""


@register
class SelectiveContext(_Compressor):
    """Selective Context: drop the lexical units with the least self-information under a small LM, to a ratio."""

    name = "distill.selective_context"
    Config = SelectiveContextConfig
    method = "selective_context"

    def _compress(self, llm, jobs: list[Job]) -> None:
        selective_context(llm, jobs, self.config.window)


class LLMLinguaConfig(CompressConfig):
    level: Literal["token", "word"] = "word"
    """Unit dropped whole: a model token (LLMLingua-1 proper; words may lose pieces) or a word (reads better)."""
    iterative_size: int = Field(default=200, ge=16)
    """Tokens per window of the iterative compression; each is scored after the compressed text before it."""
    coarse: bool = True
    """Coarse step: with two or more paragraphs, drop the least perplexing paragraphs whole first."""
    slack: float = Field(default=1.3, ge=1.0)
    """Coarse step: keep whole paragraphs, by perplexity, up to this multiple of the token budget."""


@register
class LLMLingua(_Compressor):
    """LLMLingua-style: budget controller, coarse paragraph filter, iterative compression by conditional loss."""

    name = "distill.llmlingua"
    Config = LLMLinguaConfig
    method = "llmlingua"

    def _compress(self, llm, jobs: list[Job]) -> None:
        cfg = self.config
        llmlingua(llm, jobs, cfg.iterative_size, cfg.coarse, cfg.slack)
