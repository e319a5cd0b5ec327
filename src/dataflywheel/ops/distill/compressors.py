"""Prompt compression by a small LM's token losses: Selective Context and LLMLingua-style (METHODS 12a, 12b).

Both work on ``Units`` (units.py) and on batches of texts, so model calls batch across records:

- Selective Context: self-information -log p(token | preceding text) of every token, in windows whose prefix
  is the original text before them; a unit's score is the mean over its tokens; the least informative units
  are dropped up to the token budget (the percentile cut, weighted by tokens so the ratio is in tokens).
- LLMLingua: a budget controller keeps protected spans (the question) whole and gives the rest the remaining
  budget; a coarse step drops whole paragraphs by perplexity (kept up to ``slack`` x the budget, in rank
  order); then iterative compression, window by window, scores each window conditioned on the *compressed*
  text before it and keeps its highest-loss units at a dynamic per-window ratio that lands on the budget.
  The self-information pass of Selective Context comes first and serves twice: paragraph perplexities for the
  coarse step, and the losses of every window with nothing dropped before it (its compressed prefix is the
  original text), so only windows after a drop cost a second model call.

Either way a last pass re-counts the rendered text with the tokenizer and drops or restores units by score
until the achieved ratio is as close to the requested one as whole units allow.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable
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


def token_indices(units: Units, offset: int, spans: list[tuple[int, int]]) -> list[int]:
    """Which of ``units``' tokens each span of a window's text is (``offset``: where the window starts); the
    window's tokenization matches the whole text's because windows are cut at word starts."""
    starts = [a for a, _ in units.spans]
    out = []
    for a, b in spans:
        piece = units.text[offset + a: offset + b]
        core = offset + a + len(piece) - len(piece.lstrip())
        out.append(bisect.bisect_right(starts, core) - 1)
    return out


def add_scores(job: Job, offset: int, spans: list[tuple[int, int]], losses: list[float]) -> None:
    """Unit scores (mean loss of their tokens) from a window's token losses; ``offset``: where its text starts."""
    set_unit_scores(job, zip(token_indices(job.units, offset, spans), losses))


def set_unit_scores(job: Job, token_losses_: Iterable[tuple[int, float]]) -> None:
    """Each unit's score: the mean loss of its tokens among ``(token index, loss)`` pairs."""
    sums: dict[int, list[float]] = {}
    for token, loss in token_losses_:
        unit = job.units.unit_of.get(token)
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
    for _ in range(rounds if best[0] > 0.5 else 0):  # whole units overshoot: one drop, restore or swap closer
        diff = best[2] - target
        move = _closest_move(job, size, best[1], diff)
        if move is None:
            break
        dropped = (best[1] | move[0]) - move[1]
        count = count_tokens(tokenizer, render(job.units, dropped))
        if abs(count - target) >= best[0]:
            break
        best = (abs(count - target), dropped, count)
    job.dropped = best[1]
    return best[2]


def _closest_move(job: Job, size: list[int], dropped: set[int], diff: float) -> tuple[set[int], set[int]] | None:
    """The drop of one kept unit, restore of one dropped unit, or swap of the two whose sizes bring the token
    count closest to the target (``diff``: count - target); among equals, the one costing the least score.
    Returns (units to drop, units to restore), or None when no move gets closer."""
    scores = job.scores
    kept = {}  # size -> the lowest-scored kept unit of that size (unscored units are never moved)
    for u in range(len(size)):
        if u in dropped or math.isnan(scores[u]):
            continue
        if size[u] not in kept or scores[u] < scores[kept[size[u]]]:
            kept[size[u]] = u
    back = {}  # size -> the highest-scored dropped unit of that size (never one the coarse step removed)
    for u in dropped:
        if math.isfinite(scores[u]) and (size[u] not in back or scores[u] > scores[back[size[u]]]):
            back[size[u]] = u
    options = [(abs(diff - s), scores[u], {u}, set()) for s, u in kept.items()]
    options += [(abs(diff + s), -scores[d], set(), {d}) for s, d in back.items()]
    options += [(abs(diff - s + t), scores[u] - scores[d], {u}, {d}) for s, u in kept.items() for t, d in back.items()]
    options = [o for o in options if o[0] < abs(diff)]
    if not options:
        return None
    best = min(options, key=lambda o: (o[0], o[1]))
    return best[2], best[3]


def drop_lowest(job: Job, units: list[int], keep_tokens: float) -> None:
    """Among ``units``, keep the highest-scored up to ``keep_tokens`` tokens and drop the rest."""
    size = [len(u) for u in job.units.units]
    kept = 0
    for u in sorted(units, key=lambda u: (math.isnan(job.scores[u]), job.scores[u]), reverse=True):
        if kept < keep_tokens and (kept + size[u] - keep_tokens <= keep_tokens - kept or not kept):
            kept += size[u]
        else:
            job.dropped.add(u)


def self_information(llm, jobs: list[Job], window: int) -> list[list[tuple[int, float]]]:
    """Per job: every token's loss given the original text before it (windows of ``window`` tokens, each with
    the text before it as prefix), as (token index, loss) pairs in text order; one batched call."""
    plan = [(j, a, b) for j, job in enumerate(jobs) for a, b in windows(job.units, window)]
    texts, prefixes = [], []
    for j, a, b in plan:
        units = jobs[j].units
        start, end = units.spans[a][0], units.spans[b - 1][1]
        texts.append(units.text[start:end])
        prefixes.append(units.text[:start])
    out: list[list[tuple[int, float]]] = [[] for _ in jobs]
    for (j, a, _), (spans, losses) in zip(plan, token_losses(llm, prefixes, texts)):
        out[j].extend(zip(token_indices(jobs[j].units, jobs[j].units.spans[a][0], spans), losses))
    return out


def selective_context(llm, jobs: list[Job], window: int = 512) -> None:
    """Score every unit by self-information (original text as context), then drop the least informative."""
    for job, losses in zip(jobs, self_information(llm, jobs, window)):
        set_unit_scores(job, losses)
        drop_lowest(job, list(range(len(job.units.units))), job.keep_target)
        fit_ratio(job, llm.tokenizer)


def paragraphs(units: Units) -> list[tuple[int, int]]:
    """Token ranges [first, last) of the paragraphs (split at blank lines)."""
    cuts = [m.end() for m in _PARAGRAPH.finditer(units.text)]
    starts = [a for a, _ in units.spans]
    bounds = sorted({0, *[bisect.bisect_left(starts, c) for c in cuts], len(units.spans)})
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def llmlingua(llm, jobs: list[Job], iterative_size: int = 200, coarse: bool = True, slack: float = 1.3,
              window: int = 512) -> None:
    """Budget controller, coarse paragraph filter, then iterative window-by-window compression (see module doc).

    One first pass gives every token's loss given the original text before it (``window`` tokens per call);
    it ranks the paragraphs for the coarse step, and it *is* the conditional loss of every iterative window
    whose compressed prefix is still the original text (nothing dropped before it): those windows need no
    second call. Only windows after a drop are scored again, after the compressed text before them: re-read,
    so the condition is exactly the compressed text (the llmlingua package instead keeps the KV cache of the kept
    tokens, states computed while the dropped ones were still there; cheaper, and an approximation)."""
    first = self_information(llm, jobs, window)
    spans_of = [paragraphs(job.units) for job in jobs]
    if coarse:
        _coarse(jobs, spans_of, first, slack)
    plans = []
    for job, paras in zip(jobs, spans_of):
        kept = [p for p in paras if not _all_dropped(job, *p)]
        plans.append([w for a, b in kept for w in windows(job.units, iterative_size, a, b)])
    kept_so_far = [0.0] * len(jobs)
    for step in range(max((len(p) for p in plans), default=0)):
        todo = [(j, plans[j][step]) for j in range(len(jobs)) if step < len(plans[j])]
        again = [(j, (a, b)) for j, (a, b) in todo if _dropped_before(jobs[j], a)]
        prefixes, texts = [], []
        for j, (a, b) in again:
            units = jobs[j].units
            start = units.spans[a][0]
            prefixes.append(_render_before(jobs[j], start))
            texts.append(units.text[start:units.spans[b - 1][1]])
        scored = dict(zip(again, token_losses(llm, prefixes, texts)))
        for j, (a, b) in todo:
            job = jobs[j]
            if (j, (a, b)) in scored:
                add_scores(job, job.units.spans[a][0], *scored[(j, (a, b))])
            else:
                set_unit_scores(job, ((t, loss) for t, loss in first[j] if a <= t < b))
            here = _units_in(job, a, b)
            later = sum(len(job.units.units[u]) for w in plans[j][step:] for u in _units_in(job, *w))
            tau = min(1.0, max(0.0, (job.keep_target - kept_so_far[j]) / later)) if later else 1.0
            drop_lowest(job, here, tau * sum(len(job.units.units[u]) for u in here))
            kept_so_far[j] += sum(len(job.units.units[u]) for u in here if u not in job.dropped)
    for job in jobs:
        fit_ratio(job, llm.tokenizer)


def _dropped_before(job: Job, first: int) -> bool:
    """Whether any unit starting before token ``first`` is dropped (then the text before it is compressed)."""
    return any(job.units.units[u][0] < first for u in job.dropped)


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


def _coarse(jobs: list[Job], spans_of: list[list[tuple[int, int]]], first: list[list[tuple[int, float]]],
            slack: float) -> None:
    """Rank paragraphs by perplexity (their tokens' mean loss in the first pass) and drop the lowest whole,
    keeping slack x the budget (2+ paragraphs only)."""
    for j, paras in enumerate(spans_of):
        if len(paras) < 2:
            continue
        ranked = []
        for a, b in paras:
            losses = [loss for t, loss in first[j] if a <= t < b]
            ranked.append((sum(losses) / max(1, len(losses)), a, b))
        job, kept = jobs[j], 0
        for _, a, b in sorted(ranked, reverse=True):
            units = sorted({job.units.unit_of[t] for t in range(a, b) if t in job.units.unit_of})
            if kept >= job.keep_target * slack:
                for u in units:
                    job.dropped.add(u)
                    job.scores[u] = -math.inf
            kept += sum(len(job.units.units[u]) for u in units)
