"""LLM-as-a-judge ratings: Alpagasus (0-5) and DEITA quality / complexity (1-6).

The score is the expected value over the score tokens' probabilities when the backend gives them
(G-Eval style), else the first number the judge writes; unparsable answers give NaN and are counted."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

from dataflywheel.models.llm import GenerationParams, ModelFeatureError
from dataflywheel.ops.base import OpConfig, Scorer
from dataflywheel.ops.registry import register
from dataflywheel.prompts import render_file
from dataflywheel.records import instruction_text, response_text

PROMPTS = Path(__file__).with_name("prompts")
RUBRICS = {"alpagasus": (0, 5), "deita_quality": (1, 6), "deita_complexity": (1, 6)}


def expected_score(top: dict[str, float], low: int, high: int) -> float:
    """sum p(s) * s over the score tokens among the top next tokens, normalised over those tokens; NaN if none."""
    mass: dict[int, float] = {}
    for token, logprob in top.items():
        text = token.strip()
        if text.isdigit() and low <= int(text) <= high:
            mass[int(text)] = mass.get(int(text), 0.0) + math.exp(logprob)
    total = sum(mass.values())
    return sum(s * p for s, p in mass.items()) / total if total > 0 else float("nan")


def parse_score(text: str, low: int, high: int) -> float:
    """The first number in the judge's answer that lies on the scale; NaN if none does."""
    for match in re.finditer(r"\d+(?:\.\d+)?", text):
        value = float(match.group())
        if low <= value <= high:
            return value
    return float("nan")


class JudgeConfig(OpConfig):
    rubric: Literal["alpagasus", "deita_quality", "deita_complexity"] = "alpagasus"
    model: str = "judge"
    """Model role; without a 'judge' in the recipe this is the bundled SmolLM2 (a weak judge: see docs)."""
    method: Literal["auto", "logprobs", "generate"] = "auto"
    """auto: expected score from token probabilities when the backend gives them, else parse the answer."""
    score_name: str | None = None
    """Default: judge.<rubric>."""


@register
class JudgeScorer(Scorer):
    """LLM-judge rating with the Alpagasus (0-5) or DEITA quality/complexity (1-6) rubric."""

    name = "score.judge"
    Config = JudgeConfig

    @property
    def score_name(self) -> str:
        return self.config.score_name or f"judge.{self.config.rubric}"

    def _conversations(self, records: list[dict]) -> list[list[dict]]:
        template = PROMPTS / f"{self.config.rubric}.txt"
        return [[{"role": "user", "content": render_file(template, instruction=instruction_text(r),
                                                         response=response_text(r))}] for r in records]

    def score_batch(self, records: list[dict]) -> list[float]:
        llm = self.context.models.llm(self.config.model)
        low, high = RUBRICS[self.config.rubric]
        conversations = self._conversations(records)
        scores = [float("nan")] * len(records)
        if self.config.method in ("auto", "logprobs"):
            try:
                tops = llm.chat_top_logprobs(conversations, 20)
                scores = [expected_score(top, low, high) for top in tops]
            except ModelFeatureError:
                if self.config.method == "logprobs":
                    raise
        todo = [i for i, s in enumerate(scores) if math.isnan(s)] if self.config.method != "logprobs" else []
        if todo:
            answers = llm.chat([conversations[i] for i in todo], GenerationParams(max_tokens=8))
            for i, [answer] in zip(todo, answers):
                scores[i] = parse_score(answer, low, high)
        unparsed = sum(math.isnan(s) for s in scores)
        if unparsed:
            self.counters["unparsable judge answers"] += unparsed
        return scores
