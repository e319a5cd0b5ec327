"""LLM-as-a-judge ratings: Alpagasus (0-5) and DEITA quality / complexity (1-6).

The score is the expected value over the score tokens' probabilities when the backend gives them
(G-Eval style), else the first number the judge writes; unparsable answers give NaN and are counted."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from dataflywheel.models.llm import GenerationParams, ModelFeatureError
from dataflywheel.models.token_mass import MIN_MASS, label_mass, trusted
from dataflywheel.ops.base import OpConfig, Scorer
from dataflywheel.ops.registry import register
from dataflywheel.prompts import render_file
from dataflywheel.records import instruction_text, response_text

PROMPTS = Path(__file__).with_name("prompts")
RUBRICS = {"alpagasus": (0, 5), "deita_quality": (1, 6), "deita_complexity": (1, 6)}


def expected_score(top: dict[str, float], low: int, high: int, min_mass: float = MIN_MASS) -> float:
    """sum p(s) * s over the score tokens among the next-token candidates, normalised over those tokens;
    NaN when they hold less than ``min_mass`` of the probability (the model was not answering a score)."""
    def on_scale(token: str) -> int | None:
        text = token.strip()
        return int(text) if text.isdigit() and low <= int(text) <= high else None

    mass = label_mass(top, on_scale)
    if not trusted(mass, min_mass):
        return float("nan")
    return sum(s * p for s, p in mass.items()) / sum(mass.values())


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
    min_mass: float = Field(default=MIN_MASS, ge=0.0, le=1.0)
    """Trust the token probabilities only when the scale's tokens hold at least this much of them; else
    generate the answer and parse it (counted in the manifest)."""


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
                tops = llm.chat_top_logprobs(conversations, 20, [str(s) for s in range(low, high + 1)])
                scores = [expected_score(top, low, high, self.config.min_mass) for top in tops]
                low_mass = sum(math.isnan(s) for s in scores)
                if low_mass:
                    self.counters[f"scale tokens below {self.config.min_mass} of the probability: generated and "
                                  "parsed instead"] += low_mass
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
