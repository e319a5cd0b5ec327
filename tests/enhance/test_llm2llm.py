"""enhance.llm2llm: only records the student fails are augmented, and augmented records never again."""

from dataflywheel.ops import OpContext, get_operator
from dataflywheel.ops.enhance.llm2llm import parse_examples
from dataflywheel.pipeline.apply import apply_generator
from dataflywheel.records import instruction_text, make_record
from tests.conftest import OneModel

LLM2LLM = get_operator("enhance.llm2llm")
HARD = {"A train leaves at 3 pm and travels 120 km at 60 km/h. When does it arrive?": "At 5 pm: 120 / 60 = 2 hours.",
        "Tom has 3 boxes of 12 eggs and breaks 5. How many are left?": "3 * 12 - 5 = 31 eggs."}
EASY = {"What is 1 + 1?": "2", "Say hello.": "Hello!"}


class StudentAndTeacher:
    """Student: high loss (3 nats/token) on the HARD answers, low (0.5) on the rest. Teacher: writes a new
    problem from the failing question's first word (or copies the question when ``copy``)."""

    name = "scripted"

    def __init__(self, copy: bool = False):
        self.copy, self.taught = copy, []

    def format_chat(self, conversation, add_generation_prompt=True):
        return conversation[-1]["content"]

    def logprobs(self, prefixes, continuations):
        return [[-3.0 if c in HARD.values() else -0.5] * 4 for c in continuations]

    def chat(self, conversations, params):
        out = []
        for conversation in conversations:
            question = conversation[-1]["content"].split("Question: ", 1)[1].split("\n", 1)[0]
            self.taught.append(question)
            new = question if self.copy else f"New practice problem {len(self.taught)} about {question.split()[1]}?"
            out.append([f"Question: {new}\nAnswer: worked answer {len(self.taught)}"] * params.n)
        return out


def records(pairs):
    return [make_record([{"role": "user", "content": q}, {"role": "assistant", "content": a}]) for q, a in pairs.items()]


def run(batch, llm, **config):
    op = LLM2LLM(LLM2LLM.Config(**config), OpContext(models=OneModel(llm, roles=("default", "teacher"))))
    return op, apply_generator(op, "llm2llm", batch)


def stamped(items):
    return [i.record for i in items if i.position is None and i.reason is None]


def test_only_failing_records_are_augmented_with_lineage_to_them():
    batch = records({**EASY, **HARD})
    llm = StudentAndTeacher()
    op, items = run(batch, llm)
    new = stamped(items)
    assert sorted(llm.taught) == sorted(HARD)  # the teacher saw the failures only
    assert len(new) == 2 and op.counters["failing records"] == 2
    hard_ids = {r["id"] for r in batch if instruction_text(r) in HARD}
    assert {r["lineage"][-1]["parents"][0] for r in new} == hard_ids
    assert all(r["lineage"][-1]["failure"] == 3.0 for r in new)
    assert [i.position for i in items[:4]] == [0, 1, 2, 3] and all(i.reason is None for i in items[:4])  # seeds kept


def test_augmented_records_are_never_augmented_again():
    batch = records(HARD)
    op, items = run(batch, StudentAndTeacher())
    first = stamped(items)
    # the next round (after training the student): the output again, augmented records included and failing
    hard_answer = next(iter(HARD.values()))
    for record in first:
        record["messages"][-1]["content"] = hard_answer  # the student fails these too
    llm = StudentAndTeacher()
    op, items = run(batch + first, llm)
    assert sorted(llm.taught) == sorted(HARD)  # the seeds again, not the augmented ones
    assert op.counters["augmented records not augmented again"] == 2


def test_a_copied_question_is_dropped_as_the_paper_does():
    op, items = run(records(HARD), StudentAndTeacher(copy=True))
    rejects = [i for i in items if i.reason]
    assert len(rejects) == 2 and all("ROUGE-L 1.00 > 0.95" in i.reason for i in rejects)
    assert not stamped(items)


def test_teacher_examples_are_parsed_from_question_answer_blocks():
    text = "Sure!\nQuestion: What is 4 * 4?\nAnswer: 16.\n\nQuestion: Name a prime.\nAnswer: 7\nHope this helps."
    assert parse_examples(text) == [("What is 4 * 4?", "16."), ("Name a prime.", "7\nHope this helps.")]
    # the bundled model's rambling: a 'Question:' line that the next 'Question:' replaces before any answer
    rambling = "Question: yes, it is possible to help me answer it!\nSolution:\nQuestion: What is this jewelry?\n" \
               "Answer: It is a human hair."
    assert parse_examples(rambling) == [("What is this jewelry?", "It is a human hair.")]
    assert parse_examples("Here is a complete and correct list of the solution to the example:\n1. Jack") == []
