"""Ask-LLM (Sachdeva et al., 2024): p(yes) that an example is informative, normalised over yes/no."""

from __future__ import annotations

import math
import re
from pathlib import Path

from pydantic import Field

from dataflywheel.models.llm import GenerationParams
from dataflywheel.models.token_mass import MIN_MASS, label_mass, trusted
from dataflywheel.ops.base import OpConfig, Scorer
from dataflywheel.ops.registry import register
from dataflywheel.ops.score.ifd import truncate
from dataflywheel.prompts import render_file
from dataflywheel.records import conversation_text

PROMPT = Path(__file__).with_name("prompts") / "ask_llm.txt"


def _yes_no(token: str) -> str | None:
    text = token.strip().lower()
    return text if text in ("yes", "no") else None


def p_yes(top: dict[str, float], min_mass: float = MIN_MASS) -> float:
    """P('yes') / (P('yes') + P('no')) among the next-token candidates (any case, any spacing); NaN when
    'yes' and 'no' hold less than ``min_mass`` of the probability."""
    mass = label_mass(top, _yes_no)
    if not trusted(mass, min_mass):
        return float("nan")
    return mass.get("yes", 0.0) / sum(mass.values())


def parse_yes_no(answer: str) -> float:
    """1.0 for an answer that starts with yes, 0.0 for no, NaN otherwise."""
    words = re.findall(r"[a-z]+", answer.lower())
    return {"yes": 1.0, "no": 0.0}.get(words[0], float("nan")) if words else float("nan")


class AskLLMConfig(OpConfig):
    model: str = "judge"
    """Model role (an instruction-tuned LLM whose backend gives next-token probabilities)."""
    score_name: str = "ask_llm"
    max_record_tokens: int = Field(default=1024, ge=16)
    """The record is cut to this many tokens inside the prompt (the prompt's own text is never cut)."""
    min_mass: float = Field(default=MIN_MASS, ge=0.0, le=1.0)
    """Trust P(yes) only when 'yes' and 'no' hold at least this much of the next-token probability; else
    generate the answer and read yes or no from it (counted in the manifest)."""


@register
class AskLLMScorer(Scorer):
    """Ask-LLM: the judge's probability of answering 'yes' to "is this example informative?"."""

    name = "score.ask_llm"
    Config = AskLLMConfig

    def _prompt(self, llm, record: dict) -> list[dict]:
        # the record sits between ### delimiters: its own ### would end the example early
        text = truncate(llm, conversation_text(record).replace("###", ""), self.config.max_record_tokens)
        return [{"role": "user", "content": render_file(PROMPT, text=text)}]

    def score_batch(self, records: list[dict]) -> list[float]:
        llm = self.context.models.llm(self.config.model)
        conversations = [self._prompt(llm, r) for r in records]
        scores = [p_yes(top, self.config.min_mass) for top in llm.chat_top_logprobs(conversations, 20, ("yes", "no"))]
        todo = [i for i, s in enumerate(scores) if math.isnan(s)]
        if todo:
            self.counters[f"yes/no below {self.config.min_mass} of the probability: generated and read"] += len(todo)
            answers = llm.chat([conversations[i] for i in todo], GenerationParams(max_tokens=4))
            for i, [answer] in zip(todo, answers):
                scores[i] = parse_yes_no(answer)
        missing = sum(math.isnan(s) for s in scores)
        if missing:
            self.counters["answers that were neither yes nor no"] += missing
        return scores
