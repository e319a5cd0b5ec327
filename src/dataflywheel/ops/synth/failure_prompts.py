"""Failure-inducing prompts (ReverseGen, Li et al. 2024): instructions on which a target model fails, to
teach it what it lacks.

Each round a proposer model writes new instructions from 3-shot prompts of seed instructions (sampled at
top_p 0.98, as the paper); the target model answers each (greedy); an instruction is kept when the target
fails it: a judge scores the target's answer at or below ``max_score`` (criterion ``judge``), or the
target's loss on a reference answer is at least ``min_loss`` nats per token (criterion ``loss``: the
paper's reference-checked failures, with a reference model writing the reference). Instructions the target
handles are rejected with their score: they are the "non-failing" side of the pairs the paper trains the
proposer on with DPO (not done here). The kept record's answer is the reference model's when one is
configured; without one the record is prompt-only (answer it with a teacher step), the target's failed
answer kept in ``meta``. The paper's honesty criterion (entropy of 10 sampled answers) needs short
answers to compare and is not implemented.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from dataflywheel.models.llm import GenerationParams
from dataflywheel.ops.base import Candidate, PoolGeneratorConfig, PoolView, Rejected, SourceGenerator
from dataflywheel.ops.isolate import each_request_alone, request_failed
from dataflywheel.ops.registry import register
from dataflywheel.ops.score.ifd import mean_loss
from dataflywheel.ops.synth.answer_judge import AnswerJudgeConfig, judge_answers
from dataflywheel.ops.synth.parsing import clean_item, strip_fences
from dataflywheel.ops.synth.self_instruct import shipped_seeds
from dataflywheel.prompts import render_file
from dataflywheel.records import instruction_text

PROMPTS = Path(__file__).with_name("prompts")


class FailurePromptsConfig(PoolGeneratorConfig, AnswerJudgeConfig):
    model: str = "default"
    """Model role that proposes instructions."""
    target_model: str = "default"
    """Model role whose failures are sought (the model you will fine-tune)."""
    reference_model: str = ""
    """Model role that writes the kept records' answers (a stronger teacher); empty: prompt-only records."""
    criterion: Literal["judge", "loss"] = "judge"
    """judge: the target's answer scores at most ``max_score``; loss: the target's mean loss on the reference
    answer is at least ``min_loss`` (needs ``reference_model``)."""
    max_score: float = 2.0
    """judge: the target fails when its answer's mean judge score is at most this (rubric scale)."""
    min_loss: float = Field(default=2.0, ge=0.0)
    """loss: the target fails when its mean loss (nats per token) on the reference answer is at least this."""
    shots: int = Field(default=3, ge=1)
    """Seed instructions shown per proposal prompt (the paper: 3)."""
    prompts_per_round: int = Field(default=4, ge=1)
    samples: int = Field(default=2, ge=1)
    """Instructions sampled per proposal prompt."""
    goal: str = "that is hard to answer well: it needs exact facts, careful reasoning or several steps"
    """How the proposal prompt describes the wanted instruction."""
    temperature: float = Field(default=1.0, ge=0.0)
    top_p: float = Field(default=0.98, gt=0.0, le=1.0)
    max_tokens: int = Field(default=96, ge=1)
    """Tokens per proposed instruction."""
    answer_max_tokens: int = Field(default=256, ge=1)
    """Tokens per answer (the target's and the reference's)."""
    min_words: int = Field(default=3, ge=1)
    max_words: int = Field(default=150, ge=1)


_LEAD = re.compile(r"^\s*(?:instructions?|tasks?|questions?)\s*(?:no\.?\s*)?\d*\s*[:.)\-]\s*", re.IGNORECASE)


def turn(instruction: str) -> list[dict]:
    """The one-turn conversation asking ``instruction``."""
    return [{"role": "user", "content": instruction}]


def clean_instruction(text: str) -> str:
    """The proposer's instruction: the first line with words, without code fences, an 'Instruction N:' label
    or wrapping quotes (the prompt lists one instruction per line; what follows is the model rambling on)."""
    for line in strip_fences(text).splitlines():
        line = _LEAD.sub("", line).strip()
        if re.search(r"[^\W_]", line):
            return clean_item(line)
    return ""


@register
class FailurePrompts(SourceGenerator):
    """ReverseGen: instructions the target model fails (judge score or reference loss), with lineage to the seeds."""

    name = "synth.failure_prompts"
    Config = FailurePromptsConfig

    def writes_scores(self) -> tuple[str, ...]:
        return ("failure.judge",) if self.config.criterion == "judge" else ("failure.loss",)

    def _seeds(self, view: PoolView) -> list[tuple[str, str]]:
        """(id, instruction) of the input records, or of the 175 shipped Self-Instruct seeds without input."""
        if "_seed_list" not in vars(self):
            seeds = [(r["id"], instruction_text(r)) for batch in view.scan() for r in batch]
            self._seed_list = seeds or [(t.id, t.instruction) for t in shipped_seeds()]
        return self._seed_list

    def propose(self, view: PoolView):
        cfg = self.config
        if cfg.criterion == "loss" and not cfg.reference_model:
            raise ValueError("criterion 'loss' needs reference_model (the answers the target's loss is taken on)")
        rng = random.Random(f"failure_prompts:{self.context.seed}:{view.round}")
        seeds = self._seeds(view)
        shown = [rng.sample(seeds, min(cfg.shots, len(seeds))) for _ in range(cfg.prompts_per_round)]
        prompts = [render_file(PROMPTS / "failure_propose.txt", goal=cfg.goal, examples=[s for _, s in chosen])
                   for chosen in shown]
        params = GenerationParams(n=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p,
                                  max_tokens=cfg.max_tokens, seed=self.context.seed * 1000 + view.round,
                                  stop=("\nInstruction",))
        proposed: list[tuple[str, list[str]]] = []
        seen: set[str] = set()
        proposer = self.context.models.llm(cfg.model)
        for samples, chosen in zip(each_request_alone(lambda asks: proposer.complete(asks, params), prompts), shown):
            parents = [i for i, _ in chosen]
            if isinstance(samples, Exception):
                yield request_failed(samples, parents)
                continue
            for text in samples:
                instruction = clean_instruction(text)
                words = len(instruction.split())
                if not instruction:
                    self.counters["unparsable proposals"] += 1
                    yield Rejected("unparsable: no instruction in the proposer's answer", raw=text, parents=parents)
                elif not cfg.min_words <= words <= cfg.max_words:
                    yield Rejected(f"length: {words} words (keep {cfg.min_words}-{cfg.max_words})",
                                   raw=instruction, parents=parents)
                elif instruction.casefold() in seen:
                    yield Rejected("proposed twice in this round", raw=instruction, parents=parents)
                else:
                    seen.add(instruction.casefold())
                    proposed.append((instruction, parents))
        yield from self._probe(proposed)

    def _probe(self, proposed: list[tuple[str, list[str]]]):
        """Ask the target; keep the instructions it fails. A request that fails for good (after the client's
        retries) rejects its own instruction with the cause; the others go on."""
        cfg = self.config
        greedy = GenerationParams(max_tokens=cfg.answer_max_tokens, temperature=0.0)
        target = self.context.models.llm(cfg.target_model)

        def answers(llm):
            return lambda items: [a[0].strip() for a in llm.chat([turn(i["instruction"]) for i in items], greedy)]

        def judged(items):
            return [v[0] for v in judge_answers(self, [i["instruction"] for i in items],
                                                [[i["target_answer"]] for i in items])]

        def losses(items):
            prefixes = [target.format_chat(turn(i["instruction"])) for i in items]
            return [mean_loss(lp) for lp in target.logprobs(prefixes, [i["reference"] for i in items])]

        live = [{"instruction": instruction, "parents": parents} for instruction, parents in proposed]
        live = yield from self._ask(live, "target_answer", answers(target))
        if cfg.reference_model:
            live = yield from self._ask(live, "reference", answers(self.context.models.llm(cfg.reference_model)))
        live = yield from self._ask(live, "value", judged if cfg.criterion == "judge" else losses)
        for item in live:
            instruction, answer, value = item["instruction"], item["target_answer"], item["value"]
            parents, reference = item["parents"], item.get("reference", "")
            raw = json.dumps({"instruction": instruction, "target_answer": answer, "reference": reference},
                             ensure_ascii=False)
            reason = self._passed(value, answer, reference)
            if reason:
                yield Rejected(reason, raw=raw, parents=parents)
                continue
            messages = turn(instruction)
            if reference:
                messages.append({"role": "assistant", "content": reference})
            name = "failure.judge" if cfg.criterion == "judge" else "failure.loss"
            record = {"messages": messages, "scores": {name: value}, "meta": {"target_answer": answer}}
            yield Candidate(record, parents=parents, details={"method": "reverse_gen", "criterion": cfg.criterion,
                                                               name: round(value, 4)})

    def _ask(self, live: list[dict], key: str, call):
        """``call`` over the live instructions, each one's result stored under ``key``; an instruction whose
        request fails for good is yielded as a reject (with what it had so far) and dropped. Returns the rest."""
        if not live:
            return []
        kept = []
        for item, result in zip(live, each_request_alone(call, live)):
            if isinstance(result, Exception):
                shown = {k: v for k, v in item.items() if k in ("instruction", "target_answer", "reference")}
                yield request_failed(result, item["parents"], raw=json.dumps(shown, ensure_ascii=False))
            else:
                kept.append({**item, key: result})
        return kept

    def _passed(self, value: float, answer: str, reference: str) -> str | None:
        """Why the instruction is not kept (the target did not fail it, or it could not be told), or None."""
        cfg = self.config
        if cfg.reference_model and not reference:
            self.counters["empty reference answers"] += 1
            return "the reference model gave an empty answer"
        if math.isnan(value):
            self.counters["failures that could not be measured"] += 1
            return ("unscored: the judge's answer held no score" if cfg.criterion == "judge"
                    else "unscored: no loss for an empty reference")
        if cfg.criterion == "judge" and value > cfg.max_score:
            return f"the target answered well: judge score {value:.2f} > {cfg.max_score:g}"
        if cfg.criterion == "loss" and value < cfg.min_loss:
            return f"the target knows the reference: loss {value:.3f} < {cfg.min_loss:g} nats/token"
        return None
