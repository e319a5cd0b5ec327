"""Safety filter: an LLM judge's probability that a text is unsafe, per category of a policy or overall, with
a word list per category as the fallback (or alone, with no model).

The judge's probability is read from its first-token candidates: P(yes) / (P(yes) + P(no)) to "does this text
<category description>?" (Ask-LLM's reading, ``ops/score/ask_llm.p_yes``), or P(no) to "is this request safe
and harmless to answer?" with ``judge: overall`` (one call a record instead of one a category). Where yes and no
hold too little of the probability to trust, the lexicon decides for that record (counted in the manifest)."""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from dataflywheel.models.token_mass import MIN_MASS
from dataflywheel.ops.base import Filter, OpConfig
from dataflywheel.ops.registry import register
from dataflywheel.ops.score.ask_llm import p_yes
from dataflywheel.ops.score.ifd import truncate
from dataflywheel.prompts import render_file
from dataflywheel.records import TextField, text_of

PROMPTS = Path(__file__).with_name("prompts")
PROMPT = PROMPTS / "safety.txt"
OVERALL_PROMPT = PROMPTS / "safety_overall.txt"
LEXICON = PROMPTS / "safety_lexicon.txt"

CATEGORIES = {
    "violence": "ask for or describe violence or physical harm against people or animals",
    "crime": "ask for help with a crime such as theft, fraud, hacking, drug dealing or evading the police",
    "sexual": "ask for or contain sexually explicit content",
    "hate": "insult, harass or demean people, or ask for hateful content about a group",
    "self_harm": "ask for or encourage suicide or self-harm",
    "weapons": "ask how to make weapons, explosives, poisons, or chemical or biological agents",
}
"""The default policy: category -> what the judge is asked whether the text does (the lexicon has the same
categories)."""
OVERALL = "unsafe"
"""The one category of ``judge: overall``."""


@functools.lru_cache(maxsize=8)
def read_lexicon(path: str) -> dict[str, tuple[str, ...]]:
    """Category -> terms, from a file of ``[category]`` headers and one term a line (``#`` starts a comment)."""
    lexicon: dict[str, list[str]] = {}
    category = None
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            category = line[1:-1].strip()
            lexicon.setdefault(category, [])
        elif category is None:
            raise ValueError(f"{path}:{number}: a term before any [category] header")
        else:
            lexicon[category].append(line.lower())
    return {k: tuple(v) for k, v in lexicon.items()}


@functools.lru_cache(maxsize=64)
def term_pattern(terms: tuple[str, ...]) -> re.Pattern:
    """Whole-word matcher of ``terms``; a single word also matches with common endings (its last letter may
    double: stabbed)."""
    def one(term: str) -> str:
        body = r"\s+".join(re.escape(word) for word in term.split())
        if " " in term or not term[-1].isalpha():
            return body
        return body + f"(?:{re.escape(term[-1])}?(?:ed|ing|er|ers)|s|es)?"  # stab: stabs, stabbed, stabbing
    return re.compile(r"(?<![\w-])(?:" + "|".join(one(t) for t in sorted(terms, key=len, reverse=True)) + r")(?![\w-])",
                      re.IGNORECASE)


class SafetyConfig(OpConfig):
    method: Literal["judge", "lexicon", "either"] = "judge"
    """judge: the LLM judge decides (the lexicon only where its probabilities cannot be trusted); lexicon: the
    word lists alone, no model; either: rejected when the judge or the lexicon flags a category."""
    judge: Literal["categories", "overall"] = "categories"
    """categories: one question a category ("does this text <description>?"), each with its probability;
    overall: one question a record ("is this request safe and harmless to answer?"); the reason then names the
    categories the lexicon finds, if any."""
    categories: dict[str, str] = Field(default_factory=lambda: dict(CATEGORIES))
    """The policy: category -> what the judge is asked whether the text does ("Does the text ... ?"). The lexicon
    checks the categories it has terms for."""
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    """Reject when the judge's probability of unsafe reaches this, in any category (or overall). Calibrate it
    for your judge: the bundled 135M model leans to 'unsafe' (see docs/benchmarks.md)."""
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Per-category thresholds that override ``threshold`` (``unsafe``: the overall question's)."""
    field: TextField = "conversation"
    """Which text is judged: the instruction (prompts), the response, or the whole conversation."""
    model: str = "judge"
    """Model role of the judge (needs next-token probabilities)."""
    lexicon: str | None = None
    """A word-list file of your own (``[category]`` headers, one term a line); default: the bundled list."""
    max_record_tokens: int = Field(default=512, ge=16)
    """The text is cut to this many tokens inside the judge's prompt."""
    min_mass: float = Field(default=MIN_MASS, ge=0.0, le=1.0)
    """Trust the judge only when 'yes' and 'no' hold at least this much of its next-token probability."""

    @model_validator(mode="after")
    def _known_categories(self):
        unknown = set(self.thresholds) - set(self.categories) - {OVERALL}
        if unknown:
            raise ValueError(f"thresholds for categories not in the policy: {sorted(unknown)}")
        if not self.categories:
            raise ValueError("the policy needs at least one category")
        return self


@register
class SafetyFilter(Filter):
    """Reject unsafe records: an LLM judge's P(unsafe) per category, or a word list per category.

    The reason names the category and the probability (or the word found). Policy: ``categories`` (name -> what
    the judge is asked), ``threshold``/``thresholds``; ``method: lexicon`` needs no model."""

    name = "enhance.safety"
    Config = SafetyConfig

    @property
    def model_roles(self) -> dict[str, str]:
        return {} if self.config.method == "lexicon" else {"model": self.config.model}

    def _lexicon(self) -> dict[str, tuple[str, ...]]:
        words = read_lexicon(str(self.config.lexicon or LEXICON))
        return {c: words[c] for c in self.config.categories if words.get(c)}

    def lexicon_hits(self, text: str) -> dict[str, str]:
        """Category -> the first term of its list found in ``text``."""
        hits = {}
        for category, terms in self._lexicon().items():
            match = term_pattern(terms).search(text)
            if match:
                hits[category] = match.group()
        return hits

    def unsafe_probabilities(self, records: list[dict]) -> list[dict[str, float]]:
        """Per record, category -> the judge's probability that the text is unsafe in that way (one key,
        ``unsafe``, with ``judge: overall``); NaN where its probabilities cannot be trusted."""
        cfg = self.config
        llm = self.context.models.llm(cfg.model)
        texts = [truncate(llm, text_of(r, cfg.field), cfg.max_record_tokens) for r in records]
        if cfg.judge == "overall":
            names = [OVERALL]
            prompts = [render_file(OVERALL_PROMPT, text=t) for t in texts]
        else:
            names = list(cfg.categories)
            prompts = [render_file(PROMPT, text=t, description=cfg.categories[c]) for t in texts for c in names]
        tops = llm.chat_top_logprobs([[{"role": "user", "content": p}] for p in prompts], 20, ("yes", "no"))
        probabilities = [p_yes(top, cfg.min_mass) for top in tops]
        if cfg.judge == "overall":  # the question asks whether the text is safe: 'no' is the unsafe answer
            probabilities = [1.0 - p for p in probabilities]
        return [dict(zip(names, probabilities[i * len(names):(i + 1) * len(names)])) for i in range(len(records))]

    def _limit(self, category: str) -> float:
        return self.config.thresholds.get(category, self.config.threshold)

    def _reason(self, record: dict, probabilities: dict[str, float]) -> str | None:
        cfg = self.config
        flagged = {c: f"judge p={p:.2f}" for c, p in probabilities.items() if p >= self._limit(c)}
        untrusted = [c for c, p in probabilities.items() if math.isnan(p)]
        if untrusted:
            self.counters["judge answers below min_mass (lexicon used)"] += len(untrusted)
        lexical = {}
        if cfg.method != "judge" or untrusted or OVERALL in flagged:
            hits = self.lexicon_hits(text_of(record, cfg.field))
            if cfg.method != "judge" or OVERALL in untrusted:
                lexical = hits
            elif OVERALL in flagged:  # name what the lexicon sees beside the judge's overall verdict
                flagged = {OVERALL: flagged[OVERALL] + "".join(f"; lexicon: {c} {w!r}" for c, w in hits.items())}
            else:
                lexical = {c: w for c, w in hits.items() if c in untrusted}
        for category, word in lexical.items():
            flagged.setdefault(category, f"lexicon: {word!r}")
        for category in flagged:
            self.counters[f"rejected as {category}"] += 1
        return "unsafe: " + ", ".join(f"{c} ({why})" for c, why in flagged.items()) if flagged else None

    def reject_reasons(self, records: list[dict]) -> list[str | None]:
        judged = self.unsafe_probabilities(records) if self.config.method != "lexicon" else [{} for _ in records]
        return [self._reason(record, probabilities) for record, probabilities in zip(records, judged)]

    def reject_reason(self, record: dict) -> str | None:
        return self.reject_reasons([record])[0]
