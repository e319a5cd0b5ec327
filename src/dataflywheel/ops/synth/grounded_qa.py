"""Document-grounded QA: question/answer pairs written from chunks of documents, kept only when grounded.

Each input record is a document (a ``text`` row of JSONL, a line of a .txt file, any record's turns). Its text
is cut into chunks along paragraphs, starting a new chunk at a heading (Markdown ``#``, reStructuredText or
setext underlines) and filling each chunk up to a budget (characters, or tokens of the model's tokenizer),
with trailing paragraphs carried over as overlap within a section. The model writes question/answer pairs
per chunk; the parser reads Q:/A: blocks, "Question:/Answer:" labels, JSON and numbered lists. A pair is kept
when (1) the answer's content words are found in its chunk (token recall at least ``min_overlap``) and (2),
where a judge role is named, the judge says the answer is supported by the chunk (Yes/No). Every pair that
fails is rejected with the reason; lineage names the document, the chunk and the overlap.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from dataflywheel.models.llm import GenerationParams, tokenizer_of
from dataflywheel.models.structured import extract_json
from dataflywheel.ops.base import Candidate, Generator, GeneratorConfig, NoveltyConfig, Rejected
from dataflywheel.ops.registry import register
from dataflywheel.ops.synth.parsing import Parsed, parse_list, strip_fences
from dataflywheel.prompts import render_file
from dataflywheel.records import TextField, text_of

PROMPTS = Path(__file__).with_name("prompts")

# ---- chunking -----------------------------------------------------------------------------------

_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")
_MARKDOWN_HEADING = re.compile(r"^#{1,6}\s+\S")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SPACE = re.compile(r"\s+")


@dataclass
class Chunk:
    """A piece of a document: its position among the document's chunks and its text."""

    index: int
    text: str


def blocks_of(text: str) -> list[tuple[str, bool]]:
    """Paragraphs of a document (split at blank lines), each with whether it is a heading. A Markdown heading
    line opening a paragraph becomes a block of its own; a reStructuredText/setext title is the title line
    with its underline (and overline)."""
    blocks: list[tuple[str, bool]] = []
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        lines = block.strip("\n").splitlines()
        if not any(line.strip() for line in lines):
            continue
        if _MARKDOWN_HEADING.match(lines[0]):
            blocks.append((lines[0].strip(), True))
            if len(lines) > 1:
                blocks.append(("\n".join(lines[1:]), False))
            continue
        titled = [line for line in lines if not _UNDERLINE.match(line)]
        heading = len(lines) in (2, 3) and len(titled) == 1 and _UNDERLINE.match(lines[-1]) is not None
        blocks.append(("\n".join(lines), heading))
    return blocks


def _units(text: str, separator: re.Pattern) -> list[str]:
    """``text`` cut after each match of ``separator`` (the separators stay with the text before them)."""
    units, last = [], 0
    for found in separator.finditer(text):
        units.append(text[last:found.end()])
        last = found.end()
    return units + [text[last:]] if last < len(text) else units


def _pieces(block: str, budget: int, measure: Callable[[str], int]) -> list[str]:
    """A block cut to fit the budget: at sentence ends, then (a sentence too long) at whitespace; line breaks
    are kept. A single word over the budget stays whole."""
    if measure(block) <= budget:
        return [block]
    pieces, current = [], ""
    for sentence in _units(block, _SENTENCE_END):
        words = _units(sentence, _SPACE) if measure(sentence.strip()) > budget else [sentence]
        for word in words:
            if current.strip() and measure((current + word).strip()) > budget:
                pieces.append(current.strip())
                current = ""
            current += word
    if current.strip():
        pieces.append(current.strip())
    return pieces


def chunk_document(text: str, budget: int = 1200, overlap: int = 200, min_size: int = 200,
                   measure: Callable[[str], int] = len) -> list[Chunk]:
    """Chunks of at most ``budget`` (as ``measure`` counts: characters by default) along paragraphs. A heading
    starts a new section; a section smaller than ``min_size`` joins the next one (the last joins the one
    before). Within a section, the last paragraphs of a chunk (up to ``overlap``) open the next chunk."""
    def size(parts: list[str]) -> int:
        return measure("\n\n".join(parts)) if parts else 0

    sections: list[list[str]] = []
    for block, heading in blocks_of(text):
        if heading or not sections:
            sections.append([])
        sections[-1] += _pieces(block, budget, measure)
    merged: list[list[str]] = []
    pending: list[str] = []
    for section in sections:
        pending += section
        if size(pending) >= min_size:
            merged.append(pending)
            pending = []
    if pending:
        if merged:
            merged[-1] += pending
        else:
            merged.append(pending)
    chunks: list[str] = []
    for parts in merged:
        current: list[str] = []
        fresh = 0  # paragraphs of ``current`` not in the chunk before
        queue = list(parts)
        while queue:
            part = queue.pop(0)
            if fresh and size(current + [part]) > budget and size(current) < min_size:
                # too small to stand alone: cut it and the next paragraph again, together (when that fills more)
                again = _pieces("\n\n".join(current + [part]), budget, measure)
                if measure(again[0]) > size(current):
                    queue[:0] = again
                    current, fresh = [], 0
                    continue
            if fresh and size(current + [part]) > budget:
                chunks.append("\n\n".join(current))
                tail: list[str] = []
                for previous in reversed(current[1:]):  # the overlap never repeats a whole chunk
                    if size([previous] + tail) > overlap:
                        break
                    tail.insert(0, previous)
                while tail and size(tail + [part]) > budget:
                    tail.pop(0)
                current, fresh = tail, 0
            current.append(part)
            fresh += 1
        if fresh:
            chunks.append("\n\n".join(current))
    return [Chunk(i, c) for i, c in enumerate(chunks)]


# ---- parsing ------------------------------------------------------------------------------------

_Q = re.compile(r"^\s*(?:[-*•]\s*)?(?:\(?\d{1,2}[.):]\s*)?(?:\*\*|__)?\s*(?:Q(?:uestion)?)\s*#?\d{0,2}\s*(?:\*\*|__)?"
                r"\s*[:.)\]-]\s*(?:\*\*|__)?\s*(.*)$", re.IGNORECASE)
_A = re.compile(r"^\s*(?:[-*•]\s*)?(?:\*\*|__)?\s*(?:A(?:nswer)?)\s*#?\d{0,2}\s*(?:\*\*|__)?\s*[:.)\]-]"
                r"\s*(?:\*\*|__)?\s*(.*)$", re.IGNORECASE)
_INLINE_A = re.compile(r"\s+(?:\*\*|__)?A(?:nswer)?\s*(?:\*\*|__)?\s*:\s*(?:\*\*|__)?\s*")
_PLACEHOLDER = re.compile(r"^<[^<>]*>$")
_KEYS = {"question": ("question", "q", "query"), "answer": ("answer", "a", "response")}


def _clean(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"^(?:\*\*|__)\s*|\s*(?:\*\*|__)$", "", text).strip()
    for left, right in (('"', '"'), ("“", "”"), ("'", "'")):
        if len(text) >= 2 and text.startswith(left) and text.endswith(right):
            text = text[1:-1].strip()
    return text


def _json_pairs(text: str) -> list[tuple[str, str]] | None:
    """Pairs from a JSON answer (a list of objects, an object holding such a list, or one object); None when
    the text holds no such JSON."""
    try:
        value, _ = extract_json(text)
    except ValueError:
        return None
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        value = lists[0] if lists else [value]
    if not isinstance(value, list):
        return None
    pairs = []
    for item in value:
        if not isinstance(item, dict):
            continue
        lower = {str(k).lower(): v for k, v in item.items()}
        question = next((lower[k] for k in _KEYS["question"] if isinstance(lower.get(k), str)), None)
        answer = next((lower[k] for k in _KEYS["answer"] if isinstance(lower.get(k), (str, int, float))), None)
        if question is not None:
            pairs.append((_clean(question), _clean(str(answer)) if answer is not None else ""))
    return pairs or None


def parse_qa_pairs(text: str) -> Parsed:
    """Question/answer pairs in a model's answer, as (question, answer) tuples; a pair may have an empty
    answer (the caller rejects it). Reads, in order of trust: JSON; "Q:/A:" or "Question:/Answer:" labels
    (numbered, bulleted, bold, or both on one line); a numbered list of "question? answer" items. Lines that
    belong to no pair are ``junk``. Never raises."""
    found = _json_pairs(text)
    if found:
        return Parsed(items=found)
    parsed, question, answer, field, closed = Parsed(), None, None, None, False

    def close() -> None:
        if question is not None:
            parsed.items.append((_clean(question), _clean(answer or "")))

    for line in strip_fences(text).splitlines():
        q, a = _Q.match(line), _A.match(line)
        if q and not (a and a.start(1) < q.start(1)):
            close()
            question, answer, field, closed = q.group(1), None, "question", False
            inline = _INLINE_A.split(question, maxsplit=1)
            if len(inline) == 2:
                question, answer, field = inline[0], inline[1], "answer"
        elif a:
            if question is not None and answer is not None:  # a second answer: a new pair without a question
                close()
            if question is None or answer is not None:
                question = ""
            answer, field, closed = a.group(1), "answer", False
        elif not line.strip():
            closed = field is not None
        elif field == "question" and not closed:
            question += " " + line
        elif field == "answer" and not closed:
            answer = (answer or "") + " " + line
        elif field == "question" and answer is None:  # the answer after a blank line, unlabelled
            answer, field, closed = line, "answer", False
        else:
            parsed.junk.append(line.strip())
    close()
    pairs, parsed.items = parsed.items, []
    for q, a in pairs:
        if _PLACEHOLDER.match(q) or _PLACEHOLDER.match(a):  # the prompt's "Q: <question>" echoed
            parsed.junk.append(f"Q: {q} A: {a}")
        elif q or a:
            parsed.items.append((q, a))
    if parsed.items:
        return parsed
    numbered = parse_list(text)
    fallback = Parsed(junk=list(numbered.junk))
    for item in numbered.items:
        head, mark, tail = item.partition("?")
        if mark:
            fallback.items.append((_clean(head + mark), _clean(tail.lstrip(" -–—:"))))
        else:
            fallback.junk.append(item)
    return fallback


# ---- grounding ----------------------------------------------------------------------------------

STOPWORDS = frozenset({"a", "an", "the", "and", "or", "but", "if", "then", "than", "so", "as", "of", "to", "in",
    "on", "at", "by", "for", "with", "from", "into", "onto", "over", "under", "about", "after", "before", "between",
    "through", "during", "without", "within", "is", "are", "was", "were", "be", "been", "being", "am", "it", "its",
    "it's", "this", "that", "these", "those", "there", "here", "which", "who", "whom", "whose", "what", "when",
    "where", "why", "how", "not", "no", "nor", "do", "does", "did", "done", "doing", "has", "have", "had", "having",
    "can", "could", "should", "would", "will", "shall", "may", "might", "must", "i", "me", "my", "we", "our", "you",
    "your", "he", "him", "his", "she", "her", "they", "them", "their", "also", "only", "just", "any", "all", "each",
    "every", "both", "either", "neither", "other", "some", "such", "more", "most", "very", "too", "again", "further",
    "once", "own", "same", "yes"})


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def content_words(text: str) -> set[str]:
    """Lower-cased words and numbers of a text, stop words dropped, a plural 's' taken off."""
    return {_stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS}


def answer_overlap(answer: str, chunk: str) -> float | None:
    """Share of the answer's content words found in the chunk (token recall); None when the answer has none."""
    words = content_words(answer)
    if not words:
        return None
    return len(words & content_words(chunk)) / len(words)


def parse_verdict(text: str) -> bool | None:
    """A judge's Yes (True) or No (False): the first standalone yes/no of the answer; None when there is none."""
    found = re.search(r"\b(yes|no)\b", text, re.IGNORECASE)
    return None if found is None else found.group(1).lower() == "yes"


QUESTION_WORDS = frozenset({
    "what", "who", "whom", "whose", "which", "when", "where", "why", "how", "is", "are", "was", "were", "do", "does",
    "did", "can", "could", "should", "would", "will", "has", "have", "had", "may", "might", "must", "name", "list",
    "describe", "explain", "give", "state", "define", "summarize", "summarise", "according", "in", "under"})


def pair_problem(question: str, answer: str, require_question: bool = True) -> str | None:
    """What is wrong with a parsed pair before its grounding is checked (None: nothing)."""
    if not question or not answer:
        return f"incomplete pair: no {'question' if not question else 'answer'}"
    first = re.findall(r"[a-z]+", question.lower())[:1]
    if require_question and "?" not in question and not (first and first[0] in QUESTION_WORDS):
        return "not a question: no '?' and no question word first"
    if normalise(answer) == normalise(question):
        return "answer repeats the question"
    return None


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


# ---- the operator -------------------------------------------------------------------------------


class GroundedQAConfig(GeneratorConfig, NoveltyConfig):
    """Generated pairs are also screened against every pair the step made before (exact and MinHash near
    duplicates of the question: overlapping chunks and similar documents give the same questions)."""

    keep_inputs: bool = False
    """The documents are replaced by the pairs made from them (true: pass them on as well)."""
    model: str = "default"
    """Model role that writes the question/answer pairs."""
    field: TextField = "conversation"
    """The document's text: 'conversation' (every turn; a text row is one turn), 'response' or 'instruction'."""
    chunk_size: int = Field(default=1200, ge=16)
    """Chunk budget, in ``chunk_unit``."""
    chunk_unit: Literal["chars", "tokens"] = "chars"
    """'tokens': counted by the model's tokenizer (about 4 characters a token where it shows none)."""
    chunk_overlap: int = Field(default=200, ge=0)
    """Trailing paragraphs of a chunk, up to this size, open the next chunk of the same section."""
    min_chunk: int = Field(default=200, ge=0)
    """Smaller chunks are merged with their neighbours (a heading alone is never a chunk)."""
    max_chunks: int | None = Field(default=None, ge=1)
    """Chunks used per document (the first ones); None: all."""
    pairs_per_chunk: int = Field(default=3, ge=1)
    """Pairs asked for per chunk."""
    temperature: float = Field(default=0.0, ge=0.0)
    max_tokens: int = Field(default=384, ge=1)
    require_question: bool = True
    """Reject a 'question' with no '?' that opens with no question word (what, how, is, ...; name, list, ...):
    small models often copy a sentence or a heading of the chunk instead."""
    min_overlap: float = Field(default=0.5, ge=0.0, le=1.0)
    """Reject a pair when less than this share of its answer's content words is in the chunk."""
    judge_model: str | None = None
    """Model role that checks each pair against its chunk (Yes/No); None: the overlap check alone."""
    judge_unreadable: Literal["reject", "keep"] = "reject"
    """A verdict with no Yes/No in it: 'reject' the pair (it was not shown grounded) or 'keep' it (the overlap
    check decides). Counted either way."""
    judge_max_tokens: int = Field(default=8, ge=1)
    context: bool = False
    """Put the chunk in the user turn before the question (reading-comprehension data); false: the question alone."""
    store_chunk: bool = True
    """Keep the chunk in the record's meta (``context``), for later checks of faithfulness."""


@register
class GroundedQA(Generator):
    """Document-grounded QA: question/answer pairs per chunk of each document, kept when the answer is in its chunk."""

    name = "synth.grounded_qa"
    Config = GroundedQAConfig

    def _measure(self) -> Callable[[str], int]:
        if self.config.chunk_unit == "chars":
            return len
        if "_count_tokens" not in vars(self):
            self._count_tokens = self._token_counter()
        return self._count_tokens

    def _token_counter(self) -> Callable[[str], int]:
        tokenizer = tokenizer_of(self.context.models.llm(self.config.model))
        if tokenizer is None:
            self.counters["token budget estimated at 4 characters a token (no tokenizer)"] += 1
            return lambda text: (len(text) + 3) // 4
        return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def chunks(self, record: dict) -> list[Chunk]:
        cfg = self.config
        found = chunk_document(text_of(record, cfg.field), cfg.chunk_size, cfg.chunk_overlap, cfg.min_chunk,
                               self._measure())
        return found[:cfg.max_chunks] if cfg.max_chunks else found

    def generate(self, records: list[dict]):
        cfg = self.config
        work = [(record, chunk) for record in records for chunk in self.chunks(record)]
        if not work:
            return
        prompts = [[{"role": "user", "content": render_file(PROMPTS / "grounded_qa_generate.txt", chunk=chunk.text,
                                                            pairs=cfg.pairs_per_chunk)}] for _, chunk in work]
        params = GenerationParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                  seed=self.context.seed if cfg.temperature > 0 else None)
        answers = self.context.models.llm(cfg.model).chat(prompts, params)
        pending: list[tuple[dict, Chunk, str, str, float]] = []
        for (record, chunk), [answer] in zip(work, answers):
            parents = [record["id"]]
            parsed = parse_qa_pairs(answer)
            if parsed.junk:
                self.counters["lines outside any question/answer pair (ignored)"] += len(parsed.junk)
            if not parsed.items:
                self.counters["unparsable answers (no question/answer pair)"] += 1
                yield Rejected(f"unparsable: no question/answer pair in the model's answer (chunk {chunk.index})",
                               raw=answer, parents=parents)
                continue
            seen: set[str] = set()
            for question, reply in parsed.items:
                raw = f"Q: {question}\nA: {reply}"
                problem = pair_problem(question, reply, cfg.require_question)
                if problem:
                    if problem.startswith("incomplete"):
                        self.counters["incomplete pairs"] += 1
                    yield Rejected(problem, raw=raw, parents=parents)
                    continue
                key = normalise(question)
                if key in seen:
                    yield Rejected("duplicate question in the same chunk", raw=raw, parents=parents)
                    continue
                seen.add(key)
                overlap = answer_overlap(reply, chunk.text)
                if overlap is None:
                    yield Rejected("answer has no content words to find in its chunk", raw=raw, parents=parents)
                elif overlap < cfg.min_overlap:
                    yield Rejected(f"answer not in its chunk: overlap {overlap:.2f} < {cfg.min_overlap:g}",
                                   raw=raw, parents=parents)
                else:
                    pending.append((record, chunk, question, reply, overlap))
        verdicts = self._judge(pending) if cfg.judge_model and pending else [None] * len(pending)
        for (record, chunk, question, reply, overlap), verdict in zip(pending, verdicts):
            raw = f"Q: {question}\nA: {reply}"
            if verdict is False:
                yield Rejected(f"judge: the answer is not supported by its chunk (overlap {overlap:.2f})", raw=raw,
                               parents=[record["id"]])
                continue
            if verdict is None and cfg.judge_model:
                self.counters["unreadable judge verdicts"] += 1
                if cfg.judge_unreadable == "reject":
                    yield Rejected("judge: unreadable verdict (no Yes/No)", raw=raw, parents=[record["id"]])
                    continue
            user = render_file(PROMPTS / "grounded_qa_user_context.txt", chunk=chunk.text, question=question) \
                if cfg.context else question
            meta = {"context": chunk.text} if cfg.store_chunk else {}
            details = {"method": "grounded_qa", "chunk": chunk.index, "overlap": round(overlap, 4)}
            if cfg.judge_model:
                details["judge"] = {True: "yes", None: "unreadable"}[verdict]
            yield Candidate({"messages": [{"role": "user", "content": user.strip()},
                                          {"role": "assistant", "content": reply}], "meta": meta},
                            parents=[record["id"]], details=details)

    def _judge(self, pending) -> list[bool | None]:
        """The judge's Yes/No on each pair given its chunk (None where it wrote neither)."""
        asks = [[{"role": "user", "content": render_file(PROMPTS / "grounded_qa_judge.txt", chunk=chunk.text,
                                                         question=question, answer=reply)}]
                for _, chunk, question, reply, _ in pending]
        answers = self.context.models.llm(self.config.judge_model).chat(
            asks, GenerationParams(max_tokens=self.config.judge_max_tokens))
        return [parse_verdict(text) for [text] in answers]
