"""Preference pairs (Self-Rewarding / UltraFeedback style): sample N responses per prompt, judge each,
chosen = the best, rejected = the worst, kept only with a clear margin.

Self-Rewarding (Yuan et al. 2024): N = 4 samples at temperature 0.7, top_p 0.9; the additive 5-point
rubric, each response judged 3 times and averaged; pairs with equal scores dropped. The output is a
preference record (prompt turns, ``chosen``, ``rejected``) that writes as TRL's preference format.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from dataflywheel.models.llm import GenerationParams
from dataflywheel.models.token_mass import MIN_MASS
from dataflywheel.ops.base import Candidate, Generator, GeneratorConfig, Rejected
from dataflywheel.ops.registry import register
from dataflywheel.ops.score.judge import expected_score
from dataflywheel.prompts import render_file
from dataflywheel.records import prompt_turns

PROMPTS = Path(__file__).with_name("prompts")
RUBRICS = {"self_rewarding": ("preference_self_rewarding.txt", 0, 5, "Score"),
           "ultrafeedback": ("preference_ultrafeedback.txt", 1, 5, "Rating")}


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


class PreferencePairsConfig(GeneratorConfig):
    keep_inputs: bool = False
    """The input prompts are replaced by the pairs made from them (true: pass them on as well)."""
    model: str = "default"
    """Model role that answers (the policy)."""
    judge_model: str = "judge"
    """Model role that rates each answer (the same model as ``model`` for Self-Rewarding)."""
    rubric: Literal["self_rewarding", "ultrafeedback"] = "self_rewarding"
    samples: int = Field(default=4, ge=2)
    """Responses sampled per prompt (N)."""
    temperature: float = Field(default=0.7, gt=0.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    max_tokens: int = Field(default=512, ge=1)
    judge_method: Literal["generate", "expected"] = "generate"
    """generate: the judge writes a justification ending in its score, ``judge_samples`` times, averaged (the
    paper); expected: one pass, the expected score over the judge's probabilities of the scale tokens."""
    judge_min_mass: float = Field(default=MIN_MASS, ge=0.0, le=1.0)
    """expected: trust the scale tokens only when they hold this much of the probability (0: always, for
    a small judge that rarely answers with a bare number); below it the answer counts as unscored."""
    judge_samples: int = Field(default=3, ge=1)
    judge_temperature: float = Field(default=0.7, ge=0.0)
    judge_max_tokens: int = Field(default=256, ge=8)
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
        scores = self._judge(prompts, answers)
        for record, turns, responses, values in zip(records, prompts, answers, scores):
            yield self._pair(record, turns, responses, values)

    def _judge(self, prompts: list[list[dict]], answers: list[list[str]]) -> list[list[float]]:
        """The mean judge score of every answer (NaN where no judgement parsed)."""
        cfg = self.config
        template, low, high, _ = RUBRICS[cfg.rubric]
        question = [turns[-1]["content"] for turns in prompts]
        flat = [(i, a) for i, choices in enumerate(answers) for a in choices]
        conversations = [[{"role": "user", "content": render_file(
            PROMPTS / template, question=question[i], response=a, score_only=cfg.judge_method == "expected")}]
            for i, a in flat]
        judge = self.context.models.llm(cfg.judge_model)
        if cfg.judge_method == "expected":
            tops = judge.chat_top_logprobs(conversations, 20, [str(s) for s in range(low, high + 1)])
            means = [expected_score(top, low, high, cfg.judge_min_mass) for top in tops]
            self.counters["judgements below the minimum mass"] += sum(math.isnan(m) for m in means)
        else:
            texts = judge.chat(conversations, GenerationParams(
                n=cfg.judge_samples, temperature=cfg.judge_temperature, max_tokens=cfg.judge_max_tokens,
                seed=self.context.seed))
            means = []
            for samples in texts:
                parsed = [parse_judgement(t, cfg.rubric) for t in samples]
                valid = [v for v in parsed if not math.isnan(v)]
                self.counters["judgements without a score"] += len(parsed) - len(valid)
                means.append(sum(valid) / len(valid) if valid else float("nan"))
        out: list[list[float]] = [[] for _ in answers]
        for (i, _), value in zip(flat, means):
            out[i].append(value)
        return out

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
