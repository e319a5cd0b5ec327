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
    max_answer_tokens: int = 512
    """Answers are cut to this many tokens before scoring (the Cherry LLM paper uses 512)."""


def mean_loss(logprobs: list[float]) -> float:
    return -sum(logprobs) / len(logprobs) if logprobs else float("nan")


def truncate(llm, text: str, max_tokens: int) -> str:
    """The first ``max_tokens`` tokens of text (by the model's tokenizer; ~4 characters a token without one)."""
    tokenizer = getattr(llm, "tokenizer", None)
    if tokenizer is None:
        return text[: 4 * max_tokens]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def ifd_scores(llm, records: list[dict], max_answer_tokens: int = 512) -> list[dict[str, float]]:
    """IFD = L(A | Q) / L(A): mean answer-token loss with the chat prompt as prefix, over the loss without it."""
    prompts = [llm.format_chat(prompt_turns(r)) for r in records]
    answers = [truncate(llm, response_text(r), max_answer_tokens) for r in records]
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
    """Instruction-Following Difficulty L(A|Q)/L(A) with a small LM; also the answer losses and an IFD > 1 flag."""

    name = "score.ifd"
    Config = IFDConfig

    def score_batch(self, records: list[dict]) -> list[dict[str, float]]:
        llm = self.context.models.llm(self.config.model)
        name = self.config.score_name
        out = []
        for s in ifd_scores(llm, records, self.config.max_answer_tokens):
            above = s["ifd"] > 1
            self.counters["IFD > 1 (the instruction does not help)"] += int(above)
            out.append({name: s["ifd"], f"{name}.answer_loss": s["answer_loss"],
                        f"{name}.direct_answer_loss": s["direct_answer_loss"], f"{name}.above_1": float(above)})
        return out
