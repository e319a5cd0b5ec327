"""Pointwise LLM-as-a-judge: a rubric score per record, averaged over judge samples, with the judge's rationales.

Rubrics (``rubrics.py``): Alpagasus 0-5, DEITA quality 1-6, Self-Rewarding additive 0-5, MT-Bench single-answer
grading 1-10 and reference-guided grading 1-10 against a reference answer in ``meta``. The judge writes its
answer ``samples`` times (seeded sampling; greedy for one sample); the score is the mean of the samples it
could read. ``score.judge`` is the one-pass variant that reads the expected score from token probabilities."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from dataflywheel.ops.base import Mapper, OpConfig
from dataflywheel.ops.evolve.fields import answer_text, meta_value, sampling
from dataflywheel.ops.evolve.rubrics import RUBRICS
from dataflywheel.ops.registry import register
from dataflywheel.ops.score.ifd import truncate
from dataflywheel.records import instruction_text

NAN = float("nan")


class EvolveJudgeConfig(OpConfig):
    rubric: Literal["alpagasus", "deita_quality", "self_rewarding", "mt_bench", "reference"] = "mt_bench"
    """alpagasus 0-5, deita_quality 1-6, self_rewarding (additive) 0-5, mt_bench 1-10, reference 1-10 (needs a
    reference answer)."""
    model: str = "judge"
    """Model role of the judge; without a 'judge' in the recipe the bundled SmolLM2 (a weak judge: see docs)."""
    samples: int = Field(default=1, ge=1)
    """Judge answers per record, averaged (the Self-Rewarding paper uses 3); 1: one greedy answer."""
    temperature: float = Field(default=0.7, ge=0.0)
    """Sampling temperature when ``samples`` > 1 (seeded by the run seed)."""
    max_tokens: int = Field(default=256, ge=1)
    """Length of each judge answer (rationale and score)."""
    reference: str = "reference"
    """rubric reference: the ``meta`` key holding the reference answer (dots reach into nested objects)."""
    max_text_tokens: int = Field(default=1024, ge=16)
    """Instruction, response and reference are each cut to this many tokens inside the judge's prompt."""
    score_name: str | None = None
    """Default: judge.<rubric>."""


@register
class EvolveJudge(Mapper):
    """Rubric judge (MT-Bench 1-10, reference-guided, Self-Rewarding, Alpagasus, DEITA): score + rationale.

    The mean score of ``samples`` judge answers goes to ``scores[judge.<rubric>]`` (NaN when none could be read,
    or the record has no response or no reference); ``meta.judge.<rubric>`` keeps the score, each sample's score
    and the judge's rationales."""

    name = "evolve.judge"
    Config = EvolveJudgeConfig
    produces = tuple(f"judge.{rubric}" for rubric in RUBRICS)  # by rubric, for a missing score's message

    @property
    def score_name(self) -> str:
        return self.config.score_name or f"judge.{self.config.rubric}"

    def writes_scores(self) -> tuple[str, ...]:
        return (self.score_name,)

    def map_batch(self, records: list[dict]) -> list[dict]:
        cfg = self.config
        rubric = RUBRICS[cfg.rubric]
        out = [{**r, "scores": {**r["scores"], self.score_name: NAN}} for r in records]
        todo, prompts = [], []
        llm = self.context.models.llm(cfg.model)
        for i, record in enumerate(records):
            response = answer_text(record, "response")
            if not (response or "").strip():
                self.counters["records without a response (score NaN)"] += 1
                continue
            reference = meta_value(record, cfg.reference) if rubric.needs_reference else None
            if rubric.needs_reference and not (isinstance(reference, str) and reference.strip()):
                self.counters[f"records without a reference in meta.{cfg.reference} (score NaN)"] += 1
                continue
            cut = [truncate(llm, t, cfg.max_text_tokens) if t else t for t in (instruction_text(record), response,
                                                                                  reference)]
            todo.append(i)
            prompts.append([{"role": "user", "content": rubric.render(*cut)}])
        if not todo:
            return out
        answers = llm.chat(prompts, sampling(cfg.samples, cfg.temperature, cfg.max_tokens, self.context.seed))
        for i, texts in zip(todo, answers):
            parsed = [rubric.parse(t) for t in texts]
            valid = [v for v in parsed if not math.isnan(v)]
            self.counters["judge answers without a readable score"] += len(parsed) - len(valid)
            if not valid:
                self.counters["records without a readable score (score NaN)"] += 1
            score = sum(valid) / len(valid) if valid else NAN
            verdicts = out[i]["meta"].get("judge")
            if not isinstance(verdicts, dict):
                if verdicts is not None:
                    self.counters["meta.judge replaced (it was not an object)"] += 1
                verdicts = {}
            entry = {"score": score if valid else None, "samples": [None if math.isnan(v) else v for v in parsed],
                     "rationales": list(texts), "model": cfg.model}
            verdicts = {**verdicts, cfg.rubric: entry}
            out[i] = {**out[i], "meta": {**out[i]["meta"], "judge": verdicts},
                      "scores": {**out[i]["scores"], self.score_name: score}}
        return out
