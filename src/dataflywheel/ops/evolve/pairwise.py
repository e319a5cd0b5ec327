"""Pairwise LLM-as-a-judge: answer A vs answer B, judged in both orders to cancel position bias.

The verdict is A or B only when both orders agree; a tie when the judge calls a tie in both orders, or when
the orders disagree (position inconsistency, counted), as in the MT-Bench paper. Two methods:
generate (FastChat's pair-v2 prompt: an explanation, then ``[[A]]``, ``[[B]]`` or ``[[C]]`` for a tie; several
samples per order are a majority vote) and logprobs (the single-letter prompt of ``train/evaluate``: A or B
by the probability of the first answer token)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field

from dataflywheel.models.token_mass import MIN_MASS
from dataflywheel.ops.base import Mapper, OpConfig, Rejected
from dataflywheel.ops.evolve.fields import answer_text, sampling
from dataflywheel.ops.registry import register
from dataflywheel.ops.score.ifd import truncate
from dataflywheel.prompts import render_file
from dataflywheel.records import instruction_text
from dataflywheel.train.evaluate import PAIRWISE as LETTER_PROMPT, letter_verdicts

PROMPT = Path(__file__).with_name("prompts") / "pairwise.txt"
SCORE = {"A": 1.0, "B": 0.0, "tie": 0.5, None: float("nan")}
SWAP = {"A": "B", "B": "A", "tie": "tie", None: None}


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'tie' from a judge's ``[[A]]`` / ``[[B]]`` / ``[[C]]``; None when it writes none, or more than
    one kind (an echo of the instructions decides nothing)."""
    found = {m.upper() for m in re.findall(r"\[\[\s*([ABCabc])\s*\]\]", text)}
    return {"A": "A", "B": "B", "C": "tie"}[found.pop()] if len(found) == 1 else None


def majority(verdicts: list[str | None]) -> str | None:
    """The most frequent readable verdict of several samples; a tie when two lead equally; None when none reads."""
    ranked = Counter(v for v in verdicts if v is not None).most_common()
    if not ranked:
        return None
    return "tie" if len(ranked) > 1 and ranked[0][1] == ranked[1][1] else ranked[0][0]


def combine(first: str | None, second: str | None) -> tuple[str | None, bool | None]:
    """(verdict, consistent) from the verdicts of the two orders, both already in A/B of the first order."""
    if first is None or second is None:
        return None, None
    return (first, True) if first == second else ("tie", False)


class PairwiseConfig(OpConfig):
    a: str = "chosen"
    """Answer A: chosen, rejected, response (the final assistant turn) or a ``meta`` key (dots reach into nested
    objects)."""
    b: str = "rejected"
    """Answer B, named the same way."""
    model: str = "judge"
    """Model role of the judge."""
    method: Literal["generate", "logprobs"] = "generate"
    """generate: the judge explains, then writes [[A]], [[B]] or [[C]] (tie); logprobs: A or B by the first
    token's probabilities (no rationale; a short answer is read where A and B hold less than min_mass)."""
    samples: int = Field(default=1, ge=1)
    """generate: judge answers per order, a majority vote; 1: one greedy answer."""
    temperature: float = Field(default=0.7, ge=0.0)
    """Sampling temperature when ``samples`` > 1 (seeded by the run seed)."""
    max_tokens: int = Field(default=256, ge=1)
    """generate: length of each judge answer."""
    min_mass: float = Field(default=MIN_MASS, ge=0.0, le=1.0)
    """logprobs: trust the probabilities only when 'A' and 'B' hold at least this much of them."""
    max_text_tokens: int = Field(default=1024, ge=16)
    """The instruction and each answer are cut to this many tokens inside the judge's prompt."""
    drop_disagreeing: bool = False
    """Reject a record when the judge prefers B in both orders (with the defaults: it prefers 'rejected')."""
    score_name: str | None = None
    """Default: judge.pairwise (1 = A wins, 0 = B wins, 0.5 = tie, NaN = no verdict)."""


@register
class Pairwise(Mapper):
    """Pairwise judge in both orders (MT-Bench): A, B or a tie when the orders disagree; optionally drop B wins.

    Compares chosen vs rejected of preference records by default (``a``/``b`` name other answers, e.g. meta
    keys). ``meta.pairwise`` keeps the verdict, each order's verdict, whether they agree and the rationales;
    ``scores[judge.pairwise]`` is 1, 0.5 or 0 for A, tie or B."""

    name = "evolve.pairwise"
    Config = PairwiseConfig
    produces = ("judge.pairwise",)  # for a missing score's message

    @property
    def score_name(self) -> str:
        return self.config.score_name or "judge.pairwise"

    def writes_scores(self) -> tuple[str, ...]:
        return (self.score_name,)

    def map_batch(self, records: list[dict]) -> list[dict | Rejected]:
        cfg = self.config
        out: list[dict | Rejected] = [{**r, "scores": {**r["scores"], self.score_name: SCORE[None]}} for r in records]
        llm = self.context.models.llm(cfg.model)
        todo, prompts = [], []
        template = PROMPT if cfg.method == "generate" else LETTER_PROMPT
        for i, record in enumerate(records):
            a, b = answer_text(record, cfg.a), answer_text(record, cfg.b)
            if a is None or b is None:
                self.counters[f"records without both answers ({cfg.a}, {cfg.b}): not judged"] += 1
                continue
            instruction, a, b = (truncate(llm, t, cfg.max_text_tokens) for t in (instruction_text(record), a, b))
            todo.append(i)
            prompts += [[{"role": "user", "content": render_file(template, instruction=instruction, a=first, b=second)}]
                        for first, second in ((a, b), (b, a))]
        if not todo:
            return out
        verdicts, details = self._generate(llm, prompts) if cfg.method == "generate" else self._logprobs(llm, prompts)
        for n, i in enumerate(todo):
            first, second = verdicts[2 * n], SWAP[verdicts[2 * n + 1]]  # the second order shows B first
            verdict, consistent = combine(first, second)
            self.counters["pairs judged"] += 1
            if verdict is None:
                self.counters["pairs without a readable verdict in both orders (score NaN)"] += 1
            elif not consistent:
                self.counters["position-inconsistent pairs (tie)"] += 1
            note = {"verdict": verdict, "a": cfg.a, "b": cfg.b, "orders": [first, second], "consistent": consistent,
                    "method": cfg.method, "model": cfg.model,
                    **{key: [values[2 * n], values[2 * n + 1]] for key, values in details.items()}}
            record = {**records[i], "meta": {**records[i]["meta"], "pairwise": note},
                      "scores": {**records[i]["scores"], self.score_name: SCORE[verdict]}}
            if verdict == "B":
                self.counters[f"pairs where the judge prefers {cfg.b}"] += 1
            if verdict == "B" and cfg.drop_disagreeing:
                out[i] = Rejected(f"the judge prefers {cfg.b} over {cfg.a} in both orders", record=record)
            else:
                out[i] = record
        return out

    def _generate(self, llm, prompts: list[list[dict]]) -> tuple[list[str | None], dict]:
        cfg = self.config
        answers = llm.chat(prompts, sampling(cfg.samples, cfg.temperature, cfg.max_tokens, self.context.seed))
        verdicts = []
        for texts in answers:
            parsed = [parse_verdict(t) for t in texts]
            self.counters["judge answers without one of [[A]], [[B]], [[C]]"] += parsed.count(None)
            verdicts.append(majority(parsed))
        return verdicts, {"rationales": [list(texts) for texts in answers]}

    def _logprobs(self, llm, prompts: list[list[dict]]) -> tuple[list[str | None], dict]:
        verdicts, masses, read = letter_verdicts(llm, prompts, self.config.min_mass)
        if read:
            self.counters[f"orders where A and B hold less than {self.config.min_mass} (answer read)"] += len(read)
            self.counters["orders without a readable A or B"] += sum(verdicts[j] is None for j in read)
        # p_first_shown: P(the answer shown first wins) in each order; ab_mass: the probability A and B hold
        p_a = [round(m.get("A", 0.0) / sum(m.values()), 4) if sum(m.values()) > 0 else None for m in masses]
        return verdicts, {"p_first_shown": p_a, "ab_mass": [round(sum(m.values()), 4) for m in masses]}
