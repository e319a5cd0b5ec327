"""DEITA's evol score (Liu et al., 2024): complexity x quality per turn, summed over the turns."""

from __future__ import annotations

import math

from dataflywheel.ops.base import OpConfig, Scorer
from dataflywheel.ops.registry import register
from dataflywheel.ops.score.judge import JudgeScorer
from dataflywheel.records import is_preference


def turn_pairs(record: dict) -> list[tuple[str, str]]:
    """(user turn, the assistant turn answering it) for every answered turn; ``chosen`` answers the last."""
    messages = list(record["messages"]) + ([record["chosen"]] if is_preference(record) else [])
    pairs, question = [], None
    for message in messages:
        if message["role"] == "user":
            question = message["content"]
        elif message["role"] == "assistant" and question is not None:
            pairs.append((question, message["content"]))
            question = None
    return pairs


def _single_turn(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


class DeitaScoreConfig(OpConfig):
    model: str = "judge"
    """Model role of the judge that rates complexity (1-6) and quality (1-6), as ``score.judge`` does."""
    method: str = "auto"
    """Passed to the judge: auto, logprobs (expected score) or generate."""
    score_name: str = "deita"


@register
class DeitaScorer(Scorer):
    """DEITA evol score: sum over turns of complexity(instruction) x quality(instruction, response), 1-36 a turn."""

    name = "score.deita"
    Config = DeitaScoreConfig
    produces = ("deita", "deita.complexity", "deita.quality")

    def _judge(self, rubric: str) -> JudgeScorer:
        cfg = self.config
        return JudgeScorer(JudgeScorer.Config(rubric=rubric, model=cfg.model, method=cfg.method), self.context)

    def score_batch(self, records: list[dict]) -> list[dict[str, float]]:
        turns = [turn_pairs(r) for r in records]
        flat = [_single_turn(q, a) for pairs in turns for q, a in pairs]
        complexity, quality = [], []
        if flat:
            for rubric, values in (("deita_complexity", complexity), ("deita_quality", quality)):
                judge = self._judge(rubric)
                values.extend(judge.score_batch(flat))
                self.counters.update(judge.counters)
        name, out, at = self.config.score_name, [], 0
        for pairs in turns:
            c, q = complexity[at:at + len(pairs)], quality[at:at + len(pairs)]
            at += len(pairs)
            products = [x * y for x, y in zip(c, q) if not (math.isnan(x) or math.isnan(y))]
            if len(products) < len(pairs):
                self.counters["turns without a complexity or quality score"] += len(pairs) - len(products)
            mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
            out.append({name: sum(products) if products else float("nan"),
                        f"{name}.complexity": mean([x for x in c if not math.isnan(x)]),
                        f"{name}.quality": mean([y for y in q if not math.isnan(y)])})
        return out
