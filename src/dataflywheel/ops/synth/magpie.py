"""Magpie (Xu et al., 2024): alignment data from an aligned chat model given only its pre-query template.

The pre-query template is read from the generator's own chat template: a conversation whose user message is
a sentinel is formatted and cut at the sentinel (ChatML gives ``<|im_start|>user\\n`` after any default
system turn, Llama-3 ``<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n``). Raw completion of
that prefix (transformers, or an OpenAI-compatible ``/v1/completions``) samples user queries: the paper's
temperature 1.0 and top_p 1.0 (``magpie.sh`` uses 1.1 / 0.99), stopping at the template's end-of-turn and
header markers, the tokenizer's EOS, "assistant" and a newline. Each query is answered through the normal
chat template, greedily (repetition penalty 1.0, the only one our backends use).

Filters that run offline, each reject with its own reason: empty or too-short queries, queries ending in ':'
(the Pro filter), repeats (same normalised text, or an embedding min-neighbour distance below 0.05 - squared
L2 between unit vectors, as the paper's FAISS search - against the pool, everything accepted and the
earlier queries of the round), and optionally the input-quality tag (very poor .. excellent, JSON; keep good
and excellent). Tagging is off by default: the bundled 135M model cannot rate queries reliably. Optional
multi-turn: a follow-up query is sampled with the pre-query template after the first exchange (the paper's
``gen_mt.py``: its multi-round system prompt, then the user header).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from pydantic import Field

from dataflywheel.models.llm import GenerationParams, tokenizer_of
from dataflywheel.models.structured import extract_json
from dataflywheel.ops.base import Candidate, PoolGeneratorConfig, PoolView, Rejected, SourceGenerator
from dataflywheel.ops.isolate import each_request_alone, request_failed
from dataflywheel.ops.registry import register
from dataflywheel.prompts import render_file

PROMPTS = Path(__file__).with_name("prompts")
SENTINEL = "MAGPIEPREQUERYSENTINEL"
"""The user message whose position in the formatted conversation marks where the query would start (no
spaces: templates that trim the content leave it whole)."""
SYSTEM_PRESETS = ("math", "code", "translation")
"""Names of the paper's steering system prompts (prompts/magpie_system_<name>.txt)."""
QUALITY_LEVELS = ("very poor", "poor", "average", "good", "excellent")
QUALITY_SCHEMA = {"type": "object", "properties": {"explanation": {"type": "string"},
                                                   "input_quality": {"type": "string", "enum": list(QUALITY_LEVELS)}},
                  "required": ["input_quality"]}
_MARKER = re.compile(r"<\|[^|<>\s]{1,40}\|>|<[A-Za-z_][\w/]{0,30}>|</s>|\[/?INST\]")
_QUALITY = re.compile(r"input[_ ]quality\W{0,6}(very poor|poor|average|good|excellent)", re.IGNORECASE)


# ---- the pre-query template ---------------------------------------------------------------------


def conversation_for(history: list[dict] = (), system: str | None = None) -> list[dict]:
    """``history`` with the sentinel user turn after it (and ``system`` first, when given)."""
    turns = [{"role": "system", "content": system}] if system else []
    return turns + list(history) + [{"role": "user", "content": SENTINEL}]


def cut_at_sentinel(text: str) -> str:
    """The text before the sentinel: the pre-query template. ValueError when the template lost the sentinel."""
    cut = text.find(SENTINEL)
    if cut < 0:
        raise ValueError("the chat template did not keep the user message, so its pre-query template cannot be "
                         "found: " + repr(text[:200]))
    return text[:cut]


def pre_query_template(format_chat, history: list[dict] = (), system: str | None = None) -> str:
    """What the chat template writes before a user message (after ``history``): ``format_chat`` is an LLM's
    ``format_chat(conversation, add_generation_prompt)``."""
    return cut_at_sentinel(format_chat(conversation_for(history, system), False))


def turn_end_markers(format_chat, system: str | None = None) -> list[str]:
    """Special markers the template writes after a user message (end of turn, headers of the next one)."""
    text = format_chat(conversation_for((), system), True)
    cut = text.find(SENTINEL)
    tail = text[cut + len(SENTINEL):] if cut >= 0 else ""
    return list(dict.fromkeys(_MARKER.findall(tail)))


def strip_bos(prefix: str, bos: str | None) -> str:
    """The prefix without a leading BOS text (for servers that add BOS when they tokenize a prompt)."""
    return prefix[len(bos):] if bos and prefix.startswith(bos) else prefix


# ---- filters ------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: the key of the exact-repeat check."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def instruction_problem(text: str, min_words: int) -> str | None:
    """The paper's rule filters on a sampled query (None: it passes)."""
    if not text:
        return "empty instruction"
    words = len(text.split())
    if words < min_words:
        return f"too short: {words} word{'s' * (words != 1)} (min {min_words})"
    if text.endswith(":"):
        return "ends with ':' (an unfinished instruction)"
    return None


def parse_input_quality(text: str) -> str | None:
    """The rating in a tagger's answer: the JSON ``input_quality``, else a labelled rating in the prose,
    else a bare level; None when there is none."""
    try:
        value, _ = extract_json(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("input_quality"), str):
        level = " ".join(value["input_quality"].strip(" []").lower().split())
        if level in QUALITY_LEVELS:
            return level
    found = _QUALITY.findall(text)
    if found:
        return found[-1].lower()
    bare = " ".join(text.strip().strip("\"'`.[]{} ").lower().split())
    return bare if bare in QUALITY_LEVELS else None


class RepeatIndex:
    """Texts known so far, by normalised text and by unit embedding; finds the closest one to a new text."""

    def __init__(self, dim: int = 0):
        self.texts: list[str] = []
        self.exact: dict[str, str] = {}
        self.vectors = np.zeros((0, dim), dtype=np.float32)

    def add(self, texts: list[str], vectors: np.ndarray | None = None) -> None:
        for text in texts:
            self.exact.setdefault(normalise(text), text)
        self.texts += texts
        if vectors is not None and len(vectors):
            self.vectors = vectors if not len(self.vectors) else np.vstack([self.vectors, vectors])

    def same(self, text: str) -> str | None:
        return self.exact.get(normalise(text))

    def nearest(self, vector: np.ndarray) -> tuple[float, str | None]:
        """(squared L2 distance, text) of the closest known embedding; (inf, None) when there is none."""
        if not len(self.vectors):
            return float("inf"), None
        similarity = self.vectors @ vector
        best = int(np.argmax(similarity))
        return max(0.0, 2.0 - 2.0 * float(similarity[best])), self.texts[best]


# ---- the operator -------------------------------------------------------------------------------


class MagpieConfig(PoolGeneratorConfig):
    model: str = "default"
    """Model role that writes the queries and answers them (an aligned chat model with a chat template)."""
    system_prompt: str | None = None
    """Steers the queries: 'math', 'code', 'translation' (the paper's prompts) or any text; None (the paper's
    recommendation) uses whatever the template writes without one."""
    samples: int = Field(default=8, ge=1, le=1000)
    """Queries sampled per round (the paper: n = 200 per call)."""
    temperature: float = Field(default=1.0, gt=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Query sampling (the paper: 1.0 / 1.0; magpie.sh: 1.1 / 0.99)."""
    max_tokens: int = Field(default=128, ge=2)
    """Tokens per query (the paper: 512, cut at the first newline)."""
    reject_truncated: bool = True
    """Reject a query that used all of ``max_tokens`` (cut mid-sentence), where the model shows its tokenizer."""
    stop: list[str] = Field(default_factory=lambda: ["assistant", "\n"])
    """Stop strings of query sampling besides the template's end-of-turn/header markers and the EOS token."""
    strip_bos: bool | None = None
    """Drop a leading BOS text from the pre-query template; None: only for backends that tokenize the prompt
    themselves (openai, vllm) and only when the model's tokenizer adds BOS on its own (Llama-3 does, SmolLM2
    does not); never for transformers, which encodes the text as it is."""
    response_max_tokens: int = Field(default=512, ge=1)
    """Tokens per greedy response (the paper: 2048)."""
    turns: int = Field(default=1, ge=1, le=8)
    """User turns per conversation: later ones are sampled with the pre-query template after the exchange."""
    followup_system_prompt: str | None = "followup"
    """System prompt while sampling follow-up queries ('followup': the paper's multi-round prompt; None: none)."""
    min_words: int = Field(default=3, ge=1)
    """Reject queries of fewer words."""
    embedder: str = "embedder"
    """Model role of the embedder for the repeat check (default: the bundled all-MiniLM-L6-v2; the paper:
    all-mpnet-base-v2)."""
    repeat_distance: float = Field(default=0.05, ge=0.0, le=4.0)
    """Reject a query whose squared L2 distance (2 - 2 cos) to a pool, accepted or earlier query is below this
    (the paper's min_neighbor_distance < 0.05); 0 turns the embedding check off (exact repeats still go)."""
    tag_quality: bool = False
    """Tag each query's input quality with ``tagger_model`` (off by default: a 135M model cannot rate)."""
    tagger_model: str = "default"
    keep_quality: list[str] = Field(default_factory=lambda: ["good", "excellent"])
    """Input-quality levels kept when tagging (the paper's Pro filter: good, excellent)."""
    tag_max_tokens: int = Field(default=256, ge=8)


@register
class Magpie(SourceGenerator):
    """Magpie: queries sampled from a chat model's own pre-query template, answered, repeats dropped (no input)."""

    name = "synth.magpie"
    Config = MagpieConfig

    # ---- templates ------------------------------------------------------------------------------

    def _system(self, name: str | None) -> str | None:
        if name is None:
            return None
        presets = SYSTEM_PRESETS + ("followup",)
        return (PROMPTS / f"magpie_system_{name}.txt").read_text("utf-8") if name in presets else name

    def _strip_bos(self, llm) -> bool:
        if self.config.strip_bos is not None:
            return self.config.strip_bos
        spec = getattr(self.context.models, "spec", None)
        if spec is None or spec(self.config.model).backend not in ("openai", "vllm"):
            return False
        return adds_bos(tokenizer_of(llm))

    def _prefix(self, llm, history: list[dict] = (), system: str | None = None) -> str:
        prefix = pre_query_template(llm.format_chat, history, system)
        return strip_bos(prefix, _tokenizer_attr(llm, "bos_token")) if self._strip_bos(llm) else prefix

    def _stops(self, llm) -> tuple[str, ...]:
        if "_stop" not in vars(self):
            markers = turn_end_markers(llm.format_chat, self._system(self.config.system_prompt))
            eos = _tokenizer_attr(llm, "eos_token")
            self._stop = tuple(dict.fromkeys(markers + ([eos] if eos else []) + list(self.config.stop)))
        return self._stop

    # ---- repeats --------------------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> np.ndarray | None:
        if self.config.repeat_distance <= 0 or not texts:
            return None
        return np.asarray(self.context.models.embedder(self.config.embedder).embed(texts), dtype=np.float32)

    def _known(self, view: PoolView) -> RepeatIndex:
        """The first user turn of every pool and accepted record (accepted ones added as rounds go)."""
        if "_index" not in vars(self):
            self._index = RepeatIndex()
            self._indexed: set[str] = set()
            for batch in view.scan():
                texts = [t for t in (_first_user(r) for r in batch) if t]
                self._index.add(texts, self._embed(texts))
        fresh = [r for r in view.accepted if r["id"] not in self._indexed]
        if fresh:
            texts = [_first_user(r) for r in fresh]
            self._index.add(texts, self._embed(texts))
            self._indexed.update(r["id"] for r in fresh)
        return self._index

    def repeat_reason(self, text: str, vector: np.ndarray | None,
                      indexes: list[RepeatIndex]) -> tuple[str | None, float]:
        """(why ``text`` repeats a known query or None, its min-neighbour distance)."""
        distance = float("inf")
        for index in indexes:
            same = index.same(text)
            if same is not None:
                return f"repeat: same text as {same!r}", 0.0
        if vector is None:
            return None, distance
        for index in indexes:
            found, neighbour = index.nearest(vector)
            if found < self.config.repeat_distance:
                limit = self.config.repeat_distance
                return f"repeat: min neighbour distance {found:.4f} < {limit:g} to {neighbour!r}", found
            distance = min(distance, found)
        return None, distance

    # ---- propose --------------------------------------------------------------------------------

    def _seed(self, view: PoolView, offset: int) -> int:
        return self.context.seed * 1_000_000 + view.round * 10_000 + offset

    def propose(self, view: PoolView):
        cfg = self.config
        llm = self.context.models.llm(cfg.model)
        system = self._system(cfg.system_prompt)
        prefix = self._prefix(llm, system=system)
        params = GenerationParams(n=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p,
                                  max_tokens=cfg.max_tokens, seed=self._seed(view, 0), stop=self._stops(llm))
        [samples] = llm.complete([prefix], params)
        queries: list[str] = []
        for raw in samples:
            text = raw.strip()
            problem = instruction_problem(text, cfg.min_words) or self._truncated(llm, raw)
            if problem:
                self.counters["empty instruction samples" if not text else "instructions failing a rule"] += 1
                yield Rejected(problem, raw=raw)
                continue
            queries.append(text)
        novel = []
        known, this_round = self._known(view), RepeatIndex()
        vectors = self._embed(queries)
        for i, text in enumerate(queries):
            vector = None if vectors is None else vectors[i]
            reason, distance = self.repeat_reason(text, vector, [known, this_round])
            if reason:
                yield Rejected(reason, raw=text)
                continue
            this_round.add([text], None if vector is None else vector[None, :])
            novel.append((text, distance))
        if cfg.tag_quality and novel:
            tagged = []
            for (text, distance), level in zip(novel, self._tag([t for t, _ in novel])):
                if isinstance(level, Exception):
                    yield request_failed(level, raw=text)
                elif level is None:
                    self.counters["unparsable quality tags"] += 1
                    yield Rejected("input quality: the tagger's answer holds no rating", raw=text)
                elif level not in cfg.keep_quality:
                    yield Rejected(f"input quality {level!r} not in {', '.join(cfg.keep_quality)}", raw=text)
                else:
                    tagged.append((text, distance, level))
        else:
            tagged = [(text, distance, None) for text, distance in novel]
        yield from self._conversations(llm, view, prefix, tagged)

    def _truncated(self, llm, raw: str) -> str | None:
        """Why a sampled query is cut short: it used every token of ``max_tokens`` (a stop ends a query sooner).
        Checked where the model shows its tokenizer (re-encoding may differ by a token: one is allowed)."""
        tokenizer = tokenizer_of(llm) if self.config.reject_truncated else None
        if tokenizer is None:
            return None
        try:
            count = len(tokenizer(raw, add_special_tokens=False)["input_ids"])
        except (TypeError, KeyError, ValueError):
            return None
        if count >= self.config.max_tokens - 1:
            return f"truncated: the query reached max_tokens ({self.config.max_tokens}) before its turn ended"
        return None

    def _tag(self, queries: list[str]) -> list[str | None | Exception]:
        """Input quality of each query (None where the tagger's answer holds no rating; the exception where its
        request failed for good)."""
        asks = [[{"role": "user", "content": render_file(PROMPTS / "magpie_input_quality.txt", instruction=q)}]
                for q in queries]
        tagger = self.context.models.llm(self.config.tagger_model)
        params = GenerationParams(max_tokens=self.config.tag_max_tokens, json_schema=QUALITY_SCHEMA)
        answers = each_request_alone(lambda batch: tagger.chat(batch, params), asks)
        return [answer if isinstance(answer, Exception) else parse_input_quality(answer[0]) for answer in answers]

    def _answer(self, llm, conversations: list[list[dict]]) -> list[str | Exception]:
        """Each conversation's answer, or the exception where its request failed for good."""
        params = GenerationParams(max_tokens=self.config.response_max_tokens)
        answers = each_request_alone(lambda batch: llm.chat(batch, params), conversations) if conversations else []
        return [answer if isinstance(answer, Exception) else answer[0].strip() for answer in answers]

    def _conversations(self, llm, view: PoolView, prefix: str, tagged: list[tuple[str, float, str | None]]):
        """Answer each query; for more turns, sample a follow-up query after the exchange and answer it."""
        cfg = self.config
        live = [([{"role": "user", "content": text}], distance, level) for text, distance, level in tagged]
        followup_system = self._system(cfg.followup_system_prompt)
        for turn in range(1, cfg.turns + 1):
            if turn > 1:
                asked = []
                prefixes = [self._prefix(llm, messages, followup_system) for messages, _, _ in live]
                for i, (item, next_prefix) in enumerate(zip(live, prefixes)):
                    params = GenerationParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                                              seed=self._seed(view, 1000 * turn + i), stop=self._stops(llm))
                    [sampled] = each_request_alone(lambda asks: llm.complete(asks, params), [next_prefix])
                    if isinstance(sampled, Exception):
                        yield _in_turn(turn, request_failed(sampled, record={"messages": item[0]}))
                        continue
                    [raw] = sampled
                    text = raw.strip()
                    problem = instruction_problem(text, cfg.min_words) or self._truncated(llm, raw)
                    if problem:
                        self.counters["empty instruction samples" if not text else "instructions failing a rule"] += 1
                        yield Rejected(f"turn {turn}: {problem}", raw=raw, record={"messages": item[0]})
                        continue
                    asked.append((item[0] + [{"role": "user", "content": text}], item[1], item[2]))
                live = asked
            answers = self._answer(llm, [messages for messages, _, _ in live])
            kept = []
            for (messages, distance, level), answer in zip(live, answers):
                if isinstance(answer, Exception):
                    failed = request_failed(answer, record={"messages": messages})
                    yield _in_turn(turn, failed) if cfg.turns > 1 else failed
                    continue
                if not answer:
                    self.counters["empty responses"] += 1
                    yield Rejected(f"empty response{f' (turn {turn})' if cfg.turns > 1 else ''}",
                                   raw=json.dumps(messages, ensure_ascii=False))
                    continue
                kept.append((messages + [{"role": "assistant", "content": answer}], distance, level))
            live = kept
        for messages, distance, level in live:
            details = {"method": "magpie", "template": prefix, "turns": cfg.turns,
                       "min_neighbor_distance": None if distance == float("inf") else round(distance, 4)}
            if level is not None:
                details["input_quality"] = level
            meta = {"magpie": {"input_quality": level}} if level is not None else {}
            yield Candidate({"messages": messages, "meta": meta}, details=details)

    # ---- verify ---------------------------------------------------------------------------------

    def verify(self, candidates: list[dict], view: PoolView) -> list[str | None]:
        """The repeat check of each first query against the pool, everything accepted and the earlier
        candidates of this round."""
        known, this_round = self._known(view), RepeatIndex()
        texts = [_first_user(r) for r in candidates]
        vectors = self._embed(texts)
        reasons = []
        for i, text in enumerate(texts):
            vector = None if vectors is None else vectors[i]
            reason, _ = self.repeat_reason(text, vector, [known, this_round])
            if reason is None:
                this_round.add([text], None if vector is None else vector[None, :])
            reasons.append(reason)
        return reasons


def _in_turn(turn: int, rejected: Rejected) -> Rejected:
    """The reject with the turn it happened in, as the other rejects of a multi-turn conversation say."""
    rejected.reason = f"turn {turn}: {rejected.reason}"
    return rejected


def _first_user(record: dict) -> str:
    return next((m["content"] for m in record["messages"] if m["role"] == "user"), "")


def _tokenizer_attr(llm, name: str) -> str | None:
    """A special-token text of the model's tokenizer (None when the backend shows no tokenizer)."""
    value = getattr(tokenizer_of(llm), name, None)
    return value if isinstance(value, str) and value else None


def adds_bos(tokenizer) -> bool:
    """Whether encoding a text adds the BOS token by itself (Llama-3 does; SmolLM2 and Qwen do not)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if tokenizer is None or bos is None:
        return False
    try:
        return tokenizer("a")["input_ids"][:1] == [bos]
    except (TypeError, KeyError, ValueError):
        return False
