"""Parsing messy model output: hand-made shapes, and real answers of the bundled SmolLM2 (fixtures)."""

import json
import re
from pathlib import Path

import pytest

from dataflywheel.ops.synth.parsing import clean_item, parse_fields, parse_list



def fixtures() -> dict:
    """Raw answers of the bundled SmolLM2 to the Self-Instruct prompts (fixtures/make_self_instruct_outputs.py)."""
    return json.loads(Path(__file__).with_name("fixtures").joinpath("smollm2_self_instruct_outputs.json").read_text())


@pytest.mark.parametrize("text", [
    "1. Name a fruit.\n2. Name a city.",
    "1) Name a fruit.\n2) Name a city.",
    "Task 1: Name a fruit.\nTask 2: Name a city.",
    "**1.** Name a fruit.\n**2.** Name a city.",
    "- Name a fruit.\n* Name a city.",
    "Here are some tasks:\n\n1. \"Name a fruit.\"\n2. 'Name a city.'\n\nI hope these help!",
    "```\n1. Name a fruit.\n2. Name a city.\n```",
    "1. Instruction: Name a fruit.\n2. Instruction: Name a city.",
])
def test_lists_in_many_shapes_give_the_same_items(text):
    assert parse_list(text).items == ["Name a fruit.", "Name a city."]


def test_a_continued_item_and_multi_line_items_and_trailing_junk():
    parsed = parse_list(" Name a fruit\nthat is red.\n10. Weigh 1.5 kg of flour.\n\nThanks for asking!",
                        leading_item=True)
    assert parsed.items == ["Name a fruit that is red.", "Weigh 1.5 kg of flour."]
    assert parsed.junk == ["Thanks for asking!"]
    assert parse_list("Sorry, I cannot help with that.").items == []
    assert parse_list("").items == [] and parse_list("1.\n2. \"\"").items == []


def test_clean_item_strips_labels_and_nested_quotes():
    assert clean_item('  **"Sort  these numbers."**  ') == "Sort these numbers."
    assert clean_item("Task: “Say hi.”") == "Say hi."
    assert clean_item('"quoted" inside') == '"quoted" inside'


def test_fields_blocks_with_continuations_and_a_label_given_by_the_prompt():
    text = "Instruction: Add them.\nInput: 2, 3\nOutput: 5\nand that is all\nInstruction: Next one.\nOutput: 7"
    blocks = parse_fields(text).items
    assert blocks == [{"instruction": "Add them.", "input": "2, 3", "output": "5\nand that is all"},
                      {"instruction": "Next one.", "output": "7"}]
    assert parse_fields(" Positive\nInput: I loved it.", first="label").items == [
        {"label": "Positive", "input": "I loved it."}]
    parsed = parse_fields("no labels here\nat all")
    assert parsed.items == [] and parsed.junk == ["no labels here", "at all"]


def test_real_smollm2_instruction_lists_parse_into_instructions():
    lists = fixtures()["lists"]
    parsed = [parse_list(text, leading_item=True) for text in lists]
    items = [item for p in parsed for item in p.items]
    assert sum(bool(p.items) for p in parsed) >= len(lists) - 1  # nearly every real answer gives instructions
    assert len(items) >= 2 * len(lists)
    for item in items:  # no list marker, fence or wrapping quote survives
        assert item == item.strip() and not item.startswith(("```", '"', "- ", "* "))
        assert not re.match(r"(task\s*)?\d{1,3}\s*[.):]\s", item, re.IGNORECASE)


def test_real_smollm2_instances_and_classification_answers_parse():
    answers = fixtures()
    outputs = [parse_fields(text).items for text in answers["input_first"]]
    assert sum(bool(b and b[0].get("output")) for b in outputs) >= len(outputs) // 2
    labels = [parse_fields(text, first="label").items for text in answers["output_first"]]
    assert all(b and b[0]["label"] for b in labels)
    words = [a.strip().lower() for a in answers["is_classification"]]
    assert sum(w.startswith(("yes", "no")) for w in words) >= len(words) // 2
