"""Evol-Instruct (Xu et al., 2023, WizardLM): instructions rewritten into harder or rarer ones, round after round.

Each round (the paper's epoch; M = 4) evolves every instruction of the current pool: the input records and
the latest survivor of each chain. One method per instruction, picked uniformly at random (seeded by the run
seed, the round and the record's id): in-depth (add a constraint, deepen, concretize, increase reasoning
steps, complicate the input with data in a format such as JSON or a table, shown by two in-context examples)
or in-breadth (a new, rarer prompt of the same domain). The prompts follow the reference
(nlpxucan/WizardLM ``Evol_Instruct/depth.py``, ``breadth.py``; the "Equal / Not Equal" check from the paper's
appendix), sent with the system prompt "You are a helpful assistant." at temperature 1, top_p 0.95. The same
model answers each evolved instruction. An evolution is eliminated, with its own reason, when

(a) it brings no information gain: the model judges it "Equal" to the instruction it came from (or it
    repeats that instruction);
(b) the answer contains "sorry" and has fewer than 80 words (the model struggles to answer);
(c) the answer is only punctuation and stop words;
(d) the instruction copies words of the evolving prompt ("given prompt", "#Rewritten Prompt#", ...).

An eliminated instruction stays in the pool and is evolved again (by a newly drawn method) next round; a
survivor becomes a record and replaces its parent in the pool, so round t evolves round t-1's survivors. With
``keep_inputs`` (the default) the output merges the inputs and every round's survivors, as the paper does.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from dataflywheel.models.llm import GenerationParams
from dataflywheel.ops.base import Candidate, PoolGenerator, PoolGeneratorConfig, PoolView, Rejected
from dataflywheel.ops.isolate import each_request_alone, request_failed
from dataflywheel.ops.registry import register
from dataflywheel.prompts import render_file
from dataflywheel.records import instruction_text

PROMPTS = Path(__file__).with_name("prompts")

Method = Literal["add_constraints", "deepen", "concretize", "increase_reasoning", "complicate_input", "breadth"]
DEPTH_METHODS = {
    "add_constraints": "Please add one more constraints/requirements into #The Given Prompt#.",
    "deepen": "If #The Given Prompt# contains inquiries about certain issues, the depth and breadth of the inquiry "
              "can be increased.",
    "concretize": "Please replace general concepts with more specific concepts.",
    "increase_reasoning": "If #The Given Prompt# can be solved with just a few simple thinking processes, you can "
                          "rewrite it to explicitly request multiple-step reasoning.",
}
METHODS: tuple[str, ...] = (*DEPTH_METHODS, "complicate_input", "breadth")
INPUT_FORMATS = ("XML data", "a SQL database table", "Python code", "an HTML page", "a shell command",
                 "JSON data", "a LaTeX snippet", "a mathematical formula", "a Markdown table")
"""What complicate_input adds as the instruction's input (the paper's list of input kinds)."""
COPY_PHRASES = ("given prompt", "rewritten prompt", "created prompt", "prompt rewriter", "prompt creator")
"""Words of the evolving prompts that must not appear in an evolved instruction (case and '#' ignored)."""

# Rule c's stop words: NLTK's English stop-word list (nltk_data corpora/stopwords/english, the 179 words of
# NLTK 3.8), written as there (the paper names no list).
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his
himself she she's her hers herself it it's its itself they them their theirs themselves what which who whom
this that that'll these those am is are was were be been being have has had having do does did doing a an the
and but if or because as until while of at by for with about against between into through during before after
above below to from up down in out on off over under again further then once here there when where why how all
any both each few more most other some such no nor not only own same so than too very s t can will just don
don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn
hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn
shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
""".split())

# "#Rewritten Prompt#:", "**Rewritten Prompt:**", "The Given Prompt:" ... at the start of a line
_LABEL = re.compile(r"^[ \t]*(?:[#*]+[ \t]*)?(?:the[ \t]+)?(given|rewritten|created|new)[ \t]+prompt[ \t]*[#*]*"
                    r"[ \t]*:[ \t]*[*#]*[ \t]*", re.IGNORECASE | re.MULTILINE)
_LAYOUT = re.compile(r"\bprompt#", re.IGNORECASE)
_FENCED = re.compile(r"^\s*```[\w+-]*[ \t]*\n(.*?)\n[ \t]*```\s*$", re.DOTALL)
_QUOTES = [('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("**", "**")]
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_VERDICT = re.compile(r"\b(not[\s_-]*equal|unequal|equal)\b", re.IGNORECASE)


def evolving_prompt(method: str, instruction: str, rng: random.Random,
                    formats: list[str] | tuple[str, ...] = INPUT_FORMATS) -> str:
    """The prompt that evolves ``instruction`` by ``method`` (complicate_input draws one of ``formats``)."""
    if method == "breadth":
        return render_file(PROMPTS / "evol_breadth.txt", instruction=instruction)
    if method == "complicate_input":
        return render_file(PROMPTS / "evol_complicate_input.txt", instruction=instruction,
                           data_format=rng.choice(formats))
    return render_file(PROMPTS / "evol_depth.txt", instruction=instruction, method=DEPTH_METHODS[method])


def _unfence(text: str, notes: list[str]) -> str:
    fenced = _FENCED.match(text)
    if fenced and "```" not in fenced.group(1):  # one block around everything, not two blocks and text between
        notes.append("code fence around the instruction (unwrapped)")
        return fenced.group(1).strip()
    return text


def clean_evolution(text: str) -> tuple[str, list[str]]:
    """The evolved instruction in a model's answer, and what was cleaned away (for the counters).

    A code fence around the whole answer is unwrapped (fences inside stay: they may hold the added input).
    The evolving prompt's layout labels at the start of a line ("#Rewritten Prompt#:", "**Created Prompt:**",
    "#The Given Prompt#:") cut the answer into segments. The instruction is the first non-empty segment
    labelled rewritten/created/new (what comes before it: a preamble or an echo of the given prompt; after it: a
    continued example), or, when the answer opens with text and then starts a "#The Given Prompt#" example, that
    opening text. When no segment can be told apart as the rewrite, the text stays as it is, labels and all,
    and the copy rule rejects it. Wrapping quotes are removed."""
    notes: list[str] = []
    text = _unfence(text.strip(), notes)
    labels = list(_LABEL.finditer(text))
    if labels:
        opening = text[:labels[0].start()].strip()
        lead = "" if opening.endswith(":") else opening  # "Here is the new prompt:" introduces what follows
        segments = [(label.group(1).lower(), text[label.end():labels[n + 1].start() if n + 1 < len(labels)
                                                    else len(text)].strip()) for n, label in enumerate(labels)]
        rewrite = next((n for n, (kind, body) in enumerate(segments) if kind != "given" and body), None)
        if lead and segments[0][0] == "given":
            text = lead
            notes.append("a new example after the instruction (cut)")
        elif rewrite is not None:
            text = _unfence(segments[rewrite][1], notes)
            notes.append("layout label before the instruction (stripped)")
            if opening or rewrite > 0:
                notes.append("text before the labelled instruction (dropped)")
            if rewrite + 1 < len(segments):
                notes.append("text after the labelled instruction (cut)")
        elif not opening and not any(body for _, body in segments):
            text = ""  # nothing but labels
    changed = True
    while changed and len(text) >= 2:
        changed = False
        for left, right in _QUOTES:
            if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right) \
                    and left not in text[len(left):-len(right)]:
                text, changed = text[len(left):-len(right)].strip(), True
                notes.append("wrapping quotes")
    return text.strip(), notes


def copied_phrase(instruction: str, phrases: list[str] | tuple[str, ...]) -> str | None:
    """The first phrase of the evolving prompt that ``instruction`` copies (case, '#', '*' and spacing ignored),
    or the prompts' '#... Prompt#' label layout however the words around it are spelt ("#Rewriten Prompt#")."""
    flat = " ".join(re.sub(r"[#*_]", " ", instruction).lower().split())
    found = next((p for p in phrases if " ".join(p.lower().split()) in flat), None)
    if found is None and _LAYOUT.search(instruction):
        return "Prompt#"
    return found


def read_verdict(answer: str) -> bool | None:
    """The information-gain check's verdict: True for "Equal", False for "Not Equal", None when neither is
    written (the first verdict word counts)."""
    found = _VERDICT.search(answer)
    if not found:
        return None
    return found.group(1).lower() == "equal"


def words(text: str) -> list[str]:
    """Lower-cased words (curly apostrophes read as straight ones), punctuation dropped."""
    return _WORD.findall(text.lower().replace("’", "'"))


def only_stop_words(answer: str) -> bool:
    """Whether ``answer`` is nothing but punctuation and stop words."""
    return all(w in STOP_WORDS for w in words(answer))


def same_text(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def evol_meta(record: dict) -> dict:
    return (record.get("meta") or {}).get("evol_instruct") or {}


class EvolInstructConfig(PoolGeneratorConfig):
    max_rounds: int = Field(default=4, ge=1)
    """Rounds of evolution (the paper's epochs, M = 4)."""
    model: str = "default"
    """Model role that evolves, checks and answers (gpt-3.5-turbo in the paper)."""
    methods: list[Method] = Field(default_factory=lambda: list(METHODS), min_length=1)
    """Evolutions to draw from, uniformly (the public script draws from the first four in-depth ones and
    breadth; the paper adds complicate_input)."""
    input_formats: list[str] = Field(default_factory=lambda: list(INPUT_FORMATS), min_length=1)
    """Kinds of input data complicate_input may add (one drawn per evolution)."""
    per_round: int | None = Field(default=None, ge=1)
    """Evolve at most this many pool instructions per round (seeded random ones, the deepest chains first);
    None: every one, as the paper does."""
    system: str | None = "You are a helpful assistant."
    """System prompt of every call (the reference's); None sends none."""
    temperature: float = Field(default=1.0, ge=0.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    """Sampling of evolutions and answers (the reference: temperature 1, top_p 0.95)."""
    max_tokens: int = Field(default=512, ge=1)
    """Tokens per evolved instruction (the reference allows 2048; rewrites add 10-20 words, so less is plenty)."""
    answer_max_tokens: int = Field(default=1024, ge=1)
    """Tokens per answer (the reference: 2048; lower for small local models)."""
    check_gain: bool = True
    """Eliminate evolutions the model judges "Equal" to their parent instruction (rule a)."""
    check_max_tokens: int = Field(default=8, ge=1)
    """Tokens of the check's answer (it should be "Equal" or "Not Equal"; greedy)."""
    unparsable_check: Literal["keep", "reject"] = "keep"
    """A check answer that is neither "Equal" nor "Not Equal" (counted): keep the evolution (the rule
    eliminates only on the verdict "Equal") or reject it."""
    sorry_max_words: int = Field(default=80, ge=0)
    """Rule b: eliminate an answer containing "sorry" with fewer words than this."""
    copy_phrases: list[str] = Field(default_factory=lambda: list(COPY_PHRASES))
    """Rule d: eliminate an evolved instruction containing any of these (case, '#' and spacing ignored)."""


@register
class EvolInstruct(PoolGenerator):
    """Evol-Instruct: instructions evolved in depth and breadth for rounds, failed evolutions eliminated and retried."""

    name = "synth.evol_instruct"
    Config = EvolInstructConfig

    # ---- the pool -------------------------------------------------------------------------------

    def heads(self, view: PoolView) -> list[dict]:
        """The pool to evolve this round: the input records and accepted evolutions that have no accepted
        evolution yet (a failed evolution leaves its parent here; a survivor replaces it), one per
        instruction text."""
        evolved = set()
        for record in view.accepted:
            entry = (record.get("lineage") or [{}])[-1]
            evolved.update(entry.get("parents") or [])
        heads, seen = [], set()
        for record in [r for batch in view.scan() for r in batch] + list(view.accepted):
            text = " ".join(instruction_text(record).split())
            if record["id"] in evolved or text.lower() in seen:
                continue
            if not text:
                self.counters["pool records without an instruction (skipped)"] += 1
                continue
            seen.add(text.lower())
            heads.append(record)
        return heads

    def pick(self, heads: list[dict], view: PoolView) -> list[dict]:
        """This round's share of the pool: all of it, or ``per_round`` seeded random ones, deepest chains first."""
        if self.config.per_round is None or len(heads) <= self.config.per_round:
            return heads
        rng = random.Random(f"evol_instruct:{self.context.seed}:{view.round}")
        order = rng.sample(heads, len(heads))
        order.sort(key=lambda r: -int(evol_meta(r).get("depth", 0)))
        return order[:self.config.per_round]

    def method_for(self, record: dict, round_: int) -> tuple[str, random.Random]:
        """The evolution drawn for ``record`` in ``round_`` (and the draw's generator, for its data format)."""
        rng = random.Random(f"evol_instruct:{self.context.seed}:{round_}:{record['id']}")
        return rng.choice(self.config.methods), rng

    # ---- propose --------------------------------------------------------------------------------

    def _conversation(self, text: str) -> list[dict]:
        system = [{"role": "system", "content": self.config.system}] if self.config.system else []
        return system + [{"role": "user", "content": text}]

    def propose(self, view: PoolView):
        cfg = self.config
        llm = self.context.models.llm(cfg.model)
        chosen = self.pick(self.heads(view), view)
        if not chosen:
            return
        sampled = GenerationParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                   seed=self.context.seed * 1000 + view.round)
        drawn, prompts = [], []
        for record in chosen:
            method, rng = self.method_for(record, view.round)
            drawn.append(method)
            prompts.append(evolving_prompt(method, instruction_text(record), rng, cfg.input_formats))
        evolved = []  # (parent record, method, evolved instruction)
        raws = each_request_alone(lambda asks: llm.chat(asks, sampled), [self._conversation(p) for p in prompts])
        for record, method, answer in zip(chosen, drawn, raws):
            if isinstance(answer, Exception):  # the parent stays in the pool: evolved again next round
                yield request_failed(answer, [record["id"]])
                continue
            [raw] = answer
            instruction, notes = clean_evolution(raw)
            for note in notes:
                self.counters[f"evolutions cleaned: {note}"] += 1
            reject = self._reject_instruction(record, method, instruction, raw)
            if reject:
                yield reject
            else:
                evolved.append((record, method, instruction))
        if cfg.check_gain and evolved:
            evolved = yield from self._check_gain(llm, evolved)
        if not evolved:
            return
        answering = sampled.model_copy(update={"max_tokens": cfg.answer_max_tokens})
        answered = each_request_alone(lambda asks: llm.chat(asks, answering),
                                         [self._conversation(i) for _, _, i in evolved])
        for (record, method, instruction), answer in zip(evolved, answered):
            if isinstance(answer, Exception):
                yield request_failed(answer, [record["id"]], self._body(record, method, instruction))
                continue
            yield self._judge_answer(record, method, instruction, answer[0].strip())

    def _body(self, record: dict, method: str, instruction: str, answer: str | None = None, **extra) -> dict:
        """The record of an evolution (prompt-only while it has no answer), its lineage facts in meta."""
        messages = [{"role": "user", "content": instruction}]
        if answer:
            messages.append({"role": "assistant", "content": answer})
        depth = int(evol_meta(record).get("depth", 0)) + 1
        root = evol_meta(record).get("root") or record["id"]
        return {"messages": messages, "meta": {"evol_instruct": {"evolution": method, "depth": depth, "root": root,
                                                                 **extra}}}

    def _reject_instruction(self, record: dict, method: str, instruction: str, raw: str) -> Rejected | None:
        """Rules on the evolved instruction alone: empty, copies the evolving prompt (d), repeats its parent (a)."""
        parents = [record["id"]]
        if not instruction:
            self.counters["unparsable evolutions (empty after cleaning)"] += 1
            return Rejected(f"unparsable: no instruction in the {method} evolution", raw=raw, parents=parents)
        phrase = copied_phrase(instruction, self.config.copy_phrases)
        if phrase:
            return Rejected(f"copied from the evolving prompt: {phrase!r} in the instruction",
                            raw=raw, record=self._body(record, method, instruction), parents=parents)
        if same_text(instruction, instruction_text(record)):
            return Rejected("no information gain: the evolution repeats its instruction",
                            raw=raw, record=self._body(record, method, instruction), parents=parents)
        return None

    def _check_gain(self, llm, evolved: list[tuple[dict, str, str]]):
        """Rule a: the model's Equal / Not Equal verdict on each evolution vs its parent; yields the rejects and
        returns the evolutions that pass."""
        prompts = [render_file(PROMPTS / "evol_equal.txt", first=instruction_text(r), second=i) for r, _, i in evolved]
        check = GenerationParams(max_tokens=self.config.check_max_tokens)
        verdicts = each_request_alone(lambda asks: llm.chat(asks, check), [self._conversation(p) for p in prompts])
        kept = []
        for (record, method, instruction), verdict in zip(evolved, verdicts):
            if isinstance(verdict, Exception):
                yield request_failed(verdict, [record["id"]], self._body(record, method, instruction))
                continue
            [answer] = verdict
            equal = read_verdict(answer)
            if equal is None:
                self.counters["unparsable information-gain checks"] += 1
                if self.config.unparsable_check == "reject":
                    yield Rejected(f"unparsable information-gain check: {answer.strip()[:80]!r}", raw=answer,
                                   record=self._body(record, method, instruction), parents=[record["id"]])
                    continue
            if equal:
                yield Rejected("no information gain: judged Equal to its instruction", raw=answer,
                               record=self._body(record, method, instruction), parents=[record["id"]])
                continue
            kept.append((record, method, instruction))
        return kept

    def _judge_answer(self, record: dict, method: str, instruction: str, answer: str) -> Candidate | Rejected:
        """Rules on the answer: empty, sorry and short (b), only punctuation and stop words (c); else a candidate."""
        cfg = self.config
        body = self._body(record, method, instruction, answer)
        parents = [record["id"]]
        count = len(answer.split())
        if not answer:
            self.counters["empty answers"] += 1
            return Rejected("empty answer", record=body, parents=parents)
        if "sorry" in answer.lower() and count < cfg.sorry_max_words:
            return Rejected(f"hard to answer: the answer says 'sorry' in {count} words (< {cfg.sorry_max_words})",
                            record=body, parents=parents)
        if only_stop_words(answer):
            return Rejected("answer is only punctuation and stop words", record=body, parents=parents)
        meta = body["meta"]["evol_instruct"]
        return Candidate(body, parents=parents,
                         details={"method": "evol_instruct", "evolution": method, "depth": meta["depth"]})

    # ---- verify ---------------------------------------------------------------------------------

    def verify(self, candidates: list[dict], view: PoolView) -> list[str | None]:
        """An evolved instruction already in the pool, already accepted or earlier in this round is a duplicate."""
        seen = {" ".join(instruction_text(r).lower().split()) for batch in view.scan() for r in batch}
        seen |= {" ".join(instruction_text(r).lower().split()) for r in view.accepted}
        reasons = []
        for record in candidates:
            text = " ".join(instruction_text(record).lower().split())
            reasons.append("duplicate instruction: already in the pool, accepted or proposed this round"
                           if text in seen else None)
            seen.add(text)
        return reasons
