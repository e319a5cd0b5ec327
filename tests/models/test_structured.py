"""JSON extraction, repair and schema checks for structured answers."""

import pytest

from dataflywheel.models.structured import extract_json, parse_json, schema_errors

SCHEMA = {"type": "object", "required": ["score", "reason"], "additionalProperties": False,
          "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 6},
                         "reason": {"type": "string", "minLength": 1},
                         "tags": {"type": "array", "items": {"enum": ["math", "code"]}, "maxItems": 2}}}


@pytest.mark.parametrize("text, repaired", [
    ('{"score": 3, "reason": "ok"}', False),
    ('Here you go:\n```json\n{"score": 3, "reason": "ok"}\n```\nHope it helps.', True),
    ('Sure. {"score": 3, "reason": "a } inside a string"} trailing words', True),
    ('{"score": 3, "reason": "ok",}', True),
])
def test_extract_and_repair(text, repaired):
    value, was_repaired = extract_json(text)
    assert value["score"] == 3 and was_repaired == repaired


def test_nothing_parses_is_a_clear_error():
    value, error, _ = parse_json("I'd rate it a three.", SCHEMA)
    assert value is None and "no JSON value found" in error


@pytest.mark.parametrize("value, fragment", [
    ({"score": 9, "reason": "x"}, "$.score should be <= 6"),
    ({"score": "3", "reason": "x"}, "$.score should be integer"),
    ({"score": 3}, "missing required property 'reason'"),
    ({"score": 3, "reason": "x", "extra": 1}, "unexpected property 'extra'"),
    ({"score": 3, "reason": "x", "tags": ["art"]}, "$.tags[0] should be one of"),
    ({"score": True, "reason": "x"}, "$.score should be integer"),
])
def test_schema_violations_are_named(value, fragment):
    assert any(fragment in e for e in schema_errors(value, SCHEMA))


def test_a_valid_value_has_no_errors():
    assert schema_errors({"score": 6, "reason": "fine", "tags": ["math"]}, SCHEMA) == []
