"""IFD (Cherry LLM, Superfiltering): how much the instruction helps a small LM predict the answer."""

from __future__ import annotations

import math

from dataflywheel.ops.base import OpConfig, Scorer
from dataflywheel.ops.registry import register
from dataflywheel.records import prompt_turns, response_text


class IFDConfig(OpConfig):
    model: str = "default"
    """Model role from the recipe's ``models`` (default: the bundled SmolLM2-135M-Instruct)."""
    score_name: str = "ifd"


def mean_loss(logprobs: list[float]) -> float:
    return -sum(logprobs) / len(logprobs) if logprobs else float("nan")


def ifd_scores(llm, records: list[dict]) -> list[dict[str, float]]:
    """IFD = L(A | Q) / L(A): mean answer-token loss with the chat prompt as prefix, over the loss without it."""
    prompts = [llm.format_chat(prompt_turns(r)) for r in records]
    answers = [response_text(r) for r in records]
    conditioned = llm.logprobs(prompts, answers)
    direct = llm.logprobs([""] * len(answers), answers)
    out = []
    for with_q, without_q in zip(conditioned, direct):
        loss_q, loss = mean_loss(with_q), mean_loss(without_q)
        ifd = loss_q / loss if loss and not math.isnan(loss) else float("nan")
        out.append({"ifd": ifd, "answer_loss": loss_q, "direct_answer_loss": loss})
    return out


@register
class IFDScorer(Scorer):
    """Instruction-Following Difficulty L(A|Q)/L(A) with a small LM; also writes the answer losses (IFD > 1: the instruction does not help)."""

    name = "score.ifd"
    Config = IFDConfig

    def score_batch(self, records: list[dict]) -> list[dict[str, float]]:
        llm = self.context.models.llm(self.config.model)
        name = self.config.score_name
        return [{name: s["ifd"], f"{name}.answer_loss": s["answer_loss"],
                 f"{name}.direct_answer_loss": s["direct_answer_loss"]} for s in ifd_scores(llm, records)]
