"""synth.grounded_qa: chunking, parsing of question/answer pairs (hand-made shapes and real SmolLM2 answers),
the grounding checks with a scripted model, and a real run with SmolLM2."""

import itertools
import json
import re
from pathlib import Path

import pytest

from dataflywheel.ops import Candidate, OpContext, Rejected, get_operator
from dataflywheel.ops.synth.grounded_qa import (
    answer_overlap,
    blocks_of,
    chunk_document,
    content_words,
    pair_problem,
    parse_qa_pairs,
    parse_verdict,
)
from dataflywheel.pipeline import LocalExecutor, parse_recipe
from dataflywheel.pipeline.run_dir import iter_rejects
from dataflywheel.records import make_record
from tests.conftest import REPO, OneModel, read_jsonl, write_jsonl

GroundedQA = get_operator("synth.grounded_qa")
PEPS = [json.loads(line) for line in (REPO / "examples/data/pep_excerpts.jsonl").read_text().splitlines()]


def fixtures() -> dict:
    """Raw answers of the bundled SmolLM2 (fixtures/make_grounded_qa_outputs.py)."""
    return json.loads(Path(__file__).with_name("fixtures").joinpath("smollm2_grounded_qa_outputs.json").read_text())


# ---- chunking -----------------------------------------------------------------------------------

MARKDOWN = """# Bread

Bread is made from flour, water, salt and yeast. The dough rises while the yeast makes gas.

## Baking

Bake the loaf in a hot oven for about forty minutes.
Let it cool before cutting.

## Storage

Keep bread in a paper bag. It goes stale in the fridge."""


def test_blocks_know_markdown_and_restructuredtext_headings():
    assert [h for _, h in blocks_of(MARKDOWN)] == [True, False, True, False, True, False]
    rst = "Title\n=====\n\nText here.\n\n-----\nOver and under\n-----\n\nMore text.\n\n=====\n\n# not a heading"
    assert [(b.splitlines()[0], h) for b, h in blocks_of(rst)] == [
        ("Title", True), ("Text here.", False), ("-----", True), ("More text.", False), ("=====", False),
        ("# not a heading", True)]
    assert blocks_of("### Heading\nwith its text on the next line") == [
        ("### Heading", True), ("with its text on the next line", False)]


def test_chunks_start_at_headings_fit_the_budget_and_overlap_within_a_section():
    chunks = chunk_document(MARKDOWN, budget=200, overlap=0, min_size=10)
    assert [c.text.splitlines()[0] for c in chunks] == ["# Bread", "## Baking", "## Storage"]
    assert [c.index for c in chunks] == [0, 1, 2]
    # sections too small to stand alone join the next one, the last one the one before
    [whole] = chunk_document(MARKDOWN, 400, 0, 120)
    assert whole.text == MARKDOWN
    bread, baking = chunk_document(MARKDOWN, 200, 0, 80)
    assert bread.text.startswith("# Bread") and baking.text.startswith("## Baking") and "## Storage" in baking.text
    paragraphs = "\n\n".join(f"Paragraph {i} says something about topic {i}." for i in range(12))
    chunks = chunk_document(paragraphs, budget=150, overlap=60, min_size=40)
    assert all(len(c.text) <= 150 for c in chunks) and len(chunks) >= 4
    for before, after in itertools.pairwise(chunks):  # each chunk opens with the last paragraph of the one before
        assert after.text.split("\n\n")[0] == before.text.split("\n\n")[-1]
    seen = "\n\n".join(c.text for c in chunks)
    assert all(f"Paragraph {i} " in seen for i in range(12))
    no_overlap = chunk_document(paragraphs, budget=150, overlap=0, min_size=40)
    assert sum(len(c.text.split("\n\n")) for c in no_overlap) == 12


def test_long_paragraphs_are_cut_at_sentences_then_words_and_tokens_can_be_the_unit():
    text = " ".join(f"Sentence number {i} is here." for i in range(30))
    chunks = chunk_document(text, budget=100, overlap=0, min_size=0)
    assert all(len(c.text) <= 100 for c in chunks) and all(c.text.endswith(".") for c in chunks)
    assert " ".join(c.text for c in chunks) == text
    words = chunk_document("word " * 100, budget=50, overlap=0, min_size=0)
    assert all(len(c.text) <= 50 for c in words) and sum(len(c.text.split()) for c in words) == 100
    by_words = chunk_document(text, budget=20, overlap=0, min_size=0, measure=lambda t: len(t.split()))
    assert all(len(c.text.split()) <= 20 for c in by_words)


def test_the_shipped_peps_chunk_into_sections():
    for pep in PEPS:
        chunks = chunk_document(pep["text"], 600, 150, 150)
        assert chunks and all(len(c.text) <= 600 for c in chunks)
    [first, *_] = chunk_document(PEPS[0]["text"], 600, 150, 150)
    assert first.text.startswith("What is a PEP?\n==============\n\nPEP stands for Python Enhancement Proposal.")


# ---- parsing ------------------------------------------------------------------------------------

PAIRS = [("What is a PEP?", "A design document."), ("Who writes it?", "The PEP author.")]


@pytest.mark.parametrize("text", [
    "Q: What is a PEP?\nA: A design document.\nQ: Who writes it?\nA: The PEP author.",
    "Question: What is a PEP?\nAnswer: A design document.\n\nQuestion: Who writes it?\nAnswer: The PEP author.",
    "1. Q: What is a PEP?\n   A: A design document.\n2. Q: Who writes it?\n   A: The PEP author.",
    "**Q1:** What is a PEP?\n**A1:** A design document.\n\n**Q2:** Who writes it?\n**A2:** The PEP author.",
    "Q: What is a PEP? A: A design document.\nQ: Who writes it? A: The PEP author.",
    ("Here are the pairs:\n\nQ: \"What is a PEP?\"\nA: \"A design document.\"\n\nQ: Who writes it?\n"
     "A: The PEP author.\n\nI hope this helps!"),
    '[{"question": "What is a PEP?", "answer": "A design document."}, {"Q": "Who writes it?", "A": "The PEP author."}]',
    ('```json\n{"pairs": [{"question": "What is a PEP?", "answer": "A design document."},\n'
     '{"question": "Who writes it?", "answer": "The PEP author.",}]}\n```'),
    "1. What is a PEP? A design document.\n2. Who writes it? - The PEP author.",
    "Q: What is a PEP?\nA: A design\ndocument.\nQ: Who writes it?\nA: The PEP author.",
])
def test_pairs_in_many_shapes_give_the_same_pairs(text):
    assert parse_qa_pairs(text).items == PAIRS


def test_junk_incomplete_pairs_and_nothing_at_all():
    parsed = parse_qa_pairs("Q: What is a PEP?\nA: A design document.\n\nThanks for reading!\nQ: Who writes it?")
    assert parsed.items == [PAIRS[0], ("Who writes it?", "")] and parsed.junk == ["Thanks for reading!"]
    assert parse_qa_pairs("Q: What is a PEP?\n\nA design document.").items == [PAIRS[0]]  # unlabelled answer
    assert parse_qa_pairs("I cannot write questions about this passage.").items == []
    assert parse_qa_pairs("").items == [] and parse_qa_pairs("```\n```").items == []
    assert parse_qa_pairs('{"question": "What is a PEP?"}').items == [("What is a PEP?", "")]


def test_real_smollm2_answers_parse_into_pairs_or_count_as_unparsable():
    data = fixtures()
    assert len(data["pairs"]) == len(data["chunks"]) == 10
    parsed = [parse_qa_pairs(text) for text in data["pairs"]]
    assert sum(not p.items for p in parsed) == 1  # 'Q:' then forty empty 'A:' lines: nothing to read
    pairs = [pair for p in parsed for pair in p.items]
    assert len(pairs) >= 20 and sum(bool(q and a) for q, a in pairs) >= 15
    for question, answer in pairs:
        assert not re.match(r"(?i)(q|question|a|answer)\s*\d*\s*:", question) and not re.match(r"(?i)a\s*:", answer)
        assert "<question>" not in question and "<answer>" not in answer  # the prompt's format line, echoed
    universal = "A universal convention supplies all of maintainability, clarity, consistency, and a foundation for"
    assert ("What does the PEP document say?", universal + " good programming habits.") in pairs  # after 'Question 1:'
    verdicts = [parse_verdict(text) for text in data["verdicts"]]
    assert verdicts == [False] * len(data["verdicts"])  # the 135M judge says No to everything: off by default


def test_the_real_answers_through_the_operator():
    """The fixture answers replayed for their chunks: headings and copied sentences are not questions, repeats
    and empty answers go, and an answer about something else is not in its chunk."""
    data = fixtures()
    documents = [document(chunk) for chunk in data["chunks"]]
    op, proposals = run_op(GroundedQA.Config(chunk_size=2000), ScriptedLLM(data["pairs"]), documents)
    made = [p for p in proposals if isinstance(p, Candidate)]
    reasons = [p.reason for p in proposals if isinstance(p, Rejected)]
    assert op.counters["unparsable answers (no question/answer pair)"] == 1
    assert reasons.count("not a question: no '?' and no question word first") >= 8
    assert reasons.count("duplicate question in the same chunk") >= 5
    assert "answer not in its chunk: overlap 0.11 < 0.5" in reasons  # 'The PEP is a Python 3.10 extension ...'
    assert len(made) >= 4 and all(m.details["overlap"] >= 0.5 for m in made)
    assert all(m.record["messages"][0]["content"].endswith("?") or
               m.record["messages"][0]["content"].startswith("How") for m in made)


# ---- grounding ----------------------------------------------------------------------------------


def test_overlap_is_the_recall_of_the_answers_content_words_in_the_chunk():
    chunk = "PEP stands for Python Enhancement Proposal. A PEP is a design document."
    assert answer_overlap("A design document.", chunk) == 1.0
    assert answer_overlap("Python Enhancement Proposals", chunk) == 1.0  # plural 's' taken off
    assert answer_overlap("It is a recipe for bread.", chunk) == 0.0
    assert answer_overlap("A design document for bread", chunk) == pytest.approx(2 / 3)
    assert answer_overlap("It is.", chunk) is None
    assert content_words("The PEPs are design documents") == {"pep", "design", "document"}
    assert parse_verdict("Yes.") is True and parse_verdict("no, it is not") is False
    assert parse_verdict("Answer: YES") is True and parse_verdict("The answer is supported") is None
    assert parse_verdict("Nothing to say") is None  # 'no' inside a word does not count
    assert pair_problem("What is a PEP?", "What is a PEP") == "answer repeats the question"
    assert pair_problem("Introduction ==========", "This document gives conventions.") == \
        "not a question: no '?' and no question word first"
    assert pair_problem("Name the author of PEP 8", "Guido van Rossum.") is None
    assert pair_problem("Name the author of PEP 8", "Guido", require_question=True) is None
    assert pair_problem("PEP 8 author", "Guido", require_question=False) is None


CHUNK = ("PEP stands for Python Enhancement Proposal. A PEP is a design document providing information to the "
         "Python community. The PEP author is responsible for building consensus within the community.")


class ScriptedLLM:
    """Writes scripted pairs for chunk prompts and Yes/No verdicts for judge prompts; records what it was asked."""

    name = "scripted"

    def __init__(self, answers, verdicts=None):
        self.answers, self.verdicts, self.asked = list(answers), verdicts or {}, []

    def chat(self, conversations, params):
        out = []
        for conversation in conversations:
            text = conversation[-1]["content"]
            self.asked.append((text, params))
            if text.startswith("Read the passage"):
                out.append([self.answers.pop(0)])
            else:
                answer = text.split("\nAnswer: ")[1].split("\n")[0]
                out.append([self.verdicts.get(answer, "Yes")])
        return out


def document(text=CHUNK, **meta):
    return make_record([{"role": "assistant", "content": text}], meta=meta)


def run_op(config, llm, records):
    op = GroundedQA(config, OpContext(seed=0, models=OneModel(llm)))
    return op, list(op.generate(records))


def test_grounded_qa_rejects_a_pair_whose_answer_is_not_in_its_chunk():
    answer = ("Q: What does PEP stand for?\nA: Python Enhancement Proposal.\n"
              "Q: What is a PEP?\nA: A recipe for baking sourdough bread at home.\n"
              "Q: Who builds consensus?\nA: The PEP author.\n"
              "Q: Who builds consensus?\nA: The author of the PEP.\n"
              "Q: Is it?\nA: Yes.\n"
              "Q: What else?")
    doc = document(pep=1)
    op, proposals = run_op(GroundedQA.Config(), ScriptedLLM([answer]), [doc])
    rejected = {p.raw: p.reason for p in proposals if isinstance(p, Rejected)}
    made = [p for p in proposals if isinstance(p, Candidate)]
    reason = rejected["Q: What is a PEP?\nA: A recipe for baking sourdough bread at home."]
    assert reason.startswith("answer not in its chunk: overlap ") and reason.endswith(" < 0.5")
    assert float(reason.split("overlap ")[1].split()[0]) < 0.5
    assert rejected["Q: Who builds consensus?\nA: The author of the PEP."] == "duplicate question in the same chunk"
    assert rejected["Q: Is it?\nA: Yes."] == "answer has no content words to find in its chunk"
    assert rejected["Q: What else?\nA: "] == "incomplete pair: no answer"
    assert all(p.parents == [doc["id"]] for p in proposals)
    assert [m.record["messages"] for m in made] == [
        [{"role": "user", "content": "What does PEP stand for?"},
         {"role": "assistant", "content": "Python Enhancement Proposal."}],
        [{"role": "user", "content": "Who builds consensus?"}, {"role": "assistant", "content": "The PEP author."}]]
    assert made[0].details == {"method": "grounded_qa", "chunk": 0, "overlap": 1.0}
    assert made[0].record["meta"] == {"context": CHUNK}
    assert op.counters["incomplete pairs"] == 1


def test_the_judge_the_context_turn_unparsable_answers_and_chunk_limits():
    answer = ("Q: What does PEP stand for?\nA: Python Enhancement Proposal.\n"
              "Q: Who builds consensus?\nA: The PEP author.")
    verdicts = {"The PEP author.": "No, the passage says otherwise."}
    llm = ScriptedLLM([answer, "Sorry, I can't help with that."], verdicts)
    text = CHUNK + "\n\nSecond section\n==============\n\n" + CHUNK.replace("PEP", "RFC")
    config = GroundedQA.Config(judge_model="judge", context=True, store_chunk=False, chunk_size=260, min_chunk=50)
    op, proposals = run_op(config, llm, [document(text)])
    rejected = [p for p in proposals if isinstance(p, Rejected)]
    [made] = [p for p in proposals if isinstance(p, Candidate)]
    assert {r.reason for r in rejected} == {"judge: the answer is not supported by its chunk (overlap 1.00)",
                                            "unparsable: no question/answer pair in the model's answer (chunk 1)"}
    assert op.counters["unparsable answers (no question/answer pair)"] == 1
    assert made.details == {"method": "grounded_qa", "chunk": 0, "overlap": 1.0, "judge": "yes"}
    assert made.record["messages"][0]["content"] == (
        f"Answer the question using the passage.\n\nPassage:\n{CHUNK}\n\nQuestion: What does PEP stand for?")
    assert made.record["meta"] == {}
    judge_prompts = [t for t, _ in llm.asked if t.startswith("Passage:")]
    assert len(judge_prompts) == 2 and all(CHUNK in t for t in judge_prompts)
    # an unreadable verdict: rejected by default, kept with judge_unreadable: keep
    for policy, kept in (("reject", 0), ("keep", 2)):
        llm = ScriptedLLM([answer], {"Python Enhancement Proposal.": "Maybe", "The PEP author.": "Nope"})
        config = GroundedQA.Config(judge_model="judge", judge_unreadable=policy)
        op, proposals = run_op(config, llm, [document()])
        assert sum(isinstance(p, Candidate) for p in proposals) == kept
        assert op.counters["unreadable judge verdicts"] == 2
    # max_chunks: only the first chunk of each document is asked about
    llm = ScriptedLLM([answer, answer])
    _, proposals = run_op(GroundedQA.Config(chunk_size=260, min_chunk=50, max_chunks=1), llm,
                          [document(text), document(CHUNK + " Extra.")])
    assert len(llm.asked) == 2 and sum(isinstance(p, Candidate) for p in proposals) == 4


def test_a_token_budget_counts_with_the_models_tokenizer_or_estimates():
    text = "\n\n".join(f"Paragraph {i} has exactly seven words here." for i in range(6))
    llm = ScriptedLLM([])
    op = GroundedQA(GroundedQA.Config(chunk_unit="tokens", chunk_size=16, chunk_overlap=0, min_chunk=0),
                    OpContext(models=OneModel(llm)))
    assert len(op.chunks(document(text))) == 6  # ~4 characters a token: one 46-character paragraph a chunk
    assert op.counters["token budget estimated at 4 characters a token (no tokenizer)"] == 1
    llm.tokenizer = lambda text, add_special_tokens=False: {"input_ids": text.split()}  # a token a word
    op = GroundedQA(GroundedQA.Config(chunk_unit="tokens", chunk_size=16, chunk_overlap=0, min_chunk=0),
                    OpContext(models=OneModel(llm)))
    assert [len(c.text.split()) for c in op.chunks(document(text))] == [14, 14, 14]



class NamedTokenizerMissing(ScriptedLLM):
    """A server whose named tokenizer (``chat_template_from``) cannot be loaded."""

    @property
    def tokenizer(self):
        raise OSError("Can't load tokenizer for 'no-such/model'")


def test_a_named_tokenizer_that_cannot_load_is_an_error_not_an_estimate():
    op = GroundedQA(GroundedQA.Config(chunk_unit="tokens", chunk_size=16), OpContext(models=OneModel(
        NamedTokenizerMissing([]))))
    with pytest.raises(OSError, match="no-such/model"):
        op.chunks(document("Paragraph one has exactly seven words here."))
    assert not op.counters

# ---- a real run with the bundled model ----------------------------------------------------------


@pytest.mark.model
def test_grounded_qa_runs_end_to_end_with_the_bundled_model(tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"pep": p["pep"], "title": p["title"], "text": p["text"]}
                                                  for p in PEPS[:2]])
    steps = [{"op": "synth.grounded_qa", "chunk_size": 500, "max_chunks": 1, "pairs_per_chunk": 2,
              "max_tokens": 96}]
    one_thread = {"backend": "transformers", "model": "smollm2", "options": {"threads": 1}}  # no contention
    recipe = {"input": {"path": str(docs)}, "output": {"dir": str(tmp_path / "run")}, "steps": steps, "seed": 0,
              "cache": str(tmp_path / "calls.sqlite"), "models": {"default": one_thread}}
    executor = LocalExecutor(parse_recipe(recipe), quiet=True)
    manifest = executor.execute(report=False)
    output = read_jsonl(executor.run_dir.root / "output.jsonl")
    rejects = list(iter_rejects(executor.run_dir))
    assert manifest["status"] == "finished" and output
    sources = {r["reason"] for r in rejects}
    assert "replaced by generated records (step grounded_qa: keep_inputs false)" in sources  # the documents
    for record in output:
        [entry] = record["lineage"]
        assert entry["op"] == "synth.grounded_qa" and entry["method"] == "grounded_qa" and entry["chunk"] == 0
        assert entry["overlap"] >= 0.5 and len(entry["parents"]) == 1
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
        assert all(m["content"].strip() for m in record["messages"])
        assert answer_overlap(record["messages"][1]["content"], record["context"]) >= 0.5
    assert all(r["reason"] for r in rejects)
