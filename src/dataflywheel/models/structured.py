"""JSON answers: pull the JSON out of a model's text, repair the usual slips, check it against a schema."""

from __future__ import annotations

import json
import re
from typing import Any

REASK = ("Your previous answer was not valid: {error}. Reply again with only the corrected JSON value, "
         "no other text.")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _balanced(text: str) -> str | None:
    """The first balanced {...} or [...] span of text (string literals respected)."""
    start = next((i for i, ch in enumerate(text) if ch in "{["), None)
    if start is None:
        return None
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return None


def extract_json(text: str) -> tuple[Any, bool]:
    """(value, repaired): the JSON value in ``text``; repaired when it needed more than ``json.loads``.

    Raises ValueError with the parser's message when nothing parses."""
    try:
        return json.loads(text), False
    except ValueError as err:
        first_error = err
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    span = _balanced(text)
    if span:
        candidates.append(span)
    for candidate in candidates:
        for attempt in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
            try:
                return json.loads(attempt), True
            except ValueError:
                continue
    raise ValueError(f"no JSON value found ({first_error})")


def schema_errors(value: Any, schema: dict, path: str = "$") -> list[str]:
    """Violations of the common JSON-schema keywords (type, enum, const, required, properties,
    additionalProperties: false, items, min/max, minLength/maxLength, minItems/maxItems)."""
    errors: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is(value, k) for k in kinds):
            return [f"{path} should be {' or '.join(kinds)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path} should be one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path} should be {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path} should be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path} should be <= {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path} should have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path} should have at most {schema['maxLength']} characters")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path} is missing required property {name!r}")
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(item, properties[name], f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path} has unexpected property {name!r}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path} should have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path} should have at most {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                errors += schema_errors(item, schema["items"], f"{path}[{i}]")
    return errors


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES.get(kind, object))


def parse_json(text: str, schema: dict | None) -> tuple[Any, str | None, bool]:
    """(value, error or None, repaired) for a model's answer."""
    try:
        value, repaired = extract_json(text)
    except ValueError as err:
        return None, str(err), False
    problems = schema_errors(value, schema) if schema else []
    return (value, None, repaired) if not problems else (None, "; ".join(problems[:5]), repaired)
