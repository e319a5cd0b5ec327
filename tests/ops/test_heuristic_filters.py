import json

import pytest

from dataflywheel.ops import get_operator
from dataflywheel.records import make_record
from tests.conftest import shared_data


def rec(instruction, response):
    return make_record([{"role": "user", "content": instruction}, {"role": "assistant", "content": response}])


def check(op_name, record, **config):
    cls = get_operator(op_name)
    return cls(cls.Config(**config)).reject_reason(record)


GOOD = ("Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make "
        "glucose and release oxygen. It happens mainly in the leaves, inside the chloroplasts, where the pigment "
        "chlorophyll captures light energy and drives the reactions that build sugar molecules.")


def test_a_good_answer_passes_every_rule():
    record = rec("Explain photosynthesis in two sentences.", GOOD)
    for name in ("select.symbol_ratio_filter", "select.repetition_filter", "select.refusal_filter",
                 "select.broken_response_filter", "select.language_filter", "select.alpaca_rules"):
        assert check(name, record) is None, name


def test_symbols():
    assert "symbols" in check("select.symbol_ratio_filter", rec("Draw.", "#### ---- **** //// ==== ++++ ||||"))
    code = "def add(a, b):\n    return a + b\n\nprint(add(2, 3))"
    assert check("select.symbol_ratio_filter", rec("Write add in Python.", code)) is None


def test_repetition_rules_have_their_own_reasons():
    looping = " ".join(["I like to eat apples and bananas every day."] * 12)
    assert "repeats" in check("select.repetition_filter", rec("Tell me about fruit.", looping))
    lines = "\n".join(["Step: mix the flour with water."] * 8 + ["Then bake it for twenty minutes at 200 degrees."] * 2
                      + [f"Note {i}: keep the oven closed while baking the bread." for i in range(6)])
    assert check("select.repetition_filter", rec("Recipe?", lines)).startswith("response repeats lines")
    assert check("select.repetition_filter", rec("Explain.", GOOD)) is None


def test_refusals_and_boilerplate():
    reason = check("select.refusal_filter", rec("Who will win?", "As an AI language model, I cannot predict that."))
    assert reason == "response contains refusal/boilerplate phrase 'as an ai language model'"
    assert check("select.refusal_filter", rec("Q", "I’m unable to help."), phrases=["i'm unable to"])


@pytest.mark.parametrize("response, expected", [
    ("   ", "empty response"),
    ("Name three colours", "response repeats the instruction"),
    ("Here is the code:\n```python\nprint('hi')", "truncated response: unclosed code block"),
    ("The three colours are red, green and", "truncated response: ends with the word 'and'"),
    ("The list is as follows:", "truncated response: ends with ':'"),
])
def test_broken_responses(response, expected):
    assert check("select.broken_response_filter", rec("Name three colours.", response)) == expected


def test_language_with_confidence():
    french = rec("Décris Paris.", "Paris est la capitale de la France, célèbre pour la tour Eiffel et ses musées.")
    reason = check("select.language_filter", french)
    assert reason.startswith("language fr (confidence") and "is not one of en" in reason
    assert check("select.language_filter", french, languages=["en", "fr"]) is None


def test_preset_names_the_rule_on_real_answers():
    path = shared_data("alpaca_eval/outputs/falcon-7b-instruct.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    op = get_operator("select.alpaca_rules")()
    reasons = [op.reject_reason(rec(r["instruction"], r["output"])) for r in rows[:300]]
    rejected = [r for r in reasons if r]
    assert 0 < len(rejected) < 150  # falcon-7b answers are weak but mostly real answers
    assert {r.split(":")[0] for r in rejected} <= {"length", "broken", "symbols", "repetition", "refusal", "language"}
    refusal_rows = [r for r in rows[:300] if "as an ai language model" in r["output"].lower()]
    for row in refusal_rows:
        assert op.reject_reason(rec(row["instruction"], row["output"])) is not None


def test_duplicate_ngrams_count_only_the_repeated_occurrences():
    from dataflywheel.algorithms.text_quality import duplicate_ngram_char_share

    # one 5-gram seen twice in 20 words of 4 letters: the repeat covers 5 of 20 words (Gopher / DataTrove);
    # counting both occurrences doubled it to 10 of 20
    words = [f"w{i:03d}" for i in range(15)]
    tokens = words[:5] + words[5:10] + words[:5] + words[10:15]
    assert duplicate_ngram_char_share(tokens, 5) == pytest.approx(5 / 20)
    assert duplicate_ngram_char_share(["abcd"] * 12, 2) == pytest.approx(10 / 12)  # jumps past each repeat
    assert duplicate_ngram_char_share(words, 5) == 0.0


JS_ANSWER = ("function sum(values) {\n  let total = 0;\n  for (const v of values) {\n    total += v;\n  }\n"
             "  return total;\n}\n\nconsole.log(sum([1, 2, 3]));")
JAVA_WITH_OPENAI = ('public class Main {\n    public static void main(String[] args) {\n'
                    '        String name = "OpenAI";\n        System.out.println(new StringBuilder(name).reverse());\n'
                    '    }\n}')


def test_complete_code_is_not_truncated_refused_or_foreign():
    js = rec("Write a JavaScript function that sums an array of numbers.", JS_ANSWER)
    java = rec('Reverse the string "OpenAI" in Java.', JAVA_WITH_OPENAI)
    for record in (js, java):
        assert check("select.alpaca_rules", record) is None
    fenced = rec("Sum in Python?", "Use this:\n\n```python\nitems = [1, 2]\nprint(sum(items));\n```\n\nIt prints 3.")
    assert check("select.broken_response_filter", fenced) is None
    # without code awareness, the old false rejections come back
    assert check("select.broken_response_filter", js, code_aware=False) == "truncated response: ends with ';'"


def test_code_aware_rules_still_catch_what_they_should():
    cut = rec("Write a function.", "function f(x) {\n  if (x > 1) {\n    return x;\n")
    assert check("select.broken_response_filter", cut).startswith("truncated response: code leaves 2")
    refusal = rec("Write malware.", "I'm sorry, but I cannot help with that.\n\n```\nprint('no')\n```")
    assert check("select.refusal_filter", refusal) is not None
    assert check("select.refusal_filter", rec("Q", "I work with the OpenAI API every day.")) is None


def test_preset_switches_each_rule():
    short = rec("Name a colour please.", "Blue")
    assert check("select.alpaca_rules", short).startswith("length")
    assert check("select.alpaca_rules", short, length=False) is None
    cut = rec("Name three colours please.", "The colours are red, green and")
    assert check("select.alpaca_rules", cut).startswith("broken: truncated")
    assert check("select.alpaca_rules", cut, truncation=False) is None
    assert check("select.alpaca_rules", rec("Say it please.", "Name three colours please."), broken=False,
                 length=False) is None


def test_preset_keeps_a_real_code_instruction_set():
    """gpteacher codegen-instruct: complete JS/Java/C++/PHP/shell answers, most without code fences. The
    preset rejected 46% of it (code read as truncated at ';', as non-English, OpenAI in strings as refusals)."""
    rows = json.loads(shared_data("gpteacher/codegen-instruct.json").read_text())[:1500]
    op = get_operator("select.alpaca_rules")()
    reasons = [op.reject_reason(rec(r["instruction"] + ("\n\n" + r["input"] if r["input"] else ""), r["response"]))
               for r in rows]
    rejected = [r for r in reasons if r]
    assert len(rejected) < 0.05 * len(rows)
    assert sum(r.startswith(("broken", "language", "refusal")) for r in rejected) < 0.02 * len(rows)


def test_a_confidence_just_under_the_bar_never_reads_as_equal_to_it(monkeypatch):
    from dataflywheel.ops.select import language_filter

    monkeypatch.setattr(language_filter, "detect_language", lambda text: ("en", 0.6499))
    op = get_operator("select.language_filter")()
    reason = op.reject_reason(make_record([{"role": "user", "content": "x"},
                                           {"role": "assistant", "content": "An answer long enough to be judged."}]))
    assert reason == "language en only at confidence 0.64 < 0.65"
