"""Fuzzing the recipe loader: any YAML or JSON structure gives a Recipe or a RecipeError naming the problem,
never another exception (a traceback)."""

import json

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dataflywheel.pipeline.recipe import RecipeError, load_recipe, parse_recipe

SETTINGS = settings(max_examples=80, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = ["input", "output", "models", "steps", "seed", "batch_size", "workers", "cache", "max_budget", "path",
        "format", "file_type", "fields", "dir", "file", "op", "name", "backend", "model", "options", "tokens", "cost",
        "preference"]
OPS = ["select.length_filter", "select.exact_dedup", "enhance.normalize", "score.judge", "nope.nothing"]
scalar = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.sampled_from(OPS)
          | st.sampled_from(["jsonl", "auto", "off", "../x.jsonl", "/etc/x.jsonl", "out", "out.txt"]))
key = st.sampled_from(KEYS) | st.text(max_size=6) | st.integers(-3, 3) | st.booleans() | st.none()
structure = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=5),
                         max_leaves=20)
VALID = {"input": {"path": "in.jsonl"}, "output": {"dir": "runs/x"}, "cache": "off",
         "steps": [{"op": "select.length_filter", "min_response_words": 2}, {"op": "select.exact_dedup"}]}


def parsed_or_refused(data):
    try:
        parse_recipe(data, "fuzz.yaml")
    except RecipeError as err:
        assert str(err).startswith("fuzz.yaml") and len(str(err)) > len("fuzz.yaml: ")


@SETTINGS
@given(structure)
@example({1: 2})  # YAML allows non-text keys: was a TypeError from Recipe(**data)
@example({"steps": [{"op": 5}]})
@example({"steps": [{"op": "select.length_filter", 3: 1}]})
@example({"input": {"path": "x"}, "steps": [{"op": "select.length_filter", "name": {"a": 1}}]})
@example({"plugins": [""]})  # an empty module name: ValueError from importlib
@example({"plugins": ["tests.reliability.broken_plugin"]})  # a plugin that raises while imported
@example({"plugins": "tests"})
@example({"plugins": [None]})
def test_any_structure_parses_or_raises_a_recipe_error(data):
    parsed_or_refused(data)  # (generated keys never spell "plugins": no arbitrary module is imported)


def mutated(value, draw):
    """``value`` with one subtree (or none) replaced by an arbitrary structure."""
    if draw(st.integers(0, 3)) == 0 or not isinstance(value, (dict, list)) or not value:
        return draw(structure) if draw(st.booleans()) else value
    if isinstance(value, dict):
        k = draw(st.sampled_from(sorted(value, key=str)))
        return {**value, k: mutated(value[k], draw)}
    i = draw(st.integers(0, len(value) - 1))
    return value[:i] + [mutated(value[i], draw)] + value[i + 1:]


@SETTINGS
@given(st.data())
def test_a_valid_recipe_with_one_part_broken_parses_or_raises_a_recipe_error(data):
    parsed_or_refused(mutated(json.loads(json.dumps(VALID)), data.draw))


@SETTINGS
@given(st.text(max_size=200) | structure.map(lambda s: yaml.safe_dump(s, allow_unicode=True)))
@example("input: [unclosed")
@example("\t- a\n b: :")
@example("!!python/object/apply:os.system ['echo pwned > /tmp/dfw-pwned']")
@example("a: &x [*x]")
@example("\x00")
def test_any_file_text_loads_or_raises_a_recipe_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("recipe") / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_recipe(path)
    except RecipeError as err:
        assert str(path) in str(err)
