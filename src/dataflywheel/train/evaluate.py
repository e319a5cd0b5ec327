"""Held-out evaluation: reference-answer loss and pairwise LLM-judge win rate (both orders), with bootstrap CIs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from dataflywheel.models.errors import ModelFeatureError
from dataflywheel.models.llm import GenerationParams
from dataflywheel.models.token_mass import MIN_MASS, label_mass, trusted
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


def first_letter(text: str) -> str | None:
    text = text.strip().upper()
    return text[0] if text[:1] in ("A", "B") else None


def letter_verdicts(judge, conversations: list[list[dict]], min_mass: float = MIN_MASS) -> tuple[list, list, list]:
    """'A' or 'B' for each conversation (the PAIRWISE prompt) by the probability of the judge's first answer token,
    trusted when A and B hold at least ``min_mass`` of it; else (or on a backend without logprobs) read from a
    short answer. Returns (verdicts, each conversation's A/B mass, the positions whose answer was read)."""
    try:
        tops = judge.chat_top_logprobs(conversations, 20, ("A", "B"))
    except ModelFeatureError:  # a backend without logprobs: read the answers (a failed request is an error)
        tops = [{} for _ in conversations]
    masses = [label_mass(top, lambda token: token.strip() if token.strip() in ("A", "B") else None) for top in tops]
    verdicts: list[str | None] = [("A" if mass.get("A", 0.0) >= mass.get("B", 0.0) else "B")
                                  if trusted(mass, min_mass) else None for mass in masses]
    read = [j for j, verdict in enumerate(verdicts) if verdict is None]
    if read:
        for j, [text] in zip(read, judge.chat([conversations[j] for j in read], GenerationParams(max_tokens=4))):
            verdicts[j] = first_letter(text)
    return verdicts, masses, read


def win_rate(judge, records: list[dict], answers_a: list[str], answers_b: list[str]) -> dict:
    """Share of instructions where A's answer wins; each pair judged in both orders, disagreement = tie (0.5)."""
    conversations = [[{"role": "user", "content": render_file(PAIRWISE, instruction=instruction_text(record), a=first,
                                                              b=second)}]
                     for record, a, b in zip(records, answers_a, answers_b) for first, second in ((a, b), (b, a))]
    verdicts = letter_verdicts(judge, conversations)[0] if conversations else []
    outcomes = []
    for first, second in zip(verdicts[0::2], verdicts[1::2]):  # A shown first, then A shown second
        a_wins_first, a_wins_second = first == "A", second == "B"
        if first is None or second is None or a_wins_first != a_wins_second:
            outcomes.append(0.5)
        else:
            outcomes.append(1.0 if a_wins_first else 0.0)
    low, high = bootstrap_ci(outcomes)
    return {"win_rate": float(np.mean(outcomes)) if outcomes else float("nan"), "ci95": [low, high],
            "ties": int(sum(o == 0.5 for o in outcomes)), "n": len(outcomes)}
