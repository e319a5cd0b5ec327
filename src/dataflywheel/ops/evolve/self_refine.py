"""Self-Refine (Madaan et al., 2023): the same model criticises an answer and rewrites it, round after round.

Per record, starting from its answer y0 (or one the model writes, greedily, when it has none): the model writes
feedback on the latest answer (what is wrong, where, how to fix it); the round stops when the feedback says no
change is needed (``stop_phrases``) or after ``max_rounds``; otherwise the model rewrites the answer from the
instruction and the whole history of answers and feedback (the reference's ``task_iterate`` prompts carry the
history too). The paper stops after at most 4 rounds (3 for dialogue responses).

The paper returns the last answer; a small model can also make an answer worse, so by default the judge
(``ops/synth/answer_judge.py`` rubric) rates the original and the final answer and the refinement is kept only
when it is judged better by ``margin``. Every round (feedback and answer) is kept: in the lineage entry of a
record whose answer was replaced, in ``meta.self_refine`` of one whose original stayed.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import Field

from dataflywheel.models.llm import GenerationParams
from dataflywheel.ops.base import Candidate, Mapper
from dataflywheel.ops.enhance.rewrite import parse_revision
from dataflywheel.ops.registry import register
from dataflywheel.ops.synth.answer_judge import AnswerJudgeConfig, judge_answers, judge_roles
from dataflywheel.prompts import render_file
from dataflywheel.records import instruction_text, is_preference, last_index, prompt_turns, response_text

PROMPTS = Path(__file__).with_name("prompts")
STOP_PHRASES = ("no change needed", "no changes needed", "needs no change", "it is correct")


def says_stop(feedback: str, phrases: list[str]) -> bool:
    """Whether feedback signals that the answer needs no more work (case and spacing ignored)."""
    text = " ".join(feedback.lower().split())
    return any(phrase in text for phrase in phrases)


class SelfRefineConfig(AnswerJudgeConfig):
    model: str = "default"
    """Model role that answers, writes the feedback and refines (the same model, as in the paper)."""
    max_rounds: int = Field(default=4, ge=1)
    """Feedback -> refine rounds at most (the paper: 4)."""
    stop_phrases: list[str] = Field(default_factory=lambda: list(STOP_PHRASES))
    """Feedback containing any of these (case ignored) ends the record's rounds."""
    feedback_temperature: float = Field(default=0.7, ge=0.0)
    """Sampling temperature of the feedback (the paper's GSM setting; seeded by the run seed)."""
    temperature: float = Field(default=0.0, ge=0.0)
    """Sampling temperature of the first answer (when a record has none) and of each refinement."""
    max_tokens: int = Field(default=512, ge=8)
    judge: bool = True
    """Keep the final answer only when the judge scores it above the original by ``margin`` (false: the paper's
    rule, the last answer always replaces the original)."""
    margin: float = Field(default=0.0, ge=0.0)
    """judge: the final answer's score must exceed the original's by more than this."""


@register
class SelfRefine(Mapper):
    """Self-Refine: the model gives itself feedback and rewrites the answer until the feedback says stop."""

    name = "evolve.self_refine"
    Config = SelfRefineConfig

    @property
    def model_roles(self) -> dict[str, str]:
        return judge_roles(super().model_roles, self.config.judge)

    def writes_scores(self) -> tuple[str, ...]:
        return ("self_refine.original", "self_refine.refined") if self.config.judge else ()

    def map_batch(self, records: list[dict]) -> list[dict | Candidate]:
        cfg = self.config
        todo = [i for i, r in enumerate(records) if self._refinable(r)]
        out: list[dict | Candidate] = list(records)
        if not todo:
            return out
        llm = self.context.models.llm(cfg.model)
        answering = GenerationParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                     seed=self.context.seed if cfg.temperature > 0 else None)
        start = {i: response_text(records[i]) for i in todo}
        missing = [i for i in todo if not start[i]]
        for i, [text] in zip(missing, llm.chat([prompt_turns(records[i]) for i in missing], answering)
                             if missing else []):
            start[i] = text.strip()
        history = {i: [] for i in todo}  # per record: [{"response", "feedback"}] of each round
        current = dict(start)
        live = [i for i in todo if current[i]]
        self.counters["records without an answer even after asking (left as they are)"] += len(todo) - len(live)
        for round_ in range(cfg.max_rounds):
            if not live:
                break
            feedback = llm.chat([self._ask("self_refine_feedback.txt", instruction=instruction_text(records[i]),
                                           response=current[i]) for i in live],
                                GenerationParams(max_tokens=cfg.max_tokens, temperature=cfg.feedback_temperature,
                                                 seed=self.context.seed * 100 + round_))
            refining = []
            for i, [text] in zip(live, feedback):
                history[i].append({"response": current[i], "feedback": text.strip()})
                if says_stop(text, cfg.stop_phrases):
                    self.counters["stopped: the feedback said no change is needed"] += 1
                elif not text.strip():
                    self.counters["stopped: empty feedback"] += 1
                else:
                    refining.append(i)
            refined = llm.chat([self._ask("self_refine_refine.txt", instruction=instruction_text(records[i]),
                                          history=history[i]) for i in refining], answering) if refining else []
            live = []
            for i, [text] in zip(refining, refined):
                parsed = parse_revision(text, "response")
                if parsed is None:
                    self.counters["stopped: an empty refinement"] += 1
                    continue
                current[i] = parsed[1]
                live.append(i)
        self.counters["stopped: max_rounds reached"] += len(live)
        for i in live:  # the last refinement got no feedback round of its own
            history[i].append({"response": current[i], "feedback": None})
        self._decide(records, out, todo, start, current, history)
        return out

    def _decide(self, records, out, todo, start, current, history) -> None:
        cfg = self.config
        changed = [i for i in todo if current.get(i) and current[i] != response_text(records[i])]
        scores: dict[int, tuple[float, float]] = {}
        if cfg.judge and changed:
            questions = [instruction_text(records[i]) for i in changed]
            judged = judge_answers(self, questions, [[response_text(records[i]) or start[i], current[i]]
                                                     for i in changed])
            scores = {i: (v[0], v[1]) for i, v in zip(changed, judged)}
        for i in todo:
            record = records[i]
            info = {"rounds": history[i]}
            if i not in changed:
                if history[i]:
                    out[i] = {**record, "meta": {**record["meta"], "self_refine": {**info, "kept": "original"}}}
                continue
            if cfg.judge:
                before, after = scores[i]
                record = {**record, "scores": {**record["scores"], "self_refine.original": before,
                                               "self_refine.refined": after}}
                info["judge"] = {"original": before, "refined": after, "rubric": cfg.rubric}
                if math.isnan(before) or math.isnan(after) or after <= before + cfg.margin:
                    self.counters["refinements not judged better (original kept)"] += 1
                    out[i] = {**record, "meta": {**record["meta"], "self_refine": {**info, "kept": "original"}}}
                    continue
            self.counters["answers replaced by their refinement"] += 1
            out[i] = Candidate(self._answered(record, current[i]),
                               details={"original": response_text(records[i]), **info})

    def _ask(self, template: str, **values) -> list[dict]:
        return [{"role": "user", "content": render_file(PROMPTS / template, **values)}]

    def _refinable(self, record: dict) -> bool:
        if is_preference(record):
            self.counters["preference records left as they are"] += 1
            return False
        if last_index(record["messages"], "user") is None:
            self.counters["records without an instruction left as they are"] += 1
            return False
        return True

    def _answered(self, record: dict, answer: str) -> dict:
        messages = [dict(m) for m in record["messages"]]
        last = last_index(messages, "assistant")
        if last is not None and last > (last_index(messages, "user") or -1):
            messages[last]["content"] = answer
        else:
            messages.append({"role": "assistant", "content": answer})
        return {**record, "messages": messages}
