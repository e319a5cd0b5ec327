"""Prompt compression by a small LM's token losses: Selective Context and LLMLingua-style (METHODS 12a, 12b).

Both work on ``Units`` (units.py) and on batches of texts, so model calls batch across records:

- Selective Context: self-information -log p(token | preceding text) of every token, in windows whose prefix
  is the original text before them; a unit's score is the mean over its tokens; the least informative units
  are dropped up to the token budget (the percentile cut, weighted by tokens so the ratio is in tokens).
- LLMLingua: a budget controller keeps protected spans (the question) whole and gives the rest the remaining
  budget; a coarse step drops whole paragraphs by perplexity (kept up to ``slack`` x the budget, in rank
  order); then iterative compression, window by window, scores each window conditioned on the *compressed*
  text before it and keeps its highest-loss units at a dynamic per-window ratio that lands on the budget.

Either way a last pass re-counts the rendered text with the tokenizer and drops or restores units by score
until the achieved ratio is as close to the requested one as whole units allow.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field

from dataflywheel.models.llm import ModelFeatureError
from dataflywheel.ops.distill.units import Units, render

_PARAGRAPH = re.compile(r"\n[ \t]*\n")


@dataclass
class Job:
    """One text to compress and what is known of it so far."""

    units: Units
    ratio: float
    scores: list[float] = field(default_factory=list)
    dropped: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.scores = [math.nan] * len(self.units.units)

    @property
    def total(self) -> int:
        return len(self.units.spans)

    @property
    def fixed(self) -> int:
        """Tokens no unit holds (protected, whitespace): always kept."""
        return self.total - self.units.droppable_tokens

    @property
    def keep_target(self) -> float:
        """Droppable tokens to keep so the whole text reaches the ratio."""
        return max(0.0, self.ratio * self.total - self.fixed)


def offsets(tokenizer, text: str) -> list[tuple[int, int]]:
    """Character spans of a text's tokens (no special tokens), as the LLM backends tokenize it."""
    return [tuple(s) for s in tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def token_losses(llm, prefixes: list[str], texts: list[str]) -> list[tuple[list[tuple[int, int]], list[float]]]:
    """Per text: its token spans and each token's loss -log p(token | prefix + earlier tokens), one batched call."""
    if not texts:
        return []
    logprobs = llm.logprobs(prefixes, texts)
    out = []
    for text, values in zip(texts, logprobs):
        spans = offsets(llm.tokenizer, text)
        if len(spans) != len(values):
            raise ModelFeatureError(
                f"the compressor model scored {len(values)} tokens of a text its tokenizer splits into {len(spans)}: "
                "use a transformers model, or an openai model whose chat_template_from names its tokenizer")
        out.append((spans, [-v for v in values]))
    return out


def windows(units: Units, size: int, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Token ranges [first, last) of about ``size`` tokens over tokens start..end, cut before a token that
    begins with whitespace (a word start) so that a window's text tokenizes as it does in the whole text."""
    end = len(units.spans) if end is None else end
    out, first = [], start
    for t in range(start, end):
        length = t - first
        at_word = units.text[units.spans[t][0]: units.spans[t][0] + 1].isspace()
        if length >= size and (at_word or length >= size + size // 2):
            out.append((first, t))
            first = t
    if end > first:
        out.append((first, end))
    return out


def add_scores(job: Job, offset: int, spans: list[tuple[int, int]], losses: list[float]) -> None:
    """Unit scores (mean loss of their tokens) from a window's token losses; ``offset``: where its text starts."""
    units = job.units
    starts = [a for a, _ in units.spans]
    sums: dict[int, list[float]] = {}
    for (a, b), loss in zip(spans, losses):
        core = offset + a + len(units.text[offset + a: offset + b]) - len(units.text[offset + a: offset + b].lstrip())
        token = bisect.bisect_right(starts, core) - 1
        unit = units.unit_of.get(token)
        if unit is not None:
            sums.setdefault(unit, []).append(loss)
    for unit, values in sums.items():
        job.scores[unit] = sum(values) / len(values)


def _order(job: Job) -> list[int]:
    """Units from least to most informative (unscored units last: nothing says they can go)."""
    return sorted(range(len(job.scores)), key=lambda u: (math.isnan(job.scores[u]), job.scores[u]))


def fit_ratio(job: Job, tokenizer, rounds: int = 12) -> int:
    """Drop or restore units by score until the rendered text's token count is closest to the ratio; returns it."""
    size = [len(u) for u in job.units.units]
    order = _order(job)
    target = job.ratio * job.total
    best: tuple[float, set[int], int] | None = None
    for _ in range(rounds):
        count = count_tokens(tokenizer, render(job.units, job.dropped))
        diff = count - target
        if best is None or abs(diff) < best[0]:
            best = (abs(diff), set(job.dropped), count)
        if abs(diff) <= 0.5:
            break
        if diff > 0:
            candidates = [u for u in order if u not in job.dropped]
        else:
            candidates = [u for u in reversed(order) if u in job.dropped and not math.isinf(job.scores[u])]
        moved = 0
        for u in candidates:
            if moved >= abs(diff) or (moved and moved + size[u] - abs(diff) > abs(diff) - moved):
                break
            (job.dropped.add if diff > 0 else job.dropped.discard)(u)
            moved += size[u]
        if not moved:
            break
    assert best is not None
    job.dropped = best[1]
    return best[2]


def drop_lowest(job: Job, units: list[int], keep_tokens: float) -> None:
    """Among ``units``, keep the highest-scored up to ``keep_tokens`` tokens and drop the rest."""
    size = [len(u) for u in job.units.units]
    kept = 0
    for u in sorted(units, key=lambda u: (math.isnan(job.scores[u]), job.scores[u]), reverse=True):
        if kept < keep_tokens and (kept + size[u] - keep_tokens <= keep_tokens - kept or not kept):
            kept += size[u]
        else:
            job.dropped.add(u)


def selective_context(llm, jobs: list[Job], window: int = 512) -> None:
    """Score every unit by self-information (original text as context), then drop the least informative."""
    plan = [(j, a, b) for j, job in enumerate(jobs) for a, b in windows(job.units, window)]
    texts, prefixes = [], []
    for j, a, b in plan:
        units = jobs[j].units
        start, end = units.spans[a][0], units.spans[b - 1][1]
        texts.append(units.text[start:end])
        prefixes.append(units.text[:start])
    for (j, a, _), (spans, losses) in zip(plan, token_losses(llm, prefixes, texts)):
        add_scores(jobs[j], jobs[j].units.spans[a][0], spans, losses)
    for job in jobs:
        drop_lowest(job, list(range(len(job.units.units))), job.keep_target)
        fit_ratio(job, llm.tokenizer)


def paragraphs(units: Units) -> list[tuple[int, int]]:
    """Token ranges [first, last) of the paragraphs (split at blank lines)."""
    cuts = [m.end() for m in _PARAGRAPH.finditer(units.text)]
    starts = [a for a, _ in units.spans]
    bounds = sorted({0, *[bisect.bisect_left(starts, c) for c in cuts], len(units.spans)})
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def llmlingua(llm, jobs: list[Job], iterative_size: int = 200, coarse: bool = True, slack: float = 1.3) -> None:
    """Budget controller, coarse paragraph filter, then iterative window-by-window compression (see module doc)."""
    spans_of = [paragraphs(job.units) for job in jobs]
    if coarse:
        _coarse(llm, jobs, spans_of, slack)
    plans = []
    for job, paras in zip(jobs, spans_of):
        kept = [p for p in paras if not _all_dropped(job, *p)]
        plans.append([w for a, b in kept for w in windows(job.units, iterative_size, a, b)])
    kept_so_far = [0.0] * len(jobs)
    for step in range(max((len(p) for p in plans), default=0)):
        todo = [(j, plans[j][step]) for j in range(len(jobs)) if step < len(plans[j])]
        prefixes, texts = [], []
        for j, (a, b) in todo:
            units = jobs[j].units
            start = units.spans[a][0]
            prefixes.append(_render_before(jobs[j], start))
            texts.append(units.text[start:units.spans[b - 1][1]])
        for (j, (a, b)), (spans, losses) in zip(todo, token_losses(llm, prefixes, texts)):
            job = jobs[j]
            add_scores(job, job.units.spans[a][0], spans, losses)
            here = _units_in(job, a, b)
            later = sum(len(job.units.units[u]) for w in plans[j][step:] for u in _units_in(job, *w))
            tau = min(1.0, max(0.0, (job.keep_target - kept_so_far[j]) / later)) if later else 1.0
            drop_lowest(job, here, tau * sum(len(job.units.units[u]) for u in here))
            kept_so_far[j] += sum(len(job.units.units[u]) for u in here if u not in job.dropped)
    for job in jobs:
        fit_ratio(job, llm.tokenizer)


def _units_in(job: Job, first: int, last: int) -> list[int]:
    """Undropped units whose first token lies in [first, last)."""
    return [u for u, tokens in enumerate(job.units.units) if first <= tokens[0] < last and u not in job.dropped]


def _all_dropped(job: Job, first: int, last: int) -> bool:
    units = {job.units.unit_of[t] for t in range(first, last) if t in job.units.unit_of}
    return bool(units) and units <= job.dropped


def _render_before(job: Job, start: int) -> str:
    """The compressed text so far: every token before character ``start`` under the current decisions."""
    units = job.units
    cut = bisect.bisect_left([a for a, _ in units.spans], start)
    head = Units(units.text[:start], units.spans[:cut], units.protected[:cut], units.units,
                 {t: u for t, u in units.unit_of.items() if t < cut})
    return render(head, job.dropped) if job.dropped else head.text


def _coarse(llm, jobs: list[Job], spans_of: list[list[tuple[int, int]]], slack: float) -> None:
    """Rank paragraphs by perplexity and drop the lowest whole, keeping slack x the budget (2+ paragraphs only)."""
    plan = [(j, a, b) for j, paras in enumerate(spans_of) if len(paras) > 1 for a, b in paras]
    texts = [jobs[j].units.text[jobs[j].units.spans[a][0]:jobs[j].units.spans[b - 1][1]] for j, a, b in plan]
    ppl: dict[int, list[tuple[float, int, int]]] = {}
    for (j, a, b), (_, losses) in zip(plan, token_losses(llm, [""] * len(texts), texts)):
        ppl.setdefault(j, []).append((sum(losses) / max(1, len(losses)), a, b))
    for j, ranked in ppl.items():
        job, kept = jobs[j], 0
        for _, a, b in sorted(ranked, reverse=True):
            units = sorted({job.units.unit_of[t] for t in range(a, b) if t in job.units.unit_of})
            if kept >= job.keep_target * slack:
                for u in units:
                    job.dropped.add(u)
                    job.scores[u] = -math.inf
            kept += sum(len(job.units.units[u]) for u in units)
