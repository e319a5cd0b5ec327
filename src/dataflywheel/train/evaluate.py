"""Held-out evaluation: reference-answer loss and pairwise LLM-judge win rate (both orders), with bootstrap CIs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from dataflywheel.models.errors import ModelFeatureError, ModelRequestError
from dataflywheel.models.llm import GenerationParams
from dataflywheel.models.token_mass import label_mass, trusted
from dataflywheel.prompts import render_file
from dataflywheel.records import instruction_text, prompt_turns, response_text

PAIRWISE = Path(__file__).with_name("prompts") / "pairwise.txt"


def bootstrap_ci(values, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(values, size=(rounds, len(values)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def reference_loss(llm, records: list[dict]) -> dict:
    """Mean answer-token loss of the reference answers given their prompts (lower = closer to the references)."""
    prompts = [llm.format_chat(prompt_turns(r)) for r in records]
    per_record = [-sum(lp) / len(lp) if lp else float("nan")
                  for lp in llm.logprobs(prompts, [response_text(r) for r in records])]
    low, high = bootstrap_ci([v for v in per_record if not math.isnan(v)])
    return {"reference_loss": float(np.nanmean(per_record)), "ci95": [low, high], "n": len(per_record),
            "per_record": per_record}


def judge_spec_from_env() -> dict | None:
    """The judge named by DATAFLYWHEEL_JUDGE_BASE_URL and DATAFLYWHEEL_JUDGE_MODEL (key from OPENAI_API_KEY), if set."""
    url, model = os.environ.get("DATAFLYWHEEL_JUDGE_BASE_URL"), os.environ.get("DATAFLYWHEEL_JUDGE_MODEL")
    if url and model:
        return {"backend": "openai", "model": model, "options": {"base_url": url}}
    return None


def answers(llm, records: list[dict], max_tokens: int = 256) -> list[str]:
    return [choices[0] for choices in llm.chat([prompt_turns(r) for r in records],
                                               GenerationParams(max_tokens=max_tokens))]


def _verdict(judge, instruction: str, first: str, second: str) -> str | None:
    prompt = render_file(PAIRWISE, instruction=instruction, a=first, b=second)
    conversation = [{"role": "user", "content": prompt}]
    try:
        [top] = judge.chat_top_logprobs([conversation], 20, ("A", "B"))
        p = label_mass(top, lambda token: token.strip() if token.strip() in ("A", "B") else None)
        if trusted(p):
            return "A" if p.get("A", 0.0) >= p.get("B", 0.0) else "B"
    except (ModelFeatureError, ModelRequestError):  # no logprobs (or refused): read the answer; fatal errors stop
        pass
    [[text]] = judge.chat([conversation], GenerationParams(max_tokens=4))
    text = text.strip().upper()
    return text[0] if text[:1] in ("A", "B") else None


def win_rate(judge, records: list[dict], answers_a: list[str], answers_b: list[str]) -> dict:
    """Share of instructions where A's answer wins; each pair judged in both orders, disagreement = tie (0.5)."""
    outcomes = []
    for record, a, b in zip(records, answers_a, answers_b):
        instruction = instruction_text(record)
        first = _verdict(judge, instruction, a, b)     # A shown first
        second = _verdict(judge, instruction, b, a)    # A shown second
        a_wins_first, a_wins_second = first == "A", second == "B"
        if first is None or second is None or a_wins_first != a_wins_second:
            outcomes.append(0.5)
        else:
            outcomes.append(1.0 if a_wins_first else 0.0)
    low, high = bootstrap_ci(outcomes)
    return {"win_rate": float(np.mean(outcomes)) if outcomes else float("nan"), "ci95": [low, high],
            "ties": int(sum(o == 0.5 for o in outcomes)), "n": len(outcomes)}
