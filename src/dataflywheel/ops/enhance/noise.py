"""Noisy-label detection and relabelling by expert consensus (RobustFT, Luo et al., 2024).

Each record's instruction is answered by every expert (model role) in two ways: directly, and reasoning
step by step. Every prediction votes on whether it agrees with the record's answer (embedding cosine at
least ``similar_at``, or the same final answer for short-answer data); ``noise_agreement`` is the share
that agrees, and a record below ``min_agreement`` is noisy (the paper: all predictions must agree).
``answer_entropy`` is the first expert's mean token negative log-probability of the record's answer: how
unsure the model is of the label.

A noisy record is rejected with its agreement (``action: reject``), or relabelled (``action: relabel``):
the first expert answers again with the ``context_examples`` most similar clean records of the batch as
worked examples, and, as in the paper, a relabel is kept only when its entropy is at most the median of
the batch's relabels (the others are rejected as unsure). ``action: score`` only scores. The paper's
review agent (a second model choosing between the reasoning and the context answers) is not built.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from dataflywheel.models.llm import GenerationParams
from dataflywheel.ops.answers import final_answer
from dataflywheel.ops.base import Candidate, Mapper, OpConfig, Rejected
from dataflywheel.ops.registry import register
from dataflywheel.ops.score.ifd import mean_loss
from dataflywheel.prompts import render_file
from dataflywheel.records import instruction_text, is_preference, last_index, prompt_turns, response_text

PROMPTS = Path(__file__).with_name("prompts")
STYLES = ("direct", "reasoning")


class NoiseConfig(OpConfig):
    expert_models: list[str] = Field(default_factory=lambda: ["default"], min_length=1)
    """Model roles that answer each instruction (two predictions each: direct and step by step)."""
    embedder: str = "embedder"
    """Embedding model role (agreement: embedding; the relabel's example search)."""
    agreement: Literal["embedding", "exact"] = "embedding"
    """embedding: a prediction agrees when its cosine with the record's answer is at least ``similar_at``;
    exact: when both end in the same final answer (short-answer data: labels, numbers)."""
    similar_at: float = Field(default=0.3, ge=-1.0, le=1.0)
    """Measured with all-MiniLM-L6-v2 and SmolLM2 predictions on AlpacaEval (GPT-4 Turbo answers): a
    prediction's cosine with its own instruction's answer 0.14-0.87 (mean of two predictions), with
    another instruction's answer at most 0.18."""
    min_agreement: float = Field(default=0.5, ge=0.0, le=1.0)
    """A record is noisy when less than this share of the predictions agrees with its answer. The paper
    requires all (1.0) with strong experts; with a small expert model half is the default."""
    action: Literal["reject", "relabel", "score"] = "reject"
    context_examples: int = Field(default=3, ge=0)
    """Relabel: the most similar clean records of the batch shown as worked examples (the paper: 3)."""
    entropy: bool = True
    """Score ``answer_entropy`` (one extra forward pass per record)."""
    max_tokens: int = Field(default=256, ge=8)
    temperature: float = Field(default=0.0, ge=0.0)


@register
class NoiseDetect(Mapper):
    """Flag answers that disagree with several experts' answers (RobustFT); reject or relabel them."""

    name = "enhance.noise"
    Config = NoiseConfig

    def writes_scores(self) -> tuple[str, ...]:
        cfg = self.config
        return ("noise_agreement",) + (("answer_entropy",) if cfg.entropy else ()) + \
            (("relabel_entropy",) if cfg.action == "relabel" else ())

    def map_batch(self, records: list[dict]) -> list[dict | Candidate | Rejected]:
        cfg = self.config
        todo = [i for i, r in enumerate(records) if not is_preference(r) and last_index(r["messages"], "assistant")
                is not None]
        self.counters["records without an answer left as they are"] += len(records) - len(todo)
        if not todo:
            return list(records)
        answers = [response_text(records[i]) for i in todo]
        predictions = self._predictions([instruction_text(records[i]) for i in todo])
        votes = self._votes(answers, predictions)
        out: list = list(records)
        scored = {}
        for n, i in enumerate(todo):
            scored[i] = {**records[i], "scores": {**records[i]["scores"], "noise_agreement": float(votes[n].mean())}}
        if cfg.entropy:
            for i, value in zip(todo, self._entropies([prompt_turns(records[i]) for i in todo], answers)):
                scored[i]["scores"]["answer_entropy"] = value
        noisy = [i for n, i in enumerate(todo) if votes[n].mean() < cfg.min_agreement]
        self.counters["noisy records"] += len(noisy)
        for i in todo:
            out[i] = scored[i]
        if cfg.action == "reject":
            for i in noisy:
                out[i] = Rejected(self._why(scored[i]), record=scored[i])
        elif cfg.action == "relabel" and noisy:
            flagged = set(noisy)
            clean = [i for i in todo if i not in flagged]
            for i, decision in zip(noisy, self._relabel([scored[i] for i in noisy], [scored[i] for i in clean])):
                out[i] = decision
        return out

    # ---- detection -------------------------------------------------------------------------------

    def _predictions(self, instructions: list[str]) -> list[list[str]]:
        """Per instruction, one prediction per expert and style."""
        cfg = self.config
        params = GenerationParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=self.context.seed)
        per_record: list[list[str]] = [[] for _ in instructions]
        for role in cfg.expert_models:
            llm = self.context.models.llm(role)
            for style in STYLES:
                asked = [[{"role": "user", "content": render_file(PROMPTS / f"noise_{style}.txt", instruction=text)}]
                         for text in instructions]
                for mine, samples in zip(per_record, llm.chat(asked, params)):
                    mine.append(samples[0].strip())
        return per_record

    def _votes(self, answers: list[str], predictions: list[list[str]]) -> np.ndarray:
        """[records, predictions] booleans: does each prediction agree with the record's answer."""
        if self.config.agreement == "exact":
            return np.array([[final_answer(p) == final_answer(a) for p in preds]
                             for a, preds in zip(answers, predictions)], dtype=bool)
        width = len(predictions[0])
        vectors = self.context.models.embedder(self.config.embedder).embed(
            answers + [p for preds in predictions for p in preds])
        mine, theirs = vectors[:len(answers)], vectors[len(answers):].reshape(len(answers), width, -1)
        return np.einsum("rd,rpd->rp", mine, theirs) >= self.config.similar_at

    def _entropies(self, prompts: list[list[dict]], answers: list[str]) -> list[float]:
        llm = self.context.models.llm(self.config.expert_models[0])
        return [mean_loss(lp) for lp in llm.logprobs([llm.format_chat(p) for p in prompts], answers)]

    def _why(self, record: dict) -> str:
        cfg = self.config
        share = record["scores"]["noise_agreement"]
        how = f"cosine >= {cfg.similar_at}" if cfg.agreement == "embedding" else "the same final answer"
        return (f"noisy answer: {share:.0%} of {len(cfg.expert_models) * len(STYLES)} expert predictions agree "
                f"({how}), below {cfg.min_agreement:.0%}")

    # ---- relabelling -----------------------------------------------------------------------------

    def _relabel(self, noisy: list[dict], clean: list[dict]) -> list[Candidate | Rejected]:
        cfg = self.config
        examples = self._neighbours(noisy, clean)
        asked = [[{"role": "user", "content": render_file(
            PROMPTS / "noise_context.txt", instruction=instruction_text(r),
            examples=[{"instruction": instruction_text(e), "response": response_text(e)} for e in near])}]
            for r, near in zip(noisy, examples)]
        llm = self.context.models.llm(cfg.expert_models[0])
        params = GenerationParams(max_tokens=cfg.max_tokens, temperature=0.0)
        labels = [samples[0].strip() for samples in llm.chat(asked, params)]
        entropies = self._entropies([prompt_turns(r) for r in noisy], labels)
        finite = [e for e in entropies if e == e]
        median = statistics.median(finite) if finite else float("nan")
        out: list[Candidate | Rejected] = []
        for record, label, entropy, near in zip(noisy, labels, entropies, examples):
            scored = {**record, "scores": {**record["scores"], "relabel_entropy": entropy}}
            if not label or not entropy <= median:
                self.counters["noisy records whose relabel was unsure (rejected)"] += 1
                out.append(Rejected(f"{self._why(record)}; the relabel is unsure: entropy {entropy:.3f} above the "
                                    f"batch median {median:.3f} of relabels", record=scored))
                continue
            self.counters["noisy records relabelled"] += 1
            messages = [dict(m) for m in record["messages"]]
            messages[last_index(messages, "assistant")]["content"] = label
            out.append(Candidate({**scored, "messages": messages}, details={
                "original": {"response": response_text(record)}, "noise_agreement": record["scores"]["noise_agreement"],
                "context_examples": [e["id"] for e in near]}))
        return out

    def _neighbours(self, noisy: list[dict], clean: list[dict]) -> list[list[dict]]:
        """For each noisy record, the ``context_examples`` clean records with the most similar instruction."""
        k = min(self.config.context_examples, len(clean))
        if k == 0:
            return [[] for _ in noisy]
        vectors = self.context.models.embedder(self.config.embedder).embed(
            [instruction_text(r) for r in noisy + clean])
        similar = vectors[:len(noisy)] @ vectors[len(noisy):].T
        return [[clean[j] for j in np.argsort(-row, kind="stable")[:k]] for row in similar]
