"""IFD (Cherry LLM, Superfiltering): how much the instruction helps a small LM predict the answer."""

from __future__ import annotations

import math

from jinja2 import TemplateError

from dataflywheel.models.llm import ModelFeatureError, tokenizer_of
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
    tokenizer = tokenizer_of(llm)
    if tokenizer is None:
        return text[: 4 * max_tokens]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


TEMPLATE_ERRORS = (ValueError, TypeError, KeyError, TemplateError, ModelFeatureError)
"""What rendering a chat template raises for a conversation it rejects, or a backend without one."""

_Q, _A, _Q2 = "\u2063Q\u2063", "\u2063A\u2063", "\u2063R\u2063"  # sentinels no real turn contains


def _user_header(llm, system: list[dict]) -> str | None:
    """The text the chat template puts before a user turn's content (e.g. '<|im_start|>user\\n'), found by
    rendering a user, assistant, user conversation of sentinels; None when the template hides it."""
    try:
        text = llm.format_chat(system + [{"role": "user", "content": _Q}, {"role": "assistant", "content": _A},
                                         {"role": "user", "content": _Q2}], add_generation_prompt=False)
        alone = llm.format_chat(system + [{"role": "user", "content": _Q}, {"role": "assistant", "content": _A}],
                                add_generation_prompt=False)
    except TEMPLATE_ERRORS:  # templates may reject odd conversations
        return None
    if not text.startswith(alone.rstrip()) or _Q2 not in text:
        return None
    # what follows the assistant turn, as the rendering without the next user turn ends it
    between = text[text.index(_A) + len(_A):text.index(_Q2)]
    footer = alone[alone.index(_A) + len(_A):]
    return between[len(footer):] if between.startswith(footer) and len(between) > len(footer) else None


def answer_only_prefix(llm, turns: list[dict]) -> str:
    """The prompt for L(A): the same chat template as for L(A|Q) without the user (and earlier) turns,
    i.e. the system prompt (the record's, or the template's default) followed by the assistant header."""
    system = [t for t in turns if t["role"] == "system"][:1]
    try:
        full = llm.format_chat(system + [{"role": "user", "content": _Q}])
    except TEMPLATE_ERRORS:  # a backend without a template: no prefix at all
        return ""
    header = _user_header(llm, system)
    start = full.index(_Q) if _Q in full else -1
    if header is not None and start >= 0:
        cut = full.rfind(header, 0, start)
        if cut >= 0:
            rendered_user = llm.format_chat(system + [{"role": "user", "content": _Q}], add_generation_prompt=False)
            if full.startswith(rendered_user):
                return full[:cut] + full[len(rendered_user):]
    return llm.format_chat(system) if system else llm.format_chat([])


def ifd_scores(llm, records: list[dict], max_answer_tokens: int = 512) -> list[dict[str, float]]:
    """IFD = L(A | Q) / L(A): mean answer-token loss after the chat prompt, over the loss after the same
    template without the user turn (system prompt + assistant header), not after a bare BOS: a bare start
    inflates the first answer tokens' loss, which then makes IFD track answer length."""
    turns = [prompt_turns(r) for r in records]
    prompts = [llm.format_chat(t) for t in turns]
    answers = [truncate(llm, response_text(r), max_answer_tokens) for r in records]
    prefixes: dict[str, str] = {}
    bare = []
    for t in turns:
        key = "\x00".join(m["content"] for m in t if m["role"] == "system")[:1000]
        if key not in prefixes:
            prefixes[key] = answer_only_prefix(llm, t)
        bare.append(prefixes[key])
    conditioned = llm.logprobs(prompts, answers)
    direct = llm.logprobs(bare, answers)
    out = []
    for with_q, without_q in zip(conditioned, direct):
        loss_q, loss = mean_loss(with_q), mean_loss(without_q)
        ifd = loss_q / loss if loss and not math.isnan(loss) else float("nan")
        out.append({"ifd": ifd, "answer_loss": loss_q, "direct_answer_loss": loss})
    return out


@register
class IFDScorer(Scorer):
    """Instruction-Following Difficulty L(A|Q)/L(A) with a small LM; also the answer losses and an IFD > 1 flag
    (selectors ranking by IFD never pick flagged records, as Cherry LLM drops them)."""

    name = "score.ifd"
    Config = IFDConfig
    produces = ("ifd", "ifd.answer_loss", "ifd.direct_answer_loss", "ifd.above_1")

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
