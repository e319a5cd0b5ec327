"""Judge-gated rewriting (CoachLM): a coach model revises each record, and the revision replaces the original
only when a judge scores it higher by a margin.

CoachLM (Liu et al., 2024) revises instruction/response pairs "to be more specific and detailed, with more
logical steps and correct grammar". A revision can also be worse than what it replaces (a small coach drops
content or invents facts), so here the judge rates the original and the revision with the same rubric
(``ops/synth/answer_judge.py``) and only a revision ahead by ``margin`` is kept. Both scores are stored on
the record either way; a kept revision names the original text and the scores in its lineage entry.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from dataflywheel.models.llm import GenerationParams
from dataflywheel.ops.base import Candidate, Mapper
from dataflywheel.ops.registry import register
from dataflywheel.ops.synth.answer_judge import AnswerJudgeConfig, judge_answers
from dataflywheel.prompts import render_file
from dataflywheel.records import instruction_text, is_preference, last_index, response_text

PROMPTS = Path(__file__).with_name("prompts")
PREFACE = re.compile(r"^\s*(?:here(?:'s| is) (?:the|an|my) (?:improved|revised|rewritten)[^\n:]*:|"
                     r"(?:improved|revised|rewritten) (?:response|answer|version)\s*:)\s*", re.IGNORECASE)


def parse_revision(text: str, target: str) -> tuple[str, str] | None:
    """(instruction, response) of a coach's answer (the instruction is empty when only the response was
    revised); None when it cannot be read."""
    text = text.strip()
    if target == "response":
        response = PREFACE.sub("", text, count=1).strip()
        return ("", response) if response else None
    found = re.search(r"(?:^|\n)\W*instruction\W*:\s*(.+?)\n\W*response\W*:\s*(.+)", text,
                      flags=re.IGNORECASE | re.DOTALL)
    if not found:
        return None
    instruction, response = found.group(1).strip(), found.group(2).strip()
    return (instruction, response) if instruction and response else None


class RewriteConfig(AnswerJudgeConfig):
    model: str = "default"
    """Model role of the coach that writes the revision."""
    target: Literal["response", "both"] = "response"
    """What is revised: the final response, or the instruction (last user turn) and the response together."""
    margin: float = Field(default=0.5, ge=0.0)
    """The revision replaces the original only when its judge score is at least this much higher."""
    guidance: str = ""
    """Extra revision rules appended to the coach's instructions (e.g. 'Answer in at most three sentences.')."""
    max_tokens: int = Field(default=512, ge=16)
    temperature: float = Field(default=0.7, ge=0.0)


@register
class Rewrite(Mapper):
    """Revise records with a coach model (CoachLM); keep a revision only when the judge scores it higher."""

    name = "enhance.rewrite"
    Config = RewriteConfig

    def writes_scores(self) -> tuple[str, ...]:
        return ("rewrite_original", "rewrite_revised")

    def map_batch(self, records: list[dict]) -> list[dict | Candidate]:
        cfg = self.config
        todo = [i for i, r in enumerate(records) if self._revisable(r)]
        if not todo:
            return list(records)
        prompts = [[{"role": "user", "content": render_file(
            PROMPTS / f"rewrite_{'pair' if cfg.target == 'both' else 'response'}.txt",
            instruction=instruction_text(records[i]), response=response_text(records[i]),
            guidance=cfg.guidance)}] for i in todo]
        coach = self.context.models.llm(cfg.model)
        texts = coach.chat(prompts, GenerationParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                                     seed=self.context.seed))
        revisions: dict[int, tuple[str, str]] = {}
        for i, samples in zip(todo, texts):
            parsed = parse_revision(samples[0], cfg.target)
            original = (instruction_text(records[i]), response_text(records[i]))
            if parsed is None:
                self.counters["revisions unparsable"] += 1
                continue
            revised = (parsed[0] or original[0], parsed[1])
            if revised == original:
                self.counters["revisions that changed nothing"] += 1
                continue
            revisions[i] = revised
        order = list(revisions)
        questions = [instruction_text(records[i]) for i in order] + [revisions[i][0] for i in order]
        answers = [[response_text(records[i])] for i in order] + [[revisions[i][1]] for i in order]
        scores = judge_answers(self, questions, answers)
        out: list[dict | Candidate] = list(records)
        for n, i in enumerate(order):
            before, after = scores[n][0], scores[len(order) + n][0]
            record = {**records[i], "scores": {**records[i]["scores"], "rewrite_original": before,
                                               "rewrite_revised": after}}
            if math.isnan(before) or math.isnan(after):
                self.counters["revisions without both judge scores (original kept)"] += 1
                out[i] = record
            elif after < before + cfg.margin:
                self.counters["revisions not judged better by the margin (original kept)"] += 1
                out[i] = record
            else:
                self.counters["revisions kept"] += 1
                out[i] = Candidate(self._revised(record, *revisions[i]), details={
                    "original": {"instruction": instruction_text(records[i]),
                                 "response": response_text(records[i])},
                    "judge": {"original": before, "revised": after, "rubric": cfg.rubric}})
        return out

    def _revisable(self, record: dict) -> bool:
        if is_preference(record):
            self.counters["preference records left as they are"] += 1
            return False
        if last_index(record["messages"], "assistant") is None or last_index(record["messages"], "user") is None:
            self.counters["records without an instruction and a response left as they are"] += 1
            return False
        return True

    def _revised(self, record: dict, instruction: str, response: str) -> dict:
        messages = [dict(m) for m in record["messages"]]
        answer = last_index(messages, "assistant")
        messages[answer]["content"] = response
        if self.config.target == "both":
            messages[last_index(messages[:answer], "user")]["content"] = instruction
        return {**record, "messages": messages}
