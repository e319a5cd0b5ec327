"""Rationale distillation (Distilling step-by-step, Hsieh et al. 2023): the teacher writes a rationale and a
final answer; where the record has a reference answer (its own response) the rationale is kept only when the
teacher's final answer matches it (exact, numeric or judged), so no rationale that argues for a wrong answer
is trained on. Up to ``samples`` tries per prompt (sampled), the first that matches wins.

Output ``inline``: one record whose answer is the rationale followed by "Answer: <reference>"; ``two_tasks``:
the paper's multi-task form, two records whose prompts carry a task prefix, one answered by the label and one
by the rationale.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from dataflywheel.models.llm import GenerationParams, ModelFeatureError
from dataflywheel.ops.answers import final_number, normalize_answer
from dataflywheel.ops.base import Candidate, Generator, GeneratorConfig, Rejected
from dataflywheel.ops.registry import register
from dataflywheel.ops.score.ask_llm import p_yes, parse_yes_no
from dataflywheel.ops.synth.answer_judge import judge_roles
from dataflywheel.prompts import render_file
from dataflywheel.records import prompt_turns, response_text

PROMPTS = Path(__file__).with_name("prompts")
_ANSWER = re.compile(r"(?:^|(?<=[\s*#]))(?:the\s+)?(?:final\s+)?answer(?:\s+is)?[ \t*]{0,3}[:：]?[ \t*]*([^\n]+)$",
                     re.IGNORECASE | re.MULTILINE)
_LABEL = re.compile(r"^\s*\W*rationale\W*[:：]\s*", re.IGNORECASE)


def parse_rationale(text: str) -> tuple[str, str] | None:
    """(rationale, final answer) from the teacher's text: the answer follows the last 'Answer:' (or 'the answer
    is'), the rationale is what comes before it; None when there is neither or either part is empty."""
    found = [m for m in _ANSWER.finditer(text) if m.group(1).strip(" *:.")]
    if not found:
        return None
    last = found[-1]
    rationale = _LABEL.sub("", text[:last.start()].strip()).strip()
    rationale = re.sub(r"(?:\b(?:the|so|therefore)|[,*#\s])+$", "", rationale, flags=re.IGNORECASE)
    answer = re.sub(r"^[-–:]\s+", "", last.group(1).strip().strip("*").strip()).rstrip(".").strip()
    return (rationale, answer) if rationale and answer else None


def match_rule(answer: str, reference: str, match: str) -> bool | None:
    """Whether ``answer`` matches ``reference`` by ``match`` (exact or numeric; auto: numeric when the
    reference ends in a number, else exact); None for 'judge' (a model decides)."""
    if match == "judge":
        return None
    if match == "numeric" or (match == "auto" and final_number(reference) is not None):
        expected, got = final_number(reference), final_number(answer)
        return expected is not None and got is not None and math.isclose(expected, got, rel_tol=1e-6, abs_tol=1e-9)
    return normalize_answer(answer) == normalize_answer(reference) or \
        (match == "auto" and normalize_answer(reference) != "" and
         normalize_answer(answer).endswith(normalize_answer(reference)))


class RationaleConfig(GeneratorConfig):
    keep_inputs: bool = False
    """The input records are replaced by what is made from them (true: pass them on as well)."""
    teacher_model: str = "teacher"
    """Model role that writes rationales (without one in the recipe: the bundled SmolLM2)."""
    judge_model: str = "judge"
    """match judge: the model role that decides whether two answers agree."""
    match: Literal["auto", "exact", "numeric", "judge"] = "auto"
    """How the teacher's final answer is checked against the reference: exact (normalised text), numeric
    (last number), judge (the judge says yes), auto (numeric when the reference ends in a number, else exact,
    or the teacher's answer ending in the reference)."""
    require_reference: bool = False
    """Reject prompts without a reference answer (false: keep the teacher's answer unchecked, counted)."""
    output: Literal["inline", "two_tasks"] = "inline"
    answer_prefix: str = "[label] "
    """two_tasks: prefix of the prompt whose answer is the label."""
    rationale_prefix: str = "[rationale] "
    """two_tasks: prefix of the prompt whose answer is the rationale."""
    samples: int = Field(default=1, ge=1)
    """Teacher tries per prompt (more than one: sampled at ``temperature``); the first that matches is kept."""
    temperature: float = Field(default=0.7, ge=0.0)
    max_tokens: int = Field(default=384, ge=8)


@register
class RationaleDistill(Generator):
    """Distilling step-by-step: teacher rationales kept only when their final answer matches the reference."""

    name = "distill.rationale"
    Config = RationaleConfig

    @property
    def model_roles(self) -> dict[str, str]:
        return judge_roles(super().model_roles, self.config.match == "judge")

    def generate(self, records: list[dict]):
        cfg = self.config
        turns = [prompt_turns(r) for r in records]
        asks = [t[:-1] + [{"role": "user", "content": render_file(PROMPTS / "rationale.txt", question=t[-1]["content"])}]
                for t in turns]
        sampled = cfg.samples > 1
        texts = self.context.models.llm(cfg.teacher_model).chat(asks, GenerationParams(
            n=cfg.samples, max_tokens=cfg.max_tokens, temperature=cfg.temperature if sampled else 0.0,
            seed=self.context.seed if sampled else None))
        parsed = [[parse_rationale(t) for t in choices] for choices in texts]
        verdicts = self._verdicts(records, turns, parsed)
        for record, prompt, choices, raws, verdict in zip(records, turns, parsed, texts, verdicts):
            yield from self._emit(record, prompt, choices, raws, verdict)

    def _verdicts(self, records: list[dict], turns: list[list[dict]], parsed: list[list]) -> list[list[bool | None]]:
        """Per record and try: matches the reference (True/False), or None (unparsed, or no reference)."""
        cfg = self.config
        out: list[list[bool | None]] = []
        to_judge: list[tuple[int, int, str, str, str]] = []
        for r, (record, choices) in enumerate(zip(records, parsed)):
            reference = response_text(record)
            row: list[bool | None] = []
            for j, choice in enumerate(choices):
                if choice is None or not reference:
                    row.append(None)
                    continue
                rule = match_rule(choice[1], reference, cfg.match)
                row.append(rule)
                if rule is None:
                    to_judge.append((r, j, turns[r][-1]["content"], reference, choice[1]))
            out.append(row)
        if to_judge:
            for (r, j, *_), agree in zip(to_judge, self._judge([t[2:] for t in to_judge])):
                out[r][j] = agree
        return out

    def _judge(self, items: list[tuple[str, str, str]]) -> list[bool]:
        """The judge's yes/no on whether each (question, reference, answer) agrees: P(yes) >= 0.5 where the
        backend gives probabilities, else its written answer."""
        judge = self.context.models.llm(self.config.judge_model)
        conversations = [[{"role": "user", "content": render_file(PROMPTS / "answers_agree.txt", question=q,
                                                                  reference=ref, answer=a)}] for q, ref, a in items]
        try:
            probabilities = [p_yes(top) for top in judge.chat_top_logprobs(conversations, 20, ["yes", "no"])]
        except ModelFeatureError:
            probabilities = [math.nan] * len(items)
        todo = [i for i, p in enumerate(probabilities) if math.isnan(p)]
        if todo:
            for i, [text] in zip(todo, judge.chat([conversations[i] for i in todo], GenerationParams(max_tokens=4))):
                probabilities[i] = parse_yes_no(text)
        self.counters["agreement judgements without a yes or no"] += sum(math.isnan(p) for p in probabilities)
        return [p >= 0.5 for p in probabilities]

    def _emit(self, record: dict, prompt: list[dict], choices: list, raws: list[str], verdict: list):
        cfg = self.config
        reference = response_text(record)
        raw = json.dumps({"teacher": raws, "reference": reference}, ensure_ascii=False)
        if not reference and cfg.require_reference:
            yield Rejected("no reference answer to check the rationale against", raw=raw, parents=[record["id"]])
            return
        readable = [j for j, c in enumerate(choices) if c is not None]
        if not readable:
            self.counters["teacher answers without 'Answer:'"] += 1
            yield Rejected("the teacher's text has no 'Answer:' line to check", raw=raw, parents=[record["id"]])
            return
        if reference:
            good = [j for j in readable if verdict[j]]
            if not good:
                answers = "; ".join(repr(choices[j][1][:80]) for j in readable)
                yield Rejected(f"the teacher's final answer ({answers}) does not match the reference ({cfg.match})",
                               raw=raw, parents=[record["id"]])
                return
            pick, label, checked = good[0], reference, True
        else:
            self.counters["rationales kept without a reference to check"] += 1
            pick, label, checked = readable[0], choices[readable[0]][1], False
        rationale = choices[pick][0]
        details = {"method": "rationale", "match": cfg.match if checked else "unchecked", "try": pick}
        meta = {**record["meta"], "rationale": {"teacher_answer": choices[pick][1], "checked": checked}}
        if cfg.output == "inline":
            yield Candidate({"messages": prompt + [{"role": "assistant", "content": f"{rationale}\n\nAnswer: {label}"}],
                             "meta": meta}, parents=[record["id"]], details=details)
            return
        for prefix, content, task in ((cfg.answer_prefix, label, "label"), (cfg.rationale_prefix, rationale, "rationale")):
            question = {**prompt[-1], "content": prefix + prompt[-1]["content"]}
            yield Candidate({"messages": prompt[:-1] + [question, {"role": "assistant", "content": content}],
                             "meta": {**meta, "task": task}}, parents=[record["id"]], details={**details, "task": task})
