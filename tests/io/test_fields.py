"""The common field names are recognised; others are mapped (recipe, CLI, Python)."""

import pytest
from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.io import ReadReject, parse_fields, read_records, read_rows
from dataflywheel.pipeline import LocalExecutor, RecipeError, parse_recipe
from tests.conftest import read_jsonl, write_jsonl

runner = CliRunner()


@pytest.mark.parametrize("row", [
    {"prompt": "What is 2+2?", "response": "4"},
    {"question": "What is 2+2?", "answer": "4"},
    {"query": "What is 2+2?", "response": "4"},
    {"instruction": "What is 2+2?", "output": "4"},
    {"prompt": "What is 2+2?", "completion": "4"},
    {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]},
    {"conversations": [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"}]},
    {"conversations": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]},
])
def test_common_names_are_recognised_without_a_mapping(row):
    [record] = list(read_rows([row]))
    assert record["messages"] == [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]


def test_mapped_fields_read_and_the_rest_stays_in_meta(tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"q": "Capital of Peru?", "a": "Lima.", "topic": "geo"}])
    [record] = list(read_records(data, fields={"prompt": "q", "response": "a"}))
    assert record["messages"] == [{"role": "user", "content": "Capital of Peru?"},
                                  {"role": "assistant", "content": "Lima."}]
    assert record["meta"] == {"topic": "geo", "source": "qa.jsonl:1",
                              "alpaca": {"instruction": "Capital of Peru?", "input": None, "response_key": "response"}}


def test_nested_sources_and_their_errors():
    rows = [{"question_id": 7, "choices": [{"index": 0, "turns": ["An answer."]}]}, {"question_id": 8, "choices": []}]
    good, bad = list(read_rows(rows, fields={"text": "choices.0.turns.0"}))
    assert good["messages"] == [{"role": "assistant", "content": "An answer."}]
    assert good["meta"]["choices"] == rows[0]["choices"]  # a nested source is copied: the rest stays
    assert isinstance(bad, ReadReject) and bad.reason == "mapped field 'choices.0.turns.0': choices has no '0'"


def test_a_mapping_that_would_hide_a_field_is_refused():
    [item] = list(read_rows([{"prompt": "full prompt", "instruction": "short", "response": "r"}],
                            fields={"prompt": "instruction"}))
    assert isinstance(item, ReadReject) and "the row has its own 'prompt' field" in item.reason


@pytest.mark.parametrize("text, message", [
    ("prompt=question,response", "--fields takes NAME=FIELD pairs"),
    ("promt=question", "cannot map a field to 'promt'; map to one of prompt, response"),
])
def test_bad_mappings_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        parse_fields(text)


def test_cli_fields_on_convert_inspect_and_a_bad_mapping(tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"q": "Capital of Peru?", "a": "Lima."}])
    result = runner.invoke(app, ["convert", str(data), str(tmp_path / "out.jsonl"), "--fields", "prompt=q,response=a"])
    assert result.exit_code == 0, result.output
    assert read_jsonl(tmp_path / "out.jsonl") == [{"messages": [{"role": "user", "content": "Capital of Peru?"},
                                                                {"role": "assistant", "content": "Lima."}]}]
    inspected = runner.invoke(app, ["inspect", str(data), "--fields", "prompt=q,response=a", "--json"])
    assert inspected.exit_code == 0 and '"records": 1' in inspected.output
    bad = runner.invoke(app, ["inspect", str(data), "--fields", "prompt"])
    assert bad.exit_code == 2 and "--fields takes NAME=FIELD pairs" in bad.output


def test_recipe_fields_are_checked_and_read(tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"q": "Capital of Peru?", "a": "Lima."}])
    with pytest.raises(RecipeError, match="field 'input.fields': Value error, cannot map a field to 'answer'"):
        parse_recipe({"input": {"path": str(data), "fields": {"answer": "a"}}})
    recipe = parse_recipe({"input": {"path": str(data), "fields": {"prompt": "q", "response": "a"}}})
    [record] = list(recipe.input.read())
    assert record["messages"][1] == {"role": "assistant", "content": "Lima."}


def test_a_run_reads_with_the_recipe_fields(tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"q": "Capital of Peru?", "a": "Lima."}])
    recipe = parse_recipe({"input": {"path": str(data), "fields": {"prompt": "q", "response": "a"}},
                           "output": {"dir": str(tmp_path / "run")}})
    manifest = LocalExecutor(recipe, quiet=True).execute(report=False)
    assert manifest["totals"]["output"] == 1


def test_dolly_context_extends_the_instruction_and_a_text_label_is_not_kto():
    [dolly] = list(read_rows([{"instruction": "Who wrote it?", "context": "Hamlet is a play by Shakespeare.",
                               "response": "Shakespeare.", "category": "closed_qa"}]))
    assert dolly["messages"][0]["content"] == "Who wrote it?\n\nHamlet is a play by Shakespeare."
    [labelled] = list(read_rows([{"prompt": "Review: great film", "completion": "positive", "label": "positive"}]))
    assert labelled["messages"][-1]["content"] == "positive" and labelled["meta"]["label"] == "positive"
