"""Ask-LLM (Sachdeva et al., 2024): p(yes) that an example is informative, normalised over yes/no."""

from __future__ import annotations

import math
from pathlib import Path

from dataflywheel.ops.base import OpConfig, Scorer
from dataflywheel.ops.registry import register
from dataflywheel.prompts import render_file
from dataflywheel.records import conversation_text

PROMPT = Path(__file__).with_name("prompts") / "ask_llm.txt"


def p_yes(top: dict[str, float]) -> float:
    """Probability of 'yes' over 'yes' + 'no' among the next-token candidates (any case, any spacing)."""
    yes = sum(math.exp(v) for t, v in top.items() if t.strip().lower() == "yes")
    no = sum(math.exp(v) for t, v in top.items() if t.strip().lower() == "no")
    return yes / (yes + no) if yes + no > 0 else float("nan")


class AskLLMConfig(OpConfig):
    model: str = "judge"
    """Model role (an instruction-tuned LLM whose backend gives next-token probabilities)."""
    score_name: str = "ask_llm"


@register
class AskLLMScorer(Scorer):
    """Ask-LLM: the judge's probability of answering 'yes' to "is this example informative?"."""

    name = "score.ask_llm"
    Config = AskLLMConfig

    def score_batch(self, records: list[dict]) -> list[float]:
        conversations = [[{"role": "user", "content": render_file(PROMPT, text=conversation_text(r))}] for r in records]
        scores = [p_yes(top) for top in self.context.models.llm(self.config.model).chat_top_logprobs(conversations, 20)]
        missing = sum(math.isnan(s) for s in scores)
        if missing:
            self.counters["no yes/no among the top tokens"] += missing
        return scores
