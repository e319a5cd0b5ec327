"""Preference pairs (Self-Rewarding / UltraFeedback style): sample N responses per prompt, judge each,
chosen = the best, rejected = the worst, kept only with a clear margin.

Self-Rewarding (Yuan et al. 2024): N = 4 samples at temperature 0.7, top_p 0.9; the additive 5-point
rubric, each response judged 3 times and averaged; pairs with equal scores dropped. The output is a
preference record (prompt turns, ``chosen``, ``rejected``) that writes as TRL's preference format.
"""

from __future__ import annotations

import json
import math

from pydantic import Field

from dataflywheel.models.llm import GenerationParams
from dataflywheel.ops.base import Candidate, Generator, GeneratorConfig, Rejected
from dataflywheel.ops.registry import register
from dataflywheel.ops.synth.answer_judge import AnswerJudgeConfig, judge_answers, parse_judgement
from dataflywheel.records import prompt_turns

__all__ = ["PreferencePairs", "PreferencePairsConfig", "parse_judgement"]


class PreferencePairsConfig(GeneratorConfig, AnswerJudgeConfig):
    keep_inputs: bool = False
    """The input prompts are replaced by the pairs made from them (true: pass them on as well)."""
    model: str = "default"
    """Model role that answers (the policy)."""
    samples: int = Field(default=4, ge=2)
    """Responses sampled per prompt (N)."""
    temperature: float = Field(default=0.7, gt=0.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    max_tokens: int = Field(default=512, ge=1)
    min_margin: float = Field(default=0.5, gt=0.0)
    """Keep a pair only when chosen's score exceeds rejected's by at least this much (ties are always dropped)."""


@register
class PreferencePairs(Generator):
    """Preference pairs: N sampled answers per prompt, judged (Self-Rewarding or UltraFeedback rubric), best vs worst."""

    name = "synth.preference_pairs"
    Config = PreferencePairsConfig

    def writes_scores(self) -> tuple[str, ...]:
        return ("preference.chosen", "preference.rejected", "preference.margin")

    def generate(self, records: list[dict]):
        cfg = self.config
        seed = self.context.seed
        prompts = [prompt_turns(r) for r in records]
        sampled = self.context.models.llm(cfg.model).chat(prompts, GenerationParams(
            n=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=seed))
        answers = [list(dict.fromkeys(a.strip() for a in choices if a.strip())) for choices in sampled]
        scores = judge_answers(self, [turns[-1]["content"] for turns in prompts], answers)
        for record, turns, responses, values in zip(records, prompts, answers, scores):
            yield self._pair(record, turns, responses, values)

    def _pair(self, record: dict, turns: list[dict], responses: list[str], values: list[float]):
        cfg = self.config
        scored = [(v, r) for v, r in zip(values, responses) if not math.isnan(v)]
        raw = json.dumps({"responses": responses, "scores": [None if math.isnan(v) else v for v in values]},
                         ensure_ascii=False)
        if len(scored) < 2:
            return Rejected(f"fewer than 2 distinct scored responses ({len(scored)} of {cfg.samples} samples)",
                            raw=raw, parents=[record["id"]])
        best = max(scored, key=lambda x: x[0])
        worst = min(scored, key=lambda x: x[0])
        margin = best[0] - worst[0]
        if margin < cfg.min_margin:
            return Rejected(f"margin {margin:.2f} below {cfg.min_margin:g} (best {best[0]:.2f}, worst {worst[0]:.2f})",
                            raw=raw, parents=[record["id"]])
        pair = {"messages": turns, "chosen": {"role": "assistant", "content": best[1]},
                "rejected": {"role": "assistant", "content": worst[1]},
                "scores": {"preference.chosen": best[0], "preference.rejected": worst[0], "preference.margin": margin}}
        return Candidate(pair, parents=[record["id"]],
                         details={"method": "preference_pairs", "rubric": cfg.rubric, "scores": [v for v, _ in scored]})
