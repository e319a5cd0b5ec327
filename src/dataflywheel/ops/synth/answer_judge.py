"""Rubric judging of answers, shared by the generators that rank or keep answers by a judge's score.

Rubrics: Self-Rewarding's additive 5-point (0-5, "Score: N") and UltraFeedback's 1-5 rating ("Rating: N").
Two methods: the judge writes a justification ending in its score ``judge_samples`` times, averaged (the
Self-Rewarding paper), or one pass reading the expected score over the judge's probabilities of the scale
tokens, trusted only above a minimum probability mass.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from dataflywheel.models.llm import GenerationParams
from dataflywheel.models.token_mass import MIN_MASS
from dataflywheel.ops.base import OpConfig, Operator
from dataflywheel.ops.score.judge import expected_score
from dataflywheel.prompts import render_file

PROMPTS = Path(__file__).with_name("prompts")
RUBRICS = {"self_rewarding": ("rubric_self_rewarding.txt", 0, 5, "Score"),
           "ultrafeedback": ("rubric_ultrafeedback.txt", 1, 5, "Rating")}


def parse_judgement(text: str, rubric: str) -> float:
    """The score a judge wrote: the last '<Score|Rating>: N' on the scale, else a bare number on the scale
    on the last line (weak judges often drop the label); NaN when there is none."""
    _, low, high, label = RUBRICS[rubric]
    found = re.findall(rf"{label}\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)", text, flags=re.IGNORECASE)
    values = [float(v) for v in found if low <= float(v) <= high]
    if values:
        return values[-1]
    last = text.strip().splitlines()[-1] if text.strip() else ""
    bare = [float(v) for v in re.findall(r"(?<![\d.])(\d+(?:\.\d+)?)(?![\d.])", last) if low <= float(v) <= high]
    return bare[-1] if len(bare) == 1 else float("nan")


class AnswerJudgeConfig(OpConfig):
    """The judge settings of an operator that scores answers with a rubric."""

    judge_model: str = "judge"
    """Model role that rates each answer."""
    rubric: Literal["self_rewarding", "ultrafeedback"] = "self_rewarding"
    judge_method: Literal["generate", "expected"] = "generate"
    """generate: the judge writes a justification ending in its score, ``judge_samples`` times, averaged (the
    paper); expected: one pass, the expected score over the judge's probabilities of the scale tokens."""
    judge_min_mass: float = Field(default=MIN_MASS, ge=0.0, le=1.0)
    """expected: trust the scale tokens only when they hold this much of the probability (0: always, for
    a small judge that rarely answers with a bare number); below it the answer counts as unscored."""
    judge_samples: int = Field(default=3, ge=1)
    judge_temperature: float = Field(default=0.7, ge=0.0)
    judge_max_tokens: int = Field(default=256, ge=8)


def judge_roles(roles: dict[str, str], uses_judge: bool) -> dict[str, str]:
    """An operator's model roles without ``judge_model`` when its judge is off (lineage names only models used)."""
    return roles if uses_judge else {k: v for k, v in roles.items() if k != "judge_model"}


def judge_answers(op: Operator, questions: list[str], answers: list[list[str]]) -> list[list[float]]:
    """The mean judge score of every answer to every question (NaN where no judgement could be read, counted
    in ``op.counters``). ``op.config`` is an ``AnswerJudgeConfig``."""
    cfg = op.config
    template, low, high, _ = RUBRICS[cfg.rubric]
    flat = [(i, a) for i, choices in enumerate(answers) for a in choices]
    conversations = [[{"role": "user", "content": render_file(
        PROMPTS / template, question=questions[i], response=a, score_only=cfg.judge_method == "expected")}]
        for i, a in flat]
    judge = op.context.models.llm(cfg.judge_model)
    if not conversations:
        means = []
    elif cfg.judge_method == "expected":
        tops = judge.chat_top_logprobs(conversations, 20, [str(s) for s in range(low, high + 1)])
        means = [expected_score(top, low, high, cfg.judge_min_mass) for top in tops]
        op.counters["judgements below the minimum mass"] += sum(math.isnan(m) for m in means)
    else:
        texts = judge.chat(conversations, GenerationParams(
            n=cfg.judge_samples, temperature=cfg.judge_temperature, max_tokens=cfg.judge_max_tokens,
            seed=op.context.seed))
        means = []
        for samples in texts:
            parsed = [parse_judgement(t, cfg.rubric) for t in samples]
            valid = [v for v in parsed if not math.isnan(v)]
            op.counters["judgements without a score"] += len(parsed) - len(valid)
            means.append(sum(valid) / len(valid) if valid else float("nan"))
    out: list[list[float]] = [[] for _ in answers]
    for (i, _), value in zip(flat, means):
        out[i].append(value)
    return out
