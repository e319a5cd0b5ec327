"""Prompt templates: literal braces survive, record text is never read as template syntax."""

from pathlib import Path

import jinja2
import pytest

from dataflywheel.prompts import render, render_file

SRC = Path(__file__).resolve().parents[2] / "src" / "dataflywheel"


def test_a_template_with_a_json_example_renders():
    template = 'Answer as JSON, e.g. {"score": 3, "tags": ["a"]}.\n\nQuestion: {{ question }}\n'
    assert render(template, question="Why?") == 'Answer as JSON, e.g. {"score": 3, "tags": ["a"]}.\n\nQuestion: Why?\n'


@pytest.mark.parametrize("text", ["{{ 7 * 7 }}", "{instruction}", "{% for x in range(3) %}x{% endfor %}",
                                  "{{ ''.__class__.__mro__ }}", "{#", "}}"])
def test_record_text_is_inserted_verbatim(text):
    assert render("<{{ a }}>", a=text) == f"<{text}>"


def test_a_missing_value_is_an_error_not_an_empty_string():
    with pytest.raises(jinja2.UndefinedError, match="response"):
        render("{{ instruction }} {{ response }}", instruction="x")


def test_the_shipped_prompts_render_with_hostile_records():
    hostile = 'Return {"a": 1} and {{ secrets }} {response}'
    for name in ("alpagasus", "deita_quality", "deita_complexity"):
        text = render_file(SRC / "ops" / "score" / "prompts" / f"{name}.txt", instruction=hostile, response=hostile)
        assert hostile in text and "{{ instruction }}" not in text
    ask = render_file(SRC / "ops" / "score" / "prompts" / "ask_llm.txt", text=hostile)
    assert hostile in ask
    pairwise = render_file(SRC / "train" / "prompts" / "pairwise.txt", instruction=hostile, a="A!", b="B!")
    assert hostile in pairwise and "A!" in pairwise and "B!" in pairwise


def test_sandbox_blocks_unsafe_template_code():
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        render("{{ x.__class__.__subclasses__() }}", x=1)
