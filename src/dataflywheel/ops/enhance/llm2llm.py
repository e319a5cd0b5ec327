"""LLM2LLM (Lee et al., 2024): a teacher writes new training examples like the ones the student gets wrong.

Each record with an answer is put to the student (the model being fine-tuned): it fails when its loss on the
record's answer is at least ``min_loss`` nats per token (criterion ``loss``), when a judge scores its own
answer at most ``max_score`` (``judge``), or when its final answer differs from the record's (``exact``: the
paper's GSM8K check). For each failure the teacher writes ``per_failure`` new examples testing the same
skills; one whose question has ROUGE-L above ``max_similarity`` with an existing question (its seed, the
batch, or one written earlier in the step) is dropped, as in the paper. Generated records name their seed
as parent. The paper's rule holds across rounds: a record this operator generated is never augmented again,
so re-running the step on its own output (after training the student on it) only augments original seeds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from dataflywheel.algorithms.rouge import RougePool
from dataflywheel.models.llm import GenerationParams
from dataflywheel.ops.base import Candidate, Generator, GeneratorConfig, Rejected
from dataflywheel.ops.answers import final_answer
from dataflywheel.ops.registry import register
from dataflywheel.ops.score.ifd import mean_loss
from dataflywheel.ops.synth.answer_judge import AnswerJudgeConfig, judge_answers
from dataflywheel.prompts import render_file
from dataflywheel.records import instruction_text, is_preference, last_index, prompt_turns, response_text

PROMPTS = Path(__file__).with_name("prompts")
_QUESTION = r"\W*question\W*:"
_PAIR = re.compile(rf"{_QUESTION}\s*((?:(?!\n{_QUESTION}).)+?)\n\W*answer\W*:\s*(.+?)(?=\n{_QUESTION}|\Z)",
                   re.IGNORECASE | re.DOTALL)
"""A 'Question: ... Answer: ...' block; of several 'Question:' lines before an answer, the last one."""


def parse_examples(text: str) -> list[tuple[str, str]]:
    """The (question, answer) pairs a teacher wrote as 'Question: ... Answer: ...' blocks."""
    return [(q.strip(), a.strip()) for q, a in _PAIR.findall(text) if q.strip() and a.strip()]


class LLM2LLMConfig(GeneratorConfig, AnswerJudgeConfig):
    student_model: str = "default"
    """Model role of the student (the model being fine-tuned) whose failures are augmented."""
    teacher_model: str = "teacher"
    """Model role that writes the new examples (unset roles are the bundled model)."""
    criterion: Literal["loss", "judge", "exact"] = "loss"
    min_loss: float = Field(default=2.0, ge=0.0)
    """loss: the student fails at this mean loss (nats per token) on the record's answer or above."""
    max_score: float = 2.0
    """judge: the student fails when the judge scores its answer at most this (rubric scale)."""
    per_failure: int = Field(default=1, ge=1)
    """New examples per failing record (the paper: 1 per iteration)."""
    max_similarity: float = Field(default=0.95, gt=0.0, le=1.0)
    """Drop a new question whose ROUGE-L with an existing question is above this (the paper: 0.95)."""
    temperature: float = Field(default=1.0, ge=0.0)
    max_tokens: int = Field(default=512, ge=16)
    answer_max_tokens: int = Field(default=256, ge=8)
    """Tokens of the student's own answer (criteria judge and exact)."""


@register
class LLM2LLM(Generator):
    """New examples like the ones the student model fails, written by a teacher (LLM2LLM); never re-augmented."""

    name = "enhance.llm2llm"
    Config = LLM2LLMConfig

    def generate(self, records: list[dict]):
        cfg = self.config
        seeds = []
        for r in records:
            if any(entry.get("op") == self.name for entry in r.get("lineage", [])):
                self.counters["augmented records not augmented again"] += 1
            elif is_preference(r) or last_index(r["messages"], "assistant") is None:
                self.counters["records without an answer skipped"] += 1
            else:
                seeds.append(r)
        if not hasattr(self, "_questions"):
            self._questions = RougePool()  # every question seen or written in this step (the paper's filter)
        for r in records:
            self._questions.add(instruction_text(r))
        if not seeds:
            return
        values = self._failure_values(seeds)
        failing = [(r, v) for r, v in zip(seeds, values) if self._fails(v)]
        self.counters["failing records"] += len(failing)
        if not failing:
            return
        teacher = self.context.models.llm(cfg.teacher_model)
        asked = [[{"role": "user", "content": render_file(PROMPTS / "llm2llm_teacher.txt", instruction=instruction_text(r),
                                                          response=response_text(r), count=cfg.per_failure)}]
                 for r, _ in failing]
        texts = teacher.chat(asked, GenerationParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                                     seed=self.context.seed))
        for (seed, value), samples in zip(failing, texts):
            examples = parse_examples(samples[0])[:cfg.per_failure]
            if not examples:
                yield Rejected("the teacher's answer holds no 'Question: ... Answer: ...' example", raw=samples[0],
                               parents=[seed["id"]])
                continue
            for question, answer in examples:
                similarity = float(self._questions.scores(question).max()) if len(self._questions) else 0.0
                record = {"messages": [*self._system(seed), {"role": "user", "content": question},
                                       {"role": "assistant", "content": answer}], "meta": {}}
                if similarity > cfg.max_similarity:
                    yield Rejected(f"too similar to an existing question: ROUGE-L {similarity:.2f} > "
                                   f"{cfg.max_similarity:g}", record=record, parents=[seed["id"]])
                    continue
                self._questions.add(question)
                yield Candidate(record, parents=[seed["id"]], details={
                    "method": "llm2llm", "criterion": cfg.criterion, "failure": round(value, 4)})

    @staticmethod
    def _system(seed: dict) -> list[dict]:
        return [m for m in seed["messages"][:1] if m["role"] == "system"]

    def _failure_values(self, seeds: list[dict]) -> list[float]:
        """Per seed: the student's loss on its answer (loss), the judge's score of the student's answer
        (judge), or 1.0 / 0.0 for a wrong / right final answer (exact)."""
        cfg = self.config
        student = self.context.models.llm(cfg.student_model)
        turns = [prompt_turns(r) for r in seeds]
        references = [response_text(r) for r in seeds]
        if cfg.criterion == "loss":
            return [mean_loss(lp) for lp in student.logprobs([student.format_chat(t) for t in turns], references)]
        own = [a[0].strip() for a in student.chat(turns, GenerationParams(max_tokens=cfg.answer_max_tokens,
                                                                           temperature=0.0))]
        if cfg.criterion == "exact":
            return [float(final_answer(a) != final_answer(ref)) for a, ref in zip(own, references)]
        return [v[0] for v in judge_answers(self, [instruction_text(r) for r in seeds], [[a] for a in own])]

    def _fails(self, value: float) -> bool:
        cfg = self.config
        if value != value:  # NaN: no judgement could be read
            self.counters["students' answers the judge did not score"] += 1
            return False
        if cfg.criterion == "loss":
            return value >= cfg.min_loss
        if cfg.criterion == "judge":
            return value <= cfg.max_score
        return value == 1.0
