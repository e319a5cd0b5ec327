"""Answer perplexity under a small LM, for the perplexity tail filter."""

from __future__ import annotations

import math

from dataflywheel.ops.base import OpConfig, Scorer
from dataflywheel.ops.registry import register
from dataflywheel.ops.score.ifd import mean_loss, truncate
from dataflywheel.records import prompt_turns, response_text


class PerplexityConfig(OpConfig):
    model: str = "default"
    score_name: str = "perplexity"
    max_answer_tokens: int = 512
    conditioned: bool = True
    """Perplexity of the answer given its prompt (chat template); false: of the answer alone."""


@register
class PerplexityScorer(Scorer):
    """exp(mean answer-token loss) under a small LM: the input of ``select.perplexity_filter``."""

    name = "score.perplexity"
    Config = PerplexityConfig

    def score_batch(self, records: list[dict]) -> list[float]:
        from dataflywheel.ops.score.ifd import answer_only_prefix

        llm = self.context.models.llm(self.config.model)
        answers = [truncate(llm, response_text(r), self.config.max_answer_tokens) for r in records]
        prefixes = ([llm.format_chat(prompt_turns(r)) for r in records] if self.config.conditioned
                    else [answer_only_prefix(llm, prompt_turns(r)) for r in records])
        return [math.exp(loss) if not math.isnan(loss) else float("nan")
                for loss in (mean_loss(lp) for lp in llm.logprobs(prefixes, answers))]
