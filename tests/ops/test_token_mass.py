"""Judges trust token probabilities only when the valid answers hold most of them (issue 13, item 2)."""

import math
from types import SimpleNamespace

from dataflywheel.ops.score.ask_llm import PROMPT, AskLLMScorer, p_yes, parse_yes_no
from dataflywheel.ops.score.judge import expected_score
from dataflywheel.records import make_record


def logs(**probabilities):
    return {token.replace("_", " "): math.log(p) for token, p in probabilities.items()}


def test_expected_score_needs_half_the_mass_on_the_scale():
    confident = {"4": math.log(0.6), "5": math.log(0.2), "The": math.log(0.1)}
    assert abs(expected_score(confident, 0, 5) - (4 * 0.6 + 5 * 0.2) / 0.8) < 1e-9
    rambling = {"3": math.log(0.1), "The": math.log(0.8)}  # the model is writing prose, not a score
    assert math.isnan(expected_score(rambling, 0, 5))
    assert expected_score(rambling, 0, 5, min_mass=0.05) == 3.0


def test_p_yes_needs_half_the_mass_on_yes_and_no():
    top = {"Yes": math.log(0.5), " yes": math.log(0.2), "No": math.log(0.1), "Maybe": math.log(0.1)}
    assert abs(p_yes(top) - 0.7 / 0.8) < 1e-9
    assert math.isnan(p_yes({"yes": math.log(0.05), "I": math.log(0.9)}))


def test_parse_yes_no_reads_the_first_word():
    assert parse_yes_no("Yes, it is informative.") == 1.0 and parse_yes_no(" no.") == 0.0
    assert math.isnan(parse_yes_no("It depends"))


def test_ask_llm_strips_delimiters_and_cuts_the_record_not_the_prompt():
    record = make_record([{"role": "user", "content": "Explain ### markdown headers."},
                          {"role": "assistant", "content": "word " * 5000}])
    op = AskLLMScorer(AskLLMScorer.Config(max_record_tokens=50))
    [turn] = op._prompt(SimpleNamespace(), record)  # no tokenizer: about 4 characters a token
    text = turn["content"]
    assert text.startswith("###\nExplain  markdown headers.")  # the opening delimiter survives; the record's ### is gone
    assert text.count("###") == PROMPT.read_text().count("###")  # the template's own, none from the record
    assert text.rstrip().endswith("Answer with yes or no.") and len(text) < 1000
