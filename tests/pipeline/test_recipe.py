import pytest
from typer.testing import CliRunner

from dataflywheel.cli import app
from dataflywheel.pipeline import RecipeError, parse_recipe
from tests.conftest import EXAMPLE_DATA


def recipe(steps, **extra):
    return {"input": {"path": str(EXAMPLE_DATA)}, "output": {"dir": "unused"}, "steps": steps, **extra}


def test_misspelt_operator_is_named_with_a_suggestion():
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe([{"op": "enhance.normalize"}, {"op": "select.lenght_filter"}]))
    message = str(err.value)
    assert "step 2 (select.lenght_filter)" in message
    assert "did you mean 'select.length_filter'" in message


def test_bad_field_names_step_and_field():
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe([{"op": "select.length_filter", "min_respons_words": 3}]))
    assert "step 1 (select.length_filter): field 'min_respons_words'" in str(err.value)


def test_wrong_type_and_inconsistent_bounds_are_reported_together():
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe([{"op": "select.length_filter", "min_response_words": "many"},
                             {"op": "select.length_filter", "min_response_words": 9, "max_response_words": 2},
                             {"op": "select.exact_dedup", "field": "title"}]))
    message = str(err.value)
    assert "step 1" in message and "min_response_words" in message
    assert "step 2" in message and "max_response_words (2) is below min_response_words (9)" in message
    assert "step 3" in message and "field 'field'" in message


def test_unknown_top_level_key():
    with pytest.raises(RecipeError, match="field 'stepz'"):
        parse_recipe({**recipe([]), "stepz": []})


def test_cli_exits_2_and_writes_nothing(tmp_path):
    path = tmp_path / "bad.yaml"
    run_dir = tmp_path / "run"
    path.write_text(f"input: {{path: {EXAMPLE_DATA}}}\noutput: {{dir: {run_dir}}}\n"
                    "steps:\n  - op: enhance.normalize\n  - op: select.exact_dedupe\n")
    result = CliRunner().invoke(app, ["run", str(path), "--quiet"])
    assert result.exit_code == 2
    assert "select.exact_dedupe" in result.output and "did you mean 'select.exact_dedup'" in result.output
    assert not run_dir.exists()


def test_cli_missing_input_exits_2(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(f"input: {{path: {tmp_path / 'nope.jsonl'}}}\noutput: {{dir: {tmp_path / 'run'}}}\n")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "input not found" in result.output
    assert not (tmp_path / "run").exists()


def test_invalid_yaml_exits_2(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("input: [unclosed\n")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "invalid YAML" in result.output


def test_a_misspelt_model_option_is_a_recipe_error_naming_the_backends_options():
    """It used to pass parsing and fail with a TypeError when the model first opened, mid-run."""
    with pytest.raises(RecipeError) as err:
        parse_recipe({"input": {"path": "x.jsonl"},
                      "models": {"judge": {"backend": "openai", "model": "m", "options": {"temprature": 0.1}},
                                 "default": {"backend": "transformers", "model": "smollm2", "options": {"thread": 1}}},
                      "steps": [{"op": "select.length_filter"}]})
    message = str(err.value)
    assert "the openai backend has no option 'temprature'" in message and "base_url" in message
    assert "the transformers backend has no option 'thread'" in message and "threads" in message
    parse_recipe({"input": {"path": "x.jsonl"}, "steps": [{"op": "select.length_filter"}],
                  "models": {"judge": {"backend": "openai", "model": "m", "options": {"base_url": "http://h/v1"}}}})
